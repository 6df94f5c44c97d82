"""DICOM 12-Lead ECG Waveform (SOP class 1.2.840.10008.5.1.4.1.1.9.1.1) writer and reader.

Encoding rules
--------------
* One multiplex group ("RHYTHM") holding every lead the ECG shows (all-NaN leads are
  left out), int16 samples (``SS``, 16 bits allocated and stored) interleaved by sample.
* Channel sensitivity is the smallest of :data:`STANDARD_SENSITIVITIES_UV` (1, 2.5, 5,
  10 µV per unit) at which the largest amplitude fits in -32767..32767; the round-trip
  error is therefore at most half the sensitivity (0.5 µV for any ECG within ±32.767 mV).
  Larger amplitudes raise :class:`~ecgbridge.errors.EncodingError`.
* Samples the page does not show (NaN) are written as :data:`PADDING_VALUE` (-32768),
  declared in WaveformPaddingValue; real samples never take that value.
* The 12-lead IOD allows 200-1000 Hz and at most 16384 samples per group. Other rates are
  resampled (documented adjustment): above 1000 Hz to 1000 Hz, below 200 Hz to 500 Hz;
  a recording too long for 16384 samples is resampled to the highest of 1000/500/250/200 Hz
  that fits, else EncodingError. ``allow_resample=False`` raises instead.
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
import hashlib
import io
import struct
import uuid
from collections.abc import Mapping
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from ecgbridge import codes
from ecgbridge.ecg import (
    ECG,
    LEADS,
    Calibration,
    CalibrationMethod,
    SourceInfo,
    normalise_lead_name,
)
from ecgbridge.encode.context import file_mode_of
from ecgbridge.encode.dicom_provenance import (
    add_filter_settings,
    digitized_history,
    equipment_items,
    history_lines,
    source_facts,
    text_annotation,
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
from ecgbridge.errors import EncodingError, InputError
from ecgbridge.fsutil import write_bytes_atomic

#: Modality of ECG waveforms.
MODALITY_ECG = "ECG"
#: Sampling-rate range of the 12-lead ECG IOD in Hz.
MIN_SAMPLING_FREQUENCY = 200.0
MAX_SAMPLING_FREQUENCY = 1000.0
#: Rate used when a recording sampled below the IOD's minimum is upsampled.
UPSAMPLE_TARGET_FREQUENCY = 500.0
#: Rates tried, highest first, when a recording is too long for one group.
STANDARD_FREQUENCIES = (1000.0, 500.0, 250.0, 200.0)
#: Limits of the 12-lead ECG IOD (not checked by dciodvfy).
MAX_CHANNELS = 13
MAX_SAMPLES_PER_GROUP = 16384
#: Value written for samples the page does not show; real samples are clipped to ±32767.
PADDING_VALUE = -32768
MAX_SAMPLE_VALUE = 32767
#: Channel sensitivities (µV per unit) tried in order.
STANDARD_SENSITIVITIES_UV = (1.0, 2.5, 5.0, 10.0)
#: Label of the one multiplex group written.
MULTIPLEX_GROUP_LABEL = "RHYTHM"
#: Specific Character Set written (UTF-8), so any patient name can be stored.
CHARACTER_SET_UTF8 = "ISO_IR 192"
#: Series Number of the derived series (Type 2; a high number keeps it apart from carts').
DERIVED_SERIES_NUMBER = 990
#: Namespace of the name-based UUIDs behind ecgbridge's deterministic ``2.25.`` UIDs.
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ecgbridge:dicom-uid")
#: ChannelDerivationDescription of a lead the page does not show (computed from others).
DERIVED_LEAD_DESCRIPTION = "Not on the page: computed from other limb leads by ecgbridge"
#: ChannelDerivationDescription of a converted waveform that was digitized from paper.
CONVERTED_DIGITIZED_DESCRIPTION = "Converted by ecgbridge; digitized from a paper ECG image"
#: Maximum length of a LO value (ChannelDerivationDescription).
_LO_MAX = 64

#: Identity attributes copied from a DICOM source (Patient and General Study modules).
PATIENT_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
)
STUDY_KEYWORDS = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "StudyDescription",
)
#: Type 2 attributes of those modules: always present, empty when unknown.
_TYPE2_IDENTITY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


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
    group = _multiplex_group(raw, fs, [LEADS[i] for i in present], sensitivity, derivations)
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


# --- sampling, limits and quantisation --------------------------------------------


def check_waveform_limits(n_channels: int, n_samples: int, fs: float) -> None:
    """Raise EncodingError unless one multiplex group fits the 12-lead ECG IOD.

    Parameters
    ----------
    n_channels : int
        Channels in the group (1-13).
    n_samples : int
        Samples per channel (1-16384).
    fs : float
        Sampling frequency in Hz (200-1000).
    """
    if not 1 <= n_channels <= MAX_CHANNELS:
        raise EncodingError(
            f"a 12-lead ECG waveform holds 1 to {MAX_CHANNELS} channels, got {n_channels}"
        )
    if not 1 <= n_samples <= MAX_SAMPLES_PER_GROUP:
        raise EncodingError(
            f"a 12-lead ECG waveform group holds 1 to {MAX_SAMPLES_PER_GROUP} samples per "
            f"channel, got {n_samples}"
        )
    if not MIN_SAMPLING_FREQUENCY <= fs <= MAX_SAMPLING_FREQUENCY:
        raise EncodingError(
            f"a 12-lead ECG waveform is sampled at {MIN_SAMPLING_FREQUENCY:g} to "
            f"{MAX_SAMPLING_FREQUENCY:g} Hz, got {fs:g} Hz"
        )


def conform_sampling(
    signals: np.ndarray, fs: float, *, allow_resample: bool = True
) -> tuple[np.ndarray, float]:
    """Return `signals` and rate adjusted to the IOD's 200-1000 Hz and 16384 samples.

    Parameters
    ----------
    signals : numpy.ndarray
        ``(channels, n)`` in mV, NaN where not shown.
    fs : float
        Sampling rate in Hz.
    allow_resample : bool
        When False, raise instead of resampling.

    Returns
    -------
    tuple
        ``(signals, fs)``, unchanged when already allowed.

    Raises
    ------
    EncodingError
        When resampling is needed but not allowed, or the recording is longer than
        16384 samples at 200 Hz (81.92 s).
    """
    n = signals.shape[1]
    target = fs
    if fs > MAX_SAMPLING_FREQUENCY:
        target = MAX_SAMPLING_FREQUENCY
    elif fs < MIN_SAMPLING_FREQUENCY:
        target = UPSAMPLE_TARGET_FREQUENCY
    if round(n * target / fs) > MAX_SAMPLES_PER_GROUP:
        fitting = [f for f in STANDARD_FREQUENCIES
                   if f <= target and round(n * f / fs) <= MAX_SAMPLES_PER_GROUP]
        if not fitting:
            raise EncodingError(
                f"a {n / fs:.1f} s recording does not fit one 12-lead ECG waveform group "
                f"({MAX_SAMPLES_PER_GROUP} samples at {MIN_SAMPLING_FREQUENCY:g} Hz at most)"
            )
        target = fitting[0]
    if target == fs:
        return signals, fs
    if not allow_resample:
        raise EncodingError(
            f"{fs:g} Hz x {n} samples is outside the 12-lead ECG waveform limits "
            f"({MIN_SAMPLING_FREQUENCY:g}-{MAX_SAMPLING_FREQUENCY:g} Hz, "
            f"{MAX_SAMPLES_PER_GROUP} samples) and resampling is disabled"
        )
    return resample_signals(signals, fs, target)


def resample_signals(signals: np.ndarray, fs: float, target: float) -> tuple[np.ndarray, float]:
    """Resample every row from `fs` to (about) `target` Hz, keeping NaN spans NaN.

    Gaps are bridged by linear interpolation before the polyphase filter and masked
    again afterwards, so a gap does not ring into the samples around it.

    Returns
    -------
    tuple
        ``(signals, fs_out)``; ``fs_out`` is `target` unless ``target / fs`` needs a
        denominator above 1000.
    """
    from scipy.signal import resample_poly

    ratio = Fraction(target / fs).limit_denominator(1000)
    fs_out = fs * ratio.numerator / ratio.denominator
    n_in = signals.shape[1]
    n_out = max(1, int(round(n_in * fs_out / fs)))
    out = np.full((signals.shape[0], n_out), np.nan)
    src_index = np.clip(np.round(np.arange(n_out) * fs / fs_out).astype(int), 0, n_in - 1)
    idx = np.arange(n_in)
    for row in range(signals.shape[0]):
        finite = np.isfinite(signals[row])
        if not finite.any():
            continue
        filled = np.interp(idx, idx[finite], signals[row][finite])
        res = resample_poly(filled, ratio.numerator, ratio.denominator, padtype="line")[:n_out]
        out[row, : res.size] = res
        out[row, ~finite[src_index]] = np.nan
    return out, float(fs_out)


def choose_sensitivity(signals: np.ndarray) -> float:
    """Return the smallest standard sensitivity (µV/unit) at which `signals` (mV) fit int16.

    Raises
    ------
    EncodingError
        If even 10 µV per unit cannot hold the largest amplitude (±327.67 mV).
    """
    finite = signals[np.isfinite(signals)]
    peak_uv = float(np.abs(finite).max()) * 1000.0 if finite.size else 0.0
    for sensitivity in STANDARD_SENSITIVITIES_UV:
        if round(peak_uv / sensitivity) <= MAX_SAMPLE_VALUE:
            return sensitivity
    limit_mv = MAX_SAMPLE_VALUE * STANDARD_SENSITIVITIES_UV[-1] / 1000.0
    raise EncodingError(
        f"a lead reaches {peak_uv / 1000.0:.1f} mV; a DICOM waveform holds at most "
        f"±{limit_mv:.2f} mV (int16 at {STANDARD_SENSITIVITIES_UV[-1]:g} µV per unit)"
    )


def quantize(signals: np.ndarray, sensitivity_uv: float) -> np.ndarray:
    """Return int16 ``(channels, n)`` samples; NaN becomes :data:`PADDING_VALUE`."""
    scaled = np.round(signals * 1000.0 / sensitivity_uv)
    finite = np.isfinite(scaled)
    raw = np.full(signals.shape, PADDING_VALUE, dtype=np.int16)
    raw[finite] = np.clip(scaled[finite], -MAX_SAMPLE_VALUE, MAX_SAMPLE_VALUE).astype(np.int16)
    return raw


def derivation_description(calibration: Calibration) -> str:
    """Return the ChannelDerivationDescription (LO, at most 64 characters)."""
    method = codes.DIGITIZED_METHODS.get(calibration.method)
    if method is not None:
        text = f"Digitized from ECG image by ecgbridge ({method})"
    else:
        text = "Converted from a stored waveform by ecgbridge"
    return text[:_LO_MAX]


# --- dataset pieces ----------------------------------------------------------------


def _code_item(concept: codes.CodedConcept) -> Dataset:
    item = Dataset()
    item.CodeValue = concept.value
    item.CodingSchemeDesignator = concept.scheme
    item.CodeMeaning = concept.meaning
    return item


def _multiplex_group(
    raw: np.ndarray, fs: float, leads: list[str], sensitivity: float, derivations: list[str]
) -> Dataset:
    group = Dataset()
    group.MultiplexGroupLabel = MULTIPLEX_GROUP_LABEL
    group.WaveformOriginality = "DERIVED"
    group.NumberOfWaveformChannels = raw.shape[0]
    group.NumberOfWaveformSamples = raw.shape[1]
    group.SamplingFrequency = _ds_number(fs)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.add_new(0x5400100A, "OW", struct.pack("<h", PADDING_VALUE))  # WaveformPaddingValue
    channels = []
    for lead, derivation in zip(leads, derivations, strict=True):
        ch = Dataset()
        ch.ChannelLabel = lead
        ch.ChannelSourceSequence = Sequence([_code_item(codes.DICOM_LEAD_CODES[lead])])
        ch.ChannelSensitivity = _ds_number(sensitivity)
        ch.ChannelSensitivityUnitsSequence = Sequence([_code_item(codes.DICOM_UNIT_MICROVOLT)])
        ch.ChannelSensitivityCorrectionFactor = "1"
        ch.ChannelBaseline = "0"
        ch.ChannelSampleSkew = "0"
        ch.WaveformBitsStored = 16
        ch.ChannelDerivationDescription = derivation
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformData = np.ascontiguousarray(raw.T).astype("<i2").tobytes()
    return group


def _quality_annotation(channel_number: int, quality: float) -> Dataset:
    item = Dataset()
    item.ConceptNameCodeSequence = Sequence([_code_item(codes.DICOM_CONCEPT_DIGITIZATION_QUALITY)])
    item.NumericValue = f"{quality:.3f}"
    item.MeasurementUnitsCodeSequence = Sequence([_code_item(codes.DICOM_UNIT_NO_UNITS)])
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


def _derived_uid(kind: str, *parts: str) -> str:
    """A ``2.25.<UUID>`` UID from a name-based (SHA-1, version 5) UUID of `parts`.

    (pydicom's ``generate_uid(prefix=None)`` ignores ``entropy_srcs`` and is random.)
    """
    name = "|".join((kind, *parts))
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}"


def _ds_number(x: float) -> str:
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{x:.10g}"


# --- reader -------------------------------------------------------------------------


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
