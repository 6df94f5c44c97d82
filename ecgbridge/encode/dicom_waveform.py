"""DICOM 12-Lead ECG Waveform (SOP class 1.2.840.10008.5.1.4.1.1.9.1.1) writer.

The multiplex group (sampling within the IOD's limits, sensitivity, padding, channels)
is built by :mod:`ecgbridge.encode.dicom_multiplex`; waveforms are read back by
:mod:`ecgbridge.encode.dicom_reader` (:func:`read_dicom_waveform`, also importable from
here).

Encoding rules
--------------
* One multiplex group ("RHYTHM") holding every lead the ECG shows (all-NaN leads are
  left out); sampling, sensitivity and padding: see :mod:`~ecgbridge.encode.dicom_multiplex`.
  ``allow_resample=False`` raises instead of resampling a rate or length the IOD does
  not allow.
* WaveformOriginality is DERIVED; every channel's ChannelDerivationDescription says how
  it was obtained (digitized from an image, and by which method; a lead the page does
  not show, computed from the other limb leads, says so). Per-lead digitization
  quality goes into the Waveform Annotation module as a numeric measurement per channel
  (private concept ``(DIGQ, 99ECGBRIDGE, "Digitization quality")``, UCUM ``1``): the
  standard puts measurements about channels there, not in the derivation text.
* Times and UIDs follow :mod:`ecgbridge.encode.record_facts`: AcquisitionDateTime,
  ContentDate and ContentTime are the acquisition time from evidence (TimezoneOffsetFromUTC
  when the zone is known). They are Type 1, so without evidence the ``digitization-time``
  policy (default) writes the digitization time and says so in SeriesDescription and a
  history annotation (the SOP Instance UID then differs per run), and the ``refuse``
  policy raises. No wall-clock InstanceCreationDate/Time.
  The SeriesInstanceUID is the ECG record's UID (source identity); the SOP Instance UID
  hashes it with the rest of the dataset, so one UID always names one content.
* History (digitized from paper, resampled, re-quantised, where the time came from) and
  filter settings: see :mod:`ecgbridge.encode.dicom_provenance`.
* When the ECG came from a DICOM object, patient and study identity are copied from
  ``ecg.source.dicom`` and ReferencedInstanceSequence points at the source instance
  (without PurposeOfReferenceCodeSequence: CID 7004 has no code for "source image").
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from ecgbridge import codes
from ecgbridge.ecg import ECG, LEADS, SourceInfo
from ecgbridge.encode.context import file_mode_of
from ecgbridge.encode.dicom_multiplex import (
    MAX_CHANNELS,
    MAX_SAMPLE_VALUE,
    MAX_SAMPLES_PER_GROUP,
    MAX_SAMPLING_FREQUENCY,
    MIN_SAMPLING_FREQUENCY,
    MULTIPLEX_GROUP_LABEL,
    PADDING_VALUE,
    STANDARD_FREQUENCIES,
    STANDARD_SENSITIVITIES_UV,
    UPSAMPLE_TARGET_FREQUENCY,
    check_waveform_limits,
    choose_sensitivity,
    code_item,
    conform_sampling,
    derivation_description,
    multiplex_group,
    quantize,
    resample_signals,
)
from ecgbridge.encode.dicom_provenance import (
    add_filter_settings,
    digitized_history,
    equipment_items,
    history_lines,
    text_annotation,
)
from ecgbridge.encode.dicom_reader import (
    PATIENT_KEYWORDS,
    STUDY_KEYWORDS,
    derive_limb_leads,
    read_dicom_waveform,
)
from ecgbridge.encode.record_facts import (
    AcquisitionTime,
    RecordSettings,
    acquisition_time,
    content_uid,
    patient_identity,
    record_settings,
    record_uid,
    study_uid,
)
from ecgbridge.errors import EncodingError
from ecgbridge.fsutil import write_bytes_atomic

#: Modality of ECG waveforms.
MODALITY_ECG = "ECG"
#: Specific Character Set written (UTF-8), so any patient name can be stored.
CHARACTER_SET_UTF8 = "ISO_IR 192"
#: Series Number of the derived series (Type 2; a high number keeps it apart from carts').
DERIVED_SERIES_NUMBER = 990
#: ChannelDerivationDescription of a lead the page does not show (computed from others).
DERIVED_LEAD_DESCRIPTION = "Not on the page: computed from other limb leads by ecgbridge"
#: ChannelDerivationDescription of a converted waveform that was digitized from paper.
CONVERTED_DIGITIZED_DESCRIPTION = "Converted by ecgbridge; digitized from a paper ECG image"
#: Type 2 attributes of the Patient and General Study modules: always present, empty
#: when unknown.
_TYPE2_IDENTITY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


#: The writer's names, and those of the group builder and the reader it re-exports.
__all__ = [
    "CHARACTER_SET_UTF8", "CONVERTED_DIGITIZED_DESCRIPTION", "DERIVED_LEAD_DESCRIPTION",
    "DERIVED_SERIES_NUMBER", "MAX_CHANNELS", "MAX_SAMPLES_PER_GROUP", "MAX_SAMPLE_VALUE",
    "MAX_SAMPLING_FREQUENCY", "MIN_SAMPLING_FREQUENCY", "MODALITY_ECG",
    "MULTIPLEX_GROUP_LABEL", "PADDING_VALUE", "PATIENT_KEYWORDS", "STANDARD_FREQUENCIES",
    "STANDARD_SENSITIVITIES_UV", "STUDY_KEYWORDS", "UPSAMPLE_TARGET_FREQUENCY",
    "check_waveform_limits", "choose_sensitivity", "conform_sampling",
    "derivation_description", "derive_limb_leads", "dicom_bytes", "quantize",
    "read_dicom_waveform", "resample_signals", "to_dicom_waveform", "write_dicom",
]


def to_dicom_waveform(
    ecg: ECG,
    *,
    source: SourceInfo | None = None,
    patient: Mapping[str, Any] | None = None,
    study: Mapping[str, Any] | None = None,
    acquisition_datetime: datetime | str | None = None,
    instance_number: int = 1,
    series_number: int = DERIVED_SERIES_NUMBER,
    allow_resample: bool = True,
    now: datetime | None = None,
    settings: RecordSettings | None = None,
) -> Dataset:
    """Encode `ecg` as a DICOM 12-Lead ECG Waveform dataset (with file meta).

    Parameters
    ----------
    ecg : ECG
        The ECG; leads with no finite sample are left out.
    source : SourceInfo, optional
        Provenance to use instead of ``ecg.source`` (UIDs, identity, references).
    patient : Mapping, optional
        Patient module values by keyword (``PatientName``, ``PatientID``...); override
        those copied from a DICOM source.
    study : Mapping, optional
        General Study values by keyword (``StudyInstanceUID``, ``AccessionNumber``...);
        override those copied from a DICOM source.
    acquisition_datetime : datetime or str, optional
        When the ECG was recorded (ISO 8601 or DICOM DT); overrides the evidence of
        the source (see :mod:`ecgbridge.encode.record_facts`).
    instance_number : int
        InstanceNumber (Type 1).
    series_number : int
        SeriesNumber.
    allow_resample : bool
        Resample rates or lengths the IOD does not allow (see module docstring);
        when False such ECGs raise EncodingError.
    now : datetime, optional
        Digitization time, used only when the acquisition time is unknown and
        ``settings.unknown_time`` is ``"digitization-time"`` (default: now).
    settings : RecordSettings, optional
        Time zone, unknown-time and missing-patient policies (default: without an
        acquisition time, the digitization time, said so).

    Returns
    -------
    pydicom.dataset.Dataset
        Ready for ``save_as(path, enforce_file_format=True)``.

    Raises
    ------
    EncodingError
        No lead to encode, amplitude beyond ±327 mV, a rate/length the IOD does not
        allow when `allow_resample` is False, no acquisition time under the ``refuse``
        policy, or no PatientID under the ``refuse`` policy.
    """
    src = source if source is not None else ecg.source
    subject = ecg if source is None else ecg.replace(source=src)
    settings = settings or RecordSettings()
    if acquisition_datetime is not None:
        given = acquisition_datetime
        text = given.isoformat() if isinstance(given, datetime) else str(given)
        settings = dataclasses.replace(settings, acquisition_datetime=text)
    when = _acquisition_or_policy(subject, settings, now)
    signals, fs = conform_sampling(ecg.signals, ecg.fs, allow_resample=allow_resample)
    present = [i for i in range(len(LEADS)) if np.isfinite(signals[i]).any()]
    if not present:
        raise EncodingError("cannot encode a DICOM waveform: the ECG has no lead with samples")
    check_waveform_limits(len(present), signals.shape[1], fs)
    sensitivity = choose_sensitivity(signals[present])
    raw = quantize(signals[present], sensitivity)

    ds = Dataset()
    ds.SpecificCharacterSet = CHARACTER_SET_UTF8
    ds.SOPClassUID = codes.TWELVE_LEAD_ECG_WAVEFORM
    ds.SOPInstanceUID = "0"  # replaced below by the UID of this content
    if src.equipment:
        ds.ContributingEquipmentSequence = Sequence(equipment_items(src.equipment))
    if when.offset is not None:
        ds.TimezoneOffsetFromUTC = when.dicom_offset()
    identity = patient_identity(subject, settings)
    _set_identity(ds, identity, patient, study, study_uid(subject), settings)
    # General Series
    ds.Modality = MODALITY_ECG
    ds.SeriesInstanceUID = record_uid(subject)
    ds.SeriesNumber = str(series_number)
    digitized = ecg.calibration.method in codes.DIGITIZED_METHODS
    description = f"ECG {'digitized' if digitized else 'converted'} by ecgbridge"
    if when.evidence == _DIGITIZATION_TIME:
        description += "; acquisition time unknown"
    ds.SeriesDescription = description
    # General Equipment
    from ecgbridge.version import __version__

    ds.Manufacturer = "ecgbridge"
    ds.ManufacturerModelName = "ecgbridge"
    ds.SoftwareVersions = __version__
    # Waveform Identification
    ds.InstanceNumber = str(instance_number)
    ds.ContentDate = when.local.strftime("%Y%m%d")
    ds.ContentTime = when.local.strftime("%H%M%S" if when.precision == "second" else "%H%M")
    ds.AcquisitionDateTime = when.dicom_dt()
    reference = _referenced_instance(src)
    if reference is not None:
        ds.ReferencedInstanceSequence = Sequence([reference])
    # Acquisition Context (Type 2, empty: nothing is known about electrode placement)
    ds.AcquisitionContextSequence = Sequence([])
    # Waveform
    derived = set(ecg.derived_leads())
    how = derivation_description(ecg.calibration)
    if not digitized and digitized_history(ecg):
        how = CONVERTED_DIGITIZED_DESCRIPTION
    derivations = [DERIVED_LEAD_DESCRIPTION if LEADS[i] in derived else how for i in present]
    group = multiplex_group(raw, fs, [LEADS[i] for i in present], sensitivity, derivations)
    add_filter_settings(group, src.filters)
    ds.WaveformSequence = Sequence([group])
    annotations = []
    if digitized or digitized_history(ecg):
        annotations = [
            _quality_annotation(channel + 1, ecg.quality[lead_index])
            for channel, lead_index in enumerate(present)
            if np.isfinite(ecg.quality[lead_index])
        ]
    history = history_lines(ecg, fs, signals[present], raw, sensitivity, when)
    annotations.extend(text_annotation(line) for line in history)
    if annotations:
        ds.WaveformAnnotationSequence = Sequence(annotations)
        if any("ConceptNameCodeSequence" in item for item in annotations):
            ds.CodingSchemeIdentificationSequence = Sequence([_private_scheme_item()])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = f"ECGBRIDGE_{__version__}"[:16]
    ds.file_meta = meta
    uid = content_uid(ds.SeriesInstanceUID, dicom_bytes(ds))
    ds.SOPInstanceUID = uid
    meta.MediaStorageSOPInstanceUID = UID(uid)
    return ds


#: Evidence text of the digitization-time policy.
_DIGITIZATION_TIME = "digitization time (acquisition time unknown)"


def _acquisition_or_policy(
    ecg: ECG, settings: RecordSettings, now: datetime | None
) -> AcquisitionTime:
    when = acquisition_time(ecg, settings)
    if when is not None and when.precision in ("minute", "second"):
        return when
    if settings.unknown_time == "digitization-time":
        moment = (now or datetime.now().astimezone()).replace(microsecond=0)
        return AcquisitionTime(
            moment.replace(tzinfo=None), "second", moment.utcoffset(), _DIGITIZATION_TIME
        )
    what = "only its date is known" if when is not None else "no evidence gives it"
    raise EncodingError(
        f"the acquisition time of the ECG is unknown ({what}: no date and time printed on "
        "the page, in a sidecar file or in the source waveform) and a DICOM waveform needs "
        "one (Type 1); give it (sidecar AcquisitionDateTime, --acquired) or allow the "
        "digitization time (unknown_time: digitization-time)"
    )


def dicom_bytes(ds: Dataset) -> bytes:
    """Return the Part 10 file bytes of `ds` (preamble, file meta, Explicit VR LE)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_dicom(ecg: ECG, out_dir: Path, stem: str, context: Any = None) -> list[Path]:
    """Write ``<stem>.dcm`` (12-Lead ECG Waveform), atomically.

    ``context.options`` may hold ``dicom_patient`` / ``dicom_study`` mappings
    (see :func:`to_dicom_waveform`) and the settings of
    :func:`~ecgbridge.encode.record_facts.record_settings`.
    """
    options = (getattr(context, "options", None) or {}) if context is not None else {}
    ds = to_dicom_waveform(
        ecg, patient=options.get("dicom_patient"), study=options.get("dicom_study"),
        settings=record_settings(options),
    )
    return [write_bytes_atomic(out_dir / f"{stem}.dcm", dicom_bytes(ds),
                               mode=file_mode_of(context))]


