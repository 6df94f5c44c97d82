"""Identity and acquisition time of an image/PDF input from a sidecar file beside it.

``scan_0001.png`` may come with ``scan_0001.json``::

    {"PatientID": "1282423", "PatientName": "Testmann^Test", "PatientBirthDate": "2001-01-01",
     "PatientSex": "M", "AccessionNumber": "ACC-17", "StudyInstanceUID": "1.2.3.4",
     "AcquisitionDateTime": "2021-02-05T13:39:33"}

Keys are DICOM keywords (:data:`SIDECAR_KEYS`); dates may be ISO (``2001-01-01``) or
DICOM (``20010101``). A JSON object holding none of these keys is not a sidecar (e.g.
ecgbridge's own ``<stem>.json`` summary) and is ignored; one that holds some of them and
also unknown keys, or bad values, is refused with the reason (a misspelt key must not
silently file an ECG without its patient).

Or with ``scan_0001.hl7``: an HL7 v2 order or result message giving the patient
(PID-3, -5, -7, -8), the accession number and the Study Instance UID, read by
:mod:`ecgbridge.inputs.hl7`; or with ``scan_0001.wl``: a DICOM Modality Worklist item
(as a worklist server or dcmtk's ``.wl`` files hold it), whose patient, accession
number, Study Instance UID and referring physician are taken. Neither gives an
acquisition time: an order's times are when it was placed or scheduled. Two sidecars
that both give identity are refused: which one is right is not ours to guess.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from ecgbridge.errors import InputError
from ecgbridge.inputs.hl7 import read_hl7_identity
from ecgbridge.inputs.page import LoadedInput

#: Keys a sidecar may hold (DICOM keywords).
SIDECAR_KEYS: tuple[str, ...] = (
    "PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime",
    "StudyDescription", "ReferringPhysicianName", "AcquisitionDateTime",
)
#: Suffixes of sidecar files: keyword JSON, HL7 v2 message, DICOM worklist item.
SIDECAR_SUFFIXES: tuple[str, ...] = (".json", ".hl7", ".wl")
#: What a worklist item gives (its times are scheduled ones, not the recording's).
WORKLIST_KEYS: tuple[str, ...] = (
    "PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "StudyInstanceUID", "ReferringPhysicianName",
)
#: Evidence text of a sidecar acquisition time.
SIDECAR_EVIDENCE = "sidecar file"
#: Largest sidecar read (a result message may embed the ECG report as a document).
_MAX_BYTES = {".json": 64 * 1024, ".hl7": 32 * 1024 * 1024, ".wl": 1024 * 1024}
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: Longest value DICOM allows (its VR: LO and PN 64, SH 16 characters).
_MAX_LENGTH = {
    "PatientID": 64, "IssuerOfPatientID": 64, "PatientName": 64, "AccessionNumber": 16,
    "StudyID": 16, "StudyDescription": 64, "ReferringPhysicianName": 64,
}


def folder_identity(path: Path, pattern: str) -> dict[str, str]:
    """Identity from the input's folder names by a configured regular expression.

    `pattern` is matched (``re.search``) against the input's path relative to nothing:
    its folders joined by ``/`` (e.g. ``inbox/1282423/ACC-17``); its named groups
    ``PatientID``, ``AccessionNumber`` and ``StudyID`` become identity, e.g.
    ``inbox/(?P<PatientID>[^/]+)$`` for ``inbox/<PatientID>/scan.png``.

    Raises
    ------
    InputError
        If the pattern is not a valid regular expression, names another group, or does
        not match (a configured convention that does not hold is an error, not a silent
        empty PatientID).
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"patient folder pattern {pattern!r} is not a regular expression "
                         f"({exc})") from exc
    allowed = {"PatientID", "AccessionNumber", "StudyID"}
    unknown = sorted(set(regex.groupindex) - allowed)
    if unknown or not regex.groupindex:
        raise InputError(f"patient folder pattern {pattern!r} must name groups among "
                         f"{', '.join(sorted(allowed))}")
    folders = path.absolute().parent.as_posix()
    match = regex.search(folders)
    if match is None:
        raise InputError(f"{path.name}: its folder does not follow the patient folder "
                         f"pattern {pattern!r}")
    return {key: value for key, value in match.groupdict().items() if value}


def with_folder_identity(loaded: LoadedInput, path: Path, pattern: str) -> LoadedInput:
    """`loaded` with the identity its folder names give (a sidecar file wins).

    Raises
    ------
    InputError
        See :func:`folder_identity`.
    """
    from_folder = folder_identity(path, pattern)
    given = read_sidecar(path)
    values = {k: v for k, v in from_folder.items() if k not in given}
    source = loaded.source.replace(dicom={**loaded.source.dicom, **values})
    return LoadedInput(pages=loaded.pages, source=source)


def sidecar_path(path: Path) -> Path:
    """The JSON sidecar file of an input: the same name with ``.json``."""
    return path.with_suffix(".json")


def sidecar_files(path: Path) -> list[Path]:
    """The sidecar files lying beside input `path` (``X.json``, ``X.hl7``, ``X.wl``)."""
    if path.suffix.lower() in SIDECAR_SUFFIXES:
        return []
    return [side for side in (path.with_suffix(suffix) for suffix in SIDECAR_SUFFIXES)
            if side.is_file()]


