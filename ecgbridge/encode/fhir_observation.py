"""FHIR Observation (R4 and R5) of a 12-lead ECG, following the spec's ECG example.

Shape (after ``Observation/ekg`` in the FHIR specification):

* ``status`` final; ``category`` ``procedure`` (observation-category), as in the spec's
  ECG example and the German EKG base profile; not ``vital-signs``, whose profile
  requires a vital-sign LOINC code and a Quantity value.
* ``code``: LOINC 11524-6 "EKG study" and MDC 131328 MDC_ECG_ELEC_POTL.
* one ``component`` per lead shown, coded MDC (I 131329 ... V6 131336), with
  ``valueSampledData``: origin 0 mV (UCUM), ``factor`` 0.001, data as integer
  microvolts, so the round trip is exact to 0.5 µV; R4 gives ``period`` in ms, R5
  ``interval`` + ``intervalUnit`` "ms". ``E`` marks samples the page does not show,
  ``L``/``U`` values beyond ±32.767 mV (``lowerLimit``/``upperLimit``).
* ``identifier`` ``urn:dicom:uid`` | ``urn:oid:<record UID>``: the ECG record's UID
  (:func:`ecgbridge.encode.record_facts.record_uid`, also the SeriesInstanceUID of the
  DICOM waveform of the same ECG), so ``digitize`` and ``convert`` agree and re-posting is
  idempotent (conditional create on the identifier).
* ``subject`` from a given reference or the patient identity (logical reference by
  PatientID, ``identifier.system`` from the ``patient_id_system`` option);
  ``effectiveDateTime`` only from evidence (given time, source waveform, printed on the
  page, sidecar; a naive time gets the ``timezone`` option's offset, without one only
  the date is written), omitted when unknown; ``issued`` only when given (no wall
  clock: the same input gives the same bytes); ``device`` names ecgbridge, ``method``
  says how the trace was obtained, and notes give the per-lead digitization quality,
  the leads computed from other limb leads, and the history of the samples
  (``ecgbridge history: ...``; digitized from paper, resampled, re-quantised; the
  source's equipment and filter settings, :mod:`ecgbridge.encode.source_lines`).

Observations are read back by :mod:`ecgbridge.encode.fhir_reader`
(:func:`read_fhir_observation`, also importable from here).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ecgbridge import codes
from ecgbridge.ecg import ECG, LEADS, Calibration
from ecgbridge.encode.context import file_mode_of
from ecgbridge.encode.dicom_provenance import DIGITIZED_PREFIX, TIME_PREFIX, digitized_history
from ecgbridge.encode.fhir_reader import (
    HISTORY_NOTE_PREFIX,
    NOT_A_NUMBER_TOKENS,
    component_lead,
    read_fhir_observation,
)
from ecgbridge.encode.record_facts import (
    AcquisitionTime,
    RecordSettings,
    acquisition_time,
    fhir_record_identifier,
    patient_identity,
    record_settings,
)
from ecgbridge.encode.source_lines import source_lines
from ecgbridge.errors import EncodingError
from ecgbridge.fsutil import write_text_atomic

FhirVersion = Literal["R4", "R5"]

#: Physical value of one data unit, in mV (integer microvolts).
SAMPLED_DATA_FACTOR = 0.001
#: Range written as lowerLimit/upperLimit (mV); values beyond are "L"/"U".
SAMPLED_DATA_LIMIT_MV = 32.767
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")

#: The writer's names, and the reader's it re-exports.
__all__ = [
    "HISTORY_NOTE_PREFIX", "NOT_A_NUMBER_TOKENS", "SAMPLED_DATA_FACTOR",
    "SAMPLED_DATA_LIMIT_MV", "FhirVersion", "check_observation", "encode_data", "fhir_json",
    "observation_model", "read_fhir_observation", "to_fhir_model", "to_fhir_observation",
    "write_fhir_r4", "write_fhir_r5",
]


def to_fhir_observation(
    ecg: ECG,
    *,
    version: FhirVersion = "R4",
    subject: str | Mapping[str, Any] | None = None,
    effective: datetime | str | None = None,
    device: str | Mapping[str, Any] | None = None,
    status: str = "final",
    issued: datetime | None = None,
    settings: RecordSettings | None = None,
) -> dict[str, Any]:
    """Return the ECG as a FHIR Observation (JSON-ready dict).

    Parameters
    ----------
    ecg : ECG
        The ECG; leads with no finite sample get no component.
    version : {"R4", "R5"}
        FHIR release (R4 uses ``period``, R5 ``interval`` + ``intervalUnit``).
    subject : str or Mapping, optional
        ``"Patient/123"`` or a Reference dict. Default: a logical reference built from
        ``ecg.source.dicom`` (PatientID, IssuerOfPatientID), else none.
    effective : datetime or str, optional
        When the ECG was recorded (FHIR dateTime / DICOM DT string or datetime).
        Default: the evidence of the source, else omitted.
    device : str or Mapping, optional
        ``"Device/1"`` or a Reference dict. Default: a display-only reference to ecgbridge.
    status : str
        Observation.status.
    issued : datetime, optional
        ``issued`` (omitted by default, so outputs are deterministic).
    settings : RecordSettings, optional
        Time zone and patient policies (see :mod:`ecgbridge.encode.record_facts`).

    Returns
    -------
    dict
        The Observation resource.

    Raises
    ------
    EncodingError
        If `version` is unknown, the ECG has no lead, or the rate is not positive.
    """
    if version not in ("R4", "R5"):
        raise EncodingError(f"unknown FHIR version {version!r}; use 'R4' or 'R5'")
    present = [i for i in range(len(LEADS)) if np.isfinite(ecg.signals[i]).any()]
    if not present:
        raise EncodingError("cannot encode a FHIR Observation: the ECG has no lead with samples")
    from ecgbridge.version import __version__

    period_ms = 1000.0 / ecg.fs
    components = []
    for i in present:
        lead = LEADS[i]
        sampled: dict[str, Any] = {
            "origin": {
                "value": 0,
                "unit": codes.UCUM_MILLIVOLT.meaning,
                "system": codes.UCUM_MILLIVOLT.scheme,
                "code": codes.UCUM_MILLIVOLT.value,
            },
        }
        if version == "R4":
            sampled["period"] = _decimal(period_ms)
        else:
            sampled["interval"] = _decimal(period_ms)
            sampled["intervalUnit"] = "ms"
        sampled.update(
            {
                "factor": SAMPLED_DATA_FACTOR,
                "lowerLimit": -SAMPLED_DATA_LIMIT_MV,
                "upperLimit": SAMPLED_DATA_LIMIT_MV,
                "dimensions": 1,
                "data": encode_data(ecg.signals[i]),
            }
        )
        components.append(
            {"code": _codeable(codes.FHIR_LEAD_CODES[lead]), "valueSampledData": sampled}
        )

    settings = settings or RecordSettings()
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [fhir_record_identifier(ecg)],
        "status": status,
        "category": [_codeable(codes.OBSERVATION_CATEGORY_PROCEDURE)],
        "code": {
            "coding": [_coding(codes.LOINC_EKG_STUDY), _coding(codes.MDC_ECG_ELEC_POTL)],
            "text": "12-lead ECG",
        },
    }
    subject_ref = (
        _reference(subject) if subject is not None
        else _subject_from_identity(patient_identity(ecg, settings), settings.patient_id_system)
    )
    if subject_ref is not None:
        obs["subject"] = subject_ref
    elif settings.missing_patient == "refuse":
        raise EncodingError(
            "no patient is known for this ECG (no subject given, no PatientID from a DICOM "
            "source, sidecar file or folder convention) and the missing-patient policy is "
            "'refuse'"
        )
    if effective is not None:
        given = effective.isoformat() if isinstance(effective, datetime) else str(effective)
        settings = dataclasses.replace(settings, acquisition_datetime=given)
    when = acquisition_time(ecg, settings)
    if when is not None:
        obs["effectiveDateTime"] = when.fhir()
    if issued is not None:
        obs["issued"] = issued.astimezone().isoformat(timespec="seconds")
    obs["note"] = _notes(ecg, present, when)
    obs["method"] = {"text": _method_text(ecg.calibration, digitized_history(ecg))}
    obs["device"] = (
        _reference(device) if device is not None else {"display": f"ecgbridge {__version__}"}
    )
    obs["component"] = components
    return obs


def observation_model(doc: Mapping[str, Any], version: FhirVersion = "R4") -> Any:
    """Validate `doc` with fhir.resources and return the model.

    R4 documents are checked with the R4B models (``fhir.resources.R4B``; SampledData
    is the same as R4), R5 with the default models.

    Raises
    ------
    EncodingError
        If fhir.resources rejects the document.
    """
    if version == "R4":
        from fhir.resources.R4B.observation import Observation as ObservationR4B

        model: Any = ObservationR4B
    elif version == "R5":
        from fhir.resources.observation import Observation as ObservationR5

        model = ObservationR5
    else:
        raise EncodingError(f"unknown FHIR version {version!r}; use 'R4' or 'R5'")
    try:
        return model.model_validate(dict(doc))
    except Exception as exc:  # pydantic ValidationError and friends
        raise EncodingError(
            f"FHIR {version} Observation is not valid: {_summarise_validation(exc)}"
        ) from exc


def _summarise_validation(exc: Exception, limit: int = 3) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    try:
        items = list(errors())
    except Exception:  # not a pydantic error after all
        return str(exc)
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in items[:limit]
    ]
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(parts) + more


def to_fhir_model(ecg: ECG, *, version: FhirVersion = "R4", **kwargs: Any) -> Any:
    """Return the ECG as a validated fhir.resources Observation model.

    Keyword arguments are those of :func:`to_fhir_observation`; R4 gives a
    ``fhir.resources.R4B.observation.Observation``, R5 a ``fhir.resources.observation.
    Observation``.

    Raises
    ------
    EncodingError
        If the ECG cannot be encoded or the result does not validate.
    """
    doc = to_fhir_observation(ecg, version=version, **kwargs)
    check_observation(doc, version)
    return observation_model(doc, version)


def check_observation(doc: Mapping[str, Any], version: FhirVersion = "R4") -> None:
    """Checks fhir.resources does not make: codes, and every SampledData data string.

    Every component needs an MDC lead code and a SampledData whose data tokens are
    decimals or E/L/U, ``len(tokens) == n_samples * dimensions`` (the same n for every
    lead), and the version's sampling field (R4 ``period``, R5 ``interval`` +
    ``intervalUnit``).

    Raises
    ------
    EncodingError
        Naming the first problem found.
    """
    codings = doc.get("code", {}).get("coding", [])
    if not any(
        c.get("system") == codes.FHIR_SYSTEM_LOINC and c.get("code") == codes.LOINC_EKG_STUDY.value
        for c in codings
    ):
        raise EncodingError("Observation.code lacks LOINC 11524-6 (EKG study)")
    lengths = set()
    for k, comp in enumerate(doc.get("component", [])):
        where = f"component[{k}]"
        lead = component_lead(comp)
        if lead is None:
            raise EncodingError(f"{where}: code is not an MDC 12-lead ECG lead code")
        sd = comp.get("valueSampledData")
        if not isinstance(sd, Mapping):
            raise EncodingError(f"{where} ({lead}): no valueSampledData")
        if version == "R4" and "period" not in sd:
            raise EncodingError(f"{where} ({lead}): R4 SampledData needs 'period'")
        if version == "R5" and ("interval" not in sd or "intervalUnit" not in sd):
            raise EncodingError(f"{where} ({lead}): R5 SampledData needs interval and intervalUnit")
        tokens = str(sd.get("data", "")).split()
        bad = next(
            (t for t in tokens if t not in NOT_A_NUMBER_TOKENS and not _DECIMAL.match(t)), None
        )
        if bad is not None:
            raise EncodingError(
                f"{where} ({lead}): data token {bad!r} is neither a decimal nor E/L/U"
            )
        dimensions = int(sd.get("dimensions", 0))
        if dimensions < 1 or len(tokens) % dimensions:
            raise EncodingError(
                f"{where} ({lead}): {len(tokens)} data tokens is not a multiple of "
                f"dimensions={dimensions}"
            )
        lengths.add(len(tokens) // dimensions)
    if len(lengths) > 1:
        raise EncodingError(f"components hold different numbers of samples: {sorted(lengths)}")


def encode_data(row: np.ndarray) -> str:
    """Return the SampledData data string of one lead (integer µV; E for NaN; L/U beyond)."""
    micro = np.round(np.asarray(row, dtype=np.float64) / SAMPLED_DATA_FACTOR)
    limit = round(SAMPLED_DATA_LIMIT_MV / SAMPLED_DATA_FACTOR)
    out = []
    for v in micro:
        if not math.isfinite(v):
            out.append("E")
        elif v < -limit:
            out.append("L")
        elif v > limit:
            out.append("U")
        else:
            out.append(str(int(v)))
    return " ".join(out)


def fhir_json(doc: Mapping[str, Any]) -> str:
    """Serialise an Observation dict (compact separators; no NaN allowed)."""
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def write_fhir_r4(ecg: ECG, out_dir: Path, stem: str, context: Any = None) -> list[Path]:
    """Write ``<stem>.fhir-r4.json`` (validated with the R4B models)."""
    return [_write(ecg, out_dir / f"{stem}.fhir-r4.json", "R4", context)]


def write_fhir_r5(ecg: ECG, out_dir: Path, stem: str, context: Any = None) -> list[Path]:
    """Write ``<stem>.fhir-r5.json`` (validated with the R5 models)."""
    return [_write(ecg, out_dir / f"{stem}.fhir-r5.json", "R5", context)]


def _write(ecg: ECG, path: Path, version: FhirVersion, context: Any) -> Path:
    options = (getattr(context, "options", None) or {}) if context is not None else {}
    doc = to_fhir_observation(
        ecg,
        version=version,
        subject=options.get("fhir_subject"),
        device=options.get("fhir_device"),
        settings=record_settings(options),
    )
    check_observation(doc, version)
    observation_model(doc, version)
    return write_text_atomic(path, fhir_json(doc) + "\n", mode=file_mode_of(context))


# --- pieces -------------------------------------------------------------------------


def _coding(concept: codes.CodedConcept) -> dict[str, str]:
    return {"system": concept.scheme, "code": concept.value, "display": concept.meaning}


def _codeable(concept: codes.CodedConcept) -> dict[str, Any]:
    return {"coding": [_coding(concept)]}


def _decimal(x: float) -> float | int:
    value = round(float(x), 9)
    return int(value) if value.is_integer() else value


def _reference(ref: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(ref, str):
        if not ref.strip():
            raise EncodingError("empty FHIR reference")
        return {"reference": ref.strip()}
    return dict(ref)


def _subject_from_identity(identity: Mapping[str, Any], system: str = "") -> dict[str, Any] | None:
    patient_id = str(identity.get("PatientID") or "").strip()
    if not patient_id:
        return None
    identifier: dict[str, Any] = {"system": system} if system else {}
    identifier["value"] = patient_id
    issuer = str(identity.get("IssuerOfPatientID") or "").strip()
    if issuer:
        identifier["assigner"] = {"display": issuer}
    ref: dict[str, Any] = {"type": "Patient", "identifier": identifier}
    name = str(identity.get("PatientName") or "").strip()
    if name:
        ref["display"] = name.replace("^", " ").strip()
    return ref


def _method_text(calibration: Calibration, source_history: str = "") -> str:
    method = codes.DIGITIZED_METHODS.get(calibration.method)
    if method is None:
        text = "Converted from a stored ECG waveform by ecgbridge"
        if source_history:
            text += f"; that waveform was {source_history}"
        return text
    return (
        f"Digitized from an ECG image by ecgbridge ({method}; layout {calibration.layout}, "
        f"{calibration.mm_per_s:g} mm/s, {calibration.mm_per_mv:g} mm/mV)"
    )


def _notes(ecg: ECG, present: list[int], when: AcquisitionTime | None) -> list[dict[str, str]]:
    notes = [{"text": _note_text(ecg, present)}]
    lines = [line for line in ecg.source.history if not line.startswith(TIME_PREFIX)]
    lines += source_lines(ecg.source.equipment, ecg.source.filters)
    method = codes.DIGITIZED_METHODS.get(ecg.calibration.method)
    if method is not None:
        lines.append(f"{DIGITIZED_PREFIX} by ecgbridge ({method})")
    else:
        rows = ecg.signals[present]
        finite = rows[np.isfinite(rows)]
        micro = finite / SAMPLED_DATA_FACTOR
        if finite.size and float(np.abs(micro - np.round(micro)).max()) > 1e-3:
            lines.append("re-quantised to 1 uV steps by ecgbridge")
    if when is not None:
        lines.append(f"{TIME_PREFIX}: {when.evidence}")
        if when.has_time and when.offset is None:
            lines.append(
                f"{TIME_PREFIX} {when.local.strftime('%H:%M:%S')} local time, zone unknown "
                "(effectiveDateTime holds the date only; set the timezone setting)"
            )
    if lines:
        notes.append({"text": HISTORY_NOTE_PREFIX + " | ".join(dict.fromkeys(lines))})
    return notes


#: What a digitization quality means, stated with the values.
_QUALITY_CONTRACT = "A lead whose quality is below 0.5 is not to be trusted."


def _note_text(ecg: ECG, present: list[int]) -> str:
    if ecg.calibration.method not in codes.DIGITIZED_METHODS:
        text = "Converted by ecgbridge from a stored ECG waveform"
        text += f" ({ecg.source.media_type})." if ecg.source.media_type else "."
        if digitized_history(ecg):
            quality = ", ".join(f"{LEADS[i]} {ecg.quality[i]:.2f}" for i in present)
            text += (" The waveform was digitized from a paper ECG image; not an original "
                     f"acquisition. Per-lead digitization quality (0-1): {quality}. "
                     f"{_QUALITY_CONTRACT}")
        return text
    quality = ", ".join(f"{LEADS[i]} {ecg.quality[i]:.2f}" for i in present)
    absent = [lead for i, lead in enumerate(LEADS) if i not in present]
    text = (
        "Digitized from a paper ECG image; not an original acquisition. "
        f"Per-lead digitization quality (0-1): {quality}. {_QUALITY_CONTRACT}"
    )
    if absent:
        text += f" Not shown on the page: {', '.join(absent)}."
    derived = ecg.derived_leads()
    if derived:
        text += (f" Not shown on the page and computed from the other limb leads "
                 f"(Einthoven/Goldberger): {', '.join(derived)}.")
    if ecg.calibration.warnings:
        text += " Warnings: " + "; ".join(ecg.calibration.warnings)
    return text


