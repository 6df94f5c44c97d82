"""Memory: pixel budgets before decoding/rendering, and the workers' memory cap.

The bombs of the issue, built at test time: a small PDF of 64 blank pages of
3000 x 3000 pt and a small TIFF of 8 pages of 10000 x 10000 pixels. Through
``ecgbridge digitize`` (a real subprocess, its peak memory its own VmHWM) and
through the real daemon (inbox -> worker pool), next to a 64 Mpx page that only
the workers' memory cap stops.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from ecgbridge.config import load_settings
from ecgbridge.errors import ImageTooLargeError
from ecgbridge.inputs.load import load_input
from ecgbridge.jobs.journal import FAILED
from ecgbridge.service.daemon import Daemon

REPO = Path(__file__).resolve().parents[1]
#: The issue's bound on peak memory for a bomb (the refusal needs far less).
PEAK_BYTES = 2 * 2**30


def pdf_bomb(path: Path) -> Path:
    doc = pdfium.PdfDocument.new()
    for _ in range(64):
        doc.new_page(3000, 3000)
    doc.save(str(path))
    return path


def tiff_bomb(path: Path) -> Path:
    frame = Image.new("1", (10000, 10000), 1)
    frame.save(path, save_all=True, append_images=[frame] * 7, compression="group4")
    return path


def _digitize_peak(src: Path, out: Path) -> tuple[int, str, int, float]:
    """Run ``ecgbridge digitize`` in a child: (exit status, stderr, peak RSS in bytes, s).

    The peak is the child's own VmHWM (rusage's maxrss would include the RSS of this
    test process, inherited across fork and exec).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = ("import sys\nfrom ecgbridge.cli import main\n"
            f"rc = main(['digitize', {str(src)!r}, '-o', {str(out)!r}, '--no-progress'])\n"
            "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
            "print('VMHWM_KB', hwm, file=sys.stderr)\nsys.exit(rc)\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    seconds = time.monotonic() - start
    peak = [int(line.split()[1]) * 1024 for line in done.stderr.splitlines()
            if line.startswith("VMHWM_KB ")]
    return done.returncode, done.stderr, (peak or [0])[0], seconds


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("make", [pdf_bomb, tiff_bomb], ids=["pdf-64-pages", "tiff-8x100Mpx"])
def test_bombs_are_refused_by_digitize_with_little_memory(tmp_path: Path, make: object) -> None:
    src = make(tmp_path / ("bomb.pdf" if make is pdf_bomb else "bomb.tif"))  # type: ignore[operator]
    assert src.stat().st_size < 100_000
    rc, err, peak, seconds = _digitize_peak(src, tmp_path / "out")
    assert rc == 1, err
    assert "memory guard" in err and "Traceback" not in err, err
    assert 0 < peak < PEAK_BYTES / 4 and seconds < 30, (peak, seconds)


def test_multiframe_budget_is_checked_before_decoding(tmp_path: Path) -> None:
    src = tiff_bomb(tmp_path / "bomb.tif")
    with pytest.raises(ImageTooLargeError, match="8 pages add up to 800,000,000 pixels"):
        load_input(src)


def test_daemon_refuses_bombs_and_caps_worker_memory(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    pdf_bomb(inbox / "bomb.pdf")
    tiff_bomb(inbox / "bomb.tif")
    big = np.full((8000, 8000), 255, np.uint8)  # 64 Mpx: within the budgets, not the cap
    big[::40, :] = 180
    big[:, ::40] = 180
    Image.fromarray(big).save(inbox / "big.png")
    settings = load_settings(None, environ={}, overrides={
        "inbox.path": str(inbox), "deliver.outbox.path": str(tmp_path / "outbox"),
        "state.path": str(tmp_path / "state"), "dicom.enabled": False, "http.port": 0,
        "workers.processes": 1, "workers.max_memory_mb": 1200, "inbox.stable_seconds": 0.1,
    })
    daemon = Daemon(settings)
    daemon.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and daemon.journal.count_by_state()[FAILED] < 3:
            time.sleep(0.2)
        reasons = sorted(job.reason for job in daemon.journal.list_jobs())
        assert daemon.journal.count_by_state()[FAILED] == 3
    finally:
        daemon.stop()
    assert sum("memory guard" in r for r in reasons) == 2, reasons
    assert sum("out of memory" in r and "max_memory_mb" in r for r in reasons) == 1, reasons


def test_page_time_limit_ends_a_slow_digitization(tmp_path: Path) -> None:
    from ecgbridge.jobs.worker import DigitizeRequest, run_digitization
    from ecgbridge.jobs.worker_guard import set_page_time_limit

    page = np.full((1200, 1600), 255, np.uint8)
    page[::20, :] = 200
    page[:, ::20] = 200
    Image.fromarray(page).save(tmp_path / "grid.png")
    set_page_time_limit(0.05)  # far below what reading any page takes
    try:
        start = time.monotonic()
        outcome = run_digitization(DigitizeRequest(
            job_id="0123456789abcdef", input_path=str(tmp_path / "grid.png"),
            out_dir=str(tmp_path / "out"), formats=("json",)))
        seconds = time.monotonic() - start
    finally:
        set_page_time_limit(0)
    assert not outcome.ok
    assert "longer than 0.05 s per page (1 page(s))" in outcome.reason, outcome.reason
    assert outcome.error_kind == "PageTimeLimitError"
    assert seconds < 20
