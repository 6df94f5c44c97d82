"""Read any stored ECG waveform into an :class:`~ecgbridge.ecg.ECG`, dispatching by content.

Supported: WFDB records (``.hea`` + signal file), CSV (a ``time_s`` column and lead
columns, as :mod:`ecgbridge.encode.csv_format` writes), DICOM waveform objects (12-lead,
general and ambulatory ECG; MDC or SCPECG lead codes) and FHIR Observation JSON (R4 or
R5, also inside a Bundle). ECGs read here carry ``Calibration(method="waveform")``,
quality 1 for every lead present, and the file's SHA-256 in ``source.sha256``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np

from ecgbridge.ecg import ECG, LEADS, Calibration, CalibrationMethod
from ecgbridge.errors import InputError

WaveformFormat = Literal["wfdb", "csv", "dicom", "fhir"]

#: Media types recorded in SourceInfo for each format read.
MEDIA_TYPES: dict[str, str] = {
    "wfdb": "application/x-wfdb",
    "csv": "text/csv",
    "dicom": "application/dicom",
    "fhir": "application/fhir+json",
}
_SNIFF_BYTES = 4096
_UTF8_BOM = b"\xef\xbb\xbf"


def detect_format(path: Path) -> WaveformFormat:
    """Return which waveform format `path` holds, judging by its content.

    A WFDB record may be named by its header (``rec.hea``), its signal file
    (``rec.dat`` next to ``rec.hea``) or its record name (``rec``).

    Raises
    ------
    InputError
        If the file does not exist or is none of the supported formats.
    """
    if path.suffix.lower() == ".hea" or _wfdb_header(path) is not None:
        return "wfdb"
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    text = head.removeprefix(_UTF8_BOM).lstrip()
    if text.startswith(b"{"):
        return "fhir"
    first_line = text.split(b"\n", 1)[0]
    if b"," in first_line and b"\x00" not in head:
        return "csv"
    raise InputError(
        f"{path}: not a supported ECG waveform (WFDB, CSV, DICOM waveform or FHIR Observation)"
    )


def read_ecg(path: Path | str) -> ECG:
    """Read one stored ECG waveform file.

    Parameters
    ----------
    path : Path or str
        A WFDB header/record, CSV, DICOM waveform or FHIR Observation JSON file.

    Returns
    -------
    ECG
        The 12 leads (NaN for leads the file lacks) at the file's sampling rate.

    Raises
    ------
    InputError
        If the file cannot be read or holds no 12-lead ECG lead.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "dicom":
        from ecgbridge.encode.dicom_waveform import read_dicom_waveform

        return read_dicom_waveform(path)
    if fmt == "fhir":
        return _read_fhir(path)
    if fmt == "wfdb":
        from ecgbridge.encode.wfdb_format import read_wfdb

        header = _wfdb_header(path) or path
        ecg = read_wfdb(header)
        digest = _sha256_of(header, *_wfdb_signal_files(header))
        return _as_waveform(ecg, header.with_suffix("").name, digest, fmt)
    from ecgbridge.encode.csv_format import read_csv

    try:
        ecg = read_csv(path)
    except ValueError as exc:  # a non-numeric cell
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: CSV holds a value that is not a number ({exc})") from exc
    return _as_waveform(ecg, path.name, _sha256_of(path), fmt)


def _read_fhir(path: Path) -> ECG:
    from ecgbridge.encode.fhir_reader import read_fhir_observation

    data = path.read_bytes()
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        resources = [e.get("resource") for e in doc.get("entry", []) or [] if isinstance(e, dict)]
        observations = [
            r for r in resources if isinstance(r, dict) and r.get("resourceType") == "Observation"
        ]
        if not observations:
            raise InputError(f"{path}: FHIR Bundle holds no Observation")
        doc = observations[0]
    ecg = read_fhir_observation(doc)
    return ecg.replace(
        source=ecg.source.replace(
            name=path.name,
            sha256=hashlib.sha256(data).hexdigest(),
            media_type=MEDIA_TYPES["fhir"],
        )
    )


def _as_waveform(ecg: ECG, name: str, digest: str, fmt: str) -> ECG:
    """Mark a WFDB/CSV reading as a stored waveform, keeping the provenance it carried
    (WFDB header comments: record UID, acquisition time, history, digitization quality)."""
    present = set(ecg.present_leads())
    carried = any(h.startswith("digitized from") for h in ecg.source.history)
    quality = ecg.quality if carried else tuple(1.0 if lead in present else 0.0 for lead in LEADS)
    return ecg.replace(
        quality=quality,
        calibration=Calibration(layout="waveform", method=CalibrationMethod.WAVEFORM),
        source=ecg.source.replace(name=name, sha256=digest, media_type=MEDIA_TYPES[fmt]),
    )


def _wfdb_header(path: Path) -> Path | None:
    if path.suffix.lower() == ".hea" and path.is_file():
        return path
    candidate = path.with_suffix(".hea") if path.suffix else Path(f"{path}.hea")
    if path.suffix.lower() in ("", ".dat") and candidate.is_file():
        return candidate
    return None


def _wfdb_signal_files(header: Path) -> list[Path]:
    files: list[Path] = []
    try:
        lines = header.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return files
    for line in lines[1:]:
        parts = line.split()
        if not parts or line.startswith("#"):
            continue
        candidate = header.parent / parts[0]
        if candidate.is_file() and candidate not in files:
            files.append(candidate)
    return files


def _sha256_of(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def max_abs_difference(a: ECG, b: ECG) -> float:
    """Largest |a - b| in mV over samples finite in both (NaN patterns must match).

    Raises
    ------
    ValueError
        If shapes or NaN patterns differ.
    """
    if a.signals.shape != b.signals.shape:
        raise ValueError(f"shapes differ: {a.signals.shape} vs {b.signals.shape}")
    if not np.array_equal(np.isnan(a.signals), np.isnan(b.signals)):
        raise ValueError("the ECGs do not show the same samples (NaN patterns differ)")
    finite = np.isfinite(a.signals)
    return float(np.abs(a.signals[finite] - b.signals[finite]).max()) if finite.any() else 0.0
