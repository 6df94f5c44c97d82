"""Reader of DICOM ECG waveform objects (12-lead, general and ambulatory ECG)."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ecgbridge import codes
from ecgbridge.ecg import (
    ECG,
    LEADS,
    Calibration,
    CalibrationMethod,
    SourceInfo,
    normalise_lead_name,
)
from ecgbridge.encode.dicom_provenance import source_facts
from ecgbridge.errors import InputError

#: Identity attributes copied from a DICOM source (Patient and General Study modules).
PATIENT_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
)
STUDY_KEYWORDS = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "StudyDescription",
)


def read_dicom_waveform(source: Path | str | Dataset) -> ECG:
    """Read an ECG waveform object (12-lead, general or ambulatory ECG) into an ECG.

    The multiplex group with the most recognised standard leads is used (ties: the
    one with more samples, so a rhythm group wins over a median beat). Leads are
    recognised by MDC (``2:n``) or SCPECG (``5.6.3-9-n``) channel source codes, else by
    ChannelLabel; a group holding only I, II and V1-V6 gets III, aVR, aVL and aVF
    derived (:func:`derive_limb_leads`). Samples equal to WaveformPaddingValue become
    NaN. The rate is kept.

    Raises
    ------
    InputError
        If the object is not readable, has no waveform, or no standard lead.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, Dataset):
        ds, name, digest = source, "", ""
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
            ds = pydicom.dcmread(io.BytesIO(data))
        except (OSError, InvalidDicomError) as exc:
            raise InputError(f"{path}: not a readable DICOM file ({exc})") from exc
        name, digest = path.name, hashlib.sha256(data).hexdigest()
    label = name or "dataset"
    if "WaveformSequence" not in ds or not ds.WaveformSequence:
        raise InputError(
            f"{label}: DICOM object has no WaveformSequence "
            f"(SOP class {ds.get('SOPClassUID', 'unknown')})"
        )
    best: tuple[int, int, int] | None = None
    for index, group in enumerate(ds.WaveformSequence):
        mapped = sum(1 for ch in group.get("ChannelDefinitionSequence", []) if _channel_lead(ch))
        key = (mapped, int(group.get("NumberOfWaveformSamples", 0)), -index)
        if best is None or key > best:
            best = key
    assert best is not None
    if best[0] == 0:
        raise InputError(f"{label}: no waveform channel is a standard 12-lead ECG lead")
    index = -best[2]
    group = ds.WaveformSequence[index]
    try:
        values = np.asarray(ds.waveform_array(index), dtype=np.float64)
        raw = _raw_samples(group)
    except Exception as exc:  # malformed WaveformData etc.
        raise InputError(f"{label}: cannot decode waveform group {index + 1} ({exc})") from exc
    padding = _padding_value(group)
    if padding is not None:
        values[raw == padding] = np.nan
    leads: dict[str, np.ndarray] = {}
    negative_avr: np.ndarray | None = None
    for c, ch in enumerate(group.ChannelDefinitionSequence):
        lead = _channel_lead(ch)
        if lead is None:
            continue
        column = values[:, c] * _unit_to_mv(ch)
        if lead == "-aVR":
            negative_avr = -column
        elif lead not in leads:
            leads[lead] = column
    if "aVR" not in leads and negative_avr is not None:
        leads["aVR"] = negative_avr
    leads.update(derive_limb_leads(leads))
    fs = float(group.SamplingFrequency)
    quality = _read_quality(ds, index, group, leads)
    identity = {
        kw: ds.get(kw)
        for kw in (*PATIENT_KEYWORDS, *STUDY_KEYWORDS, "SOPClassUID", "SOPInstanceUID",
                   "SeriesInstanceUID", "AcquisitionDateTime", "ContentDate", "ContentTime")
        if kw in ds and ds.get(kw) not in (None, "")
    }
    identity = {k: str(v) for k, v in identity.items()}
    facts = source_facts(ds, group, index)
    return ECG.from_leads(
        leads,
        fs=fs,
        n_samples=values.shape[0],
        quality=quality,
        calibration=Calibration(layout="waveform", method=CalibrationMethod.WAVEFORM),
        source=SourceInfo(
            name=name, sha256=digest, media_type="application/dicom", dicom=identity, **facts
        ),
    )


