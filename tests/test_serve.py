"""Acceptance tests of ``ecgbridge serve`` run as a real subprocess.

Peers: dcmtk's echoscu/storescu over 127.0.0.1 (free ports), the inbox folder, the
outbox folder, the HTTP health/metrics endpoint. ECG inputs are pages rendered
at test time from the fixture records in tests/data/records.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from daemon_support import (
    ct_image,
    dcmtk_available,
    echoscu,
    free_port,
    pattern_image,
    secondary_capture,
    storescu,
    wait_for_port,
)
from PIL import Image

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not dcmtk_available(), reason="dcmtk is not installed"),
]

REPO = Path(__file__).resolve().parents[1]
ECG_WAVEFORM_12_LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"


class DaemonProcess:
    """``ecgbridge serve`` in its own process group, with its folders and ports."""

    def __init__(self, root: Path, workers: int = 1) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.outbox = root / "outbox"
        self.state = root / "state"
        self.log = root / "daemon.log"
        self.workers = workers
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, extra_env: dict[str, str] | None = None,
              default_folders: bool = False) -> None:
        """Start the daemon; `default_folders` leaves inbox/outbox/state at their
        relative defaults (./inbox, ./outbox, ./state under `root`, the working dir)."""
        env = dict(os.environ)
        env.update(extra_env or {})
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["ECGBRIDGE_INBOX__STABLE_SECONDS"] = "0.3"
        env["ECGBRIDGE_RETRY__BASE_SECONDS"] = "0.5"
        env["ECGBRIDGE_SHUTDOWN__GRACE_SECONDS"] = "10"
        folders = [] if default_folders else [
            "--inbox", str(self.inbox), "--outbox", str(self.outbox), "--state", str(self.state)]
        cmd = [sys.executable, "-m", "ecgbridge", "serve", *folders,
               "--dicom-port", str(self.dicom_port),
               "--http-port", str(self.http_port), "--workers", str(self.workers),
               "--json-logs"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=log,
                                         start_new_session=True)
        wait_for_port(self.dicom_port, timeout_s=60)
        wait_for_port(self.http_port, timeout_s=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the daemon and its worker processes (a crash / power cut)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (systemd stop) and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                        timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def jobs(self) -> list[dict[str, Any]]:
        db = sqlite3.connect(f"file:{self.state / 'journal.sqlite3'}?mode=ro", uri=True,
                             timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY received_at")]
        finally:
            db.close()

    def deliveries(self) -> list[dict[str, Any]]:
        db = sqlite3.connect(f"file:{self.state / 'journal.sqlite3'}?mode=ro", uri=True,
                             timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM deliveries")]
        finally:
            db.close()

    def wait_jobs(self, predicate: Callable[[list[dict[str, Any]]], bool],
                  timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        jobs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if (self.state / "journal.sqlite3").exists():
                jobs = self.jobs()
                if predicate(jobs):
                    return jobs
            assert self.alive(), self.log.read_text()[-3000:]
            time.sleep(0.2)
        summary = [(j["job_id"], j["state"], j["reason"]) for j in jobs]
        raise AssertionError(f"timed out; jobs: {summary}\n{self.log.read_text()[-3000:]}")


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path)
    yield d
    if d.alive():
        d.kill()


def _page_png(rendered_page: Callable[..., Any], path: Path, record: str, **kw: Any) -> Path:
    page = rendered_page(record, layout="3x4+II", dpi=200, **kw)
    Image.fromarray(page.image).save(path)
    return path


def _drop(inbox: Path, src: Path) -> None:
    """Hand a file to the inbox the way a careful producer does (write .part, rename)."""
    inbox.mkdir(parents=True, exist_ok=True)
    part = inbox / (src.name + ".part")
    part.write_bytes(src.read_bytes())
    os.replace(part, inbox / src.name)


def _outbox_uids(outbox: Path) -> list[str]:
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in sorted(outbox.glob("*.dcm"))]


def test_echo_health_metrics_refusal_and_graceful_stop(daemon: DaemonProcess,
                                                       tmp_path: Path) -> None:
    daemon.start()
    assert echoscu(daemon.dicom_port).returncode == 0
    status, body = daemon.http("/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert health["components"] == {"scheduler": True, "dicom_scp": True, "inbox": True,
                                    "deliver:outbox": True}

    ct_image(tmp_path / "ct.dcm")
    refused = storescu(daemon.dicom_port, [tmp_path / "ct.dcm"])
    assert refused.returncode != 0
    assert "no presentation context" in (refused.stdout + refused.stderr).lower()

    status, metrics = daemon.http("/metrics")
    assert status == 200
    for name in ("ecgbridge_queue_depth 0", "# TYPE ecgbridge_received_total counter",
                 "# TYPE ecgbridge_end_to_end_seconds histogram", 'ecgbridge_jobs{state="failed"}'):
        assert name in metrics
    assert daemon.http("/nope")[0] == 404
    assert daemon.terminate(timeout=60) == 0
    assert not daemon.jobs()  # the CT object never became a job
    log = daemon.log.read_text()
    assert '"message": "stopped"' in log


def test_bad_inputs_through_both_doors_are_quarantined(daemon: DaemonProcess,
                                                       tmp_path: Path) -> None:
    daemon.start()
    src = tmp_path / "src"
    src.mkdir()
    # inbox: a corrupt PNG, a non-ECG picture, a "decompression bomb" header
    # (file names can carry patient names: they must not reach the logs)
    (src / "Doe_Jane_19700101.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    Image.fromarray(pattern_image(400, 600)).save(src / "holiday.png")
    _huge_png(src / "huge.png", 60000, 60000)
    for name in ("Doe_Jane_19700101.png", "holiday.png", "huge.png"):
        _drop(daemon.inbox, src / name)
    # DICOM: a non-ECG Secondary Capture, and one whose pixel data is truncated
    secondary_capture(src / "noecg.dcm", pattern_image(400, 600))
    broken = src / "broken.dcm"
    secondary_capture(broken, pattern_image(400, 600))
    ds = pydicom.dcmread(broken)
    ds.PixelData = ds.PixelData[:1000]
    ds.save_as(broken)
    sent = storescu(daemon.dicom_port, [src / "noecg.dcm", broken])
    assert sent.returncode == 0, sent.stderr

    jobs = daemon.wait_jobs(lambda js: len(js) == 5 and all(j["state"] == "failed" for j in js),
                            timeout=180)
    quarantine = daemon.state / "quarantine"
    for job in jobs:
        assert job["reason"], job
        assert not job["reason"].startswith("internal error"), job["reason"]
        quarantined = daemon.state / job["input_path"]
        assert quarantined.parent == quarantine and quarantined.is_file()
        reason = quarantined.with_name(quarantined.name + ".reason.txt").read_text()
        assert job["reason"] in reason
    assert not [p for p in daemon.inbox.iterdir()]
    assert not list(daemon.outbox.glob("*")) if daemon.outbox.exists() else True
    # the daemon is still alive and serving
    assert daemon.alive()
    assert echoscu(daemon.dicom_port).returncode == 0
    status, metrics = daemon.http("/metrics")
    assert "ecgbridge_failed_total 5" in metrics
    assert daemon.terminate() == 0
    log = daemon.log.read_text()
    assert "Doe_Jane" not in log and "TEST-0001" not in log


def _huge_png(path: Path, width: int, height: int) -> None:
    """A tiny file whose header claims a gigantic RGB image."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))


