"""WFDB (format 16, 1 µV per unit) writer and reader.

Provenance travels in header comments, read back by :func:`read_wfdb`:
``ecgbridge-record: <record UID>``, ``ecgbridge-acquired: <DICOM DT>`` (with its evidence),
``ecgbridge-history: <line> | <line>`` (with the source's equipment and filter settings,
see :mod:`ecgbridge.encode.source_lines`) and, for digitized ECGs,
``ecgbridge-quality: I 0.93, II 0.88, ...``.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ecgbridge.ecg import ECG, LEADS
from ecgbridge.encode.context import file_mode_of
from ecgbridge.encode.source_lines import source_lines, split_source_lines
from ecgbridge.errors import EncodingError, InputError
from ecgbridge.fsutil import output_mode

#: ADC units per mV: 1 µV resolution, ±32.767 mV range.
WFDB_GAIN = 1000.0
_LIMIT_MV = 32.766


def wfdb_record_name(stem: str) -> str:
    """A WFDB-safe record name for a file stem (letters, digits, ``-`` and ``_`` only).

    WFDB record names cannot hold ``+``, ``.`` or spaces; other characters become ``_``.
    """
    name = re.sub(r"[^A-Za-z0-9_-]", "_", stem)
    return name or "record"


def write_wfdb(ecg: ECG, out_dir: Path, stem: str, context: object = None) -> list[Path]:
    """Write ``<stem>.hea`` and ``<stem>.dat`` (12 signals in mV, NaN as WFDB's invalid value).

    A stem with characters WFDB does not allow in record names is written under
    :func:`wfdb_record_name` (e.g. ``ecg+1`` -> ``ecg_1``).

    Raises
    ------
    EncodingError
        If a lead exceeds the ±32.7 mV that format 16 holds at 1 µV per unit.
    """
    import wfdb

    stem = wfdb_record_name(stem)
    mode = output_mode(file_mode_of(context))
    finite = ecg.signals[np.isfinite(ecg.signals)]
    if finite.size and float(np.abs(finite).max()) > _LIMIT_MV:
        raise EncodingError(
            f"{stem}: a lead reaches {float(np.abs(finite).max()):.1f} mV, beyond the "
            f"±{_LIMIT_MV} mV that WFDB format 16 holds at 1 µV per unit"
        )
    d = np.round(ecg.signals.T * WFDB_GAIN)
    d[~np.isfinite(d)] = -32768  # WFDB invalid sample for format 16
    d_signal = d.astype(np.int16).astype(np.int64)
    fs = ecg.fs if float(ecg.fs).is_integer() else round(ecg.fs, 6)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{stem}.") as tmp:
        wfdb.wrsamp(
            record_name=stem,
            fs=fs,
            units=["mV"] * len(LEADS),
            sig_name=list(LEADS),
            d_signal=d_signal,
            fmt=["16"] * len(LEADS),
            adc_gain=[WFDB_GAIN] * len(LEADS),
            baseline=[0] * len(LEADS),
            comments=provenance_comments(ecg, context),
            write_dir=tmp,
        )
        written = []
        for ext in ("dat", "hea"):  # header last: it makes the record visible
            dest = out_dir / f"{stem}.{ext}"
            os.chmod(Path(tmp) / f"{stem}.{ext}", mode)
            os.replace(Path(tmp) / f"{stem}.{ext}", dest)
            written.append(dest)
    return written


def provenance_comments(ecg: ECG, context: object = None) -> list[str]:
    """Header comments holding the ECG's record UID, acquisition time, history, quality."""
    from ecgbridge import codes
    from ecgbridge.encode.record_facts import acquisition_time, record_settings, record_uid

    digitized = codes.DIGITIZED_METHODS.get(ecg.calibration.method)
    made = "digitized by ecgbridge from" if digitized else "converted by ecgbridge from"
    comments = [f"{made} {ecg.source.name or 'an ECG'}", f"{_RECORD} {record_uid(ecg)}"]
    options = getattr(context, "options", None) or {}
    when = acquisition_time(ecg, record_settings(options))
    if when is not None:
        comments.append(f"{_ACQUIRED} {when.dicom_dt()}{when.dicom_offset()} ({when.evidence})")
    history = [*ecg.source.history, *source_lines(ecg.source.equipment, ecg.source.filters)]
    if digitized:
        history.append(f"digitized from a paper ECG image by ecgbridge ({digitized})")
    if history:
        comments.append(f"{_HISTORY} " + " | ".join(dict.fromkeys(history)))
    if digitized or any(h.startswith("digitized from") for h in history):
        present = set(ecg.present_leads())
        comments.append(f"{_QUALITY} " + ", ".join(
            f"{lead} {q:.2f}" for lead, q in zip(LEADS, ecg.quality, strict=True)
            if lead in present))
    return comments


_RECORD = "ecgbridge-record:"
_ACQUIRED = "ecgbridge-acquired:"
_HISTORY = "ecgbridge-history:"
_QUALITY = "ecgbridge-quality:"


def read_provenance(comments: list[str]) -> dict[str, object]:
    """SourceInfo fields and quality (``"quality"``: lead -> value) of header comments."""
    out: dict[str, object] = {}
    for line in comments:
        text = line.strip()
        if text.startswith(_RECORD):
            out["record_uid"] = text[len(_RECORD):].strip()
        elif text.startswith(_ACQUIRED):
            value, _, evidence = text[len(_ACQUIRED):].strip().partition(" ")
            out["acquisition_datetime"] = value
            out["acquisition_evidence"] = evidence.strip("() ") or "WFDB header"
        elif text.startswith(_HISTORY):
            out.update(split_source_lines(  # history, and the equipment and filters it names
                h.strip() for h in text[len(_HISTORY):].split(" | ") if h.strip()))
        elif text.startswith(_QUALITY):
            pairs = re.findall(r"(\S+) (\d+(?:\.\d+)?)", text[len(_QUALITY):])
            out["quality"] = {lead.rstrip(","): float(v) for lead, v in pairs}
    return out


def read_wfdb(path: Path) -> ECG:
    """Read a WFDB record (path with or without ``.hea``) holding some of the 12 leads.

    Raises
    ------
    InputError
        If the record cannot be read or holds none of the 12 leads.
    """
    import wfdb

    from ecgbridge.ecg import normalise_lead_name

    base = str(path)[:-4] if str(path).endswith(".hea") else str(path)
    try:
        rec = wfdb.rdrecord(base)
    except Exception as exc:  # wfdb raises many kinds
        raise InputError(f"{path}: not a readable WFDB record ({exc})") from exc
    units = [u.lower() if u else "mv" for u in rec.units]
    leads: dict[str, np.ndarray] = {}
    for i, name in enumerate(rec.sig_name):
        try:
            lead = normalise_lead_name(name)
        except ValueError:
            continue
        scale = 1e-3 if units[i] in ("uv", "µv") else 1.0
        leads[lead] = rec.p_signal[:, i] * scale
    if not leads:
        raise InputError(f"{path}: none of the signals {rec.sig_name} is a 12-lead ECG lead")
    fs = float(rec.fs)
    if not math.isfinite(fs) or fs <= 0:
        raise InputError(f"{path}: invalid sampling rate {rec.fs}")
    ecg = ECG.from_leads(leads, fs=fs, n_samples=rec.sig_len)
    facts = read_provenance(list(rec.comments or []))
    given = facts.pop("quality", None)
    if isinstance(given, dict):
        ecg = ecg.replace(quality=tuple(float(given.get(lead, 0.0)) for lead in LEADS))
    return ecg.replace(source=ecg.source.replace(**facts))
