"""A small HTTP(S) client on ``urllib.request`` that reports failures as DeliveryError.

HTTP error statuses are returned, not raised: the caller decides what a 4xx or
5xx means. Network failures (refused, unreachable, timeout) raise a retryable
:class:`~ecgbridge.errors.DeliveryError`; an untrusted TLS certificate raises a
permanent one. Messages name the peer by scheme, host and port only, since paths
and queries may carry identifiers.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Protocol

from ecgbridge.errors import DeliveryError

#: HTTP statuses worth retrying besides 5xx: request timeout, too many requests.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})

USER_AGENT = "ecgbridge"


def is_retryable_http_status(status: int) -> bool:
    """Whether a request answered with `status` may succeed later (5xx, 408, 429)."""
    return status >= 500 or status in RETRYABLE_CLIENT_STATUSES


def origin(url: str) -> str:
    """Scheme, host and port of `url` (no path or query)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def build_ssl_context(ca_file: Path | None, verify: bool) -> ssl.SSLContext:
    """Return a client SSL context trusting `ca_file` (or the system store).

    Raises
    ------
    DeliveryError
        Not retryable, if `ca_file` cannot be loaded.
    """
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"cannot load ca_file {ca_file} ({exc})", retryable=False) from exc
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class HttpAnswer:
    """Status, headers and body of one HTTP exchange."""

    status: int
    headers: Message
    body: bytes


class HttpTransport(Protocol):
    """What the FHIR and OAuth2 clients send their requests through (:class:`HttpClient`,
    or a test's own transport)."""

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, peer: str = "server") -> HttpAnswer:
        """Send a request and return the answer, whatever its status (see HttpClient)."""


class HttpClient:
    """Send one request at a time with a timeout and an optional SSL context.

    Parameters
    ----------
    timeout_s : float
        Seconds allowed for connecting and for each read.
    ssl_context : ssl.SSLContext, optional
        Used for ``https://`` URLs.
    label : str
        Prefix of error messages (e.g. ``"fhir"``).
    """

    def __init__(
        self, timeout_s: float, ssl_context: ssl.SSLContext | None = None, label: str = "http"
    ) -> None:
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        self.label = label

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        peer: str = "server",
    ) -> HttpAnswer:
        """Send a request and return the answer, whatever its status.

        Raises
        ------
        DeliveryError
            Retryable when the server cannot be reached or does not answer in
            time; not retryable when its TLS certificate is not trusted.
        """
        request = urllib.request.Request(url, data=body, method=method)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        request.add_header("User-Agent", USER_AGENT)
        where = f"{peer} {origin(url)}"
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout_s, context=self.ssl_context
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
                    f"{self.label}: {where}: TLS certificate not trusted ({reason})",
                    retryable=False,
                ) from exc
            raise DeliveryError(
                f"{self.label}: cannot reach {where}: {reason}", retryable=True
            ) from exc
        except TimeoutError as exc:
            raise DeliveryError(
                f"{self.label}: {where} did not answer within {self.timeout_s:g} s",
                retryable=True,
            ) from exc
        except OSError as exc:
            raise DeliveryError(
                f"{self.label}: connection to {where} failed: {exc}", retryable=True
            ) from exc
