"""DICOM 12-Lead ECG Waveform: validity (dciodvfy), round trips, limits, identity, reader."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ecgbridge import codes
from ecgbridge.ecg import ECG, LEADS, Calibration, SourceInfo
from ecgbridge.encode.dicom_waveform import (
    PADDING_VALUE,
    check_waveform_limits,
    conform_sampling,
    derive_limb_leads,
    dicom_bytes,
    read_dicom_waveform,
    to_dicom_waveform,
    write_dicom,
)
from ecgbridge.errors import EncodingError, InputError

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DCIODVFY = shutil.which("dciodvfy")

# Column of the 3x4 layout each lead is printed in (each column shows 2.5 s of 10 s).
_COLUMN = {"I": 0, "II": 0, "III": 0, "aVR": 1, "aVL": 1, "aVF": 1,
           "V1": 2, "V2": 2, "V3": 2, "V4": 3, "V5": 3, "V6": 3}


def page_like(signals: np.ndarray, fs: float) -> np.ndarray:
    """Mask a record like a 3x4 + II rhythm page: NaN where the page shows nothing."""
    out = np.array(signals, dtype=float)
    quarter = out.shape[1] // 4
    for i, lead in enumerate(LEADS):
        if lead == "II":
            continue  # the rhythm strip shows all 10 s
        keep = np.zeros(out.shape[1], dtype=bool)
        keep[_COLUMN[lead] * quarter:(_COLUMN[lead] + 1) * quarter] = True
        out[i, ~keep] = np.nan
    return out


def make_secondary_capture(path: Path, image: np.ndarray) -> Dataset:
    """Write a minimal Secondary Capture of `image` (grey uint8) for patient TEST^ECG."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["ecgbridge-test-sc"])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["ecgbridge-test-study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["ecgbridge-test-series"])
    ds.PatientName = "TEST^ECG"
    ds.PatientID = "TEST-ECG-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate, ds.StudyTime = "20240101", "120000"
    ds.StudyID, ds.AccessionNumber = "1", "ACC-TEST-1"
    ds.ReferringPhysicianName = "REFERRER^TEST"
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.SeriesNumber, ds.InstanceNumber = "1", "1"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return ds


def identity_of(ds: Dataset) -> dict[str, str]:
    """What an input loader records in SourceInfo.dicom for a DICOM input."""
    keywords = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")
    return {k: str(ds.get(k)) for k in keywords if k in ds}


@pytest.fixture(scope="module")
def record(record_signals) -> tuple[np.ndarray, float]:
    return record_signals("E07506")


@pytest.fixture(scope="module")
def sc_file(tmp_path_factory) -> tuple[Path, Dataset]:
    path = tmp_path_factory.mktemp("sc") / "page.dcm"
    image = np.full((64, 96), 255, dtype=np.uint8)
    image[::8, :] = 200  # a grid-like pattern; content does not matter here
    return path, make_secondary_capture(path, image)


