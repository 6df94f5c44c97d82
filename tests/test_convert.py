"""``read_ecg`` dispatch and the ``ecgbridge convert`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from ecgbridge.cli import main
from ecgbridge.ecg import LEADS
from ecgbridge.encode.csv_format import write_csv
from ecgbridge.encode.readers import detect_format, max_abs_difference, read_ecg
from ecgbridge.errors import InputError

ALL_FORMATS = "wfdb,csv,json,dicom,fhir-r4,fhir-r5"
#: Round-trip bounds in mV: WFDB/DICOM/FHIR store integer µV (±0.5 µV); CSV 0.1 µV.
BOUND = {"hea": 0.0005, "dcm": 0.0005, "fhir-r4.json": 0.0005, "fhir-r5.json": 0.0005,
         "csv": 0.00005}


@pytest.fixture()
def record_copy(records_dir, tmp_path) -> Path:
    """E07506 copied to a scratch folder; returns the header path."""
    src = tmp_path / "in"
    src.mkdir()
    for ext in ("hea", "dat"):
        shutil.copy(records_dir / f"E07506.{ext}", src / f"E07506.{ext}")
    return src / "E07506.hea"


def test_read_ecg_recognises_wfdb_by_header_record_name_and_signal_file(record_copy):
    by_header = read_ecg(record_copy)
    assert by_header.present_leads() == LEADS and by_header.fs == 500.0
    assert by_header.source.media_type == "application/x-wfdb"
    assert by_header.quality == (1.0,) * 12 and by_header.calibration.method == "waveform"
    for other in (record_copy.with_suffix(""), record_copy.with_suffix(".dat")):
        assert detect_format(other) == "wfdb"
        assert max_abs_difference(read_ecg(other), by_header) == 0.0
        assert read_ecg(other).source.sha256 == by_header.source.sha256


def test_read_ecg_reads_csv_and_fhir_bundle(record_copy, tmp_path):
    ecg = read_ecg(record_copy)
    (csv_path,) = write_csv(ecg, tmp_path, "rec")
    assert detect_format(csv_path) == "csv"
    assert max_abs_difference(read_ecg(csv_path), ecg) <= 0.00005 + 1e-12
    from ecgbridge.encode.fhir_observation import to_fhir_observation

    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Patient"}},
                        {"resource": to_fhir_observation(ecg, version="R5")}]}
    bundle_path = tmp_path / "bundle.json"
    bundle_path.write_text(json.dumps(bundle))
    assert max_abs_difference(read_ecg(bundle_path), ecg) <= 0.0005 + 1e-12


def test_read_ecg_refuses_unknown_content(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not a supported ECG waveform"):
        read_ecg(junk)
    with pytest.raises(InputError, match="no such file"):
        read_ecg(tmp_path / "missing.csv")


def test_convert_writes_every_format_and_each_reads_back(record_copy, tmp_path, capsys):
    sample = get_testdata_file("waveform_ecg.dcm")
    out = tmp_path / "out"
    code = main(["convert", str(record_copy.parent), sample, "--out", str(out),
                 "--format", ALL_FORMATS])
    assert code == 0, capsys.readouterr().err
    for stem, path in (("E07506", record_copy), ("waveform_ecg", Path(sample))):
        original = read_ecg(path)
        assert (out / f"{stem}.json").is_file()
        for ext, bound in BOUND.items():
            back = read_ecg(out / f"{stem}.{ext}")
            assert back.fs == original.fs, ext
            assert max_abs_difference(back, original) <= bound + 1e-12, ext


def test_convert_reports_each_failure_and_keeps_going(record_copy, tmp_path, capsys):
    junk = tmp_path / "junk.csv"
    junk.write_text("time_s,I\n0,abc\n0.002,1\n")
    missing = tmp_path / "missing.hea"
    out = tmp_path / "out"
    code = main(["convert", str(junk), str(record_copy), str(missing), "--out", str(out),
                 "--format", "dicom"])
    err = capsys.readouterr().err
    assert code == 1
    failed = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2
    assert failed[0].startswith(f"FAILED {junk}:") and "not a number" in failed[0]
    assert failed[1].startswith(f"FAILED {missing}:")
    assert "2 of 3 inputs failed" in err
    assert (out / "E07506.dcm").is_file()


def test_convert_of_its_own_output_folder_skips_the_summaries(record_copy, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["convert", str(record_copy), "--out", str(first),
                 "--format", "json,fhir-r5"]) == 0
    second = tmp_path / "second"
    assert main(["convert", str(first), "--out", str(second), "--format", "csv"]) == 0, \
        capsys.readouterr().err
    assert [p.name for p in second.iterdir()] == ["E07506.csv"]  # no .fhir-r5 in the name


def test_convert_passes_the_fhir_subject(record_copy, tmp_path):
    out = tmp_path / "out"
    assert main(["convert", str(record_copy), "--out", str(out), "--format", "fhir-r4",
                 "--fhir-subject", "Patient/123"]) == 0
    doc = json.loads((out / "E07506.fhir-r4.json").read_text())
    assert doc["subject"] == {"reference": "Patient/123"}
    assert "Converted" in doc["method"]["text"]


def test_convert_keeps_stems_apart_and_refuses_image_only_formats(record_copy, tmp_path, capsys):
    ecg = read_ecg(record_copy)
    write_csv(ecg, record_copy.parent, "E07506")  # E07506.csv beside E07506.hea
    out = tmp_path / "out"
    # from a folder: one recording in two formats is converted once (the WFDB record)
    assert main(["convert", str(record_copy.parent), "--out", str(out), "--format", "csv"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["E07506.csv"]
    assert "E07506.csv" in capsys.readouterr().err  # named as not converted
    # given one by one, both are converted under names kept apart, and the summary says so
    out2 = tmp_path / "out2"
    assert main(["convert", str(record_copy), str(record_copy.with_suffix(".csv")),
                 "--out", str(out2), "--format", "csv"]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["E07506.csv", "E07506_csv.csv"]
    assert "E07506.csv -> E07506_csv.*" in capsys.readouterr().err
    assert main(["convert", str(record_copy), "--out", str(out), "--format", "overlay"]) == 1
    assert "needs the page image" in capsys.readouterr().err


def test_convert_of_a_dicom_source_keeps_the_patient(tmp_path):
    out = tmp_path / "out"
    assert main(["convert", get_testdata_file("waveform_ecg.dcm"), "--out", str(out),
                 "--format", "dicom,fhir-r4"]) == 0
    import pydicom

    ds = pydicom.dcmread(out / "waveform_ecg.dcm")
    src = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"), stop_before_pixels=True)
    assert (ds.PatientID, ds.StudyInstanceUID) == (src.PatientID, src.StudyInstanceUID)
    assert ds.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    doc = json.loads((out / "waveform_ecg.fhir-r4.json").read_text())
    assert doc["subject"]["identifier"]["value"] == src.PatientID
    assert np.isfinite(read_ecg(out / "waveform_ecg.dcm").signals).all()
