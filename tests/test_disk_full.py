"""Full disks: the daemon waits, says "degraded" and delivers everything once room returns.

The real daemon (in this process) with its state folder, ``state/jobs`` or outbox on
small tmpfs mounts filled to the last byte: real ENOSPC from the kernel. Mounting
needs root (or a user namespace); elsewhere the tests are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from daemon_support import SC_IMAGE, free_port, pattern_image, secondary_capture
from PIL import Image
from pydicom import dcmread
from pynetdicom import AE

from ecgbridge.config import load_settings
from ecgbridge.jobs.journal import DELIVERED, FAILED, RECEIVED
from ecgbridge.service.daemon import Daemon

pytestmark = pytest.mark.network


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (skips the test when mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until its file system is full; return it."""
    filler = folder / ".filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError:
            pass
    return filler


def _daemon(root: Path) -> Daemon:
    overrides = {
        "inbox.path": str(root / "inbox"), "deliver.outbox.path": str(root / "outbox"),
        "state.path": str(root / "state"), "dicom.port": free_port(), "http.port": 0,
        "workers.processes": 1, "inbox.stable_seconds": 0.2, "inbox.poll_seconds": 0.1,
        "retry.base_seconds": 0.2, "retry.max_seconds": 1.0, "deliver.outbox.formats": ["json"],
    }
    return Daemon(load_settings(None, environ={}, overrides=overrides))


def _c_store(daemon: Daemon, path: Path) -> int:
    ae = AE(ae_title="DISKTEST")
    ae.add_requested_context(SC_IMAGE)
    port = daemon.scp.port if daemon.scp else 0
    assoc = ae.associate("127.0.0.1", port, ae_title="ECGBRIDGE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dcmread(path)).Status)
    finally:
        assoc.release()


def _health(daemon: Daemon) -> dict[str, Any]:
    assert daemon.http is not None
    url = f"http://127.0.0.1:{daemon.http.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read()))


def _until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


@pytest.fixture()
def page_png(rendered_page: Callable[..., Any], tmp_path: Path) -> Path:
    path = tmp_path / "page.png"
    Image.fromarray(rendered_page("HR06004", layout="3x4+II", dpi=100).image).save(path)
    return path


def _drop(inbox: Path, src: Path, name: str) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / (name + ".part")).write_bytes(src.read_bytes())
    os.replace(inbox / (name + ".part"), inbox / name)


def test_full_jobs_folder_waits_then_delivers(tmp_path: Path, page_png: Path) -> None:
    with tmpfs(tmp_path / "state" / "jobs", "4m") as jobs:
        daemon = _daemon(tmp_path)
        daemon.start()
        try:
            filler = fill(jobs)
            _drop(daemon.settings.inbox.path, page_png, "page.png")
            _until("digitization paused for the full disk",
                   lambda: daemon.scheduler.disk.problem() is not None)
            health = _health(daemon)
            assert health["status"] == "degraded", health
            assert 'ecgbridge_waiting_for_disk{what="digitization"} 1' in daemon.metrics.render()
            assert any("no space left" in r or "disk full" in r for r in health["degraded"])
            time.sleep(1.0)  # a second try (after the first pause) also fails, no hot loop
            counts = daemon.journal.count_by_state()
            assert counts[FAILED] == 0 and counts[RECEIVED] == 1, counts
            filler.unlink()
            _until("the job delivered", lambda: daemon.journal.count_by_state()[DELIVERED] == 1)
            assert len(list((tmp_path / "outbox").glob("*.json"))) == 1
            _until("health back to ok", lambda: _health(daemon)["status"] == "ok")
        finally:
            daemon.stop()


def test_full_state_and_outbox_wait_then_deliver(tmp_path: Path, page_png: Path) -> None:
    with tmpfs(tmp_path / "state", "8m") as state, tmpfs(tmp_path / "outbox", "4m") as outbox:
        daemon = _daemon(tmp_path)
        daemon.start()
        try:
            state_filler, outbox_filler = fill(state), fill(outbox)
            inbox = daemon.settings.inbox.path
            _drop(inbox, page_png, "page.png")
            _until("inbox intake paused", lambda: daemon.watcher is not None
                   and daemon.watcher.disk.problem() is not None)
            assert (inbox / "page.png").is_file(), "the file left the inbox without a job"
            assert not [p for p in (state / "inputs").iterdir() if p.name != ".filler"]
            reasons = _health(daemon)["degraded"]
            assert any("state folder disk full" in r for r in reasons), reasons
            sc = tmp_path / "sc.dcm"
            secondary_capture(sc, pattern_image())
            assert _c_store(daemon, sc) == 0xA700  # refused, not acknowledged: resent later
            state_filler.unlink()
            assert _c_store(daemon, sc) == 0x0000
            _until("the job digitized", lambda: daemon.journal.count_by_state()[RECEIVED] == 0
                   and daemon.scheduler.in_flight == 0)
            _until("delivery failing reported", lambda: any(
                "delivery to outbox failing" in r for r in _health(daemon)["degraded"]))
            outbox_filler.unlink()
            _until("the page delivered", lambda: daemon.journal.count_by_state()[DELIVERED] == 1)
            assert not (inbox / "page.png").exists()
            counts = daemon.journal.count_by_state()
            assert counts[FAILED] == 1 and counts[RECEIVED] == 0  # the test pattern: no ECG
            assert len(list(outbox.glob("*.json"))) == 1
        finally:
            daemon.stop()
