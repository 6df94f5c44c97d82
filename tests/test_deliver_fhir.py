"""FHIR delivery against a real FHIR server: the Medplum router with its in-memory
repository (tests/fhir_server/server.js) on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from peers import (
    FhirTestServer,
    fhir_server_unavailable,
    free_port,
    make_delivery_item,
    running_fhir_server,
)
from pydantic import SecretStr

from ecgbridge.deliver.base import DeliveryItem
from ecgbridge.deliver.fhir_client import (
    FhirDestination,
    conditional_create_query,
    operation_outcome_text,
)
from ecgbridge.deliver.http import HttpAnswer, HttpClient
from ecgbridge.deliver.oauth import SmartBackendServicesGrant
from ecgbridge.deliver.settings import (
    FhirDestinationSettings,
    OAuth2ClientCredentials,
    SmartBackendServices,
)
from ecgbridge.errors import DeliveryError

pytestmark = pytest.mark.network

MDC_ECG_ELEC_POTL = "131328"
TOKEN = "static-test-token"
CLIENT_ID = "ecgbridge"
CLIENT_SECRET = "s3cret:with/odd chars"


def _require_server() -> None:
    reason = fhir_server_unavailable()
    if reason is not None:
        pytest.skip(f"FHIR test server unavailable: {reason}")


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[FhirTestServer]:
    _require_server()
    with running_fhir_server() as server:
        yield server


@pytest.fixture()
def server(fhir_server: FhirTestServer) -> Iterator[FhirTestServer]:
    fhir_server.control(fail=0)
    yield fhir_server
    fhir_server.control(fail=0)


@pytest.fixture()
def item(tmp_path: Path) -> DeliveryItem:
    return make_delivery_item(tmp_path / "encoded", job_id="job-fhir-1")


def _settings(server: FhirTestServer, **changes: Any) -> FhirDestinationSettings:
    values: dict[str, Any] = {"enabled": True, "base_url": server.base_url, "timeout_s": 10.0}
    values.update(changes)
    return FhirDestinationSettings(**values)


def _identifier(item: DeliveryItem) -> dict[str, str]:
    observation = json.loads(Path(item.files["fhir-r4"]).read_text(encoding="utf-8"))
    first: dict[str, str] = observation["identifier"][0]
    return first


def _search_by_identifier(server: FhirTestServer, item: DeliveryItem) -> list[dict[str, Any]]:
    ident = _identifier(item)
    from urllib.parse import quote

    bundle = server.get(f"Observation?identifier={quote(ident['system'] + '|' + ident['value'])}")
    return [entry["resource"] for entry in bundle.get("entry", [])]


def test_post_creates_the_observation_and_search_by_code_finds_it(
    server: FhirTestServer, item: DeliveryItem
) -> None:
    receipt = FhirDestination(_settings(server)).deliver(item)

    assert receipt.destination == "fhir"
    assert receipt.detail.startswith("201 Observation/")
    created_id = receipt.detail.split("/")[1]
    bundle = server.get(f"Observation?code={MDC_ECG_ELEC_POTL}")
    ids = [entry["resource"]["id"] for entry in bundle.get("entry", [])]
    assert created_id in ids
    stored = server.get(f"Observation/{created_id}")
    assert len(stored["component"]) == 12
    assert stored["identifier"][0] == _identifier(item)


def test_redelivery_does_not_duplicate(server: FhirTestServer, item: DeliveryItem) -> None:
    destination = FhirDestination(_settings(server))

    first = destination.deliver(item)
    second = destination.deliver(item)

    assert first.detail.startswith("201 Observation/")
    assert second.detail == "200 " + first.detail.split(" ", 1)[1]
    assert len(_search_by_identifier(server, item)) == 1


def test_server_error_is_retryable_then_delivery_succeeds(
    server: FhirTestServer, item: DeliveryItem
) -> None:
    destination = FhirDestination(_settings(server))
    server.control(fail=503)

    with pytest.raises(DeliveryError) as caught:
        destination.deliver(item)
    assert caught.value.retryable is True
    assert "HTTP 503" in str(caught.value)
    assert "test server told to fail" in str(caught.value)

    server.control(fail=0)
    assert destination.deliver(item).detail.startswith("201 ")


def test_too_many_requests_is_retryable(server: FhirTestServer, item: DeliveryItem) -> None:
    server.control(fail=429)
    with pytest.raises(DeliveryError) as caught:
        FhirDestination(_settings(server)).deliver(item)
    assert caught.value.retryable is True
    assert "HTTP 429" in str(caught.value)


def test_invalid_observation_is_not_retryable_and_quotes_the_outcome(
    server: FhirTestServer, item: DeliveryItem, tmp_path: Path
) -> None:
    observation = json.loads(Path(item.files["fhir-r4"]).read_text(encoding="utf-8"))
    del observation["code"]  # Observation.code is required (1..1)
    broken = tmp_path / "broken.fhir-r4.json"
    broken.write_text(json.dumps(observation), encoding="utf-8")
    bad_item = DeliveryItem(job_id="job-broken", files={"fhir-r4": broken})

    with pytest.raises(DeliveryError) as caught:
        FhirDestination(_settings(server)).deliver(bad_item)

    message = str(caught.value)
    assert caught.value.retryable is False
    assert "HTTP 400" in message
    assert "Missing required property" in message
    assert "Observation.code" in message
    assert "job-broken" in message


def test_r5_body_sent_to_an_r4_server_is_refused(
    server: FhirTestServer, item: DeliveryItem, tmp_path: Path
) -> None:
    observation = json.loads(Path(item.files["fhir-r4"]).read_text(encoding="utf-8"))
    for component in observation["component"]:
        sampled = component["valueSampledData"]
        sampled["interval"] = sampled.pop("period")  # R5 spelling, unknown in R4
        sampled["intervalUnit"] = "ms"
    r5 = tmp_path / "r5.json"
    r5.write_text(json.dumps(observation), encoding="utf-8")

    with pytest.raises(DeliveryError) as caught:
        FhirDestination(_settings(server)).deliver(DeliveryItem("job-r5", {"fhir-r4": r5}))

    assert caught.value.retryable is False
    assert "HTTP 400" in str(caught.value)


def test_connection_refused_is_retryable(item: DeliveryItem) -> None:
    port = free_port()  # nobody listens there
    settings = FhirDestinationSettings(
        enabled=True, base_url=f"http://127.0.0.1:{port}/fhir", timeout_s=5.0
    )

    with pytest.raises(DeliveryError) as caught:
        FhirDestination(settings).deliver(item)

    assert caught.value.retryable is True
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_missing_observation_of_the_configured_version(
    server: FhirTestServer, item: DeliveryItem
) -> None:
    destination = FhirDestination(_settings(server, version="R5"))
    with pytest.raises(DeliveryError) as caught:
        destination.deliver(item)
    assert caught.value.retryable is False
    assert "fhir-r5" in str(caught.value)


def test_no_patient_data_or_secrets_in_logs(
    server: FhirTestServer, item: DeliveryItem, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    FhirDestination(_settings(server)).deliver(item)
    observation = Path(item.files["fhir-r4"]).read_text(encoding="utf-8")
    identifier = _identifier(item)["value"]
    assert caplog.records, "delivery should log its outcome"
    for record in caplog.records:
        text = record.getMessage()
        assert identifier not in text
        assert observation[:200] not in text


def test_silent_server_times_out_as_retryable(item: DeliveryItem) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections in the backlog, never answers
        port = listener.getsockname()[1]
        settings = FhirDestinationSettings(
            enabled=True, base_url=f"http://127.0.0.1:{port}/fhir", timeout_s=1.0
        )
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            FhirDestination(settings).deliver(item)
        elapsed = time.monotonic() - started
    assert caught.value.retryable is True
    assert elapsed < 5.0
    assert f"127.0.0.1:{port}" in str(caught.value)


# --- HTTPS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FhirTestServer, Path]]:
    _require_server()
    trustme = pytest.importorskip("trustme", reason="trustme generates the test certificates")
    folder = tmp_path_factory.mktemp("https")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    cert_file.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    key_file.write_bytes(cert.private_key_pem.bytes())
    ca_file.write_bytes(ca.cert_pem.bytes())
    with running_fhir_server("--tls", str(cert_file), str(key_file)) as server:
        yield server, ca_file


def test_https_with_the_configured_ca(
    https_server: tuple[FhirTestServer, Path], item: DeliveryItem
) -> None:
    server, ca_file = https_server
    destination = FhirDestination(_settings(server, ca_file=ca_file))
    assert server.base_url.startswith("https://")
    assert destination.deliver(item).detail.startswith("201 Observation/")


def test_https_with_an_untrusted_certificate_is_not_retryable(
    https_server: tuple[FhirTestServer, Path], item: DeliveryItem
) -> None:
    server, _ = https_server
    with pytest.raises(DeliveryError) as caught:
        FhirDestination(_settings(server)).deliver(item)  # system trust store only
    assert caught.value.retryable is False
    assert "certificate" in str(caught.value)

    unverified = FhirDestination(_settings(server, verify_tls=False))
    assert unverified.deliver(item).detail.startswith("201 ")


# --- authentication ------------------------------------------------------------------


def test_static_bearer_token(item: DeliveryItem) -> None:
    _require_server()
    with running_fhir_server("--token", TOKEN) as secured:
        anonymous = FhirDestination(_settings(secured))
        with pytest.raises(DeliveryError) as caught:
            anonymous.deliver(item)
        assert "HTTP 401" in str(caught.value)
        assert caught.value.retryable is False

        authorised = FhirDestination(_settings(secured, bearer_token=TOKEN))
        assert authorised.deliver(item).detail.startswith("201 ")


def test_oauth2_client_credentials_token_is_cached_and_renewed(
    item: DeliveryItem, tmp_path: Path
) -> None:
    _require_server()
    with running_fhir_server("--client", f"{CLIENT_ID}:{CLIENT_SECRET}") as secured:
        oauth2 = OAuth2ClientCredentials(
            token_url=secured.token_url,
            client_id=CLIENT_ID,
            client_secret=SecretStr(CLIENT_SECRET),
            scope="system/Observation.write",
        )
        destination = FhirDestination(_settings(secured, oauth2=oauth2))
        destination.deliver(item)
        second = make_delivery_item(tmp_path / "second", job_id="job-fhir-2")
        destination.deliver(second)
        assert secured.control()["tokensIssued"] == 1  # cached between deliveries

        secured.control(revoke=1)  # the server forgets the token: a 401 triggers renewal
        third = make_delivery_item(tmp_path / "third", job_id="job-fhir-3")
        assert destination.deliver(third).detail.startswith("201 ")
        assert secured.control()["tokensIssued"] == 2


def test_oauth2_wrong_secret_is_not_retryable(item: DeliveryItem) -> None:
    _require_server()
    with running_fhir_server("--client", f"{CLIENT_ID}:{CLIENT_SECRET}") as secured:
        oauth2 = OAuth2ClientCredentials(
            token_url=secured.token_url, client_id=CLIENT_ID, client_secret=SecretStr("wrong")
        )
        with pytest.raises(DeliveryError) as caught:
            FhirDestination(_settings(secured, oauth2=oauth2)).deliver(item)
    assert caught.value.retryable is False
    assert "invalid_client" in str(caught.value)
    assert "wrong" not in str(caught.value)


# --- pure helpers --------------------------------------------------------------------


def test_conditional_create_query_encodes_the_first_full_identifier() -> None:
    observation = {
        "identifier": [
            {"value": "no-system"},
            {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1 2&3"},
        ]
    }
    assert conditional_create_query(observation) == (
        "identifier=urn:ietf:rfc:3986|urn:uuid:1%202%263"
    )
    assert conditional_create_query({"identifier": [{"value": "x"}]}) is None


def test_operation_outcome_text_reads_diagnostics_and_details() -> None:
    body = json.dumps({
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "invalid", "diagnostics": "bad period"},
            {"severity": "error", "code": "structure", "details": {"text": "Missing"},
             "expression": ["Observation.code"]},
        ],
    }).encode()
    assert operation_outcome_text(body) == (
        "error invalid: bad period; error structure: Missing [Observation.code]"
    )
    assert operation_outcome_text(b"<html>oops</html>") == ""


# --- SMART Backend Services ------------------------------------------------------------


@pytest.fixture(scope="module")
def smart_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Private keys (PEM) generated at test time, and the public keys the server trusts."""
    pytest.importorskip("cryptography", reason="SMART Backend Services signs with cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    folder = tmp_path_factory.mktemp("smart")
    keys: dict[str, Any] = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP384R1()),
        "other_rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    paths: dict[str, Path] = {}
    for name, key in keys.items():
        paths[name] = folder / f"{name}.key"
        paths[name].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        paths[f"{name}_public"] = folder / f"{name}.pub.pem"
        paths[f"{name}_public"].write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
        ))
    return paths