def test_default_relative_folders_deliver_a_dropped_png(
    daemon: DaemonProcess, tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    """The README's ``ecgbridge serve`` with no folder options: ./inbox -> ./outbox."""
    daemon.start(default_folders=True)
    src = tmp_path / "src"
    src.mkdir()
    _drop(daemon.inbox, _page_png(rendered_page, src / "page.png", "E07506"))
    jobs = daemon.wait_jobs(lambda js: len(js) == 1 and js[0]["state"] in (
        "delivered", "failed", "dead-letter"), timeout=240)
    assert jobs[0]["state"] == "delivered", jobs
    job_id = jobs[0]["job_id"]
    assert (daemon.outbox / f"{job_id}.dcm").is_file()
    assert (daemon.outbox / f"{job_id}.fhir-r4.json").is_file()
    assert "scheduler iteration failed" not in daemon.log.read_text()


def test_png_and_secondary_capture_become_waveform_and_observation(
    daemon: DaemonProcess, tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    daemon.start()
    src = tmp_path / "src"
    src.mkdir()
    png = _page_png(rendered_page, src / "ward3_bed2.png", "E07506")
    sc_page = rendered_page("00001_lr", layout="3x4+II", dpi=200)
    sc_uid = secondary_capture(src / "sc.dcm", np.asarray(sc_page.image))
    _drop(daemon.inbox, png)
    sent = storescu(daemon.dicom_port, [src / "sc.dcm"])
    assert sent.returncode == 0, sent.stderr

    jobs = daemon.wait_jobs(lambda js: len(js) == 2 and all(
        j["state"] in ("delivered", "failed", "dead-letter") for j in js), timeout=240)
    assert [j["state"] for j in jobs] == ["delivered", "delivered"], jobs
    assert not list(daemon.inbox.iterdir())
    for job in jobs:
        dcm = daemon.outbox / f"{job['job_id']}.dcm"
        ds = pydicom.dcmread(dcm)
        assert ds.SOPClassUID == ECG_WAVEFORM_12_LEAD
        assert str(ds.SOPInstanceUID) == job["sop_instance_uid"]
        obs = json.loads((daemon.outbox / f"{job['job_id']}.fhir-r4.json").read_text())
        assert obs["resourceType"] == "Observation"
        assert len(obs["component"]) >= 6
        assert (daemon.outbox / f"{job['job_id']}.json").is_file()
    dicom_job = next(j for j in jobs if j["source"] == "dicom")
    assert dicom_job["input_key"] == f"sop:{sc_uid}"
    # the waveform keeps the patient of the Secondary Capture
    ds = pydicom.dcmread(daemon.outbox / f"{dicom_job['job_id']}.dcm")
    assert ds.PatientID == "TEST-0001"
    # the same object sent again is not processed or delivered a second time
    assert storescu(daemon.dicom_port, [src / "sc.dcm"]).returncode == 0
    time.sleep(1.5)
    assert len(daemon.jobs()) == 2
    status, metrics = daemon.http("/metrics")
    assert 'ecgbridge_delivered_total{destination="outbox"} 2' in metrics
    assert "ecgbridge_end_to_end_seconds_count 2" in metrics
    # the admin command reads the journal while the daemon runs
    listed = subprocess.run(
        [sys.executable, "-m", "ecgbridge", "jobs", "list", "--state", str(daemon.state)],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert listed.returncode == 0, listed.stderr
    assert all(j["job_id"] in listed.stdout for j in jobs)
    assert "2 delivered" in listed.stdout
    # no patient data in the logs
    log = daemon.log.read_text()
    assert "TEST-0001" not in log and "Test^Daemon" not in log
    assert daemon.terminate() == 0


@pytest.mark.slow
def test_sigkill_while_jobs_are_in_flight_then_resume_exactly_once(
    daemon: DaemonProcess, tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    records = ("HR06004", "E07506", "A1983", "00001_lr")
    pngs = [_page_png(rendered_page, src / f"page_{r}.png", r) for r in records]
    sc_uids = []
    for i, r in enumerate(("00001_lr", "HR06004")):
        page = rendered_page(r, layout="3x4+II", dpi=200, seed=1, noise_sigma=2.0 + i)
        sc_uids.append(secondary_capture(src / f"sc_{i}.dcm", np.asarray(page.image)))
    n_inputs = len(pngs) + len(sc_uids)

    daemon.start()
    for png in pngs[:2]:
        _drop(daemon.inbox, png)
    assert storescu(daemon.dicom_port, sorted(src.glob("sc_*.dcm"))).returncode == 0
    for png in pngs[2:]:
        _drop(daemon.inbox, png)
    # crash once every input is journaled, some are done and others still being processed
    daemon.wait_jobs(lambda js: len(js) == n_inputs and any(
        j["state"] in ("digitized", "delivered") for j in js), timeout=120)
    daemon.kill()
    jobs_before = daemon.jobs()
    assert any(j["state"] == "received" for j in jobs_before)
    uids_before = {j["job_id"]: j["sop_instance_uid"] for j in jobs_before
                   if j["sop_instance_uid"]}
    assert uids_before

    # inputs dropped while the daemon is down are picked up by the start-up rescan
    late = _page_png(rendered_page, src / "late.png", "E07506", seed=1, noise_sigma=2.0)
    _drop(daemon.inbox, late)
    n_inputs += 1
    daemon.start()
    jobs = daemon.wait_jobs(lambda js: len(js) == n_inputs and all(
        j["state"] in ("delivered", "failed", "dead-letter") for j in js), timeout=400)
    assert [j["state"] for j in jobs] == ["delivered"] * n_inputs, [
        (j["job_id"], j["state"], j["reason"]) for j in jobs]

    # exactly once: one waveform per input, no duplicate SOP Instance UIDs
    uids = _outbox_uids(daemon.outbox)
    assert len(uids) == n_inputs == len(set(uids))
    assert sorted(uids) == sorted(j["sop_instance_uid"] for j in jobs)
    assert len(list(daemon.outbox.glob("*.fhir-r4.json"))) == n_inputs
    deliveries = daemon.deliveries()
    assert len(deliveries) == n_inputs
    assert all(d["state"] == "delivered" for d in deliveries)
    # jobs encoded before the crash kept their SOP Instance UIDs
    after = {j["job_id"]: j["sop_instance_uid"] for j in jobs}
    assert all(after[job_id] == uid for job_id, uid in uids_before.items())
    # every input kept its job id across the crash (nothing re-journaled twice)
    before = {j["job_id"] for j in jobs_before}
    assert before <= {j["job_id"] for j in jobs}
    assert {f"sop:{u}" for u in sc_uids} <= {j["input_key"] for j in jobs}
    assert not list(daemon.inbox.iterdir())
    assert not list((daemon.state / "inputs").glob(".*"))  # no half-received file left
    assert daemon.terminate() == 0


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_worker_killed_by_the_os_does_not_stop_the_daemon(
    daemon: DaemonProcess, tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    first = _page_png(rendered_page, src / "first.png", "HR06004")
    second = _page_png(rendered_page, src / "second.png", "A1983")
    daemon.start()
    _drop(daemon.inbox, first)
    daemon.wait_jobs(lambda js: len(js) == 1 and js[0]["state"] == "delivered", timeout=120)
    assert daemon.proc is not None
    cmdlines = {p: Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                for p in _children(daemon.proc.pid)}
    workers = [p for p, cmd in cmdlines.items()
               if "spawn_main" in cmd and "resource_tracker" not in cmd]
    assert workers
    for pid in workers:  # what the OOM killer does
        os.kill(pid, signal.SIGKILL)
    _drop(daemon.inbox, second)
    jobs = daemon.wait_jobs(lambda js: len(js) == 2 and all(
        j["state"] in ("delivered", "failed") for j in js), timeout=180)
    assert [j["state"] for j in jobs] == ["delivered", "delivered"]
    assert len(_outbox_uids(daemon.outbox)) == 2
    assert daemon.alive()
    assert daemon.terminate() == 0


@pytest.mark.slow
def test_sigterm_while_digitizing_stops_cleanly_and_resumes(
    daemon: DaemonProcess, tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pages = [_page_png(rendered_page, src / f"p{i}.png", r)
             for i, r in enumerate(("HR06004", "E07506", "A1983"))]
    daemon.start()
    for page in pages:
        _drop(daemon.inbox, page)
    daemon.wait_jobs(lambda js: len(js) == 3, timeout=60)
    started = time.monotonic()
    assert daemon.terminate(timeout=60) == 0
    assert time.monotonic() - started < 30  # within shutdown.grace_seconds (10) + margin
    assert not list(daemon.inbox.iterdir())  # accepted inputs were not left behind
    daemon.start()
    jobs = daemon.wait_jobs(lambda js: all(j["state"] == "delivered" for j in js), timeout=180)
    assert len(jobs) == 3
    uids = _outbox_uids(daemon.outbox)
    assert len(uids) == len(set(uids)) == 3
    assert daemon.terminate() == 0


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag, key in (("--dicom-port", "dicom.port"), ("--http-port", "http.port")):
            other = "--http-port" if flag == "--dicom-port" else "--dicom-port"
            done = subprocess.run(
                [sys.executable, "-m", "ecgbridge", "serve", "--state", str(tmp_path / "st"),
                 "--inbox", str(tmp_path / "in"), flag, str(port), other, "0"],
                capture_output=True, text=True, timeout=60, cwd=tmp_path,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )
            assert done.returncode == 1
            assert f"{key}: cannot listen on 127.0.0.1:{port}" in done.stderr


@pytest.mark.slow
def test_failing_fhir_server_does_not_block_the_outbox_and_is_retried(
    daemon: DaemonProcess, tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    from peers import fhir_server_unavailable, running_fhir_server

    reason = fhir_server_unavailable()
    if reason:
        pytest.skip(reason)
    page = _page_png(rendered_page, tmp_path / "page.png", "HR06004")
    with running_fhir_server() as fhir:
        fhir.control(fail=503)
        daemon.start({
            "ECGBRIDGE_DELIVER__FHIR__ENABLED": "true",
            "ECGBRIDGE_DELIVER__FHIR__BASE_URL": fhir.base_url,
            "ECGBRIDGE_RETRY__BASE_SECONDS": "0.3",
            "ECGBRIDGE_RETRY__MAX_SECONDS": "1",
            "ECGBRIDGE_RETRY__MAX_ATTEMPTS": "1000",
        })
        _drop(daemon.inbox, page)

        def outbox_done_fhir_retrying(js: list[dict[str, Any]]) -> bool:
            rows = {d["destination"]: d for d in daemon.deliveries()}
            return (len(js) == 1 and rows.get("outbox", {}).get("state") == "delivered"
                    and rows.get("fhir", {}).get("attempts", 0) >= 2)

        jobs = daemon.wait_jobs(outbox_done_fhir_retrying, timeout=180)
        job_id = jobs[0]["job_id"]
        assert jobs[0]["state"] == "digitized"  # not finished while FHIR is pending
        assert (daemon.outbox / f"{job_id}.dcm").is_file()
        fhir_row = next(d for d in daemon.deliveries() if d["destination"] == "fhir")
        assert fhir_row["state"] == "pending" and "503" in fhir_row["last_error"]
        shown = subprocess.run(
            [sys.executable, "-m", "ecgbridge", "jobs", "show", job_id, "--state",
             str(daemon.state)], capture_output=True, text=True, timeout=60, check=False,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        ).stdout
        assert "delivery fhir: pending" in shown and "503" in shown
        assert "delivery outbox: delivered, 1 attempt(s)" in shown

        fhir.control(fail=0)  # the server is back
        jobs = daemon.wait_jobs(lambda js: js[0]["state"] == "delivered", timeout=60)
        found = fhir.get("Observation?_summary=count")
        assert found["total"] == 1
        assert daemon.terminate() == 0
