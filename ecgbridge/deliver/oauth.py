"""OAuth 2.0 access tokens for the FHIR destination.

Two client-credentials flavours (RFC 6749 section 4.4):

* :class:`ClientSecretGrant`: client id and secret sent with HTTP Basic
  authentication.
* :class:`SmartBackendServicesGrant`: SMART App Launch "Backend Services": the
  client authenticates with a short-lived JWT (RFC 7523) signed with its private
  key (RS384 or ES384); the token endpoint may be discovered from
  ``<fhir base>/.well-known/smart-configuration``.

:class:`TokenCache` keeps a token until shortly before it expires.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ecgbridge.deliver.http import HttpAnswer, HttpTransport, is_retryable_http_status
from ecgbridge.deliver.settings import OAuth2ClientCredentials, SmartBackendServices
from ecgbridge.errors import DeliveryError

#: A token is renewed this many seconds before the server says it expires.
TOKEN_EXPIRY_MARGIN_S = 30.0
#: Lifetime assumed when the token response gives no ``expires_in``.
DEFAULT_TOKEN_LIFETIME_S = 300.0
#: Lifetime of a client assertion JWT (SMART allows at most 5 minutes).
ASSERTION_LIFETIME_S = 300
#: RFC 7523 client assertion type.
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Where SMART servers publish their endpoints, relative to the FHIR base.
SMART_CONFIGURATION_PATH = ".well-known/smart-configuration"
#: Bytes per ECDSA P-384 signature half (r or s) in JOSE's raw encoding.
_P384_COORDINATE_BYTES = 48

_FORM = "application/x-www-form-urlencoded"


class TokenGrant(Protocol):
    """Something that obtains a fresh access token."""

    def fetch(self) -> tuple[str, float]:
        """Return ``(access_token, lifetime_s)``."""
        ...


class TokenCache:
    """Hand out the current token; fetch a new one when it is about to expire.

    Parameters
    ----------
    grant : TokenGrant
        How tokens are obtained.
    clock : callable
        Monotonic clock (replaceable in tests).
    """

    def __init__(self, grant: TokenGrant, clock: Callable[[], float] = time.monotonic) -> None:
        self._grant = grant
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    def token(self) -> str:
        """The cached token, or a new one if none is valid."""
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                token, lifetime = self._grant.fetch()
                self._token = token
                self._renew_at = self._clock() + max(0.0, lifetime - TOKEN_EXPIRY_MARGIN_S)
            return self._token

    def invalidate(self) -> None:
        """Forget the token (the server refused it)."""
        with self._lock:
            self._token = None


def parse_token_response(answer: HttpAnswer, token_url: str) -> tuple[str, float]:
    """Return ``(access_token, lifetime_s)`` from a token endpoint's answer.

    Raises
    ------
    DeliveryError
        With the OAuth ``error`` code; retryable for 5xx/429, permanent for
        other refusals (``invalid_client``, ``invalid_scope`` ...).
    """
    if answer.status >= 300:
        raise DeliveryError(
            f"fhir: token endpoint {token_url} answered HTTP {answer.status}"
            f"{_oauth_error_text(answer.body)}",
            retryable=is_retryable_http_status(answer.status),
        )
    try:
        payload = json.loads(answer.body.decode("utf-8"))
        token = str(payload["access_token"])
        lifetime = float(payload.get("expires_in", DEFAULT_TOKEN_LIFETIME_S))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DeliveryError(
            f"fhir: token endpoint {token_url} sent no usable access_token ({exc})",
            retryable=True,
        ) from exc
    return token, lifetime


def _oauth_error_text(body: bytes) -> str:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    if not isinstance(payload, dict) or "error" not in payload:
        return ""
    description = payload.get("error_description")
    return f": {payload['error']}" + (f" ({description})" if description else "")


class ClientSecretGrant:
    """Client credentials with a client secret (HTTP Basic at the token endpoint)."""

    def __init__(self, settings: OAuth2ClientCredentials, http: HttpTransport) -> None:
        self.settings = settings
        self.http = http

    def fetch(self) -> tuple[str, float]:
        s = self.settings
        form = {"grant_type": "client_credentials"}
        if s.scope:
            form["scope"] = s.scope
        # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding.
        pair = f"{urllib.parse.quote(s.client_id)}:"
        pair += urllib.parse.quote(s.client_secret.get_secret_value())
        basic = base64.b64encode(pair.encode("utf-8")).decode("ascii")
        answer = self.http.request(
            "POST",
            s.token_url,
            urllib.parse.urlencode(form).encode("ascii"),
            {"Content-Type": _FORM, "Accept": "application/json",
             "Authorization": f"Basic {basic}"},
            peer="token endpoint",
        )
        return parse_token_response(answer, s.token_url)


class SmartBackendServicesGrant:
    """SMART Backend Services: client credentials with a signed JWT assertion.

    Parameters
    ----------
    settings : SmartBackendServices
        Client id, key, algorithm, scope and (optionally) the token endpoint.
    fhir_base_url : str
        Used to discover the token endpoint when the settings give none.
    http : HttpTransport
        Transport.

    Raises
    ------
    DeliveryError
        Not retryable, if the private key cannot be read, does not suit the
        algorithm, or the ``cryptography`` package is missing.
    """

    def __init__(
        self, settings: SmartBackendServices, fhir_base_url: str, http: HttpTransport
    ) -> None:
        self.settings = settings
        self.fhir_base_url = fhir_base_url.rstrip("/")
        self.http = http
        self._sign = load_jws_signer(settings.private_key_file, settings.algorithm)
        self._token_url = settings.token_url

    def token_url(self) -> str:
        """The token endpoint, discovered once from the SMART configuration if needed."""
        if self._token_url is None:
            self._token_url = discover_token_endpoint(self.fhir_base_url, self.http)
        return self._token_url

    def client_assertion(self, now: float | None = None) -> str:
        """A signed JWT identifying this client to the token endpoint."""
        s = self.settings
        issued = int(time.time() if now is None else now)
        header = {"alg": s.algorithm, "kid": s.key_id, "typ": "JWT"}
        claims = {
            "iss": s.client_id,
            "sub": s.client_id,
            "aud": self.token_url(),
            "exp": issued + ASSERTION_LIFETIME_S,
            "jti": uuid.uuid4().hex,
        }
        signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}".encode("ascii")
        return f"{signing_input.decode('ascii')}.{_b64url(self._sign(signing_input))}"

    def fetch(self) -> tuple[str, float]:
        token_url = self.token_url()
        form = {
            "grant_type": "client_credentials",
            "scope": self.settings.scope,
            "client_assertion_type": JWT_BEARER_ASSERTION,
            "client_assertion": self.client_assertion(),
        }
        answer = self.http.request(
            "POST",
            token_url,
            urllib.parse.urlencode(form).encode("ascii"),
            {"Content-Type": _FORM, "Accept": "application/json"},
            peer="token endpoint",
        )
        return parse_token_response(answer, token_url)


def discover_token_endpoint(fhir_base_url: str, http: HttpTransport) -> str:
    """Read ``token_endpoint`` from ``<base>/.well-known/smart-configuration``.

    Raises
    ------
    DeliveryError
        Retryable if the server cannot be reached or answers 5xx; not retryable if
        it publishes no SMART configuration with a token endpoint.
    """
    url = f"{fhir_base_url.rstrip('/')}/{SMART_CONFIGURATION_PATH}"
    answer = http.request("GET", url, None, {"Accept": "application/json"}, peer="FHIR server")
    if answer.status >= 300:
        raise DeliveryError(
            f"fhir: {SMART_CONFIGURATION_PATH} answered HTTP {answer.status}; set "
            f"fhir.smart.token_url",
            retryable=is_retryable_http_status(answer.status),
        )
    try:
        endpoint = json.loads(answer.body.decode("utf-8"))["token_endpoint"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DeliveryError(
            f"fhir: {SMART_CONFIGURATION_PATH} has no token_endpoint; set fhir.smart.token_url",
            retryable=False,
        ) from exc
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise DeliveryError(
            f"fhir: {SMART_CONFIGURATION_PATH} gives an invalid token_endpoint {endpoint!r}",
            retryable=False,
        )
    return endpoint


def load_jws_signer(key_file: Path, algorithm: str) -> Callable[[bytes], bytes]:
    """Return a function signing bytes with the PEM private key for JWS `algorithm`.

    Supports RS384 (RSA PKCS#1 v1.5, SHA-384) and ES384 (ECDSA P-384, SHA-384,
    raw ``r || s`` signature as JWS requires).

    Raises
    ------
    DeliveryError
        Not retryable, if the key cannot be loaded or does not fit `algorithm`.
    """
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
    except ImportError as exc:
        raise DeliveryError(
            "fhir.smart needs the 'cryptography' package (pip install cryptography)",
            retryable=False,
        ) from exc
    try:
        key: Any = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DeliveryError(
            f"fhir.smart.private_key_file {key_file}: not an unencrypted PEM private key ({exc})",
            retryable=False,
        ) from exc
    if algorithm == "RS384":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DeliveryError(
                f"fhir.smart.private_key_file {key_file}: RS384 needs an RSA key",
                retryable=False,
            )
        return lambda data: bytes(key.sign(data, padding.PKCS1v15(), hashes.SHA384()))
    if algorithm == "ES384":
        if not (isinstance(key, ec.EllipticCurvePrivateKey)
                and isinstance(key.curve, ec.SECP384R1)):
            raise DeliveryError(
                f"fhir.smart.private_key_file {key_file}: ES384 needs an EC P-384 key",
                retryable=False,
            )

        def sign_es384(data: bytes) -> bytes:
            r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384())))
            return r.to_bytes(_P384_COORDINATE_BYTES, "big") + s.to_bytes(
                _P384_COORDINATE_BYTES, "big"
            )

        return sign_es384
    raise DeliveryError(f"fhir.smart.algorithm {algorithm!r} is not supported", retryable=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))
