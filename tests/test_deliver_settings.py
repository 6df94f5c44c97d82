"""Destination settings (validation, documentation) and build_destinations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from ecgbridge.deliver import build_destinations
from ecgbridge.deliver.dicom_store import DicomStoreDestination
from ecgbridge.deliver.fhir_client import FhirDestination
from ecgbridge.deliver.outbox import OutboxDestination
from ecgbridge.deliver.settings import (
    DicomDestinationSettings,
    DicomTlsSettings,
    FhirDestinationSettings,
    OAuth2ClientCredentials,
    OutboxSettings,
    SmartBackendServices,
)


def test_defaults_match_the_documented_ones() -> None:
    outbox = OutboxSettings()
    assert outbox.enabled is True
    assert outbox.path == Path("./outbox")
    assert outbox.formats == ["dicom", "fhir-r4", "json"]
    dicom = DicomDestinationSettings()
    assert dicom.enabled is False
    assert dicom.calling_ae_title == "ECGBRIDGE"
    assert dicom.tls is None
    fhir = FhirDestinationSettings()
    assert fhir.enabled is False
    assert fhir.version == "R4"
    assert fhir.verify_tls is True


@pytest.mark.parametrize(
    "model",
    [OutboxSettings, DicomDestinationSettings, DicomTlsSettings, FhirDestinationSettings,
     OAuth2ClientCredentials, SmartBackendServices],
)
def test_every_field_is_documented(model: type[BaseModel]) -> None:
    for name, info in model.model_fields.items():
        assert info.description and len(info.description) > 10, f"{model.__name__}.{name}"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ae_title": "A" * 17}, "longer than 16"),
        ({"ae_title": "  "}, "must not be empty"),
        ({"calling_ae_title": "BAD\\AE"}, "without backslash"),
        ({"port": 0}, "port"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"host": ""}, "dicom.host"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_dicom_settings_reject_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DicomDestinationSettings(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(caught.value)


def test_tls_needs_key_and_certificate_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cert_file and key_file"):
        DicomTlsSettings(cert_file=tmp_path / "c.pem")


def test_outbox_formats_are_checked_and_normalised() -> None:
    assert OutboxSettings(formats=["DICOM", "json", "json"]).formats == ["dicom", "json"]
    with pytest.raises(ValidationError, match="'pdf'"):
        OutboxSettings(formats=["pdf"])


def test_fhir_settings() -> None:
    s = FhirDestinationSettings(
        base_url="https://fhir.example.org/r4/", bearer_token=SecretStr("t0ken")
    )
    assert s.base_url == "https://fhir.example.org/r4"
    assert "t0ken" not in repr(s)
    with pytest.raises(ValidationError, match="must start with http"):
        FhirDestinationSettings(base_url="fhir.example.org")
    with pytest.raises(ValidationError, match="only one of bearer_token, oauth2 or smart"):
        FhirDestinationSettings(
            bearer_token=SecretStr("t"),
            oauth2=OAuth2ClientCredentials(
                token_url="https://auth.example.org/token",
                client_id="c",
                client_secret=SecretStr("s"),
            ),
        )
    with pytest.raises(ValidationError, match="R4"):
        FhirDestinationSettings(version="DSTU2")  # type: ignore[arg-type]


def test_build_destinations_keeps_enabled_ones_in_order(tmp_path: Path) -> None:
    destinations = build_destinations(
        OutboxSettings(path=tmp_path),
        DicomDestinationSettings(enabled=True, ae_title="PACS", port=11112),
        FhirDestinationSettings(enabled=True),
    )
    assert [type(d) for d in destinations] == [
        OutboxDestination, DicomStoreDestination, FhirDestination,
    ]
    assert [d.name for d in destinations] == ["outbox", "dicom", "fhir"]

    only_outbox = build_destinations(
        OutboxSettings(path=tmp_path), DicomDestinationSettings(), FhirDestinationSettings()
    )
    assert [d.name for d in only_outbox] == ["outbox"]
    assert build_destinations(OutboxSettings(enabled=False), None, None) == []