def _smart(private_key: Path, **changes: Any) -> SmartBackendServices:
    values: dict[str, Any] = {
        "client_id": CLIENT_ID, "private_key_file": private_key, "key_id": "key-1",
        "scope": "system/Observation.c",
    }
    values.update(changes)
    return SmartBackendServices(**values)


def test_smart_backend_services_rs384_with_discovery(
    smart_keys: dict[str, Path], item: DeliveryItem, tmp_path: Path
) -> None:
    _require_server()
    with running_fhir_server(
        "--smart-client", f"{CLIENT_ID}:{smart_keys['rsa_public']}"
    ) as secured:
        destination = FhirDestination(_settings(secured, smart=_smart(smart_keys["rsa"])))
        assert destination.deliver(item).detail.startswith("201 Observation/")
        second = make_delivery_item(tmp_path / "second", job_id="job-smart-2")
        assert destination.deliver(second).detail.startswith("201 Observation/")
        assert secured.control()["tokensIssued"] == 1


def test_smart_backend_services_es384_with_explicit_token_url(
    smart_keys: dict[str, Path], item: DeliveryItem
) -> None:
    _require_server()
    with running_fhir_server(
        "--smart-client", f"{CLIENT_ID}:{smart_keys['ec_public']}"
    ) as secured:
        smart = _smart(smart_keys["ec"], algorithm="ES384", token_url=secured.token_url)
        destination = FhirDestination(_settings(secured, smart=smart))
        assert destination.deliver(item).detail.startswith("201 Observation/")


