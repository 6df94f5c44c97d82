"""Reader of FHIR Observations of an ECG (R4 and R5; as ecgbridge writes them, or shaped
like the specification's ``Observation/ekg`` example), with ecgbridge's provenance notes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ecgbridge import codes
from ecgbridge.ecg import ECG, LEADS, Calibration, CalibrationMethod, SourceInfo
from ecgbridge.encode.dicom_provenance import DIGITIZED_PREFIX, TIME_PREFIX
from ecgbridge.encode.record_facts import fhir_to_dicom_dt, uid_from_fhir_identifiers
from ecgbridge.encode.source_lines import split_source_lines
from ecgbridge.errors import InputError

#: Tokens of a SampledData data string that are not numbers.
NOT_A_NUMBER_TOKENS = frozenset({"E", "L", "U"})
#: Start of the note holding the history of the samples.
HISTORY_NOTE_PREFIX = "ecgbridge history: "
_QUALITY_NOTE = re.compile(
    r"Per-lead digitization quality \(0-1\): ((?:[A-Za-z0-9]+ [0-9.]+(?:, )?)+)"
)


def read_fhir_observation(source: Path | str | Mapping[str, Any]) -> ECG:
    """Read an ECG Observation (R4 or R5, as written here or shaped like the spec's example).

    Components are mapped to leads by their MDC codes; ``value = origin + factor * data``;
    E/L/U become NaN. The rate comes from ``period`` (ms) or ``interval`` +
    ``intervalUnit`` (``ms``, ``s``, ``us``). Only 1-dimensional SampledData is read.

    Raises
    ------
    InputError
        If the document is not an Observation with at least one readable lead component.
    """
    if isinstance(source, Mapping):
        doc: Mapping[str, Any] = source
        name, digest = "", ""
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
            doc = json.loads(data)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable JSON file ({exc})") from exc
        name, digest = path.name, hashlib.sha256(data).hexdigest()
    label = name or "Observation"
    if not isinstance(doc, Mapping) or doc.get("resourceType") != "Observation":
        raise InputError(f"{label}: not a FHIR Observation")
    leads: dict[str, np.ndarray] = {}
    periods: set[float] = set()
    for k, comp in enumerate(doc.get("component", []) or []):
        lead = component_lead(comp)
        sd = comp.get("valueSampledData")
        if lead is None or not isinstance(sd, Mapping) or lead in leads:
            continue
        try:
            leads[lead] = _decode_sampled_data(sd)
            periods.add(round(_period_ms(sd), 9))
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{label}: component[{k}] ({lead}): {exc}") from exc
    if not leads:
        raise InputError(f"{label}: no component holds an MDC-coded 12-lead ECG lead")
    if max(v.size for v in leads.values()) == 0:
        raise InputError(f"{label}: the lead components hold no samples (empty data)")
    if len(periods) != 1:
        raise InputError(f"{label}: leads are sampled at different periods {sorted(periods)} ms")
    period = periods.pop()
    if period <= 0:
        raise InputError(f"{label}: sampling period must be positive, got {period} ms")
    identity = _identity_from_subject(doc.get("subject"))
    facts = _read_provenance(doc, leads)
    quality = facts.pop("quality")
    fs = 1000.0 / period
    if abs(fs - round(fs)) < 1e-4:  # periods are written with 9 decimals (1000/360 Hz...)
        fs = float(round(fs))
    return ECG.from_leads(
        leads,
        fs=fs,
        quality=quality,
        calibration=Calibration(layout="waveform", method=CalibrationMethod.WAVEFORM),
        source=SourceInfo(
            name=name, sha256=digest, media_type="application/fhir+json", dicom=identity,
            **facts,
        ),
    )


def _decode_sampled_data(sd: Mapping[str, Any]) -> np.ndarray:
    if int(sd.get("dimensions", 1)) != 1:
        raise ValueError(f"only 1-dimensional SampledData is read, got {sd.get('dimensions')}")
    origin = sd.get("origin", {}) or {}
    unit = str(origin.get("code") or origin.get("unit") or "mV")
    scale = {"mV": 1.0, "uV": 1e-3, "V": 1e3}.get(unit)
    if scale is None:
        raise ValueError(f"unsupported origin unit {unit!r} (expected mV, uV or V)")
    offset = float(origin.get("value", 0.0))
    factor = float(sd.get("factor", 1.0))
    tokens = str(sd.get("data", "")).split()
    values = np.array(
        [np.nan if t in NOT_A_NUMBER_TOKENS else float(t) for t in tokens], dtype=np.float64
    )
    return (offset + factor * values) * scale


def _period_ms(sd: Mapping[str, Any]) -> float:
    if "period" in sd:
        return float(sd["period"])
    unit = str(sd.get("intervalUnit", "ms"))
    scale = {"ms": 1.0, "s": 1000.0, "us": 1e-3}.get(unit)
    if scale is None:
        raise ValueError(f"unsupported intervalUnit {unit!r}")
    return float(sd["interval"]) * scale


def component_lead(comp: Mapping[str, Any]) -> str | None:
    """The lead an Observation.component's code names (MDC), or None."""
    for c in (comp.get("code") or {}).get("coding", []) or []:
        lead = codes.lead_from_fhir_code(c.get("system"), c.get("code"))
        if lead is not None:
            return lead
    return None


def _identity_from_subject(subject: Any) -> dict[str, str]:
    if not isinstance(subject, Mapping):
        return {}
    ident = subject.get("identifier")
    out: dict[str, str] = {}
    if isinstance(ident, Mapping) and ident.get("value"):
        out["PatientID"] = str(ident["value"])
    if subject.get("display"):
        out["PatientName"] = str(subject["display"])
    return out


def _read_provenance(doc: Mapping[str, Any], leads: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """SourceInfo fields and quality an Observation gives (ecgbridge's notes, identifier)."""
    texts = [str(n.get("text") or "") for n in doc.get("note") or [] if isinstance(n, Mapping)]
    history: tuple[str, ...] = ()
    for text in texts:
        if text.startswith(HISTORY_NOTE_PREFIX):
            history = tuple(p.strip() for p in text[len(HISTORY_NOTE_PREFIX):].split(" | "))
    quality = [1.0 if lead in leads else 0.0 for lead in LEADS]
    for text in texts:
        match = _QUALITY_NOTE.search(text)
        if match and any(line.startswith(DIGITIZED_PREFIX) for line in history):
            for name, value in re.findall(r"(I{1,3}|aV[RLF]|V[1-6]) (\d\.\d+)", match.group(1)):
                if name in leads:
                    quality[LEADS.index(name)] = float(value)
    acquired = fhir_to_dicom_dt(str(doc.get("effectiveDateTime") or ""))
    time_line = next((h for h in history if h.startswith(TIME_PREFIX + ":")), "")
    evidence = time_line.split(":", 1)[1].strip() if time_line else \
        "the source FHIR Observation's effectiveDateTime"
    return {
        "quality": tuple(quality),
        "acquisition_datetime": acquired,
        "acquisition_evidence": evidence if acquired else "",
        "record_uid": uid_from_fhir_identifiers(doc.get("identifier")),
        **split_source_lines(history),  # history, and the equipment and filters it names
    }
