"""Facts about the source that FHIR and WFDB have no field for, kept as history lines.

A DICOM waveform holds the equipment that recorded it (Contributing Equipment) and its
filter settings (003A,0220-0222). A FHIR Observation's SampledData and a WFDB header
have no place for either, so ``convert`` DICOM -> FHIR/WFDB -> DICOM would lose them.
They travel as lines of ecgbridge's history (FHIR note ``ecgbridge history: ...``,
WFDB comment ``ecgbridge-history: ...``), human-readable and read back::

    equipment (Acquisition Equipment): Manufacturer=Mortara; ManufacturerModelName=el250
    filters: low 0.05 Hz, high 150 Hz, notch 50 Hz

Values lose the characters that separate lines and fields (``|`` becomes ``/``, ``;``
becomes ``,``, ``=`` becomes ``-``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Start of a history line naming equipment behind the source.
EQUIPMENT_PREFIX = "equipment"
#: Start of the history line holding the source's filter settings.
FILTERS_PREFIX = "filters:"
#: Contributing Equipment purposes (CID 7005) by code, as the lines name them.
PURPOSE_MEANINGS = {"109101": "Acquisition Equipment", "109102": "Processing Equipment"}
#: Filter keys of SourceInfo.filters and their words in the line.
_FILTER_WORDS = {"low_hz": "low", "high_hz": "high", "notch_hz": "notch"}
_EQUIPMENT_LINE = re.compile(r"^equipment \(([^)]*)\): (.*)$")
_FILTER_PART = re.compile(r"^(low|high|notch) ([0-9.]+) Hz$")
_UNSAFE = str.maketrans({"|": "/", ";": ",", "=": "-"})


def source_lines(equipment: Iterable[Mapping[str, str]], filters: Mapping[str, float]) -> list[str]:
    """History lines of `equipment` (SourceInfo.equipment) and `filters` (Hz)."""
    lines = []
    for entry in equipment:
        purpose = PURPOSE_MEANINGS.get(str(entry.get("Purpose", "")), PURPOSE_MEANINGS["109102"])
        fields = [f"{key}={str(value).translate(_UNSAFE).strip()}"
                  for key, value in entry.items() if key != "Purpose" and str(value).strip()]
        if fields:
            lines.append(f"{EQUIPMENT_PREFIX} ({purpose}): " + "; ".join(fields))
    parts = [f"{word} {float(filters[key]):g} Hz" for key, word in _FILTER_WORDS.items()
             if key in filters]
    if parts:
        lines.append(f"{FILTERS_PREFIX} " + ", ".join(parts))
    return lines


def split_source_lines(history: Iterable[str]) -> dict[str, Any]:
    """Equipment and filters named in `history`, and the other lines.

    Returns
    -------
    dict
        ``equipment`` (tuple of dicts as SourceInfo.equipment), ``filters`` (dict, Hz)
        and ``history`` (the lines that are neither).
    """
    codes = {meaning: code for code, meaning in PURPOSE_MEANINGS.items()}
    equipment: list[dict[str, str]] = []
    filters: dict[str, float] = {}
    rest: list[str] = []
    for line in history:
        match = _EQUIPMENT_LINE.match(line)
        if match:
            entry = dict(field.split("=", 1) for field in match.group(2).split("; ")
                         if "=" in field)
            equipment.append({**entry, "Purpose": codes.get(match.group(1), "109102")})
        elif line.startswith(FILTERS_PREFIX):
            for part in line[len(FILTERS_PREFIX):].split(","):
                found = _FILTER_PART.match(part.strip())
                if found:
                    key = next(k for k, w in _FILTER_WORDS.items() if w == found.group(1))
                    filters[key] = float(found.group(2))
        else:
            rest.append(line)
    return {"equipment": tuple(equipment), "filters": filters, "history": tuple(rest)}
