"""Clinical records tell the truth: acquisition time, identity, provenance, stable UIDs."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian
from vector_pdf_maker import PageSpec, layout_3x4_plus_ii, make_pdf

from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.vector import digitize_vector_pages
from ecgbridge.ecg import ECG, Calibration, SourceInfo
from ecgbridge.encode.dicom_waveform import dicom_bytes, read_dicom_waveform, to_dicom_waveform
from ecgbridge.encode.fhir_observation import (
    fhir_json,
    read_fhir_observation,
    to_fhir_observation,
)
from ecgbridge.encode.readers import read_ecg
from ecgbridge.encode.record_facts import RecordSettings, record_uid
from ecgbridge.encode.registry import WriteContext, write_outputs
from ecgbridge.errors import EncodingError, InputError
from ecgbridge.inputs.load import load_input
from ecgbridge.inputs.printed import printed_acquisition_time, printed_filters

#: Header texts of real cart PDFs (shared/data/real) and what they print as recording time.
REAL_HEADERS = [
    (["Name", "Pat.-ID", "05.02.2021 13:39:33", "01.01.2001",
      "SCHILLER AG, Schweiz - Gedruckt am 05.02.2021 15:37:31"], "20210205133933"),
    (["Patienten-Nr.: 1282423", "05.02.2021", "13:36:10", "weiblich"], "20210205133610"),
    (["29.04.2025", "8:28:13"], "20250429082813"),
    (["ID:502", "2009/10/21 09:59:17", "1971/09/09 (<1 yr)"], "20091021095917"),
    (["23-MAY-2005 21:27:32", "05-MAY-1974 (31 yr)", "EID:31 EDT: 21:42 23-MAY-2005"],
     "20050523212732"),
    (["ID:100", "30-M", "Page 1 of 1"], ""),  # no time printed
    (["03/04/2021 10:00:00"], ""),  # day and month cannot be told apart
    (["25/04/2021 10:00:00"], "20210425100000"),
    (["05.02.2021 13:39:33", "06.02.2021 09:00:00"], ""),  # two recording times: unknown
]


@pytest.mark.parametrize(("texts", "expected"), REAL_HEADERS)
def test_printed_recording_time_is_read_and_print_times_are_not(texts, expected):
    assert printed_acquisition_time(texts) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("TP 40Hz, AC 50Hz", {"high_hz": 40.0, "notch_hz": 50.0}),
     ("50mm/s 10mm/mV 0.01-20Hz 50Hz ADS", {"low_hz": 0.01, "high_hz": 20.0, "notch_hz": 50.0}),
     ("0,05–150 Hz", {"low_hz": 0.05, "high_hz": 150.0}),
     ("150Hz", {"high_hz": 150.0}),
     ("10mm/mV 40Hz", {"high_hz": 40.0}),
     ("50Hz", {}),  # a lone mains frequency could be either: left unknown
     ("75/min", {})],
)
def test_printed_filter_settings(text, expected):
    assert printed_filters([text]) == expected


# --- a vector PDF that prints its recording time ------------------------------------


@pytest.fixture(scope="module")
def printed_pdf(record_signals, tmp_path_factory) -> Path:
    signals, fs = record_signals("HR06004")
    page = layout_3x4_plus_ii(signals, fs)
    texts = (*page.texts, ("05.02.2021 13:39:33", 20.0, 10.0),
             ("0.05-150 Hz  50 Hz", 120.0, 195.0),
             ("Gedruckt am 07.02.2021 15:37:31", 150.0, 205.0))
    pdf = make_pdf([PageSpec(strips=page.strips, texts=texts)], fs=fs)
    path = tmp_path_factory.mktemp("printed") / "cart.pdf"
    path.write_bytes(pdf)
    return path


def _digitize(path: Path) -> ECG:
    loaded = load_input(path)
    ecg = digitize_vector_pages(loaded.pages, DigitizeOptions(), source=loaded.source)
    assert ecg is not None
    return ecg


def _processing_stamps() -> list[str]:
    now = datetime.now()
    return [now.strftime("%Y%m%d"), now.strftime("%Y-%m-%d")]


def test_printed_time_and_filters_reach_dicom_and_fhir_byte_identically(printed_pdf, tmp_path):
    ecg = _digitize(printed_pdf)
    assert ecg.source.acquisition_datetime == "20210205133933"
    context = WriteContext(options={"timezone": "Europe/Berlin"})
    first = write_outputs(ecg, tmp_path / "a", "cart", ["dicom", "fhir-r4"], context)
    again = write_outputs(_digitize(printed_pdf), tmp_path / "b", "cart",
                          ["dicom", "fhir-r4"], context)
    for one, two in zip(first, again, strict=True):
        assert one.read_bytes() == two.read_bytes(), one.name
    ds = pydicom.dcmread(first[0])
    assert (ds.AcquisitionDateTime, ds.ContentDate, ds.ContentTime) == (
        "20210205133933", "20210205", "133933")
    assert ds.TimezoneOffsetFromUTC == "+0100"
    assert "InstanceCreationDate" not in ds
    channel = ds.WaveformSequence[0].ChannelDefinitionSequence[0]
    assert (float(channel.FilterLowFrequency), float(channel.FilterHighFrequency),
            float(channel.NotchFilterFrequency)) == (0.05, 150.0, 50.0)
    doc = json.loads(first[1].read_text())
    assert doc["effectiveDateTime"] == "2021-02-05T13:39:33+01:00"
    assert doc["identifier"][0]["value"] == f"urn:oid:{ds.SeriesInstanceUID}"
    every = write_outputs(ecg, tmp_path / "all", "cart",
                          ["dicom", "fhir-r4", "fhir-r5", "wfdb", "csv", "json"], context)
    for path in every:  # no output carries the processing date
        data = path.read_bytes()
        assert not any(stamp.encode() in data for stamp in _processing_stamps()), path.name


def test_without_a_zone_fhir_keeps_the_date_and_says_why(printed_pdf):
    doc = to_fhir_observation(_digitize(printed_pdf))
    assert doc["effectiveDateTime"] == "2021-02-05"
    history = doc["note"][-1]["text"]
    assert "13:39:33 local time, zone unknown" in history
    assert "date and time printed on the page" in history


# --- identity from a sidecar, policies without evidence ------------------------------


def _page_ecg(record_signals, source: SourceInfo) -> ECG:
    signals, fs = record_signals("E07506")
    return ECG(signals=signals, fs=fs, quality=(0.9,) * 12,
               calibration=Calibration(layout="3x4+II", method="raster"), source=source)


def _png(tmp_path: Path, name: str = "scan.png") -> Path:
    from PIL import Image

    path = tmp_path / name
    image = np.full((300, 400, 3), 255, dtype=np.uint8)
    image[::10] = 200
    Image.fromarray(image).save(path)
    return path


def test_sidecar_gives_patient_study_and_time(record_signals, tmp_path):
    png = _png(tmp_path)
    png.with_suffix(".json").write_text(json.dumps({
        "PatientID": "1282423", "PatientName": "Testmann^Test", "PatientBirthDate": "2001-01-01",
        "PatientSex": "M", "AccessionNumber": "ACC-17", "StudyInstanceUID": "1.2.826.0.1.3",
        "AcquisitionDateTime": "2021-02-05T13:39:33+01:00"}))
    source = load_input(png).source
    ecg = _page_ecg(record_signals, source)
    ds = to_dicom_waveform(ecg)
    assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.AccessionNumber,
            ds.StudyInstanceUID) == ("1282423", "Testmann^Test", "20010101", "ACC-17",
                                     "1.2.826.0.1.3")
    assert (ds.AcquisitionDateTime, ds.TimezoneOffsetFromUTC) == ("20210205133933", "+0100")
    doc = to_fhir_observation(ecg, settings=RecordSettings(patient_id_system="urn:oid:1.2.3"))
    assert doc["subject"]["identifier"] == {"system": "urn:oid:1.2.3", "value": "1282423"}
    assert doc["effectiveDateTime"] == "2021-02-05T13:39:33+01:00"


def test_a_misspelt_sidecar_is_refused_and_a_summary_is_not_a_sidecar(tmp_path):
    png = _png(tmp_path)
    png.with_suffix(".json").write_text(json.dumps({"PatientID": "1", "PatientId": "1"}))
    with pytest.raises(InputError, match="unknown keys PatientId"):
        load_input(png)
    png.with_suffix(".json").write_text(json.dumps({"fs": 500.0, "quality": {}}))
    assert load_input(png).source.dicom == {}


def test_without_evidence_fhir_omits_the_time_and_dicom_follows_the_policy(record_signals):
    ecg = _page_ecg(record_signals, SourceInfo(name="scan.png", sha256="a" * 64,
                                               media_type="image/png"))
    doc = to_fhir_observation(ecg)
    assert "effectiveDateTime" not in doc and "issued" not in doc
    assert fhir_json(to_fhir_observation(ecg)) == fhir_json(doc)
    with pytest.raises(EncodingError, match="acquisition time of the ECG is unknown"):
        to_dicom_waveform(ecg, settings=RecordSettings(unknown_time="refuse"))
    monday = datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    a = to_dicom_waveform(ecg, now=monday)
    b = to_dicom_waveform(ecg, now=monday + timedelta(seconds=1))
    assert a.SeriesDescription.endswith("acquisition time unknown")
    assert a.SOPInstanceUID != b.SOPInstanceUID  # a different content never reuses a UID
    assert a.SeriesInstanceUID == b.SeriesInstanceUID == record_uid(ecg)
    with pytest.raises(EncodingError, match="no PatientID"):
        to_dicom_waveform(ecg, now=monday, settings=RecordSettings(missing_patient="refuse"))
    with pytest.raises(EncodingError, match="no patient is known"):
        to_fhir_observation(ecg, settings=RecordSettings(missing_patient="refuse"))


# --- UIDs keyed on identity -------------------------------------------------------------


def test_a_secondary_capture_in_another_transfer_syntax_is_the_same_ecg(record_signals, tmp_path):
    from test_dicom_waveform import make_secondary_capture

    image = np.full((64, 96), 255, dtype=np.uint8)
    image[::8, :] = 200
    explicit = tmp_path / "explicit.dcm"
    ds = make_secondary_capture(explicit, image)
    ds.AcquisitionDateTime, ds.ContentDate, ds.ContentTime = "20240101120500", "20240101", "1205"
    ds.save_as(explicit, enforce_file_format=True)  # the scan's times: not the ECG's
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit = tmp_path / "implicit.dcm"
    ds.save_as(implicit, enforce_file_format=True)
    assert explicit.read_bytes() != implicit.read_bytes()
    when = "2021-02-05T13:39:33"
    written = []
    for path in (explicit, implicit):
        ecg = _page_ecg(record_signals, load_input(path).source)
        written.append((to_dicom_waveform(ecg, acquisition_datetime=when),
                        to_fhir_observation(ecg)))
    (dcm_a, fhir_a), (dcm_b, fhir_b) = written
    assert dcm_a.SOPInstanceUID == dcm_b.SOPInstanceUID
    assert dicom_bytes(dcm_a) == dicom_bytes(dcm_b)
    assert fhir_a["identifier"] == fhir_b["identifier"]
    assert dcm_a.AcquisitionDateTime == "20210205133933"  # not the SC's study date
    scanned = _page_ecg(record_signals, load_input(explicit).source)
    assert "effectiveDateTime" not in to_fhir_observation(scanned)
    with pytest.raises(EncodingError, match="acquisition time of the ECG is unknown"):
        to_dicom_waveform(scanned, settings=RecordSettings(unknown_time="refuse"))


# --- provenance and identity through convert --------------------------------------------


def test_convert_keeps_identity_time_history_and_quality(record_signals, tmp_path):
    source = SourceInfo(name="cart.pdf", sha256="b" * 64, media_type="application/pdf",
                        acquisition_datetime="20210205133933",
                        acquisition_evidence="date and time printed on the page",
                        filters={"low_hz": 0.05, "high_hz": 150.0})
    ecg = _page_ecg(record_signals, source)
    options = WriteContext(options={"timezone": "Europe/Berlin"})
    dcm, fhir = write_outputs(ecg, tmp_path / "digitized", "x", ["dicom", "fhir-r4"], options)
    digitized_fhir = json.loads(fhir.read_text())
    # DICOM -> FHIR and DICOM: same record, same time, same history
    from_dicom = read_ecg(dcm)
    assert from_dicom.source.acquisition_evidence == "date and time printed on the page"
    converted = to_fhir_observation(from_dicom)
    assert converted["identifier"] == digitized_fhir["identifier"]
    assert converted["effectiveDateTime"] == "2021-02-05T13:39:33+01:00"
    notes = " ".join(n["text"] for n in converted["note"])
    assert "digitized from a paper ECG image" in notes and "not modified" not in notes
    assert "Per-lead digitization quality (0-1): I 0.90" in notes
    assert converted["method"]["text"].startswith("Converted from a stored ECG waveform")
    redone = to_dicom_waveform(from_dicom)
    assert {ch.ChannelDerivationDescription for ch in
            redone.WaveformSequence[0].ChannelDefinitionSequence} == {
        "Converted by ecgbridge; digitized from a paper ECG image"}
    assert redone.SeriesInstanceUID == pydicom.dcmread(dcm).SeriesInstanceUID
    assert redone.AcquisitionDateTime == "20210205133933"
    quality = [a for a in redone.WaveformAnnotationSequence if "NumericValue" in a]
    assert len(quality) == 12 and {float(a.NumericValue) for a in quality} == {0.9}
    # FHIR -> DICOM and FHIR: the same record again
    from_fhir = read_fhir_observation(digitized_fhir)
    assert from_fhir.quality == (0.9,) * 12
    from_fhir_dicom = to_dicom_waveform(from_fhir)
    assert from_fhir_dicom.SeriesInstanceUID == redone.SeriesInstanceUID
    assert (from_fhir_dicom.AcquisitionDateTime, from_fhir_dicom.TimezoneOffsetFromUTC) == (
        "20210205133933", "+0100")
    assert to_fhir_observation(from_fhir)["identifier"] == digitized_fhir["identifier"]
    assert np.array_equal(from_fhir.signals, from_dicom.signals, equal_nan=True)


def test_a_cart_waveform_keeps_its_time_and_filters_and_says_what_changed():
    ecg = read_dicom_waveform(get_testdata_file("waveform_ecg.dcm"))
    ds = to_dicom_waveform(ecg)
    assert ds.AcquisitionDateTime == "20130125105919"
    channel = ds.WaveformSequence[0].ChannelDefinitionSequence[0]
    assert (float(channel.FilterLowFrequency), float(channel.FilterHighFrequency)) == (0.05, 300)
    texts = [str(a.UnformattedTextValue) for a in ds.WaveformAnnotationSequence]
    assert "ecgbridge: re-quantised to 1 uV steps by ecgbridge" in texts
    source = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    assert ds.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    # what a conversion cannot carry is named, and the cart stays on record
    assert ("ecgbridge: not carried from the source: multiplex group 2 'MEDIAN BEAT' "
            "(12 channels, 1200 samples)") in texts
    assert "ecgbridge: not carried from the source: 77 waveform annotations" in texts
    (equipment,) = ds.ContributingEquipmentSequence
    assert (equipment.Manufacturer, equipment.ManufacturerModelName) == (
        source.Manufacturer, source.ManufacturerModelName)
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109101"
    again = to_dicom_waveform(read_dicom_waveform(pydicom.dcmread(io.BytesIO(dicom_bytes(ds)))))
    assert again.ContributingEquipmentSequence == ds.ContributingEquipmentSequence
    notes = " ".join(n["text"] for n in to_fhir_observation(ecg)["note"])
    assert "MEDIAN BEAT" in notes and "not modified" not in notes


def test_equipment_and_filters_travel_through_fhir_and_wfdb(tmp_path):
    cart = read_dicom_waveform(get_testdata_file("waveform_ecg.dcm"))
    assert cart.source.equipment and cart.source.filters
    from_fhir = read_fhir_observation(json.loads(fhir_json(to_fhir_observation(cart))))
    (hea,) = [p for p in write_outputs(cart, tmp_path, "cart", ["wfdb"]) if p.suffix == ".hea"]
    from_wfdb = read_ecg(hea)
    original = to_dicom_waveform(cart)
    for back in (from_fhir, from_wfdb):
        assert back.source.equipment == cart.source.equipment
        assert back.source.filters == cart.source.filters
        assert not any(line.startswith(("equipment", "filters:")) for line in back.source.history)
        again = to_dicom_waveform(back)
        assert again.ContributingEquipmentSequence == original.ContributingEquipmentSequence
        assert again.WaveformSequence[0].ChannelDefinitionSequence[0].FilterHighFrequency == 300


def _dciodvfy_errors(ds: pydicom.Dataset, path: Path) -> list[str]:
    path.write_bytes(dicom_bytes(ds))
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("Error")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
def test_dciodvfy_accepts_history_filters_zone_equipment_and_the_unknown_time(
    record_signals, tmp_path
):
    source = SourceInfo(name="cart.pdf", sha256="c" * 64, media_type="application/pdf",
                        acquisition_datetime="20210205133933", acquisition_evidence="printed",
                        filters={"low_hz": 0.05, "high_hz": 150.0, "notch_hz": 50.0})
    ds = to_dicom_waveform(_page_ecg(record_signals, source),
                           settings=RecordSettings(timezone="Europe/Berlin"))
    assert _dciodvfy_errors(ds, tmp_path / "printed.dcm") == []
    unknown = _page_ecg(record_signals, SourceInfo(name="x.png", sha256="7" * 64))
    assert _dciodvfy_errors(to_dicom_waveform(unknown), tmp_path / "unknown.dcm") == []
    cart = to_dicom_waveform(read_dicom_waveform(get_testdata_file("waveform_ecg.dcm")))
    assert "ContributingEquipmentSequence" in cart
    assert _dciodvfy_errors(cart, tmp_path / "cart.dcm") == []


def test_convert_is_deterministic_and_references_its_source(record_signals):
    source = SourceInfo(name="cart.pdf", sha256="d" * 64, media_type="application/pdf",
                        acquisition_datetime="20210205133933", acquisition_evidence="printed")
    ds = to_dicom_waveform(_page_ecg(record_signals, source))
    data = dicom_bytes(ds)
    one = to_dicom_waveform(read_dicom_waveform(pydicom.dcmread(io.BytesIO(data))))
    two = to_dicom_waveform(read_dicom_waveform(pydicom.dcmread(io.BytesIO(data))))
    assert dicom_bytes(one) == dicom_bytes(two)
    assert one.SOPInstanceUID != ds.SOPInstanceUID  # other content (it names its source)
    assert one.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert one.SeriesInstanceUID == ds.SeriesInstanceUID  # the same ECG record


def test_cli_options_set_time_zone_subject_and_policies(record_signals, tmp_path, capsys):
    from ecgbridge.cli import main

    source = SourceInfo(name="x.csv", sha256="e" * 64, media_type="text/csv")
    (written,) = write_outputs(_page_ecg(record_signals, source), tmp_path, "x", ["fhir-r4"])
    path = written.rename(tmp_path / "x.json")
    out = tmp_path / "out"
    assert main(["convert", str(path), "--out", str(out), "--format", "fhir-r4,dicom",
                 "--acquired", "2021-02-05T13:39:33", "--timezone", "Europe/Berlin",
                 "--fhir-subject", "Patient/7"]) == 0
    doc = json.loads((out / "x.fhir-r4.json").read_text())
    assert doc["effectiveDateTime"] == "2021-02-05T13:39:33+01:00"
    assert doc["subject"] == {"reference": "Patient/7"}
    assert pydicom.dcmread(out / "x.dcm").TimezoneOffsetFromUTC == "+0100"
    assert main(["convert", str(path), "--out", str(tmp_path / "refused"), "--format", "dicom",
                 "--unknown-time", "refuse"]) == 1
    assert "acquisition time of the ECG is unknown" in capsys.readouterr().err


def test_daemon_jobs_follow_the_records_settings(printed_pdf, record_signals, tmp_path):
    from ecgbridge.config import RecordsSettings
    from ecgbridge.jobs.worker import DigitizeRequest, run_digitization

    records = RecordsSettings(timezone="Europe/Berlin", unknown_time="refuse")
    options = tuple(records.writer_options().items())
    done = run_digitization(DigitizeRequest(
        job_id="job1", input_path=str(printed_pdf), out_dir=str(tmp_path / "job1" / "out"),
        formats=("dicom", "fhir-r4"), record_options=options))
    assert done.ok, done.reason
    assert pydicom.dcmread(done.files["dicom"]).TimezoneOffsetFromUTC == "+0100"
    signals, fs = record_signals("HR06004")
    undated = tmp_path / "undated.pdf"
    undated.write_bytes(make_pdf([layout_3x4_plus_ii(signals, fs)], fs=fs))
    refused = run_digitization(DigitizeRequest(
        job_id="job2", input_path=str(undated), out_dir=str(tmp_path / "job2" / "out"),
        formats=("dicom",), record_options=options))
    assert not refused.ok and "acquisition time of the ECG is unknown" in refused.reason


def test_wfdb_carries_record_time_history_and_quality(record_signals, tmp_path):
    source = SourceInfo(name="cart.pdf", sha256="f" * 64, media_type="application/pdf",
                        acquisition_datetime="20210205133933",
                        acquisition_evidence="date and time printed on the page")
    ecg = _page_ecg(record_signals, source)
    context = WriteContext(options={"timezone": "Europe/Berlin"})
    header = write_outputs(ecg, tmp_path, "rec", ["wfdb"], context)[-1]
    back = read_ecg(header)
    assert back.quality == ecg.quality
    assert np.array_equal(np.round(back.signals * 1000), np.round(ecg.signals * 1000),
                          equal_nan=True)
    doc = to_fhir_observation(back)
    assert doc["identifier"] == to_fhir_observation(ecg)["identifier"]
    assert doc["effectiveDateTime"] == "2021-02-05T13:39:33+01:00"
    notes = " ".join(n["text"] for n in doc["note"])
    assert "digitized from a paper ECG image" in notes
    assert "date and time printed on the page" in notes


@pytest.mark.skipif(shutil.which("dcm2xml") is None, reason="dcmtk not installed")
def test_unseen_spans_are_the_declared_padding_for_a_second_reader(tmp_path):
    """dcmtk reads the padding value and every unseen sample as exactly that value, so a
    reader honouring WaveformPaddingValue (PS3.3 C.10.9.1.6) never shows a -32.768 mV spike."""
    signals = np.full((12, 5000), np.nan)
    for column in range(4):  # a 3x4 page: three leads per 2.5 s column
        signals[3 * column:3 * column + 3, 1250 * column:1250 * (column + 1)] = 0.5
    signals[1] = 0.25  # lead II: a 10 s rhythm strip
    path = tmp_path / "page.dcm"
    path.write_bytes(dicom_bytes(to_dicom_waveform(
        ECG(signals=signals, fs=500.0), acquisition_datetime="2021-02-05T13:39:33")))
    xml = subprocess.run(["dcm2xml", "+Wb", "+M", str(path)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    padding = re.search(r'tag="5400,100a"[^>]*>([0-9a-f]+)<', xml)
    data = re.search(r'tag="5400,1010"[^>]*>([0-9a-f\\]+)<', xml)
    assert padding is not None and data is not None
    words = np.array([int(w, 16) for w in data.group(1).split("\\")]).reshape(5000, 12)
    unseen = ~np.isfinite(signals.T)
    assert padding.group(1) == "8000" and unseen.mean() > 0.6
    assert np.all(words[unseen] == 0x8000) and not np.any(words[~unseen] == 0x8000)
    assert set(words[~unseen].ravel()) == {500, 250}  # µV codes of what the page shows


@pytest.mark.parametrize(
    ("texts", "expected"),
    [(["Patienten-Nr.: 1282423"], {"PatientID": "1282423"}),
     (["ID:502", "CID: 1", "EID: EDT: ORDER:"], {"PatientID": "502"}),
     (["Pat.-ID: 77", "ID:78"], {}),  # two different IDs: none
     (["Name", "Pat.-ID", "test testmann", "1282423"], {})],  # no label: value: none
)
def test_printed_patient_id_needs_a_label(texts, expected):
    from ecgbridge.inputs.printed import printed_identity

    assert printed_identity(texts) == expected


def test_printed_patient_id_is_offered_and_used_only_when_accepted(record_signals):
    source = SourceInfo(name="cart.pdf", sha256="9" * 64, media_type="application/pdf",
                        acquisition_datetime="20210205133933", acquisition_evidence="printed",
                        printed_identity={"PatientID": "1282423"})
    ecg = _page_ecg(record_signals, source)
    assert ecg.summary()["source"]["printed_identity"] == {"PatientID": "1282423"}
    assert to_dicom_waveform(ecg).PatientID == ""
    assert "subject" not in to_fhir_observation(ecg)
    accept = RecordSettings(printed_identity="accept")
    assert to_dicom_waveform(ecg, settings=accept).PatientID == "1282423"
    subject = to_fhir_observation(ecg, settings=accept)["subject"]
    assert subject["identifier"]["value"] == "1282423"


def test_folder_convention_gives_the_patient_and_a_sidecar_wins(tmp_path):
    from ecgbridge.inputs.sidecar import with_folder_identity

    folder = tmp_path / "inbox" / "PID-42"
    folder.mkdir(parents=True)
    png = _png(folder)
    pattern = r"inbox/(?P<PatientID>[^/]+)$"
    loaded = with_folder_identity(load_input(png), png, pattern)
    assert loaded.source.dicom["PatientID"] == "PID-42"
    png.with_suffix(".json").write_text(json.dumps({"PatientID": "FROM-SIDECAR"}))
    loaded = with_folder_identity(load_input(png), png, pattern)
    assert loaded.source.dicom["PatientID"] == "FROM-SIDECAR"
    stray = _png(tmp_path, "stray.png")
    with pytest.raises(InputError, match="does not follow the patient folder pattern"):
        with_folder_identity(load_input(stray), stray, pattern)
    with pytest.raises(InputError, match="must name groups"):
        with_folder_identity(load_input(stray), stray, r"inbox/(?P<Name>[^/]+)$")


@pytest.mark.slow
def test_batch_follows_the_records_settings_of_its_config(printed_pdf, tmp_path):
    import sys

    src = tmp_path / "archive"
    src.mkdir()
    shutil.copy(printed_pdf, src / "cart.pdf")
    config = tmp_path / "ecgbridge.yaml"
    config.write_text("records:\n  timezone: Europe/Berlin\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "ecgbridge", "batch", str(src), "--out", str(out), "--format",
         "dicom,fhir-r4", "--workers", "1", "--no-progress", "--config", str(config)],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert pydicom.dcmread(out / "cart.dcm").TimezoneOffsetFromUTC == "+0100"
    doc = json.loads((out / "cart.fhir-r4.json").read_text())
    assert doc["effectiveDateTime"] == "2021-02-05T13:39:33+01:00"


def test_a_digitization_time_is_never_taken_back_as_the_acquisition_time(record_signals):
    ecg = _page_ecg(record_signals, SourceInfo(name="scan.png", sha256="8" * 64,
                                               media_type="image/png"))
    monday = datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    ds = to_dicom_waveform(ecg, now=monday)
    assert ds.AcquisitionDateTime == "20260105090000"  # Type 1: said to be unknown
    back = read_dicom_waveform(pydicom.dcmread(io.BytesIO(dicom_bytes(ds))))
    assert back.source.acquisition_datetime == ""
    assert "effectiveDateTime" not in to_fhir_observation(back)
    later = to_dicom_waveform(back, now=monday + timedelta(days=1))
    assert later.SeriesDescription.endswith("acquisition time unknown")
    assert later.AcquisitionDateTime == "20260106090000"


def test_the_daemon_adopts_a_sidecar_with_its_input(printed_pdf, tmp_path):
    """Inbox: X.json is not a job while X.pdf lies beside it; the intake stores it beside
    the input, and the job's DICOM is filed under the sidecar's patient."""
    from ecgbridge.jobs.intake import Intake
    from ecgbridge.jobs.journal import Journal
    from ecgbridge.jobs.store import StateFolder
    from ecgbridge.jobs.worker import DigitizeRequest, run_digitization
    from ecgbridge.sources.folder import is_waiting_sidecar

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    pdf = inbox / "cart.pdf"
    shutil.copy(printed_pdf, pdf)
    sidecar = inbox / "cart.json"
    sidecar.write_text(json.dumps({"PatientID": "PID-INBOX", "AccessionNumber": "ACC-9"}))
    assert is_waiting_sidecar(sidecar) and not is_waiting_sidecar(pdf)
    state = StateFolder(tmp_path / "state")
    journal = Journal.in_state_folder(state.root)
    try:
        result = Intake(state, journal).take_file(pdf)
    finally:
        journal.close()
    assert result.created and not any(inbox.iterdir())
    stored = next(p for p in state.inputs.iterdir() if p.suffix == ".pdf")
    assert stored.with_suffix(".json").is_file()
    done = run_digitization(DigitizeRequest(
        job_id=result.job_id, input_path=str(stored), out_dir=str(tmp_path / "out"),
        formats=("dicom",)))
    assert done.ok, done.reason
    ds = pydicom.dcmread(done.files["dicom"])
    assert (ds.PatientID, ds.AccessionNumber) == ("PID-INBOX", "ACC-9")


def test_the_inbox_watcher_makes_one_job_of_an_input_and_its_sidecar(printed_pdf, tmp_path):
    import time

    from ecgbridge.jobs.intake import Intake
    from ecgbridge.jobs.journal import Journal
    from ecgbridge.jobs.store import StateFolder
    from ecgbridge.sources.folder import FolderWatcher

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "cart.json").write_text(json.dumps({"PatientID": "PID-W"}))
    shutil.copy(printed_pdf, inbox / "cart.pdf")
    state = StateFolder(tmp_path / "state")
    journal = Journal.in_state_folder(state.root)
    watcher = FolderWatcher(inbox, Intake(state, journal).take_file, stable_seconds=0.2,
                            poll_seconds=0.05)
    watcher.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (any(inbox.iterdir())
                                               or not journal.list_jobs()):
            time.sleep(0.05)  # the input leaves the inbox just before its row is written
        assert not any(inbox.iterdir())
        assert [job.input_name for job in journal.list_jobs()] == ["cart.pdf"]
    finally:
        watcher.stop()
        journal.close()


@pytest.mark.parametrize("suffix", [".json", ".hl7", ".wl"])
def test_a_sidecar_follows_its_input_into_quarantine_and_back(tmp_path, suffix):
    from ecgbridge.jobs.store import StateFolder

    state = StateFolder(tmp_path / "state")
    job_id = "a" * 16
    stored = state.input_path(job_id, "scan.png")
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(b"png")
    stored.with_suffix(suffix).write_text('{"PatientID": "1"}')
    quarantined = state.quarantine_input(job_id, stored, "no PatientID")
    assert quarantined.with_suffix(suffix).is_file() and not stored.with_suffix(suffix).exists()
    back = state.release_from_quarantine(job_id, quarantined)
    assert back.with_suffix(suffix).read_text() == '{"PatientID": "1"}'
