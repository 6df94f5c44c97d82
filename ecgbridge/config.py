"""Configuration of the ``ecgbridge serve`` daemon.

One typed, immutable :class:`Settings` object is built from four layers, later
layers overriding earlier ones:

1. embedded defaults (the daemon runs with no file at all),
2. a YAML file (``config/ecgbridge.example.yaml`` documents every key),
3. environment variables ``ECGBRIDGE_<SECTION>__<KEY>`` (e.g. ``ECGBRIDGE_DICOM__PORT=11113``;
   values are read as YAML scalars, so ``true``, ``42`` and ``[A, B]`` work),
4. command-line flags of ``ecgbridge serve``.

Every validation problem raises :class:`ecgbridge.errors.ConfigError` naming the
dotted key (``dicom.port``) and where the bad value came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ecgbridge.deliver.settings import (
    DicomDestinationSettings,
    FhirDestinationSettings,
    OutboxSettings,
)
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.errors import ConfigError, OptionError

#: Prefix of environment variables that override configuration keys.
ENV_PREFIX = "ECGBRIDGE_"
#: Separator of nested keys in environment variable names.
ENV_NESTING = "__"
#: Environment variable naming the configuration file (the ``--config`` flag wins).
ENV_CONFIG_FILE = "ECGBRIDGE_CONFIG"

#: Default DICOM listener port (the IANA-registered alternative DICOM port).
DEFAULT_DICOM_PORT = 11112
#: Default AE title of the Storage SCP.
DEFAULT_AE_TITLE = "ECGBRIDGE"
#: Default port of the health/metrics HTTP endpoint.
DEFAULT_HTTP_PORT = 8484
#: The digitizer's defaults, which the ``digitize:`` section starts from.
_DEFAULT_OPTIONS = DigitizeOptions()
#: Longest AE title DICOM allows.
MAX_AE_TITLE_LENGTH = 16


def _check_ae_title(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("AE title must not be empty")
    if len(stripped) > MAX_AE_TITLE_LENGTH:
        raise ValueError(f"AE title {stripped!r} is longer than {MAX_AE_TITLE_LENGTH} characters")
    if "\\" in stripped or any(ord(ch) < 0x20 or ord(ch) > 0x7E for ch in stripped):
        raise ValueError(f"AE title {stripped!r} must be printable ASCII without backslash")
    return stripped


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InboxSettings(_Section):
    """The watched folder: files dropped here become jobs."""

    enabled: bool = Field(default=True, description="Watch the inbox folder.")
    path: Path = Field(default=Path("./inbox"), description="Folder to watch (created if missing).")
    stable_seconds: float = Field(
        default=1.0,
        ge=0.0,
        le=3600.0,
        description="A file is taken once its size and mtime have not changed for this long.",
    )
    poll_seconds: float = Field(
        default=0.25,
        gt=0.0,
        le=60.0,
        description="How often pending files are checked for stability.",
    )
    rescan_seconds: float = Field(
        default=30.0,
        gt=0.0,
        description="Full rescan of the folder this often (safety net for missed events).",
    )
    follow_symlinks: bool = Field(default=False, description="Take symbolic links dropped "
                                  "in the inbox (off: left alone, with a warning).")


class ScpTlsSettings(_Section):
    """DICOM TLS on the Storage SCP (PS3.15 Annex B)."""

    enabled: bool = Field(default=False, description="Accept only TLS associations.")
    cert_file: Path | None = Field(default=None, description="PEM server certificate.")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file.")
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle used to verify client certificates."
    )
    require_client_cert: bool = Field(
        default=False,
        description="Refuse clients without a certificate signed by ca_file (mutual TLS).",
    )

    @model_validator(mode="after")
    def _files_when_enabled(self) -> ScpTlsSettings:
        if self.enabled and (self.cert_file is None or self.key_file is None):
            raise ValueError("cert_file and key_file are required when TLS is enabled")
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("ca_file is required when require_client_cert is true")
        return self


class DicomScpSettings(_Section):
    """The DICOM Storage SCP receiving Secondary Capture / PDF / photo objects."""

    enabled: bool = Field(default=True, description="Run the DICOM Storage SCP.")
    host: str = Field(
        default="127.0.0.1", description="Address to bind; 0.0.0.0 for all interfaces."
    )
    port: int = Field(
        default=DEFAULT_DICOM_PORT, ge=0, le=65535, description="TCP port to listen on."
    )
    ae_title: str = Field(default=DEFAULT_AE_TITLE, description="Our (called) AE title.")
    require_called_aet: bool = Field(
        default=False, description="Refuse associations whose called AE title is not ae_title."
    )
    require_calling_aet: list[str] = Field(
        default_factory=list,
        description="Allow-list of calling AE titles; empty accepts any caller.",
    )
    max_associations: int = Field(default=10, ge=1, le=1000, description="Concurrent associations.")
    acse_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for ACSE messages."
    )
    dimse_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for DIMSE messages."
    )
    network_timeout: float = Field(
        default=60.0, gt=0,
        description="Idle network timeout in seconds; also bounds a PDU that stalls halfway.",
    )
    setup_timeout: float = Field(
        default=10.0, gt=0, le=300,
        description="Seconds from TCP accept to a complete A-ASSOCIATE-RQ (TLS handshake "
        "included); slower peers are dropped.",
    )
    max_pending_connections: int = Field(
        default=32, ge=1, le=1000,
        description="Connections being set up at once; further ones are closed at once.",
    )
    max_associations_per_peer: int = Field(
        default=8, ge=1, le=1000,
        description="Connections (being set up or associated) one peer address may hold.",
    )
    max_object_mb: float = Field(
        default=200.0, gt=0, le=4096,
        description="Largest object a C-STORE may carry (MB); larger ones are answered "
        "0xA700 Out of resources.",
    )
    tls: ScpTlsSettings = Field(default=ScpTlsSettings(), description="DICOM TLS.")

    @field_validator("ae_title")
    @classmethod
    def _valid_ae(cls, value: str) -> str:
        return _check_ae_title(value)

    @field_validator("require_calling_aet")
    @classmethod
    def _valid_callers(cls, value: list[str]) -> list[str]:
        return [_check_ae_title(v) for v in value]


class StateSettings(_Section):
    """Where the daemon keeps its journal, received inputs, artifacts and quarantine."""

    path: Path = Field(default=Path("./state"), description="State folder (created if missing).")


class DeliverSettings(_Section):
    """Destinations; each has its own queue, retries and dead-letter state."""

    outbox: OutboxSettings = Field(
        default=OutboxSettings.model_validate({}), description="Output folder."
    )
    dicom: DicomDestinationSettings = Field(
        default=DicomDestinationSettings.model_validate({}), description="DICOM C-STORE peer."
    )
    fhir: FhirDestinationSettings = Field(
        default=FhirDestinationSettings.model_validate({}), description="FHIR server."
    )


class DigitizeSettings(_Section):
    """How pages are digitized (see ``ecgbridge digitize --help``).

    The fields of :class:`~ecgbridge.digitizer.options.DigitizeOptions`, with its
    defaults; :meth:`to_options` builds one, so its ranges are the only ones checked.
    """

    layout: str = Field(default=_DEFAULT_OPTIONS.layout, description="Layout hint or auto.")
    paper_speed: float | None = Field(
        default=_DEFAULT_OPTIONS.paper_speed,
        description="Paper speed in mm/s; empty reads it from the page.",
    )
    gain: float | None = Field(
        default=_DEFAULT_OPTIONS.gain,
        description="Gain in mm/mV; empty uses the calibration pulse.",
    )
    fs: float = Field(default=_DEFAULT_OPTIONS.fs, description="Output sampling rate in Hz.")
    engine: str = Field(
        default=_DEFAULT_OPTIONS.engine,
        description="auto, learned (segmentation model) or classical (thresholds); "
        "auto reads classically and uses the model's reading where it keeps the "
        "limb-lead laws clearly better.",
    )

    @field_validator("layout", "paper_speed", "gain", "fs", "engine")
    @classmethod
    def _checked_by_options(cls, value: Any, info: ValidationInfo) -> Any:
        try:  # each field on its own, so the error names its key
            DigitizeOptions(**{str(info.field_name): value})
        except OptionError as exc:
            raise ValueError(str(exc)) from None
        return value

    def to_options(self) -> DigitizeOptions:
        """The digitizer options these settings stand for.

        Raises
        ------
        ecgbridge.errors.OptionError
            If a value is unknown or out of range.
        """
        return DigitizeOptions(**{f.name: getattr(self, f.name) for f in fields(DigitizeOptions)})


class RecordsSettings(_Section):
    """What the DICOM and FHIR records say about time and identity (README "Clinical
    records: time, identity, provenance")."""

    timezone: str | None = Field(
        default=None,
        description="IANA zone (e.g. Europe/Berlin) of times printed or stored without "
        "one; empty: their UTC offset stays unknown (FHIR then gets the date only).",
    )
    unknown_time: Literal["digitization-time", "refuse"] = Field(
        default="digitization-time",
        description="DICOM needs an acquisition time (Type 1): without evidence write the "
        "digitization time, said so in the record, or refuse (the job fails).",
    )
    patient_id_system: str | None = Field(
        default=None,
        description="FHIR subject.identifier.system of PatientIDs (the MRN system URI).",
    )
    missing_patient: Literal["empty", "refuse"] = Field(
        default="empty",
        description="Without a PatientID (no DICOM identity, no sidecar file): leave it "
        "empty, or refuse the DICOM/FHIR outputs (the job fails with the reason).",
    )
    printed_identity: Literal["ignore", "accept"] = Field(
        default="ignore",
        description="Use the patient ID printed with a label on a vector PDF page when "
        "nothing else gives one (ignore: only listed in the JSON summary).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value or None

    def writer_options(self) -> dict[str, str]:
        """The writer options (:mod:`ecgbridge.encode.record_facts`) of these settings."""
        pairs = {
            "timezone": self.timezone,
            "unknown_time": self.unknown_time,
            "patient_id_system": self.patient_id_system,
            "missing_patient": self.missing_patient,
            "printed_identity": self.printed_identity,
        }
        return {key: value for key, value in pairs.items() if value}


class WorkerSettings(_Section):
    """The digitization process pool."""

    processes: int | None = Field(
        default=None, ge=1, le=256, description="Worker processes; empty = number of CPU cores."
    )
    queue_size: int = Field(
        default=8,
        ge=1,
        le=10000,
        description="Jobs handed to the pool at once; the rest wait in the journal.",
    )
    job_timeout_seconds: float = Field(
        default=300.0, gt=0, description="A digitization taking longer fails the job."
    )
    max_memory_mb: int = Field(default=4096, ge=0, le=1_048_576, description="Address-space "
                               "cap of each worker in MB (RLIMIT_AS; 0 = none).")
    page_timeout_seconds: float = Field(default=120.0, ge=0, le=86400, description="Time "
                                        "limit per page of an input in seconds (0 = none).")

    def effective_processes(self) -> int:
        """Pool size: the configured value or the number of CPU cores."""
        return self.processes or max(1, os.cpu_count() or 1)


class RetrySettings(_Section):
    """Per-destination retry with exponential backoff."""

    base_seconds: float = Field(default=2.0, gt=0, description="Delay before the first retry.")
    max_seconds: float = Field(default=600.0, gt=0, description="Longest delay between retries.")
    max_attempts: int = Field(
        default=10, ge=1, le=1000, description="Attempts before a delivery goes to dead-letter."
    )

    @model_validator(mode="after")
    def _ordered(self) -> RetrySettings:
        if self.max_seconds < self.base_seconds:
            raise ValueError("max_seconds must not be smaller than base_seconds")
        return self

    def delay(self, attempts: int) -> float:
        """Seconds to wait after `attempts` failed attempts (1 -> base_seconds)."""
        exponent = max(0, attempts - 1)
        return float(min(self.max_seconds, self.base_seconds * (2.0 ** min(exponent, 60))))


class HttpSettings(_Section):
    """Health and Prometheus metrics endpoint."""

    enabled: bool = Field(default=True, description="Serve /healthz and /metrics.")
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=DEFAULT_HTTP_PORT, ge=0, le=65535, description="TCP port.")


class LoggingSettings(_Section):
    """Log output (standard error)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level."
    )
    json_format: bool = Field(default=False, description="One JSON object per line.")
    include_patient_ids: bool = Field(
        default=False,
        description="Log patient IDs of DICOM inputs; by default only job id, SOP Instance UID "
        "and content hash are logged.",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ShutdownSettings(_Section):
    """Graceful stop on SIGTERM."""

    grace_seconds: float = Field(
        default=20.0,
        ge=0,
        description="Wait this long for running digitizations; the rest resume later.",
    )


class BatchSettings(_Section):
    """Defaults of ``ecgbridge batch`` (its options override them)."""

    scheduler: str | None = Field(
        default=None, description="Dask scheduler address (tcp://host:8786); empty: local pool."
    )
    workers: int | None = Field(
        default=None, ge=1, description="Local pool size; empty: every core."
    )
    timeout_s: float = Field(default=600.0, gt=0, description="Per-page time limit in seconds.")


class Settings(_Section):
    """Everything ``ecgbridge serve`` needs."""

    inbox: InboxSettings = Field(default=InboxSettings())
    dicom: DicomScpSettings = Field(default=DicomScpSettings())
    state: StateSettings = Field(default=StateSettings())
    deliver: DeliverSettings = Field(default=DeliverSettings())
    digitize: DigitizeSettings = Field(default=DigitizeSettings())
    records: RecordsSettings = Field(default=RecordsSettings())
    workers: WorkerSettings = Field(default=WorkerSettings())
    retry: RetrySettings = Field(default=RetrySettings())
    http: HttpSettings = Field(default=HttpSettings())
    logging: LoggingSettings = Field(default=LoggingSettings())
    shutdown: ShutdownSettings = Field(default=ShutdownSettings())
    batch: BatchSettings = Field(default=BatchSettings())

    def encode_formats(self) -> list[str]:
        """Formats each job is encoded into: what the enabled destinations need."""
        formats: list[str] = []
        if self.deliver.outbox.enabled:
            formats.extend(self.deliver.outbox.formats)
        if self.deliver.dicom.enabled:
            formats.append("dicom")
        if self.deliver.fhir.enabled:
            formats.append("fhir-r4" if self.deliver.fhir.version == "R4" else "fhir-r5")
        return list(dict.fromkeys(formats)) or ["json"]


def read_yaml_file(path: Path) -> dict[str, Any]:
    """Read a YAML configuration file into a mapping.

    Raises
    ------
    ConfigError
        If the file cannot be read, is not YAML, or its top level is not a mapping.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping of sections at top level")
    return data


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``ECGBRIDGE_SECTION__KEY=value`` variables into a nested mapping.

    Values are parsed as YAML scalars/flow collections (``"11113"`` -> 11113).
    ``ECGBRIDGE_CONFIG`` (the file name) is not a key and is skipped.
    """
    out: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_NESTING)]
        if not all(parts):
            raise ConfigError(
                f"environment variable {name}: empty key part; use "
                f"{ENV_PREFIX}SECTION{ENV_NESTING}KEY"
            )
        raw = environ[name]
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _set_path(out, parts, value, origin=f"environment variable {name}")
    return out


def _set_path(target: dict[str, Any], parts: list[str], value: Any, *, origin: str) -> None:
    node = target
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {'.'.join(parts)} conflicts with another setting")
        node = child
    node[parts[-1]] = value


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `override` merged in (mappings recursively, other values replaced)."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dotted_overrides(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"dicom.port": 1}`` into ``{"dicom": {"port": 1}}``; None values are skipped."""
    out: dict[str, Any] = {}
    for key, value in pairs.items():
        if value is not None:
            _set_path(out, key.split("."), value, origin=f"option {key}")
    return out


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings: defaults < YAML file < environment < `overrides`.

    Parameters
    ----------
    config_file : Path, optional
        YAML file; when None, ``$ECGBRIDGE_CONFIG`` is used if set, else no file.
    environ : Mapping, optional
        Environment to read ``ECGBRIDGE_*`` variables from (default ``os.environ``).
    overrides : Mapping, optional
        Dotted keys from the command line, e.g. ``{"dicom.port": 11113}``; None values
        mean "not given".

    Returns
    -------
    Settings

    Raises
    ------
    ConfigError
        Naming the offending key, e.g. ``dicom.port: Input should be less than or equal
        to 65535 (got 70000)``.
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(ENV_CONFIG_FILE):
        config_file = Path(env[ENV_CONFIG_FILE])
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        layers.append((f"file {config_file}", read_yaml_file(config_file)))
    layers.append(("environment", env_overrides(env)))
    layers.append(("command line", dotted_overrides(overrides or {})))
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, layers)) from None


def _describe_validation_error(
    exc: ValidationError, layers: list[tuple[str, dict[str, Any]]]
) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        origin = _origin_of(err["loc"], layers)
        if origin == "environment":
            origin = "environment variable " + ENV_PREFIX + ENV_NESTING.join(
                str(p).upper() for p in err["loc"]
            )
        detail = f"{key or '(top level)'}: {message}"
        if (
            "input" in err
            and err["type"] != "extra_forbidden"
            and not isinstance(err["input"], dict)
        ):
            detail += f" (got {err['input']!r})"
        if origin:
            detail += f" [from {origin}]"
        problems.append(detail)
    return "invalid configuration: " + "; ".join(problems)


def _origin_of(loc: tuple[Any, ...], layers: list[tuple[str, dict[str, Any]]]) -> str:
    """Name the last layer that set `loc` (or one of its parents)."""
    for name, layer in reversed(layers):
        node: Any = layer
        found = True
        for part in loc:
            in_dict = isinstance(node, dict) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
            if in_dict or in_list:
                node = node[part]
            else:
                found = False
                break
        if found and loc:
            return name
    return ""


def settings_to_yaml(settings: Settings) -> str:
    """Render effective settings as YAML (secrets masked)."""
    data = settings.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
