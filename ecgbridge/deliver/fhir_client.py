"""FHIR REST client: create the ECG Observation on a FHIR server (idempotently)."""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from ecgbridge.deliver.base import DeliveryItem, DeliveryReceipt
from ecgbridge.deliver.settings import FhirDestinationSettings, OAuth2ClientCredentials
from ecgbridge.errors import DeliveryError

log = logging.getLogger(__name__)

#: MIME type of FHIR JSON (FHIR R4/R5 http.html#mime-type).
FHIR_JSON = "application/fhir+json"

#: Item file per FHIR version.
FILE_BY_VERSION: dict[str, str] = {"R4": "fhir-r4", "R5": "fhir-r5"}

#: HTTP statuses worth retrying besides 5xx: request timeout, too many requests.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})

#: A token is renewed this many seconds before the server says it expires.
TOKEN_EXPIRY_MARGIN_S = 30.0

#: Longest OperationOutcome text quoted in an error message.
MAX_DIAGNOSTICS_CHARS = 600

_USER_AGENT = "ecgbridge-fhir-client"


@dataclass(frozen=True)
class HttpAnswer:
    """Status, headers and body of one HTTP exchange."""

    status: int
    headers: Message
    body: bytes


def operation_outcome_text(body: bytes) -> str:
    """Return the diagnostics of an OperationOutcome body ("" if it is not one).

    Each issue contributes ``"<severity> <code>: <diagnostics or details.text>"``.
    """
    try:
        resource = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
        return ""
    parts: list[str] = []
    for issue in resource.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        label = " ".join(str(issue.get(k, "")) for k in ("severity", "code")).strip()
        parts.append(f"{label}: {text}" + (f" [{where}]" if where else ""))
    joined = "; ".join(parts)
    if len(joined) > MAX_DIAGNOSTICS_CHARS:
        joined = joined[: MAX_DIAGNOSTICS_CHARS - 3] + "..."
    return joined


def conditional_create_query(observation: dict[str, Any]) -> str | None:
    """Return the ``If-None-Exist`` search (``identifier=<system>|<value>``) or None.

    The first identifier that has both a system and a value is used; values are
    URL-encoded as a query string requires.
    """
    for identifier in observation.get("identifier") or []:
        if not isinstance(identifier, dict):
            continue
        system, value = identifier.get("system"), identifier.get("value")
        if system and value:
            token = f"{system}|{value}"
            return "identifier=" + urllib.parse.quote(token, safe=":/|")
    return None


class _TokenCache:
    """OAuth2 client-credentials tokens, fetched on demand and kept until expiry."""

    def __init__(self, oauth2: OAuth2ClientCredentials, send: Any) -> None:
        self._oauth2 = oauth2
        self._send = send
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def token(self) -> str:
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at:
                return self._token
            self._token, self._expires_at = self._fetch()
            return self._token

    def _fetch(self) -> tuple[str, float]:
        o = self._oauth2
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if o.scope:
            form["scope"] = o.scope
        secret = o.client_secret.get_secret_value()
        basic = base64.b64encode(
            f"{urllib.parse.quote(o.client_id)}:{urllib.parse.quote(secret)}".encode()
        ).decode("ascii")
        answer = self._send(
            "POST",
            o.token_url,
            urllib.parse.urlencode(form).encode("ascii"),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "Authorization": f"Basic {basic}",
            },
            "token endpoint",
        )
        if answer.status >= 300:
            error = _oauth_error_text(answer.body)
            raise DeliveryError(
                f"fhir: token endpoint {o.token_url} answered HTTP {answer.status}{error}",
                retryable=answer.status >= 500 or answer.status in RETRYABLE_CLIENT_STATUSES,
            )
        try:
            payload = json.loads(answer.body.decode("utf-8"))
            token = str(payload["access_token"])
            lifetime = float(payload.get("expires_in", 300))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DeliveryError(
                f"fhir: token endpoint {o.token_url} sent no usable access_token ({exc})",
                retryable=True,
            ) from exc
        return token, time.monotonic() + max(0.0, lifetime - TOKEN_EXPIRY_MARGIN_S)


def _oauth_error_text(body: bytes) -> str:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    if not isinstance(payload, dict) or "error" not in payload:
        return ""
    description = payload.get("error_description")
    return f": {payload['error']}" + (f" ({description})" if description else "")


