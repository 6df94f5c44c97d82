"""Two runs of ``digitize`` on the same input give the same records (issue 12).

With evidence of the acquisition time (a sidecar file, ``--acquired``, a printed time)
the .dcm and .fhir-r4.json of two runs are byte-identical, and no output holds the
processing date. Without evidence FHIR omits ``effective`` (still byte-identical);
DICOM needs the time (Type 1), so under the default policy it holds the digitization
time and says so: the one place the processing date may appear.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from test_dicom_waveform import make_secondary_capture
from vector_pdf_maker import PageSpec, layout_3x4_plus_ii, make_pdf

from ecgbridge.cli import main

FORMATS = "dicom,fhir-r4,fhir-r5,wfdb,csv,json"


@pytest.fixture(scope="module")
def inputs(rendered_page, record_signals, tmp_path_factory) -> dict[str, Path]:
    """scan.png with a sidecar, the same PNG without one, a Secondary Capture, a PDF."""
    image = np.asarray(rendered_page("E07506", layout="3x4+II", dpi=150).image)
    with_sidecar = tmp_path_factory.mktemp("sidecar")
    png = with_sidecar / "scan.png"
    Image.fromarray(image).save(png)
    png.with_suffix(".json").write_text(json.dumps({
        "PatientID": "PID-17", "AcquisitionDateTime": "2021-02-05T13:39:33+01:00"}))
    bare = tmp_path_factory.mktemp("bare") / "scan.png"
    bare.write_bytes(png.read_bytes())
    grey = image.mean(axis=2).astype(np.uint8) if image.ndim == 3 else image
    sc = tmp_path_factory.mktemp("sc") / "sc.dcm"
    make_secondary_capture(sc, grey)
    signals, fs = record_signals("HR06004")
    page = layout_3x4_plus_ii(signals, fs)
    pdf = tmp_path_factory.mktemp("pdf") / "cart.pdf"
    pdf.write_bytes(make_pdf([PageSpec(strips=page.strips, texts=(
        *page.texts, ("05.02.2021 13:39:33", 20.0, 10.0)))], fs=fs))
    return {"png": png, "bare": bare, "sc": sc, "pdf": pdf}


def _processing_stamps() -> set[bytes]:
    stamps = set()
    for now in (datetime.now(), datetime.now(UTC)):
        stamps |= {now.strftime("%Y%m%d").encode(), now.strftime("%Y-%m-%d").encode()}
    return stamps


def _run(path: Path, out: Path, *extra: str) -> dict[str, bytes]:
    assert main(["digitize", str(path), "--out", str(out), "--format", FORMATS,
                 "--no-progress", *extra]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.slow
def test_two_runs_with_evidence_are_byte_identical_and_hold_no_processing_time(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    runs = {
        "png": ("png", ()), "sc": ("sc", ("--acquired", "2021-02-05T13:39:33",
                                          "--timezone", "Europe/Berlin")),
        "pdf": ("pdf", ("--timezone", "Europe/Berlin")),
    }
    stamps = _processing_stamps()
    for name, (key, extra) in runs.items():
        first = _run(inputs[key], tmp_path / name / "1", *extra)
        second = _run(inputs[key], tmp_path / name / "2", *extra)
        assert first == second, name  # every output, .dcm and .fhir-r4.json included
        for file_name, data in first.items():
            assert not any(stamp in data for stamp in stamps), (name, file_name)
        stem = next(n for n in first if n.endswith(".dcm"))[: -len(".dcm")]
        ds = pydicom.dcmread(tmp_path / name / "1" / f"{stem}.dcm")
        assert (ds.AcquisitionDateTime, ds.TimezoneOffsetFromUTC) == ("20210205133933",
                                                                      "+0100")
        doc = json.loads(first[f"{stem}.fhir-r4.json"])
        assert doc["effectiveDateTime"] == "2021-02-05T13:39:33+01:00"
    assert pydicom.dcmread(tmp_path / "png" / "1" / "scan.dcm").PatientID == "PID-17"


@pytest.mark.slow
def test_without_evidence_only_the_dicom_holds_the_digitization_time_and_says_so(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    first = _run(inputs["bare"], tmp_path / "1")
    second = _run(inputs["bare"], tmp_path / "2")
    stamps = _processing_stamps()
    for file_name, data in first.items():
        if not file_name.endswith(".dcm"):
            assert data == second[file_name], file_name
            assert not any(stamp in data for stamp in stamps), file_name
    for fhir in ("scan.fhir-r4.json", "scan.fhir-r5.json"):
        doc = json.loads(first[fhir])
        assert "effectiveDateTime" not in doc and "effectiveInstant" not in doc
        assert "issued" not in doc
    one, two = (pydicom.dcmread(tmp_path / run / "scan.dcm") for run in ("1", "2"))
    assert one.SeriesDescription.endswith("acquisition time unknown")
    assert any(stamp.decode() in one.AcquisitionDateTime for stamp in stamps)
    assert one.SeriesInstanceUID == two.SeriesInstanceUID  # the same ECG record
    # same content (the same second) means the same UID; another second, another UID
    assert (one.SOPInstanceUID == two.SOPInstanceUID) == (
        one.AcquisitionDateTime == two.AcquisitionDateTime)


def test_a_cart_pdf_carries_its_printed_time_and_the_given_fhir_subject(tmp_path: Path) -> None:
    """The Schiller export (tests/data/vector_pdf, printed "05.02.2021 13:39:33")."""
    pdf = Path(__file__).parent / "data" / "vector_pdf" / "schiller_6x1_2pages.pdf"
    written = _run(pdf, tmp_path, "--timezone", "Europe/Berlin", "--fhir-subject",
                   "Patient/42")
    ds = pydicom.dcmread(tmp_path / "schiller_6x1_2pages.dcm")
    assert (ds.AcquisitionDateTime, ds.ContentDate, ds.ContentTime) == (
        "20210205133933", "20210205", "133933")
    assert "acquisition time unknown" not in ds.SeriesDescription
    for version in ("r4", "r5"):
        doc = json.loads(written[f"schiller_6x1_2pages.fhir-{version}.json"])
        assert doc["effectiveDateTime"] == "2021-02-05T13:39:33+01:00"
        assert doc["subject"] == {"reference": "Patient/42"}
    stamps = _processing_stamps()
    for file_name, data in written.items():
        assert not any(stamp in data for stamp in stamps), file_name


@pytest.mark.slow
def test_digitize_batch_and_the_daemon_write_the_same_records(inputs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    import subprocess
    import sys

    from ecgbridge.jobs.worker import DigitizeRequest, run_digitization

    pdf = inputs["pdf"]
    by_digitize = _run(pdf, tmp_path / "digitize")
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / pdf.name).write_bytes(pdf.read_bytes())
    done = subprocess.run(
        [sys.executable, "-m", "ecgbridge", "batch", str(archive), "--out",
         str(tmp_path / "batch"), "--format", FORMATS, "--workers", "1", "--no-progress"],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    stored = tmp_path / "state" / f"{'0' * 16}_{pdf.name}"  # as the daemon keeps inputs
    stored.parent.mkdir()
    stored.write_bytes(pdf.read_bytes())
    job = run_digitization(DigitizeRequest(
        job_id="0" * 16, input_path=str(stored), out_dir=str(tmp_path / "daemon"),
        formats=tuple(FORMATS.split(","))))
    assert job.ok, job.reason
    for fmt, name in (("dicom", "cart.dcm"), ("fhir-r4", "cart.fhir-r4.json"),
                      ("fhir-r5", "cart.fhir-r5.json")):
        assert (tmp_path / "batch" / name).read_bytes() == by_digitize[name], name
        assert Path(job.files[fmt]).read_bytes() == by_digitize[name], name
