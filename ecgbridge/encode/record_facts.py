"""What a clinical record says about an ECG besides its samples: time, identity, history.

Shared by the DICOM waveform and FHIR Observation writers so that both, for every
command (``digitize``, ``convert``, ``batch``, the daemon), state the same facts.

Acquisition time
----------------
Only from evidence, in this order: a value the caller gives (``acquisition_datetime``
option, sidecar file), then ``ecg.source.acquisition_datetime`` (the source waveform's
AcquisitionDateTime / FHIR ``effective``, or the date and time printed on a vector
PDF page). Never the processing time, never an image's scan time. A time without a
zone is local wall-clock time of the place of recording: the ``timezone`` option (an
IANA name such as ``Europe/Berlin``) gives its UTC offset; without it the offset stays
unknown (DICOM: no TimezoneOffsetFromUTC; FHIR: the date only, since a FHIR dateTime
with a time needs a zone).

Record identity
---------------
:func:`record_uid` names the ECG record, whatever encodes it: an ecgbridge DICOM
waveform's SeriesInstanceUID and an ecgbridge FHIR Observation's identifier
(``urn:dicom:uid`` | ``urn:oid:<uid>``) carry it, so ``digitize`` and ``convert`` of
the same ECG agree. It is derived from the source's identity: the SOP Instance UID of
a DICOM source (not its bytes: the same object in another transfer syntax is the same
ECG), else the SHA-256 of the input file, else the samples. The DICOM SOP Instance UID
is derived from the record UID and the hash of the dataset's other content
(:func:`content_uid`), so one UID always names one content: a re-run with the same
evidence is byte-identical, anything else gets a new UID.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import numpy as np

from ecgbridge.ecg import ECG
from ecgbridge.errors import EncodingError

#: Namespace of the name-based UUIDs behind ecgbridge's deterministic ``2.25.`` UIDs
#: (the one namespace: every such UID is made by :func:`derived_uid`).
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ecgbridge:dicom-uid")
#: FHIR identifier system of DICOM UIDs (value ``urn:oid:<uid>``).
FHIR_SYSTEM_DICOM_UID = "urn:dicom:uid"
#: Policies when no evidence gives the acquisition time and DICOM needs one (Type 1).
UnknownTimePolicy = Literal["refuse", "digitization-time"]
UNKNOWN_TIME_POLICIES: tuple[str, ...] = ("refuse", "digitization-time")
#: Policies when no PatientID is known.
MissingPatientPolicy = Literal["empty", "refuse"]
MISSING_PATIENT_POLICIES: tuple[str, ...] = ("empty", "refuse")
#: SOP classes whose instances are waveforms (their acquisition time is the ECG's).
_WAVEFORM_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.9."

_DT = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,6})?([+-]\d{4})?$"
)
_ISO = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?)?)?)?$"
)


@dataclass(frozen=True)
class RecordSettings:
    """Writer settings about time and identity (from ``WriteContext.options``).

    Attributes
    ----------
    acquisition_datetime : str
        Given acquisition time (ISO 8601 or DICOM DT); overrides the source's.
    timezone : str
        IANA zone of naive times (``Europe/Berlin``); empty: offset unknown.
    unknown_time : {"digitization-time", "refuse"}
        What a DICOM writer does without an acquisition time (the IOD makes it Type 1,
        so it cannot stay empty): write the digitization time, said so in
        SeriesDescription and a history annotation (the UID then changes per run; FHIR
        still omits ``effective``), or refuse (EncodingError).
    patient_id_system : str
        FHIR ``subject.identifier.system`` of PatientIDs (the hospital's MRN system).
    missing_patient : {"empty", "refuse"}
        Without a PatientID: leave it empty, or refuse the clinical outputs.
    printed_identity : {"ignore", "accept"}
        Use the patient ID printed on a vector PDF page when nothing else gives one.
    """

    acquisition_datetime: str = ""
    timezone: str = ""
    unknown_time: str = "digitization-time"
    patient_id_system: str = ""
    missing_patient: str = "empty"
    printed_identity: str = "ignore"

    def __post_init__(self) -> None:
        if self.unknown_time not in UNKNOWN_TIME_POLICIES:
            raise EncodingError(
                f"unknown_time must be one of {', '.join(UNKNOWN_TIME_POLICIES)}, "
                f"got {self.unknown_time!r}"
            )
        if self.missing_patient not in MISSING_PATIENT_POLICIES:
            raise EncodingError(
                f"missing_patient must be one of {', '.join(MISSING_PATIENT_POLICIES)}, "
                f"got {self.missing_patient!r}"
            )
        if self.printed_identity not in ("ignore", "accept"):
            raise EncodingError(
                f"printed_identity must be ignore or accept, got {self.printed_identity!r}"
            )
        if self.timezone:
            zone_of(self.timezone)


def record_settings(options: Mapping[str, Any] | None) -> RecordSettings:
    """Build :class:`RecordSettings` from writer options (unknown keys ignored)."""
    options = options or {}
    given = options.get("acquisition_datetime") or ""
    if isinstance(given, datetime):
        given = given.isoformat()
    return RecordSettings(
        acquisition_datetime=str(given),
        timezone=str(options.get("timezone") or ""),
        unknown_time=str(options.get("unknown_time") or "digitization-time"),
        patient_id_system=str(options.get("patient_id_system") or ""),
        missing_patient=str(options.get("missing_patient") or "empty"),
        printed_identity=str(options.get("printed_identity") or "ignore"),
    )


def patient_identity(ecg: ECG, settings: RecordSettings) -> dict[str, Any]:
    """Patient/study identity of the source (DICOM, sidecar), plus the printed patient ID
    when the settings accept it and nothing else gives one."""
    identity = dict(ecg.source.dicom)
    if settings.printed_identity == "accept" and not str(identity.get("PatientID") or ""):
        identity.update(ecg.source.printed_identity)
    return identity


def zone_of(name: str) -> Any:
    """Return the tzinfo of an IANA zone name (``UTC`` and ``+01:00`` also accepted).

    Raises
    ------
    EncodingError
        If the zone is unknown.
    """
    fixed = re.match(r"^([+-])(\d{2}):?(\d{2})$", name.strip())
    if fixed:
        sign = 1 if fixed.group(1) == "+" else -1
        return timezone(sign * timedelta(hours=int(fixed.group(2)), minutes=int(fixed.group(3))))
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise EncodingError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") \
            from exc


@dataclass(frozen=True)
class AcquisitionTime:
    """When an ECG was recorded, with the precision and zone the evidence gives.

    Attributes
    ----------
    local : datetime
        Naive local wall-clock time (missing parts are their minimum).
    precision : {"year", "month", "day", "minute", "second"}
        Finest part the evidence gives.
    offset : timedelta or None
        UTC offset, when known.
    evidence : str
        Where the time came from.
    """

    local: datetime
    precision: str
    offset: timedelta | None = None
    evidence: str = ""

    @property
    def has_time(self) -> bool:
        """True when the evidence gives the time of day."""
        return self.precision in ("minute", "second")

    def dicom_dt(self) -> str:
        """DICOM DT without offset, at the evidence's precision."""
        fmt = {"year": "%Y", "month": "%Y%m", "day": "%Y%m%d", "minute": "%Y%m%d%H%M",
               "second": "%Y%m%d%H%M%S"}[self.precision]
        return self.local.strftime(fmt)

    def dicom_offset(self) -> str:
        """``+HHMM`` / ``-HHMM`` of a known offset, else ``""``."""
        if self.offset is None:
            return ""
        minutes = int(self.offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"

    def fhir(self) -> str:
        """FHIR dateTime: with time only when the offset is known (FHIR requires a zone)."""
        if self.precision == "year":
            return f"{self.local.year:04d}"
        if self.precision == "month":
            return self.local.strftime("%Y-%m")
        if not self.has_time or self.offset is None:
            return self.local.strftime("%Y-%m-%d")
        # FHIR's dateTime needs the seconds whenever it has a time
        return self.local.replace(tzinfo=timezone(self.offset)).isoformat(timespec="seconds")

    def with_zone(self, zone_name: str) -> AcquisitionTime:
        """Fill a missing offset from an IANA zone (the offset in force at that time)."""
        if self.offset is not None or not zone_name or not self.has_time:
            return self
        offset = self.local.replace(tzinfo=zone_of(zone_name)).utcoffset()
        return AcquisitionTime(self.local, self.precision, offset, self.evidence)


def parse_datetime(text: str, evidence: str = "") -> AcquisitionTime | None:
    """Parse a DICOM DT (``20210205133933+0100``) or ISO 8601 / FHIR dateTime; None if neither."""
    text = str(text or "").strip()
    if not text:
        return None
    match = _DT.match(text) or _ISO.match(text)
    if match is None:
        return None
    parts = [int(p) if p else None for p in match.groups()[:6]]
    year, month, day, hour, minute, second = parts
    precision = "year" if month is None else "month" if day is None else "day"
    if hour is not None and minute is not None:
        precision = "second" if second is not None else "minute"
    elif hour is not None:  # DICOM DT with hours only
        precision, minute = "minute", 0
    try:
        local = datetime(year or 1, month or 1, day or 1, hour or 0, minute or 0, second or 0)
    except ValueError:
        return None
    return AcquisitionTime(local, precision, _offset(match.group(7)), evidence)


def _offset(text: str | None) -> timedelta | None:
    if not text:
        return None
    if text == "Z":
        return timedelta(0)
    digits = text[1:].replace(":", "")
    sign = 1 if text[0] == "+" else -1
    return sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4]))