def test_smart_client_assertion_claims(smart_keys: dict[str, Path]) -> None:
    token_url = "https://auth.example.org/token"
    grant = SmartBackendServicesGrant(
        _smart(smart_keys["ec"], algorithm="ES384", token_url=token_url),
        "https://fhir.example.org/r4",
        HttpClient(timeout_s=1.0),
    )
    now = 1_800_000_000
    header_b64, claims_b64, signature_b64 = grant.client_assertion(now=now).split(".")

    def decode(part: str) -> Any:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    assert decode(header_b64) == {"alg": "ES384", "kid": "key-1", "typ": "JWT"}
    claims = decode(claims_b64)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == token_url
    assert claims["exp"] == now + 300
    assert len(claims["jti"]) >= 16
    assert len(base64.urlsafe_b64decode(signature_b64 + "==")) == 96  # raw r || s


def test_smart_with_an_unregistered_key_is_not_retryable(
    smart_keys: dict[str, Path], item: DeliveryItem
) -> None:
    _require_server()
    with running_fhir_server(
        "--smart-client", f"{CLIENT_ID}:{smart_keys['rsa_public']}"
    ) as secured:
        destination = FhirDestination(_settings(secured, smart=_smart(smart_keys["other_rsa"])))
        with pytest.raises(DeliveryError) as caught:
            destination.deliver(item)
    assert caught.value.retryable is False
    assert "invalid_client" in str(caught.value)
    assert "bad signature" in str(caught.value)