def derive_limb_leads(leads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the limb leads missing from `leads` that I and II determine.

    Many carts store only the 8 independent leads (I, II, V1-V6); the others follow from
    Einthoven's and Goldberger's relations: III = II - I, aVR = -(I + II) / 2,
    aVL = I - II / 2, aVF = II - I / 2. Nothing is derived without both I and II.
    """
    if "I" not in leads or "II" not in leads:
        return {}
    lead_i, lead_ii = leads["I"], leads["II"]
    formulas = {
        "III": lambda: lead_ii - lead_i,
        "aVR": lambda: -(lead_i + lead_ii) / 2.0,
        "aVL": lambda: lead_i - lead_ii / 2.0,
        "aVF": lambda: lead_ii - lead_i / 2.0,
    }
    return {name: f() for name, f in formulas.items() if name not in leads}


def _channel_lead(channel: Dataset) -> str | None:
    for item in channel.get("ChannelSourceSequence", []):
        value = str(item.get("CodeValue", ""))
        scheme = str(item.get("CodingSchemeDesignator", ""))
        if scheme.upper() == codes.DICOM_SCHEME_MDC and value == codes.DICOM_CODE_NEGATIVE_AVR:
            return "-aVR"
        lead = codes.lead_from_dicom_code(value, scheme)
        if lead is not None:
            return lead
    label = str(channel.get("ChannelLabel", "")).strip()
    if label:
        if label.replace(" ", "").lower() == "-avr":
            return "-aVR"
        try:
            return normalise_lead_name(label)
        except ValueError:
            return None
    return None


def _unit_to_mv(channel: Dataset) -> float:
    units = channel.get("ChannelSensitivityUnitsSequence")
    code = str(units[0].get("CodeValue", "uV")) if units else "uV"
    return {"uV": 1e-3, "mV": 1.0, "V": 1e3, "nV": 1e-6}.get(code, 1e-3)


def _raw_samples(group: Dataset) -> np.ndarray:
    bits = int(group.WaveformBitsAllocated)
    interpretation = str(group.WaveformSampleInterpretation)
    dtype = {
        (16, "SS"): "<i2", (16, "US"): "<u2", (8, "SB"): "i1", (8, "UB"): "u1",
        (32, "SL"): "<i4", (32, "UL"): "<u4",
    }.get((bits, interpretation))
    if dtype is None:
        raise ValueError(f"unsupported sample interpretation {interpretation} / {bits} bits")
    n_channels = int(group.NumberOfWaveformChannels)
    n_samples = int(group.NumberOfWaveformSamples)
    data = np.frombuffer(group.WaveformData, dtype=dtype)[: n_channels * n_samples]
    return data.reshape(n_samples, n_channels)


def _padding_value(group: Dataset) -> int | None:
    if "WaveformPaddingValue" not in group:
        return None
    raw = bytes(group.WaveformPaddingValue or b"")
    interpretation = str(group.WaveformSampleInterpretation)
    fmt = {"SS": "<h", "US": "<H", "SB": "b", "UB": "B", "SL": "<i", "UL": "<I"}.get(
        interpretation
    )
    if fmt is None or len(raw) < struct.calcsize(fmt):
        return None
    return int(struct.unpack(fmt, raw[: struct.calcsize(fmt)])[0])


def _read_quality(
    ds: Dataset, group_index: int, group: Dataset, leads: Mapping[str, np.ndarray]
) -> tuple[float, ...]:
    """Per-lead quality: ecgbridge's annotations when present, else 1 for present leads."""
    quality = [1.0 if lead in leads else 0.0 for lead in LEADS]
    channel_leads = [_channel_lead(ch) for ch in group.ChannelDefinitionSequence]
    for item in ds.get("WaveformAnnotationSequence", []):
        names = item.get("ConceptNameCodeSequence")
        channels = item.get("ReferencedWaveformChannels")
        if not names or channels is None or "NumericValue" not in item:
            continue
        if (names[0].get("CodeValue"), names[0].get("CodingSchemeDesignator")) != (
            codes.DICOM_CONCEPT_DIGITIZATION_QUALITY.value,
            codes.DICOM_CONCEPT_DIGITIZATION_QUALITY.scheme,
        ):
            continue
        pairs = [channels] if isinstance(channels, int) else list(channels)
        for g, c in zip(pairs[0::2], pairs[1::2], strict=False):
            if int(g) == group_index + 1 and 1 <= int(c) <= len(channel_leads):
                lead = channel_leads[int(c) - 1]
                if lead in LEADS:
                    quality[LEADS.index(lead)] = float(item.NumericValue)
    return tuple(quality)