def acquisition_time(ecg: ECG, settings: RecordSettings) -> AcquisitionTime | None:
    """The ECG's acquisition time from evidence (see module docstring), or None.

    Raises
    ------
    EncodingError
        If a given ``acquisition_datetime`` is not a date/time.
    """
    if settings.acquisition_datetime:
        found = parse_datetime(settings.acquisition_datetime, "given by the operator")
        if found is None:
            raise EncodingError(
                f"acquisition_datetime {settings.acquisition_datetime!r} is not an ISO 8601 "
                "or DICOM date/time"
            )
    else:
        found = parse_datetime(
            ecg.source.acquisition_datetime, ecg.source.acquisition_evidence or "source"
        )
    return found.with_zone(settings.timezone) if found is not None else None


def waveform_source_time(identity: Mapping[str, Any]) -> str:
    """DICOM DT of a source *waveform*'s acquisition (AcquisitionDateTime, else
    AcquisitionDate + AcquisitionTime), with TimezoneOffsetFromUTC appended when the
    value has no offset of its own; ``""`` for other objects or when absent.
    """
    sop_class = str(identity.get("SOPClassUID") or "")
    if sop_class and not sop_class.startswith(_WAVEFORM_SOP_PREFIX):
        return ""
    value = str(identity.get("AcquisitionDateTime") or "").strip()
    if not value:
        day = str(identity.get("AcquisitionDate") or "").strip()
        if len(day) != 8:
            return ""
        value = day + str(identity.get("AcquisitionTime") or "").split(".")[0].strip()
    offset = str(identity.get("TimezoneOffsetFromUTC") or "").strip()
    if offset and not re.search(r"[+-]\d{4}$", value) and re.match(r"^[+-]\d{4}$", offset):
        value += offset
    return value


