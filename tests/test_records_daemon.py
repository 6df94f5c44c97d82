"""The daemon end to end (issue 12): an input with a sidecar (JSON or HL7 v2) is filed
under its patient, one without follows the missing-patient policy (refused: failed with
the reason, input quarantined), and the outbox files get the configured file mode.

The real daemon in this process (inbox, process pool, outbox; no DICOM listener).
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pydicom
import pytest
from daemon_support import free_port
from vector_pdf_maker import layout_3x4_plus_ii, make_pdf

from ecgbridge.config import load_settings
from ecgbridge.jobs.store import REASON_SUFFIX
from ecgbridge.service.daemon import Daemon


@pytest.mark.slow
def test_sidecar_identity_refused_missing_patient_and_outbox_mode(record_signals,
                                                                  tmp_path: Path) -> None:
    signals, fs = record_signals("HR06004")
    pdf = make_pdf([layout_3x4_plus_ii(signals, fs)], fs=fs)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "known.pdf").write_bytes(pdf)
    (staging / "known.json").write_text(json.dumps({
        "PatientID": "PID-D12", "StudyInstanceUID": "1.2.826.0.1.4712",
        "AcquisitionDateTime": "2021-02-05T13:39:33+01:00"}))
    (staging / "unknown.pdf").write_bytes(pdf + b"\n% another file\n")
    (staging / "ordered.pdf").write_bytes(pdf + b"\n% a third file\n")
    (staging / "ordered.hl7").write_bytes(
        b"MSH|^~\\&|HIS|HOSP|ECG|CARDIO|20210205120000||ORM^O01|M1|P|2.3.1\r"
        b"PID|1||PID-HL7^^^HOSP^MR||Order^Patient||19700101|F\r"
        b"OBR|1|PLC-1|FIL-9|93000^ECG^C4||||||||||||||ACC-HL7\r")
    root = tmp_path / "daemon"
    daemon = Daemon(load_settings(None, environ={}, overrides={
        "inbox.path": str(root / "inbox"), "deliver.outbox.path": str(root / "outbox"),
        "state.path": str(root / "state"), "dicom.enabled": False, "dicom.port": free_port(),
        "http.port": 0, "workers.processes": 1, "inbox.stable_seconds": 0.1,
        "inbox.poll_seconds": 0.05, "deliver.outbox.file_mode": "0600",
        "records.missing_patient": "refuse",
    }))
    daemon.start()
    try:
        inbox = root / "inbox"
        for name in ("known.json", "known.pdf", "unknown.pdf", "ordered.hl7", "ordered.pdf"):
            (staging / name).rename(inbox / name)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            counts = daemon.journal.count_by_state()
            if counts.get("delivered", 0) + counts.get("failed", 0) >= 3:
                break
            time.sleep(0.1)
        jobs = {job.input_name: job for job in daemon.journal.list_jobs()}
    finally:
        daemon.stop()
    assert {name: str(job.state) for name, job in jobs.items()} == {
        "known.pdf": "delivered", "unknown.pdf": "failed", "ordered.pdf": "delivered"}
    assert "no PatientID" in jobs["unknown.pdf"].reason
    quarantined = list((root / "state" / "quarantine").glob("*unknown.pdf"))
    assert len(quarantined) == 1
    assert "no PatientID" in quarantined[0].with_name(
        quarantined[0].name + REASON_SUFFIX).read_text()
    outbox = root / "outbox"
    known = jobs["known.pdf"].job_id
    ds = pydicom.dcmread(outbox / f"{known}.dcm")
    assert (ds.PatientID, ds.StudyInstanceUID, ds.AcquisitionDateTime) == (
        "PID-D12", "1.2.826.0.1.4712", "20210205133933")
    ordered = pydicom.dcmread(outbox / f"{jobs['ordered.pdf'].job_id}.dcm")
    assert (ordered.PatientID, str(ordered.PatientName), ordered.AccessionNumber) == (
        "PID-HL7", "Order^Patient", "ACC-HL7")
    written = sorted(outbox.iterdir())
    assert len(written) == 6 and {p.suffix for p in written} == {".dcm", ".json"}
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o600}