# --- dataset pieces ----------------------------------------------------------------


def _quality_annotation(channel_number: int, quality: float) -> Dataset:
    item = Dataset()
    item.ConceptNameCodeSequence = Sequence([code_item(codes.DICOM_CONCEPT_DIGITIZATION_QUALITY)])
    item.NumericValue = f"{quality:.3f}"
    item.MeasurementUnitsCodeSequence = Sequence([code_item(codes.DICOM_UNIT_NO_UNITS)])
    item.ReferencedWaveformChannels = [1, channel_number]
    item.AnnotationGroupNumber = 1
    return item


def _private_scheme_item() -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = codes.DICOM_SCHEME_ECGBRIDGE
    item.CodingSchemeName = codes.DICOM_SCHEME_ECGBRIDGE_NAME
    item.CodingSchemeResponsibleOrganization = codes.DICOM_SCHEME_ECGBRIDGE_ORGANIZATION
    return item


def _set_identity(
    ds: Dataset,
    identity: Mapping[str, Any],
    patient: Mapping[str, Any] | None,
    study: Mapping[str, Any] | None,
    default_study_uid: str,
    settings: RecordSettings,
) -> None:
    values: dict[str, Any] = {}
    for keyword in (*PATIENT_KEYWORDS, *STUDY_KEYWORDS):
        if identity.get(keyword) not in (None, ""):
            values[keyword] = identity[keyword]
    for given in (patient, study):
        if given:
            values.update({k: v for k, v in given.items()})
    for keyword in _TYPE2_IDENTITY:
        values.setdefault(keyword, "")
    if not str(values.get("PatientID") or "").strip() and settings.missing_patient == "refuse":
        raise EncodingError(
            "no PatientID is known for this ECG (no DICOM source identity, sidecar file or "
            "folder convention gave one) and the missing-patient policy is 'refuse'"
        )
    if not values.get("StudyInstanceUID"):
        values["StudyInstanceUID"] = default_study_uid
    for keyword, value in values.items():
        setattr(ds, keyword, "" if value is None else _dicom_value(value))


def _dicom_value(value: Any) -> Any:
    if isinstance(value, (str, int, float, list, tuple)):
        return value
    return str(value)  # PersonName, dates and other pydicom value types


def _referenced_instance(src: SourceInfo) -> Dataset | None:
    sop_class = src.dicom.get("SOPClassUID")
    sop_instance = src.dicom.get("SOPInstanceUID")
    if not sop_class or not sop_instance:
        return None
    item = Dataset()
    item.ReferencedSOPClassUID = str(sop_class)
    item.ReferencedSOPInstanceUID = str(sop_instance)
    return item


