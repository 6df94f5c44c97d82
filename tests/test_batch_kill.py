"""`ecgbridge batch` survives SIGKILL of its client and of a Dask worker (issue 11).

A folder of rendered pages plus bad files is digitized once without interruption
(the reference); each test then kills a run mid-way and resumes it (or lets it carry
on), and checks that every good page is done exactly once with the reference's bytes,
every bad file failed with a reason, and the index lists every input once.
"""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import pytest

pytestmark = pytest.mark.slow

#: Distinct good pages (one rendering, one corner pixel changed per copy: distinct
#: content hashes, so --resume does not take one for a moved copy of another).
N_GOOD = 12
BAD_FILES: dict[str, bytes] = {
    "empty.png": b"",
    "fake.pdf": b"%PDF-1.4 not really",
    "cut.jpg": b"\xff\xd8\xff\xe0" + bytes(64),
    "sub/notes.tif": b"not an image at all\n",
}
KILL_AFTER_ROWS = 3


@dataclass
class Reference:
    """The archive and what an uninterrupted run made of it."""

    src: Path
    outputs: dict[str, bytes]
    rows: dict[tuple[str, str], str]


def _batch_cmd(src: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ecgbridge", "batch", str(src), "--out", str(out),
            "--no-progress", "--timeout", "120", *args]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "_batch" not in p.relative_to(out).parts}