def test_smart_key_must_fit_the_algorithm(smart_keys: dict[str, Path]) -> None:
    settings = FhirDestinationSettings(
        enabled=True, smart=_smart(smart_keys["rsa"], algorithm="ES384")
    )
    with pytest.raises(DeliveryError) as caught:
        FhirDestination(settings)
    assert caught.value.retryable is False
    assert "ES384 needs an EC P-384 key" in str(caught.value)


class _RecordingTransport:
    """A transport that keeps each request and answers 201 like a FHIR server."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes | None, dict[str, str]]] = []

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, peer: str = "server") -> HttpAnswer:
        self.requests.append((method, url, body, dict(headers or {})))
        answer_headers = Message()
        answer_headers["Location"] = "http://fhir.test/fhir/Observation/42/_history/1"
        return HttpAnswer(201, answer_headers, b"")


def test_an_injected_transport_carries_the_conditional_create(item: DeliveryItem) -> None:
    transport = _RecordingTransport()
    settings = FhirDestinationSettings(enabled=True, base_url="http://fhir.test/fhir",
                                       bearer_token=SecretStr(TOKEN))
    receipt = FhirDestination(settings, transport=transport).deliver(item)

    assert receipt.detail == "201 Observation/42"
    [(method, url, body, headers)] = transport.requests
    assert (method, url) == ("POST", "http://fhir.test/fhir/Observation")
    assert body == Path(item.files["fhir-r4"]).read_bytes()
    ident = _identifier(item)
    assert headers["If-None-Exist"].startswith("identifier=" + ident["system"])
    assert headers["Authorization"] == f"Bearer {TOKEN}"
