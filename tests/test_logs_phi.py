"""``--json-logs``: every line JSON, no patient value, workers included.

``ecgbridge serve --json-logs`` as a real subprocess receives DICOM objects with
invalid dates and a patient name through both doors (inbox, C-STORE by dcmtk's
storescu when installed); pydicom's warnings about those values, raised in the
worker processes, must come out as structured lines without the values.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from daemon_support import (
    dcmtk_available,
    free_port,
    secondary_capture,
    storescu,
    wait_for_port,
)

from ecgbridge.service.logs import JsonFormatter, ThirdPartyScrubber

REPO = Path(__file__).resolve().parents[1]
#: Patient values put in the objects; none may appear in the log.
PHI = ("Doe^Jane", "Doe", "Jane", "1970-01-31", "31/01/1970", "PID-771177")


def _object_with_bad_values(path: Path, image: np.ndarray) -> None:
    secondary_capture(path, image)
    ds = pydicom.dcmread(path)
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-771177"
    ds.PatientBirthDate = "1970-01-31"  # not a DA (YYYYMMDD): pydicom warns with the value
    ds.StudyDate = "31/01/1970"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def _finished_jobs(state: Path) -> int:
    journal = state / "journal.sqlite3"
    if not journal.exists():
        return 0
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT COUNT(*) FROM jobs WHERE state IN "
                              "('delivered', 'failed')").fetchone()[0])
    finally:
        db.close()


def test_third_party_records_lose_their_quoted_values() -> None:
    record = logging.LogRecord("py.warnings", logging.WARNING, __file__, 1,
                               "/x/valuerep.py:440: UserWarning: Invalid value for VR DA: "
                               "'1970-01-31'.\n  warn_and_log(msg)", None, None)
    assert ThirdPartyScrubber().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "UserWarning: Invalid value for VR DA: '…'."


@pytest.mark.network
def test_json_logs_are_json_lines_without_patient_values(
    tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    page = rendered_page("HR06004", layout="3x4+II", dpi=100).image
    inbox, state, log_path = tmp_path / "inbox", tmp_path / "state", tmp_path / "daemon.log"
    inbox.mkdir()
    dicom_port, http_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "ECGBRIDGE_INBOX__STABLE_SECONDS": "0.2"}
    cmd = [sys.executable, "-m", "ecgbridge", "serve", "--inbox", str(inbox), "--outbox",
           str(tmp_path / "outbox"), "--state", str(state), "--dicom-port", str(dicom_port),
           "--http-port", str(http_port), "--workers", "1", "--json-logs"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        wait_for_port(dicom_port, timeout_s=60)
        expected = 1
        _object_with_bad_values(tmp_path / "Doe_Jane.dcm", page)
        os.replace(tmp_path / "Doe_Jane.dcm", inbox / "Doe_Jane.dcm")
        if dcmtk_available():
            _object_with_bad_values(tmp_path / "sent.dcm", page)
            assert storescu(dicom_port, [tmp_path / "sent.dcm"]).returncode == 0
            expected = 2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _finished_jobs(state) < expected:
            time.sleep(0.2)
        assert _finished_jobs(state) == expected
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = log_path.read_text(encoding="utf-8").splitlines()
    assert lines
    not_json = [line for line in lines if not _is_json_object(line)]
    assert not not_json, not_json[:5]
    leaks = [line for line in lines if any(value in line for value in PHI)]
    assert not leaks, leaks[:5]
    assert any("Invalid value for VR DA" in line for line in lines), "no warning captured"


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