class FhirDestination:
    """POST the item's Observation to ``<base_url>/Observation``.

    Creation is conditional (``If-None-Exist: identifier=<system>|<value>``) so a
    re-delivery after a lost response does not make a duplicate. Authenticates
    with a static bearer token or OAuth2 client credentials (token cached until it
    expires, renewed once on a 401).

    Parameters
    ----------
    settings : FhirDestinationSettings
        Base URL, FHIR version, authentication, TLS and timeout.
    name : str
        Destination name in the journal.
    """

    def __init__(self, settings: FhirDestinationSettings, name: str = "fhir") -> None:
        self.settings = settings
        self.name = name
        self._ssl_context = self._build_ssl_context()
        self._tokens = _TokenCache(settings.oauth2, self._send) if settings.oauth2 else None

    @property
    def observation_url(self) -> str:
        """Where Observations are created."""
        return f"{self.settings.base_url}/Observation"

    def deliver(self, item: DeliveryItem) -> DeliveryReceipt:
        """Create the Observation unless one with the same identifier exists.

        Returns
        -------
        DeliveryReceipt
            Detail ``"201 Observation/<id>"`` (created) or ``"200 Observation/<id>"``
            (already there).

        Raises
        ------
        DeliveryError
            Retryable on connection errors, timeouts, 408, 429 and 5xx; not
            retryable on other 4xx (with the server's OperationOutcome text) or
            when the item has no Observation of the configured version.
        """
        body, observation = self._read_observation(item)
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        query = conditional_create_query(observation)
        if query is not None:
            headers["If-None-Exist"] = query
        answer = self._post_with_auth(body, headers)
        if 200 <= answer.status < 300:
            where = _created_reference(answer)
            log.info("job %s delivered to %s: HTTP %d", item.job_id, self.name, answer.status)
            return DeliveryReceipt(self.name, f"{answer.status} {where}".strip())
        outcome = operation_outcome_text(answer.body)
        detail = f": {outcome}" if outcome else ""
        retryable = answer.status >= 500 or answer.status in RETRYABLE_CLIENT_STATUSES
        raise DeliveryError(
            f"fhir: POST {self.observation_url} for job {item.job_id} answered "
            f"HTTP {answer.status}{detail}",
            retryable=retryable,
        )

    def _read_observation(self, item: DeliveryItem) -> tuple[bytes, dict[str, Any]]:
        fmt = FILE_BY_VERSION[self.settings.version]
        path = item.files.get(fmt)
        if path is None:
            raise DeliveryError(
                f"fhir: job {item.job_id} has no {fmt} Observation for this "
                f"{self.settings.version} server",
                retryable=False,
            )
        try:
            body = Path(path).read_bytes()
            observation = json.loads(body.decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DeliveryError(
                f"fhir: job {item.job_id}: cannot read {Path(path).name}: {exc}",
                retryable=False,
            ) from exc
        if not isinstance(observation, dict) or observation.get("resourceType") != "Observation":
            raise DeliveryError(
                f"fhir: job {item.job_id}: {Path(path).name} is not an Observation",
                retryable=False,
            )
        return body, observation

    def _post_with_auth(self, body: bytes, headers: dict[str, str]) -> HttpAnswer:
        attempts = 2 if self._tokens is not None else 1
        answer: HttpAnswer | None = None
        for _ in range(attempts):
            auth = self._authorization()
            if auth:
                headers["Authorization"] = auth
            answer = self._send("POST", self.observation_url, body, headers, "FHIR server")
            if answer.status != 401 or self._tokens is None:
                break
            self._tokens.invalidate()  # expired or revoked early: fetch a new one once
        assert answer is not None
        return answer

    def _authorization(self) -> str | None:
        if self._tokens is not None:
            return f"Bearer {self._tokens.token()}"
        if self.settings.bearer_token is not None:
            return f"Bearer {self.settings.bearer_token.get_secret_value()}"
        return None

    def _build_ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.base_url.startswith("https://") and not (
            s.oauth2 and s.oauth2.token_url.startswith("https://")
        ):
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(s.ca_file) if s.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(
                f"fhir: cannot load ca_file {s.ca_file} ({exc})", retryable=False
            ) from exc
        if not s.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _send(
        self, method: str, url: str, body: bytes, headers: dict[str, str], peer: str
    ) -> HttpAnswer:
        request = urllib.request.Request(url, data=body, method=method)
        for key, value in headers.items():
            request.add_header(key, value)
        request.add_header("User-Agent", _USER_AGENT)
        try:
            with urllib.request.urlopen(
                request, timeout=self.settings.timeout_s, context=self._ssl_context
            ) as response:
                return HttpAnswer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:
            try:
                error_body = exc.read()
            except OSError:
                error_body = b""
            return HttpAnswer(exc.code, exc.headers, error_body)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise DeliveryError(
                    f"fhir: {peer} {_origin(url)}: TLS certificate not trusted ({reason})",
                    retryable=False,
                ) from exc
            raise DeliveryError(
                f"fhir: cannot reach {peer} {_origin(url)}: {reason}", retryable=True
            ) from exc
        except TimeoutError as exc:
            raise DeliveryError(
                f"fhir: {peer} {_origin(url)} did not answer within "
                f"{self.settings.timeout_s:g} s",
                retryable=True,
            ) from exc
        except (ConnectionError, OSError) as exc:
            raise DeliveryError(
                f"fhir: connection to {peer} {_origin(url)} failed: {exc}", retryable=True
            ) from exc


def _origin(url: str) -> str:
    """Scheme, host and port of `url` (no path or query, which might carry identifiers)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _created_reference(answer: HttpAnswer) -> str:
    """``Observation/<id>`` from the Location header or the returned body."""
    location = answer.headers.get("Location") or answer.headers.get("Content-Location")
    if location:
        path = urllib.parse.urlsplit(location).path
        segments = [seg for seg in path.split("/") if seg]
        if "Observation" in segments:
            i = segments.index("Observation")
            return "/".join(segments[i : i + 2])
        return location
    try:
        resource = json.loads(answer.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    if isinstance(resource, dict) and resource.get("id"):
        return f"{resource.get('resourceType', 'Observation')}/{resource['id']}"
    return ""
