"""FHIR REST client: create the ECG Observation on a FHIR server (idempotently)."""

from __future__ import annotations

import json
import logging
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

from ecgbridge.deliver.base import DeliveryItem, DeliveryReceipt
from ecgbridge.deliver.http import (
    HttpAnswer,
    HttpClient,
    HttpTransport,
    build_ssl_context,
    is_retryable_http_status,
)
from ecgbridge.deliver.oauth import ClientSecretGrant, SmartBackendServicesGrant, TokenCache
from ecgbridge.deliver.settings import FhirDestinationSettings
from ecgbridge.errors import DeliveryError

log = logging.getLogger(__name__)

#: MIME type of FHIR JSON (FHIR R4/R5 http.html#mime-type).
FHIR_JSON = "application/fhir+json"

#: Item file per FHIR version.
FILE_BY_VERSION: dict[str, str] = {"R4": "fhir-r4", "R5": "fhir-r5"}

#: Longest OperationOutcome text quoted in an error message.
MAX_DIAGNOSTICS_CHARS = 600


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


class FhirDestination:
    """POST the item's Observation to ``<base_url>/Observation``.

    Creation is conditional (``If-None-Exist: identifier=<system>|<value>``) so a
    re-delivery after a lost response does not make a duplicate. Authenticates
    with a static bearer token, OAuth2 client credentials or SMART Backend
    Services (tokens cached until they expire, renewed once on a 401).

    Parameters
    ----------
    settings : FhirDestinationSettings
        Base URL, FHIR version, authentication, TLS and timeout.
    name : str
        Destination name in the journal.
    transport : HttpTransport, optional
        What requests go through (server and token endpoint); by default an
        :class:`~ecgbridge.deliver.http.HttpClient` with the settings' timeout and TLS.
    """

    def __init__(
        self,
        settings: FhirDestinationSettings,
        name: str = "fhir",
        *,
        transport: HttpTransport | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self._http: HttpTransport = transport or HttpClient(
            settings.timeout_s, self._ssl_context(), label="fhir"
        )
        self._tokens: TokenCache | None = None
        if settings.oauth2 is not None:
            self._tokens = TokenCache(ClientSecretGrant(settings.oauth2, self._http))
        elif settings.smart is not None:
            self._tokens = TokenCache(
                SmartBackendServicesGrant(settings.smart, settings.base_url, self._http)
            )

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        urls = [s.base_url]
        if s.oauth2 is not None:
            urls.append(s.oauth2.token_url)
        if s.smart is not None and s.smart.token_url is not None:
            urls.append(s.smart.token_url)
        if not any(url.startswith("https://") for url in urls):
            return None
        return build_ssl_context(s.ca_file, s.verify_tls)

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
        retryable = is_retryable_http_status(answer.status)
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
            answer = self._http.request(
                "POST", self.observation_url, body, headers, peer="FHIR server"
            )
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
