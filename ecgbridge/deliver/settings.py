"""Settings of the three destinations (outbox folder, DICOM C-STORE, FHIR REST).

These pydantic models are embedded in the daemon's configuration file; every
field carries a description that the example YAML reuses, so keep them
self-explanatory for a hospital integration engineer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

#: Output formats the outbox accepts (names of :mod:`ecgbridge.encode.registry`).
#: Fields of ``deliver.outbox.naming``.
OUTBOX_NAME_FIELDS: tuple[str, ...] = ("job_id", "input", "date", "time")
OUTBOX_FORMATS: tuple[str, ...] = (
    "dicom", "fhir-r4", "fhir-r5", "json", "wfdb", "csv", "overlay",
)

#: Longest AE title DICOM allows (PS3.5 "AE" value representation).
MAX_AE_TITLE_LENGTH = 16


def _check_ae_title(value: str, field_name: str) -> str:
    """Return a valid AE title or raise ValueError naming the field."""
    stripped = value.strip()
    if not stripped:
        raise ValueError(f"{field_name} must not be empty")
    if len(stripped) > MAX_AE_TITLE_LENGTH:
        raise ValueError(
            f"{field_name} {stripped!r} is longer than {MAX_AE_TITLE_LENGTH} characters"
        )
    if "\\" in stripped or any(ord(ch) < 0x20 or ord(ch) > 0x7E for ch in stripped):
        raise ValueError(
            f"{field_name} {stripped!r} must be printable ASCII without backslash"
        )
    return stripped


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutboxSettings(_Settings):
    """A folder the encoded files are copied into, one set per job."""

    enabled: bool = Field(
        default=True,
        description="Copy each job's encoded files into the outbox folder.",
    )
    path: Path = Field(
        default=Path("./outbox"),
        description=(
            "Folder receiving <job_id>.dcm, <job_id>.fhir-r4.json, <job_id>.json ...; "
            "created if missing. Files appear atomically (written then renamed)."
        ),
    )
    formats: list[str] = Field(
        default_factory=lambda: ["dicom", "fhir-r4", "json"],
        description=(
            "Which encoded formats to copy: any of dicom, fhir-r4, fhir-r5, json, wfdb, "
            "csv, overlay."
        ),
    )
    naming: str = Field(
        default="{job_id}",
        description=(
            "Stem of each job's outbox files; must contain {job_id}; may add {input} (the "
            "received file's name without suffix: often patient data), {date} and {time} "
            "(of receipt, UTC, 20261204 / 073000), e.g. \"{date}_{input}_{job_id}\"."
        ),
    )

    file_mode: str | None = Field(
        default=None,
        description=(
            "Permissions of the outbox files as quoted octal text, e.g. '0640'; empty: "
            "0666 minus the daemon's umask, as for any new file."
        ),
    )

    @field_validator("file_mode", mode="before")
    @classmethod
    def _octal_mode(cls, value: Any) -> Any:
        from ecgbridge.fsutil import parse_file_mode

        parse_file_mode(value)  # ValueError names what is wrong
        return value or None

    @field_validator("naming")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        import string

        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"not a naming pattern: {exc}") from None
        unknown = sorted(fields - set(OUTBOX_NAME_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; use "
                             f"{', '.join('{' + f + '}' for f in OUTBOX_NAME_FIELDS)}")
        if "job_id" not in fields:
            raise ValueError("must contain {job_id} (it keeps the names of two jobs apart)")
        if "/" in value or "\\" in value:
            raise ValueError("must be a file name, without folders")
        return value

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        names = [v.strip().lower() for v in value]
        unknown = [n for n in names if n not in OUTBOX_FORMATS]
        if unknown:
            raise ValueError(
                f"unknown outbox format(s) {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(OUTBOX_FORMATS)}"
            )
        return list(dict.fromkeys(names))


class DicomTlsSettings(_Settings):
    """TLS for the DICOM association (DICOM PS3.15 Annex B secure transport)."""

    ca_file: Path | None = Field(
        default=None,
        description=(
            "PEM file of the certificate authorities trusted to sign the peer's "
            "certificate; empty uses the system trust store."
        ),
    )
    cert_file: Path | None = Field(
        default=None,
        description="PEM client certificate presented to the peer (for mutual TLS).",
    )
    key_file: Path | None = Field(
        default=None,
        description="PEM private key of cert_file (unencrypted); required with cert_file.",
    )
    verify_hostname: bool = Field(
        default=True,
        description="Check that the peer's certificate names the configured host.",
    )

    @model_validator(mode="after")
    def _key_with_cert(self) -> DicomTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("dicom.tls: cert_file and key_file must be given together")
        return self


class DicomDestinationSettings(_Settings):
    """A DICOM Storage SCP (PACS, ECG management system) receiving C-STORE."""

    enabled: bool = Field(default=False, description="Send each ECG waveform by DICOM C-STORE.")
    ae_title: str = Field(
        default="ANY-SCP",
        description="Called AE title of the receiving peer (as configured on the PACS).",
    )
    host: str = Field(default="127.0.0.1", description="Host name or IP address of the peer.")
    port: int = Field(
        default=104, ge=1, le=65535, description="TCP port of the peer's DICOM listener."
    )
    calling_ae_title: str = Field(
        default="ECGBRIDGE",
        description=(
            "Our own (calling) AE title; register it on the peer, e.g. in Orthanc's "
            "DicomModalities."
        ),
    )
    tls: DicomTlsSettings | None = Field(
        default=None, description="Enable TLS with these files; leave empty for plain TCP."
    )
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds to wait for the association to be accepted, for each DIMSE "
            "response and for any network activity."
        ),
    )

    @field_validator("ae_title")
    @classmethod
    def _called_ae(cls, value: str) -> str:
        return _check_ae_title(value, "dicom.ae_title")

    @field_validator("calling_ae_title")
    @classmethod
    def _calling_ae(cls, value: str) -> str:
        return _check_ae_title(value, "dicom.calling_ae_title")

    @field_validator("host")
    @classmethod
    def _host_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("dicom.host must not be empty")
        return value.strip()


class OAuth2ClientCredentials(_Settings):
    """OAuth 2.0 client-credentials grant (RFC 6749 section 4.4) for the FHIR server."""

    token_url: str = Field(description="Token endpoint, e.g. https://auth.example.org/token.")
    client_id: str = Field(description="Client identifier registered at the authorization server.")
    client_secret: SecretStr = Field(
        description="Client secret (sent with HTTP Basic authentication to the token endpoint)."
    )
    scope: str | None = Field(
        default=None,
        description="Space-separated scopes to request, e.g. system/Observation.write.",
    )

    @field_validator("token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"fhir.oauth2.token_url {value!r} must start with http:// or https://")
        return value


class SmartBackendServices(_Settings):
    """SMART Backend Services authorization: client credentials with a signed JWT."""

    client_id: str = Field(
        description="Client identifier registered at the FHIR server's authorization server."
    )
    private_key_file: Path = Field(
        description=(
            "Unencrypted PEM private key whose public key is registered for client_id "
            "(RSA for RS384, EC P-384 for ES384)."
        )
    )
    key_id: str = Field(
        description="Key identifier (kid) of that key in the registered JWK Set."
    )
    algorithm: Literal["RS384", "ES384"] = Field(
        default="RS384", description="JWT signing algorithm: RS384 or ES384."
    )
    scope: str = Field(
        default="system/Observation.write",
        description=(
            "Scopes to request: system/Observation.write (SMART v1) or "
            "system/Observation.c (SMART v2)."
        ),
    )
    token_url: str | None = Field(
        default=None,
        description=(
            "Token endpoint; empty reads it from <base_url>/.well-known/smart-configuration."
        ),
    )

    @field_validator("token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"fhir.smart.token_url {value!r} must start with http:// or https://")
        return value


class FhirDestinationSettings(_Settings):
    """A FHIR server receiving each ECG as an Observation (POST /Observation)."""

    enabled: bool = Field(default=False, description="POST each ECG as a FHIR Observation.")
    base_url: str = Field(
        default="http://127.0.0.1:8080/fhir",
        description="FHIR base URL (the Observation endpoint is <base_url>/Observation).",
    )
    version: Literal["R4", "R5"] = Field(
        default="R4", description="FHIR version the server speaks: R4 or R5."
    )
    bearer_token: SecretStr | None = Field(
        default=None,
        description="Static bearer token sent as 'Authorization: Bearer ...'; leave empty if none.",
    )
    oauth2: OAuth2ClientCredentials | None = Field(
        default=None,
        description="Fetch bearer tokens with the OAuth2 client-credentials grant instead.",
    )
    smart: SmartBackendServices | None = Field(
        default=None,
        description="Fetch bearer tokens with SMART Backend Services (signed JWT) instead.",
    )
    timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds to wait for connecting and for each response."
    )
    verify_tls: bool = Field(
        default=True, description="Verify the server's HTTPS certificate (keep true outside tests)."
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of certificate authorities for HTTPS; empty uses the system store.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"fhir.base_url {value!r} must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> FhirDestinationSettings:
        given = [name for name in ("bearer_token", "oauth2", "smart")
                 if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(
                f"fhir: give only one of bearer_token, oauth2 or smart (got {', '.join(given)})"
            )
        return self