def fhir_to_dicom_dt(text: str) -> str:
    """DICOM DT (with offset when given) of a FHIR dateTime; ``""`` if unreadable."""
    found = parse_datetime(text)
    if found is None:
        return ""
    return found.dicom_dt() + found.dicom_offset()


# --- identity ------------------------------------------------------------------------


def derived_uid(kind: str, *parts: str) -> str:
    """A ``2.25.<UUID>`` UID from a name-based (SHA-1, version 5) UUID of `parts`.

    (pydicom's ``generate_uid(prefix=None)`` ignores ``entropy_srcs`` and is random.)
    """
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, '|'.join((kind, *parts))).int}"


def samples_hash(ecg: ECG) -> str:
    """SHA-256 of the rate and the samples rounded to 1 µV (NaN as a marker)."""
    micro = np.round(ecg.signals * 1000.0)
    h = hashlib.sha256(f"{ecg.fs!r}|".encode())
    h.update(np.isnan(micro).tobytes())
    h.update(np.nan_to_num(micro, nan=0.0).astype("<f8").tobytes())
    return h.hexdigest()


def source_key(ecg: ECG) -> str:
    """The source's identity: a DICOM source's SOP Instance UID, else the file's SHA-256,
    else the samples' hash."""
    sop_instance = str(ecg.source.dicom.get("SOPInstanceUID") or "").strip()
    if sop_instance:
        return f"dicom:{sop_instance}"
    if ecg.source.sha256:
        return f"sha256:{ecg.source.sha256}"
    return f"samples:{samples_hash(ecg)}"


def record_uid(ecg: ECG) -> str:
    """The ECG record's UID (see module docstring)."""
    if ecg.source.record_uid:
        return ecg.source.record_uid
    return derived_uid("ecg-record", source_key(ecg))


def study_uid(ecg: ECG) -> str:
    """Study Instance UID for a source that gives none (one study per source)."""
    return derived_uid("study", source_key(ecg))


def content_uid(record: str, content: bytes) -> str:
    """SOP Instance UID of one encoding of a record: record UID + hash of its content."""
    return derived_uid("sop-instance", record, hashlib.sha256(content).hexdigest())


def fhir_record_identifier(ecg: ECG) -> dict[str, str]:
    """The FHIR identifier of the ECG record (``urn:dicom:uid`` | ``urn:oid:<uid>``)."""
    return {"system": FHIR_SYSTEM_DICOM_UID, "value": f"urn:oid:{record_uid(ecg)}"}


def uid_from_fhir_identifiers(identifiers: Any) -> str:
    """The record UID in a list of FHIR identifiers written by ecgbridge, else ``""``."""
    for item in identifiers or []:
        if not isinstance(item, Mapping) or item.get("system") != FHIR_SYSTEM_DICOM_UID:
            continue
        value = str(item.get("value") or "")
        if value.startswith("urn:oid:") and re.match(r"^[0-9.]+$", value[8:]):
            return value[8:]
    return ""