def _index(out: Path) -> list[dict[str, str]]:
    with open(out / "_batch" / "index.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _journal(out: Path) -> dict[tuple[str, int], tuple[str, float]]:
    """(path, page) -> (state, finished_at) as the journal holds it now ({} if not yet)."""
    path = out / "_batch" / "journal.sqlite"
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT path, page, state, finished_at FROM pages").fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return {}  # the schema is not written yet
    return {(p, n): (s, t) for p, n, s, t in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory,
              rendered_page: Callable[..., Any]) -> Reference:
    root = tmp_path_factory.mktemp("batch_kill")
    src = root / "archive"
    (src / "sub").mkdir(parents=True)
    image = rendered_page(layout="3x4+II", dpi=100, seed=7).image[:, :, ::-1]
    for i in range(N_GOOD):
        page = image.copy()
        page[0, i] = (i * 17) % 200
        folder = src / "sub" if i % 3 == 0 else src
        cv2.imwrite(str(folder / f"p{i:02d}.png"), page)
    for name, data in BAD_FILES.items():
        (src / name).write_bytes(data)
    out = root / "reference"
    run = _run(_batch_cmd(src, out, "--workers", "2"))
    assert run.returncode == 1, run.stderr  # the bad files failed
    rows = {(r["path"], r["page"]): r["state"] for r in _index(out)}
    assert sorted(rows.values()).count("done") == N_GOOD
    assert sorted(rows.values()).count("failed") == len(BAD_FILES)
    return Reference(src, _outputs(out), rows)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A Dask LocalCluster: 2 worker processes of 1 thread each, on 127.0.0.1."""
    distributed = pytest.importorskip("distributed")
    environ = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", scheduler_port=0,
                                      dashboard_address=None) as c:
            _restore(environ)
            yield c
    finally:
        _restore(environ)


def _restore(environ: dict[str, str]) -> None:
    """Undo the variables a LocalCluster's nannies leave in this process's environment
    (MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS...), which later tests' children inherit."""
    os.environ.clear()
    os.environ.update(environ)


def _wait_for_rows(proc: subprocess.Popen[str], out: Path, n: int) -> None:
    """Return once the running batch journalled `n` rows (it must still be running)."""
    deadline = time.monotonic() + 90
    while len(_journal(out)) < n:
        assert proc.poll() is None, f"the batch ended before {n} rows: {proc.communicate()}"
        assert time.monotonic() < deadline, "the batch journalled too few rows in 90 s"
        time.sleep(0.02)


def _sigkill_mid_run(cmd: list[str], out: Path) -> dict[tuple[str, int], tuple[str, float]]:
    """Start `cmd`, SIGKILL it after a few rows; return the journal it left behind."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(proc, out, KILL_AFTER_ROWS)
        children = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if _alive(pid)], "workers outlived the killed client"
    left = _journal(out)
    assert KILL_AFTER_ROWS <= len(left) < len(BAD_FILES) + N_GOOD, "not killed mid-run"
    return left


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(name))
    return out


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, is not alive)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _check_against_reference(out: Path, ref: Reference) -> None:
    """Every good page done with the reference's bytes, every bad input failed with a
    reason, each (path, page) once in the index, no staging folder left."""
    index = _index(out)
    keys = [(r["path"], r["page"]) for r in index]
    assert len(keys) == len(set(keys)), "an input is listed twice in index.csv"
    assert {k: r["state"] for k, r in zip(keys, index, strict=True)} == ref.rows
    for row in index:
        if row["state"] == "failed":
            assert row["reason"] and "Traceback" not in row["reason"], row
        else:
            assert row["outputs"] and not row["reason"], row
    assert _outputs(out) == ref.outputs
    assert not list((out / "_batch" / "staging").glob("*"))


def _check_resume(out: Path, ref: Reference, before: dict[tuple[str, int], Any],
                  resumed: subprocess.CompletedProcess[str]) -> None:
    assert resumed.returncode == 1, resumed.stderr  # the bad files are still failed
    _check_against_reference(out, ref)
    after = _journal(out)
    for key, (state, finished) in before.items():
        if state == "done":
            assert after[key] == (state, finished), f"{key} was digitized again"
    assert len(after) == len(ref.rows)


def test_local_pool_resumes_after_the_client_is_killed(
    tmp_path: Path, reference: Reference
) -> None:
    out = tmp_path / "out"
    cmd = _batch_cmd(reference.src, out, "--workers", "2")
    before = _sigkill_mid_run(cmd, out)
    _check_resume(out, reference, before, _run([*cmd, "--resume"]))


def test_local_pool_retries_the_page_of_a_killed_worker(
    tmp_path: Path, reference: Reference
) -> None:
    """SIGKILL of a pool worker mid-page: it is replaced, its page is digitized again
    (attempts 2 in the journal) and the run completes as the reference."""
    out = tmp_path / "out"
    cmd = _batch_cmd(reference.src, out, "--workers", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(proc, out, 1)
        os.kill(_busy_pool_worker(proc), signal.SIGKILL)
        _stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr  # the bad files failed, nothing else
    _check_against_reference(out, reference)
    retried = [r for r in _index(out) if r["attempts"] == "2"]
    assert len(retried) == 1 and retried[0]["state"] == "done", retried
    assert "worker process died" in stderr


def _busy_pool_worker(proc: subprocess.Popen[str]) -> int:
    """A pool worker of the batch `proc` that is running (digitizing), not waiting."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the batch ended before a worker could be killed"
        for pid in _children(proc.pid):
            try:
                is_worker = b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if is_worker and state == "R":
                return pid
        time.sleep(0.01)
    raise AssertionError("no pool worker was seen digitizing")


def test_dask_run_resumes_after_the_client_is_killed(
    tmp_path: Path, cluster: Any, reference: Reference
) -> None:
    out = tmp_path / "out"
    cmd = _batch_cmd(reference.src, out, "--scheduler", cluster.scheduler_address)
    before = _sigkill_mid_run(cmd, out)
    _check_resume(out, reference, before, _run([*cmd, "--resume"]))


def test_dask_run_completes_when_a_worker_is_killed(
    tmp_path: Path, cluster: Any, reference: Reference
) -> None:
    """SIGKILL of the worker process digitizing a page: Dask's nanny restarts it, the
    page is digitized again on a worker, and the run completes as the reference."""
    from distributed import Client

    out = tmp_path / "out"
    cmd = _batch_cmd(reference.src, out, "--scheduler", cluster.scheduler_address)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Client(cluster.scheduler_address, timeout="30s") as client:
            _wait_for_rows(proc, out, 1)
            victim = _busy_worker_pid(client, proc)
            os.kill(victim, signal.SIGKILL)
            _stdout, stderr = proc.communicate(timeout=120)
            client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr  # the bad files failed, nothing else
    assert not _alive(victim)
    _check_against_reference(out, reference)


def _busy_worker_pid(client: Any, proc: subprocess.Popen[str]) -> int:
    """The process id of a worker with a batch task processing right now."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the batch ended before a worker could be killed"
        busy = [addr for addr, keys in client.processing().items()
                if any("ecgbridge-batch" in str(k) for k in keys)]
        if busy:
            return int(client.run(os.getpid, workers=busy[:1])[busy[0]])
        time.sleep(0.02)
    raise AssertionError("no worker was processing a batch task")