def read_sidecar(path: Path) -> dict[str, str]:
    """Read the sidecar of input `path` (``X.json``, ``X.hl7`` or ``X.wl``); ``{}`` if none.

    Returns
    -------
    dict
        DICOM keyword -> value (dates as ``YYYYMMDD``; ``AcquisitionDateTime`` as given,
        checked to be a date and time).

    Raises
    ------
    InputError
        The sidecar is unreadable, not a JSON object, has unknown keys next to known
        ones, or bad values; an HL7 or worklist sidecar is not usable; two sidecars give
        identity.
    """
    readers = {".json": _read_json_sidecar, ".hl7": _read_hl7_sidecar,
               ".wl": _read_worklist_sidecar}
    found = {side.name: readers[side.suffix.lower()](side) for side in sidecar_files(path)}
    given = {name: values for name, values in found.items() if values}
    if len(given) > 1:
        raise InputError(f"{path.name}: {len(given)} sidecar files give its identity "
                         f"({', '.join(sorted(given))}); keep one")
    return next(iter(given.values()), {})


def _read_bytes(side: Path) -> bytes:
    try:
        limit = _MAX_BYTES[side.suffix.lower()]
        if side.stat().st_size > limit:
            raise InputError(f"{side.name}: sidecar file larger than {limit} bytes")
        return side.read_bytes()
    except OSError as exc:
        raise InputError(f"{side.name}: sidecar file is not readable ({exc})") from exc


def _read_hl7_sidecar(side: Path) -> dict[str, str]:
    return _checked_all(side.name, read_hl7_identity(_read_bytes(side), side.name))


def _read_worklist_sidecar(side: Path) -> dict[str, str]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(_read_bytes(side)), force=True)
        values = {key: str(ds.get(key) or "") for key in WORKLIST_KEYS}
    except (InvalidDicomError, ValueError, TypeError, AttributeError, KeyError,
            EOFError) as exc:  # pydicom's errors of a damaged file
        raise InputError(f"{side.name}: not a readable DICOM worklist item ({exc})") from exc
    if not values["PatientID"] and "ScheduledProcedureStepSequence" not in ds:
        raise InputError(f"{side.name}: not a DICOM worklist item (no PatientID, no "
                         "Scheduled Procedure Step)")
    return _checked_all(side.name, {k: v for k, v in values.items() if v})


def _read_json_sidecar(side: Path) -> dict[str, str]:
    try:
        doc = json.loads(_read_bytes(side).decode("utf-8"))
    except ValueError as exc:
        raise InputError(f"{side.name}: sidecar file is not readable JSON ({exc})") from exc
    if not isinstance(doc, dict) or not any(key in doc for key in SIDECAR_KEYS):
        return {}
    unknown = sorted(set(doc) - set(SIDECAR_KEYS))
    if unknown:
        raise InputError(
            f"{side.name}: sidecar file has unknown keys {', '.join(unknown)} "
            f"(known: {', '.join(SIDECAR_KEYS)})"
        )
    return _checked_all(side.name, doc)


def _checked_all(name: str, doc: dict[str, Any]) -> dict[str, str]:
    return {key: _checked(name, key, doc[key]) for key in SIDECAR_KEYS if key in doc}


def _checked(name: str, key: str, value: Any) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InputError(f"{name}: sidecar {key} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if key in ("PatientBirthDate", "StudyDate") and text:
        digits = text.replace("-", "")
        if not re.match(r"^\d{8}$", digits):
            raise InputError(f"{name}: sidecar {key} is not a date (YYYY-MM-DD)")  # no value: PHI
        return digits
    if key == "StudyTime" and text:
        digits = text.replace(":", "")
        if not re.match(r"^\d{2,6}(\.\d+)?$", digits):
            raise InputError(f"{name}: sidecar {key} {text!r} is not a time (HH:MM:SS)")
        return digits
    if key == "PatientSex" and text and text not in ("M", "F", "O"):
        raise InputError(f"{name}: sidecar PatientSex {text!r} must be M, F or O")
    if key == "StudyInstanceUID" and text and (not _UID.match(text) or len(text) > 64):
        raise InputError(f"{name}: sidecar StudyInstanceUID {text!r} is not a DICOM UID")
    if key == "AcquisitionDateTime" and text:
        return _dicom_datetime(name, text)
    limit = _MAX_LENGTH.get(key)
    if limit is not None and (len(text) > limit or "\\" in text):
        raise InputError(f"{name}: sidecar {key} does not fit DICOM ({len(text)} characters; "
                         f"{limit} at most, no backslash)")  # the value: patient data
    return text


_ISO_DT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)
_DICOM_DT = re.compile(r"^\d{12}(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


def _dicom_datetime(name: str, text: str) -> str:
    """DICOM DT (``YYYYMMDDHHMM[SS][+HHMM]``) of an ISO 8601 or DICOM date and time."""
    if _DICOM_DT.match(text):
        return re.sub(r"\.\d+", "", text)
    match = _ISO_DT.match(text)
    if match is None:
        raise InputError(
            f"{name}: sidecar AcquisitionDateTime {text!r} is not a date and time "
            "(YYYY-MM-DDTHH:MM:SS, optionally with a zone)"
        )
    year, month, day, hour, minute, second, zone = match.groups()
    value = f"{year}{month}{day}{hour}{minute}{second or ''}"
    if zone:
        value += "+0000" if zone == "Z" else zone.replace(":", "")
    return value