def digitized_like(record, media_type: str, *, dicom: dict | None = None,
                   method: str = "raster") -> ECG:
    """An ECG shaped like the digitizer's output for an input of `media_type`."""
    signals, fs = record
    quality = tuple(round(0.5 + 0.04 * i, 2) for i in range(12))
    return ECG(
        signals=page_like(signals, fs), fs=fs, quality=quality,
        calibration=Calibration(layout="3x4+II", method=method, px_per_mm_x=7.87,
                                px_per_mm_y=7.87),
        source=SourceInfo(name=f"page.{media_type.split('/')[-1]}",
                          sha256=hashlib.sha256(media_type.encode()).hexdigest(),
                          media_type=media_type, dicom=dicom or {}),
    )


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines dciodvfy reports for `path` (warnings ignored)."""
    assert DCIODVFY is not None
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    if proc.returncode != 0 and not errors:
        errors.append(f"dciodvfy exit code {proc.returncode}: {lines[-3:]}")
    return errors


def ecg_sources(record, sc_file) -> dict[str, ECG]:
    sc_path, sc_ds = sc_file
    return {
        "png": digitized_like(record, "image/png"),
        "pdf": digitized_like(record, "application/pdf", method="vector"),
        "sc": digitized_like(record, "application/dicom", dicom=identity_of(sc_ds)),
    }


# --- validity -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["png", "pdf", "sc"])
def test_output_has_the_12_lead_ecg_structure(record, sc_file, tmp_path, kind):
    ecg = ecg_sources(record, sc_file)[kind]
    (path,) = write_dicom(ecg, tmp_path, kind)
    assert path.name == f"{kind}.dcm"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == codes.TWELVE_LEAD_ECG_WAVEFORM == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "ECG"
    assert ds.Manufacturer == "ecgbridge" and ds.SoftwareVersions
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                    "SeriesNumber", "AcquisitionContextSequence"):
        assert keyword in ds, keyword  # Type 2: present even when empty
    for keyword in ("InstanceNumber", "ContentDate", "ContentTime", "AcquisitionDateTime",
                    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert str(ds[keyword].value), keyword  # Type 1: present with a value
    assert "AcquisitionTimeSynchronized" not in ds
    (group,) = ds.WaveformSequence
    assert "MultiplexGroupTimeOffset" not in group
    assert group.WaveformOriginality == "DERIVED"
    assert group.WaveformBitsAllocated == 16 and group.WaveformSampleInterpretation == "SS"
    assert group.NumberOfWaveformChannels == 12 and group.NumberOfWaveformSamples == 5000
    assert float(group.SamplingFrequency) == 500.0
    assert bytes(group.WaveformPaddingValue) == b"\x00\x80"  # -32768 little endian
    for lead, channel in zip(LEADS, group.ChannelDefinitionSequence, strict=True):
        (source,) = channel.ChannelSourceSequence
        expected = codes.DICOM_LEAD_CODES[lead]
        assert (source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning) == expected
        assert channel.ChannelLabel == lead
        (unit,) = channel.ChannelSensitivityUnitsSequence
        assert (unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning) == (
            "uV", "UCUM", "microvolt")
        assert float(channel.ChannelSensitivity) == 1.0
        assert float(channel.ChannelSensitivityCorrectionFactor) == 1.0
        assert float(channel.ChannelBaseline) == 0.0 and float(channel.ChannelSampleSkew) == 0.0
        assert channel.WaveformBitsStored == 16
        assert channel.ChannelDerivationDescription.startswith("Digitized from ECG image")
        assert len(channel.ChannelDerivationDescription) <= 64
    method = "vector PDF paths" if kind == "pdf" else "raster trace extraction"
    assert method in group.ChannelDefinitionSequence[0].ChannelDerivationDescription


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) not installed")
@pytest.mark.parametrize("kind", ["png", "pdf", "sc"])
def test_dciodvfy_reports_no_errors(record, sc_file, tmp_path, kind):
    (path,) = write_dicom(ecg_sources(record, sc_file)[kind], tmp_path, kind)
    assert dciodvfy_errors(path) == []


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) not installed")
def test_dciodvfy_accepts_reencoded_pydicom_sample(tmp_path):
    ecg = read_dicom_waveform(get_testdata_file("waveform_ecg.dcm"))
    (path,) = write_dicom(ecg, tmp_path, "sample")
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert "Converted" in ds.WaveformSequence[0].ChannelDefinitionSequence[0] \
        .ChannelDerivationDescription
    items = ds.get("WaveformAnnotationSequence", [])
    assert not any("ConceptNameCodeSequence" in item for item in items)  # no quality to report
    texts = [str(item.UnformattedTextValue) for item in items]
    # the sample's 1.25 µV steps cannot be kept at 1 µV: said, not "not modified"
    assert texts[-2:] == ["ecgbridge: re-quantised to 1 uV steps by ecgbridge",
                          "ecgbridge: acquisition time: the source DICOM waveform's "
                          "AcquisitionDateTime"]


# --- round trips ----------------------------------------------------------------------


def test_waveform_array_round_trip_within_half_microvolt(record, sc_file):
    ecg = ecg_sources(record, sc_file)["png"]
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(to_dicom_waveform(ecg))))
    physical_uv = ds.waveform_array(0)  # (samples, channels) in µV, padding not masked
    raw = np.frombuffer(ds.WaveformSequence[0].WaveformData, "<i2").reshape(physical_uv.shape)
    shown = np.isfinite(ecg.signals.T)
    # sensitivity 1 µV per unit: rounding error at most 0.5 µV
    assert np.abs(physical_uv[shown] - ecg.signals.T[shown] * 1000.0).max() <= 0.5 + 1e-9
    assert np.all(raw[~shown] == PADDING_VALUE)
    assert np.all(raw[shown] != PADDING_VALUE)


def test_reader_round_trip_restores_gaps_quality_and_identity(record, sc_file, tmp_path):
    ecg = ecg_sources(record, sc_file)["sc"]
    (path,) = write_dicom(ecg, tmp_path, "sc")
    back = read_dicom_waveform(path)
    assert back.fs == ecg.fs
    assert np.array_equal(np.isnan(back.signals), np.isnan(ecg.signals))
    shown = np.isfinite(ecg.signals)
    assert np.abs(back.signals[shown] - ecg.signals[shown]).max() <= 0.0005 + 1e-12
    assert back.quality == pytest.approx(ecg.quality, abs=1e-3)
    assert back.source.dicom["PatientName"] == "TEST^ECG"
    assert back.source.media_type == "application/dicom"


def test_absent_leads_are_left_out(record):
    signals, fs = record
    only_limb = np.array(signals)
    only_limb[6:] = np.nan
    ds = to_dicom_waveform(ECG(signals=only_limb, fs=fs))
    labels = [c.ChannelLabel for c in ds.WaveformSequence[0].ChannelDefinitionSequence]
    assert labels == list(LEADS[:6])
    back = read_dicom_waveform(ds)
    assert np.isnan(back.signals[6:]).all()
    assert np.abs(back.signals[:6] - only_limb[:6]).max() <= 0.0005 + 1e-12


# --- identity and UIDs ----------------------------------------------------------------


def test_secondary_capture_identity_lands_in_the_same_study(record, sc_file):
    _, sc = sc_file
    ds = to_dicom_waveform(ecg_sources(record, sc_file)["sc"])
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyID", "AccessionNumber", "StudyDate", "StudyTime",
                    "ReferringPhysicianName"):
        assert str(ds[keyword].value) == str(sc[keyword].value), keyword
    assert ds.SeriesInstanceUID != sc.SeriesInstanceUID
    (ref,) = ds.ReferencedInstanceSequence
    assert ref.ReferencedSOPClassUID == SECONDARY_CAPTURE
    assert ref.ReferencedSOPInstanceUID == sc.SOPInstanceUID
    # the image's study/scan time is not the ECG's acquisition time
    assert ds.AcquisitionDateTime != "20240101120000"
    assert ds.SeriesDescription.endswith("acquisition time unknown")


def test_explicit_patient_and_study_override_the_source(record, sc_file):
    ds = to_dicom_waveform(
        ecg_sources(record, sc_file)["sc"],
        patient={"PatientName": "OTHER^NAME", "PatientID": "X9"},
        study={"AccessionNumber": "ACC-2"},
        acquisition_datetime="20230505101010",
    )
    assert (str(ds.PatientName), ds.PatientID, ds.AccessionNumber) == ("OTHER^NAME", "X9", "ACC-2")
    assert ds.AcquisitionDateTime == "20230505101010"


def test_uids_are_deterministic_and_content_derived(record, sc_file):
    ecg = ecg_sources(record, sc_file)["png"]
    when = "2021-02-05T13:39:33"
    first = to_dicom_waveform(ecg, acquisition_datetime=when)
    second = to_dicom_waveform(ecg, acquisition_datetime=when)
    assert dicom_bytes(first) == dicom_bytes(second)
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        uid = first[keyword].value
        assert uid == second[keyword].value and uid.startswith("2.25.") and len(uid) <= 64
    changed = to_dicom_waveform(ecg.replace(signals=ecg.signals + 0.01),
                                acquisition_datetime=when)
    assert changed.SOPInstanceUID != first.SOPInstanceUID
    assert changed.SeriesInstanceUID == first.SeriesInstanceUID  # same source file
    other_source = ecg.replace(source=SourceInfo(sha256="f" * 64, media_type="image/png"))
    assert to_dicom_waveform(other_source, acquisition_datetime=when).SeriesInstanceUID \
        != first.SeriesInstanceUID


# --- limits and bad values ------------------------------------------------------------


def test_large_amplitudes_get_a_coarser_standard_sensitivity(record):
    signals, fs = record
    big = np.array(signals) * 40.0  # peaks beyond the ±32.767 mV of 1 µV per unit
    ds = to_dicom_waveform(ECG(signals=big, fs=fs))
    sensitivity = float(ds.WaveformSequence[0].ChannelDefinitionSequence[0].ChannelSensitivity)
    assert sensitivity in (2.5, 5.0, 10.0)
    back = ds.waveform_array(0).T / 1000.0
    assert np.abs(back - big).max() <= sensitivity / 2000.0 + 1e-9


def test_amplitude_beyond_int16_at_coarsest_sensitivity_is_refused(record):
    signals, fs = record
    huge = np.array(signals)
    huge[0, 10] = 400.0  # mV
    with pytest.raises(EncodingError, match="400.0 mV"):
        to_dicom_waveform(ECG(signals=huge, fs=fs))


def test_2000_hz_is_resampled_to_1000_hz_keeping_gaps(tmp_path):
    fs = 2000.0
    t = np.arange(int(10 * fs)) / fs
    signals = np.tile(np.sin(2 * np.pi * 5 * t), (12, 1))
    signals[3:, : int(2.5 * fs)] = np.nan
    ecg = ECG(signals=signals, fs=fs)
    (path,) = write_dicom(ecg, tmp_path, "fast")
    back = read_dicom_waveform(path)
    assert back.fs == 1000.0 and back.n_samples == 10000
    assert np.isnan(back.signals[3:, :2500]).all() and np.isfinite(back.signals[3:, 2510:]).all()
    expected = np.sin(2 * np.pi * 5 * np.arange(10000) / 1000.0)
    inner = slice(100, 9900)
    assert np.abs(back.signals[0, inner] - expected[inner]).max() < 0.002


def test_100_hz_is_upsampled_to_500_hz():
    signals = np.tile(np.sin(2 * np.pi * np.arange(1000) / 100.0), (12, 1))
    out, fs = conform_sampling(signals, 100.0)
    assert fs == 500.0 and out.shape == (12, 5000)


def test_resampling_can_be_refused():
    with pytest.raises(EncodingError, match="resampling is disabled"):
        conform_sampling(np.zeros((12, 20000)), 2000.0, allow_resample=False)


def test_long_recordings_are_slowed_to_fit_or_refused():
    out, fs = conform_sampling(np.zeros((12, 30000)), 500.0)  # 60 s
    assert fs == 250.0 and out.shape[1] == 15000 <= 16384
    with pytest.raises(EncodingError, match="does not fit"):
        conform_sampling(np.zeros((12, 50000)), 500.0)  # 100 s: > 16384 even at 200 Hz


@pytest.mark.parametrize(
    ("channels", "samples", "fs", "message"),
    [(14, 5000, 500.0, "1 to 13 channels"), (0, 5000, 500.0, "1 to 13 channels"),
     (12, 16385, 500.0, "16384 samples"), (12, 5000, 199.0, "200 to 1000 Hz"),
     (12, 5000, 1000.5, "200 to 1000 Hz")],
)
def test_iod_limits_are_checked(channels, samples, fs, message):
    with pytest.raises(EncodingError, match=message):
        check_waveform_limits(channels, samples, fs)


def test_an_ecg_without_samples_is_refused():
    with pytest.raises(EncodingError, match="no lead"):
        to_dicom_waveform(ECG(signals=np.full((12, 100), np.nan), fs=500.0))


# --- reading other producers' waveforms -----------------------------------------------


def test_reads_pydicom_sample_with_scpecg_codes():
    path = get_testdata_file("waveform_ecg.dcm")
    ds = pydicom.dcmread(path)
    ecg = read_dicom_waveform(path)
    # the RHYTHM group (10000 samples) wins over the MEDIAN BEAT group (1200 samples)
    assert ecg.fs == 1000.0 and ecg.n_samples == 10000
    assert ecg.present_leads() == LEADS
    expected_mv = ds.waveform_array(0).T / 1000.0  # SCPECG order is I..V6 too, 1.25 µV units
    assert np.allclose(ecg.signals, expected_mv)
    assert ecg.source.dicom["PatientID"] == "642341"
    assert ecg.source.sha256 and ecg.source.media_type == "application/dicom"


def test_channel_labels_and_negative_avr_are_understood(record):
    signals, fs = record
    ds = to_dicom_waveform(ECG(signals=signals, fs=fs))
    channels = ds.WaveformSequence[0].ChannelDefinitionSequence
    del channels[0].ChannelSourceSequence  # lead I known by its label only
    avr = channels[3].ChannelSourceSequence[0]
    avr.CodeValue = codes.DICOM_CODE_NEGATIVE_AVR  # stored as -aVR
    ecg = read_dicom_waveform(ds)
    assert np.abs(ecg.lead("I") - signals[0]).max() <= 0.0005 + 1e-12
    assert np.abs(ecg.lead("aVR") + signals[3]).max() <= 0.0005 + 1e-12


def test_non_waveform_dicom_is_an_input_error(sc_file):
    path, _ = sc_file
    with pytest.raises(InputError, match="no WaveformSequence"):
        read_dicom_waveform(path)


def test_garbage_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(InputError, match="not a readable DICOM"):
        read_dicom_waveform(bad)


# --- end to end, once the digitizer exists --------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) not installed")
@pytest.mark.parametrize("kind", ["png", "pdf", "sc"])
def test_end_to_end_digitized_page_is_a_valid_waveform(rendered_page, tmp_path, kind):
    from PIL import Image

    page = rendered_page("E07506", dpi=150.0)
    image = Image.fromarray(page.image)
    path = tmp_path / f"page.{'dcm' if kind == 'sc' else kind}"
    if kind == "png":
        image.save(path)
    elif kind == "pdf":
        image.save(path, "PDF", resolution=150.0)
    else:
        make_secondary_capture(path, np.asarray(image.convert("L")))
    from ecgbridge import digitize

    ecg = digitize(path)
    (out,) = write_dicom(ecg, tmp_path / "out", kind)
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out)
    if kind == "sc":
        assert str(ds.PatientName) == "TEST^ECG"
        assert ds.ReferencedInstanceSequence[0].ReferencedSOPClassUID == SECONDARY_CAPTURE
    back = read_dicom_waveform(out)
    assert back.fs == ecg.fs  # the digitizer's default 500 Hz needs no resampling
    assert np.array_equal(np.isnan(back.signals), np.isnan(ecg.signals))
    shown = np.isfinite(ecg.signals)
    assert np.abs(back.signals[shown] - ecg.signals[shown]).max() <= 0.0005 + 1e-12


def test_non_ascii_patient_names_survive_as_utf8(record, sc_file, tmp_path):
    ecg = ecg_sources(record, sc_file)["sc"]
    ecg = ecg.replace(source=SourceInfo(
        sha256="e" * 64, media_type="application/dicom",
        dicom={**ecg.source.dicom, "PatientName": "Müller^Jürgen=山田^太郎"},
    ))
    (path,) = write_dicom(ecg, tmp_path, "utf8")
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Jürgen=山田^太郎"
    if DCIODVFY is not None:
        assert dciodvfy_errors(path) == []


def test_eight_lead_storage_gets_the_other_limb_leads_derived(record):
    signals, fs = record
    eight = np.array(signals)
    eight[2:6] = np.nan  # keep I, II, V1-V6 as many carts store them
    back = read_dicom_waveform(to_dicom_waveform(ECG(signals=eight, fs=fs)))
    assert back.present_leads() == LEADS
    lead_i, lead_ii = back.lead("I"), back.lead("II")
    assert np.allclose(back.lead("III"), lead_ii - lead_i)
    assert np.allclose(back.lead("aVF"), lead_ii - lead_i / 2)
    # the record's own III agrees with the derived one to within its rounding
    assert np.abs(back.lead("III") - signals[2]).max() < 0.01


def test_limb_leads_are_not_invented_without_i_and_ii():
    assert derive_limb_leads({"I": np.zeros(3), "V1": np.zeros(3)}) == {}
