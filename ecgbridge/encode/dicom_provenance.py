"""Provenance parts of ecgbridge's DICOM waveforms: history notes, filter settings, source facts.

History lines (what was done to the samples: digitized from paper, resampled,
re-quantised; where the acquisition time came from) are written as text annotations
(Waveform Annotation items with UnformattedTextValue, prefixed ``ecgbridge: ``,
referring to all channels of group 1) and read back, so a DICOM -> DICOM/FHIR/WFDB
conversion keeps them. Filter settings go into each channel's FilterLowFrequency,
FilterHighFrequency and NotchFilterFrequency (003A,0220-0222).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from ecgbridge import codes
from ecgbridge.ecg import ECG
from ecgbridge.encode.record_facts import (
    AcquisitionTime,
    waveform_source_time,
)

#: Prefix of ecgbridge's text annotations.
TEXT_PREFIX = "ecgbridge: "
#: Start of the history line of an ECG digitized from a page.
DIGITIZED_PREFIX = "digitized from a paper ECG image"
#: Start of the history line naming where the acquisition time came from.
TIME_PREFIX = "acquisition time"
#: Quantisation error (mV) above which a conversion says it re-quantised the samples.
_REQUANTISED_MV = 1e-6
#: Filter keys of SourceInfo.filters and their channel attributes.
FILTER_KEYWORDS = {
    "low_hz": "FilterLowFrequency",
    "high_hz": "FilterHighFrequency",
    "notch_hz": "NotchFilterFrequency",
}


def digitized_history(ecg: ECG) -> str:
    """The history line saying the ECG was digitized from paper, from its source; else ``""``."""
    return next((line for line in ecg.source.history if line.startswith(DIGITIZED_PREFIX)), "")


def history_lines(
    ecg: ECG,
    fs: float,
    signals: np.ndarray,
    raw: np.ndarray,
    sensitivity_uv: float,
    when: AcquisitionTime | None,
) -> list[str]:
    """What a new encoding of `ecg` says about how its samples were made.

    Parameters
    ----------
    ecg : ECG
        The ECG as given to the writer.
    fs : float
        Rate written (differs from ``ecg.fs`` when resampled).
    signals : numpy.ndarray
        Samples written, in mV (after resampling).
    raw : numpy.ndarray
        Their integer codes.
    sensitivity_uv : float
        µV per code.
    when : AcquisitionTime or None
        The acquisition time written, with its evidence.
    """
    lines = [line for line in ecg.source.history if not line.startswith(TIME_PREFIX)]
    method = codes.DIGITIZED_METHODS.get(ecg.calibration.method)
    if method is not None:
        lines.append(f"{DIGITIZED_PREFIX} by ecgbridge ({method})")
    if fs != ecg.fs:
        lines.append(f"resampled from {ecg.fs:g} Hz to {fs:g} Hz by ecgbridge")
    if method is None and requantisation_error(signals, raw, sensitivity_uv) > _REQUANTISED_MV:
        lines.append(f"re-quantised to {sensitivity_uv:g} uV steps by ecgbridge")
    if when is not None and when.evidence:
        lines.append(f"{TIME_PREFIX}: {when.evidence}")
    return list(dict.fromkeys(lines))


def requantisation_error(signals: np.ndarray, raw: np.ndarray, sensitivity_uv: float) -> float:
    """Largest |written - given| in mV over the finite samples."""
    finite = np.isfinite(signals)
    if not finite.any():
        return 0.0
    written = raw.astype(np.float64) * sensitivity_uv / 1000.0
    return float(np.abs(written[finite] - signals[finite]).max())


def text_annotation(line: str) -> Dataset:
    """A Waveform Annotation item holding one history line, for all channels of group 1."""
    item = Dataset()
    item.UnformattedTextValue = TEXT_PREFIX + line
    item.ReferencedWaveformChannels = [1, 0]
    item.AnnotationGroupNumber = 2
    return item


def read_history(ds: Dataset) -> tuple[str, ...]:
    """History lines of an ecgbridge waveform (its text annotations; older files: the
    channels' derivation descriptions)."""
    lines = []
    for item in ds.get("WaveformAnnotationSequence", []):
        text = str(item.get("UnformattedTextValue", "") or "")
        if text.startswith(TEXT_PREFIX):
            lines.append(text[len(TEXT_PREFIX):].strip())
    if not any(line.startswith(DIGITIZED_PREFIX) for line in lines):
        for group in ds.get("WaveformSequence", []):
            for channel in group.get("ChannelDefinitionSequence", []):
                text = str(channel.get("ChannelDerivationDescription", "") or "")
                if text.startswith("Digitized from ECG image by ecgbridge"):
                    method = text[text.find("(") + 1 : text.rfind(")")] if "(" in text else ""
                    suffix = f" ({method})" if method else ""
                    lines.insert(0, f"{DIGITIZED_PREFIX} by ecgbridge{suffix}")
                    break
            else:
                continue
            break
    return tuple(dict.fromkeys(lines))


def add_filter_settings(group: Dataset, filters: Mapping[str, float]) -> None:
    """Write known filter settings (Hz) into every channel of `group`."""
    for key, keyword in FILTER_KEYWORDS.items():
        value = filters.get(key)
        if value is None or not np.isfinite(value) or value < 0:
            continue
        text = f"{float(value):.6f}".rstrip("0").rstrip(".")
        for channel in group.ChannelDefinitionSequence:
            setattr(channel, keyword, text)


def read_filters(group: Dataset) -> dict[str, float]:
    """Filter settings shared by every channel of `group` (Hz); settings that differ
    between channels are left out."""
    out: dict[str, float] = {}
    channels = list(group.get("ChannelDefinitionSequence", []))
    for key, keyword in FILTER_KEYWORDS.items():
        values = {float(ch.get(keyword)) for ch in channels if ch.get(keyword) not in (None, "")}
        if len(values) == 1 and all(ch.get(keyword) not in (None, "") for ch in channels):
            out[key] = values.pop()
    return out


#: Contributing Equipment attributes carried from a source waveform.
EQUIPMENT_KEYWORDS = (
    "Manufacturer", "InstitutionName", "ManufacturerModelName", "DeviceSerialNumber",
    "SoftwareVersions",
)
#: PurposeOfReferenceCodeSequence codes of Contributing Equipment (CID 7005).
_PURPOSES = {
    "109101": "Acquisition Equipment",
    "109102": "Processing Equipment",
}


def read_equipment(ds: Dataset, own: bool) -> tuple[dict[str, str], ...]:
    """Equipment behind a source waveform: its Contributing Equipment, and for another
    maker's waveform its own equipment as the acquisition equipment."""
    found = []
    for item in ds.get("ContributingEquipmentSequence", []):
        entry = {kw: str(item.get(kw)) for kw in EQUIPMENT_KEYWORDS if item.get(kw)}
        codes_ = item.get("PurposeOfReferenceCodeSequence") or []
        code = str(codes_[0].get("CodeValue", "")) if codes_ else ""
        entry["Purpose"] = code if code in _PURPOSES else "109102"
        found.append(entry)
    if not own:
        entry = {kw: str(ds.get(kw)) for kw in EQUIPMENT_KEYWORDS if ds.get(kw)}
        found.append({**entry, "Purpose": "109101"})
    return tuple(found)


def equipment_items(equipment: Any) -> list[Dataset]:
    """ContributingEquipmentSequence items (SOP Common) of SourceInfo.equipment."""
    items = []
    for entry in equipment:
        item = Dataset()
        item.Manufacturer = str(entry.get("Manufacturer", ""))  # Type 1 but may be unknown
        for keyword in EQUIPMENT_KEYWORDS[1:]:
            if entry.get(keyword):
                setattr(item, keyword, str(entry[keyword]))
        purpose = str(entry.get("Purpose", "109102"))
        code = Dataset()
        code.CodeValue = purpose
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = _PURPOSES.get(purpose, _PURPOSES["109102"])
        item.PurposeOfReferenceCodeSequence = [code]
        items.append(item)
    return items


def not_carried(ds: Dataset, chosen: int) -> list[str]:
    """History lines naming what of a source waveform a conversion leaves behind."""
    lines = []
    for index, group in enumerate(ds.get("WaveformSequence", [])):
        if index == chosen:
            continue
        label = str(group.get("MultiplexGroupLabel", "") or "unlabelled")
        lines.append(
            f"not carried from the source: multiplex group {index + 1} '{label}' "
            f"({group.get('NumberOfWaveformChannels', '?')} channels, "
            f"{group.get('NumberOfWaveformSamples', '?')} samples)"
        )
    foreign = [
        item for item in ds.get("WaveformAnnotationSequence", [])
        if not str(item.get("UnformattedTextValue", "")).startswith(TEXT_PREFIX)
        and not _is_quality(item)
    ]
    if foreign:
        lines.append(f"not carried from the source: {len(foreign)} waveform annotations")
    if ds.get("AcquisitionContextSequence"):
        lines.append("not carried from the source: its acquisition context")
    return lines


def _is_quality(item: Dataset) -> bool:
    names = item.get("ConceptNameCodeSequence") or []
    return bool(names) and (
        names[0].get("CodeValue"), names[0].get("CodingSchemeDesignator")
    ) == (codes.DICOM_CONCEPT_DIGITIZATION_QUALITY.value,
          codes.DICOM_CONCEPT_DIGITIZATION_QUALITY.scheme)


def source_facts(ds: Dataset, group: Dataset, chosen: int = 0) -> dict[str, Any]:
    """SourceInfo fields a waveform gives: acquisition time, record UID, filters, history,
    equipment (`chosen` is the index of the multiplex group read)."""
    identity = {
        kw: str(ds.get(kw))
        for kw in ("SOPClassUID", "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime",
                   "TimezoneOffsetFromUTC")
        if ds.get(kw) not in (None, "")
    }
    history = read_history(ds) + tuple(not_carried(ds, chosen))
    time_line = next((line for line in history if line.startswith(TIME_PREFIX)), "")
    own = str(ds.get("Manufacturer", "")) == "ecgbridge"
    acquired = waveform_source_time(identity)
    evidence = "the source DICOM waveform's AcquisitionDateTime"
    if own and time_line.endswith("(acquisition time unknown)"):
        acquired, evidence = "", ""  # ecgbridge wrote its digitization time
    elif own and time_line:
        evidence = time_line.split(":", 1)[1].strip()
    return {
        "acquisition_datetime": acquired,
        "acquisition_evidence": evidence if acquired else "",
        "record_uid": str(ds.get("SeriesInstanceUID", "")) if own else "",
        "filters": read_filters(group),
        "history": history,
        "equipment": read_equipment(ds, own),
    }


__all__ = [
    "DIGITIZED_PREFIX", "EQUIPMENT_KEYWORDS", "FILTER_KEYWORDS", "TEXT_PREFIX", "TIME_PREFIX",
    "add_filter_settings", "digitized_history", "equipment_items", "history_lines",
    "not_carried", "read_equipment", "read_filters", "read_history", "requantisation_error",
    "source_facts", "text_annotation",
]
