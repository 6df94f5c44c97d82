"""`ecgbridge batch`: rows, outputs, resume, retry, the client lock, the pool, `bench --batch`."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import pytest

pytestmark = pytest.mark.slow


def _batch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecgbridge", "batch", *args],
                          capture_output=True, text=True, timeout=240)


def _index(out: Path) -> list[dict[str, str]]:
    with open(out / "_batch" / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_local_pool_digitizes_good_pages_fails_bad_ones_and_resumes(
    tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    src = tmp_path / "archive"
    (src / "sub").mkdir(parents=True)
    page = rendered_page(layout="3x4+II", dpi=100, seed=3)
    cv2.imwrite(str(src / "a.png"), page.image[:, :, ::-1])
    cv2.imwrite(str(src / "sub" / "b.png"), page.image[:, :, ::-1])
    (src / "empty.png").write_bytes(b"")
    (src / "fake.pdf").write_bytes(b"%PDF-1.4 not really")
    out = tmp_path / "out"

    first = _batch(str(src), "--out", str(out), "--workers", "2", "--no-progress")
    assert first.returncode == 1, first.stderr  # some inputs failed
    rows = {Path(r["path"]).name: r for r in _index(out)}
    assert set(rows) == {"a.png", "b.png", "empty.png", "fake.pdf"}
    assert rows["a.png"]["state"] == rows["b.png"]["state"] == "done"
    for bad in ("empty.png", "fake.pdf"):
        assert rows[bad]["state"] == "failed"
        assert rows[bad]["reason"] and "object at 0x" not in rows[bad]["reason"]
    assert (out / "a.hea").is_file() and (out / "sub" / "b.hea").is_file()
    first_bytes = (out / "a.dat").read_bytes()

    again = _batch(str(src), "--out", str(out), "--workers", "2", "--resume", "--no-progress")
    assert again.returncode == 1, again.stderr  # the two bad inputs are still failed
    rows = {Path(r["path"]).name: r for r in _index(out)}
    assert rows["a.png"]["state"] == "done"
    assert (out / "a.dat").read_bytes() == first_bytes
    assert not list((out / "_batch").glob("staging/*/*"))


def test_the_same_run_goes_to_a_dask_cluster(
    tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    """`--scheduler` sends the pages to an existing Dask cluster (a LocalCluster on
    127.0.0.1 here): good pages are done, a bad file fails with a reason, and the
    journal and outputs are those of the local pool."""
    distributed = pytest.importorskip("distributed")
    src = tmp_path / "archive"
    src.mkdir()
    page = rendered_page(layout="3x4+II", dpi=100, seed=5)
    cv2.imwrite(str(src / "a.png"), page.image[:, :, ::-1])
    (src / "fake.pdf").write_bytes(b"%PDF-1.4 not really")
    out = tmp_path / "out"
    environ = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", scheduler_port=0,
                                      dashboard_address=None) as cluster:
            run = _batch(str(src), "--out", str(out), "--scheduler",
                         cluster.scheduler_address, "--no-progress")
    finally:  # the nannies leave MALLOC_TRIM_THRESHOLD_ & co. in this process's environment
        os.environ.clear()
        os.environ.update(environ)
    assert run.returncode == 1, run.stderr  # the fake PDF failed
    rows = {Path(r["path"]).name: r for r in _index(out)}
    assert rows["a.png"]["state"] == "done"
    assert rows["fake.pdf"]["state"] == "failed" and rows["fake.pdf"]["reason"]
    assert (out / "a.hea").is_file()
    assert "Dask cluster" in run.stderr + run.stdout


def test_one_client_per_output_folder_and_staging_leftovers_are_removed(tmp_path: Path) -> None:
    """A second run on a folder in use is refused; a killed run's staging folders go."""
    from ecgbridge.batch.runner import BatchConfig, _lock, run_batch
    from ecgbridge.digitizer.options import DigitizeOptions

    out = tmp_path / "out"
    leftover = out / "_batch" / "staging" / "0123abcd"
    leftover.mkdir(parents=True)
    (leftover / "half.dat").write_bytes(b"\0" * 10)
    (tmp_path / "empty").mkdir()
    config = BatchConfig(sources=[str(tmp_path / "empty")], out_dir=out, formats=["wfdb"],
                         options=DigitizeOptions())

    class Idle:
        capacity, describe = 1, "idle test engine"

        def poll(self, timeout: float) -> list[Any]:
            raise AssertionError("nothing was submitted")

    held = _lock(out / "_batch")
    try:
        with pytest.raises(ValueError, match="another ecgbridge batch is running"):
            run_batch(config, Idle())
    finally:
        os.close(held)
    summary = run_batch(config, Idle())
    assert summary["this_run"]["inputs"] == 0
    assert not leftover.exists()


def test_bench_batch_reports_throughput_overhead_and_client_memory(
    tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    """`ecgbridge bench DIR --batch` (local pool, 1 worker, a small memory figure)."""
    import json

    pages = tmp_path / "pages"
    pages.mkdir()
    page = rendered_page(layout="3x4+II", dpi=100, seed=3)
    cv2.imwrite(str(pages / "a.png"), page.image[:, :, ::-1])
    report = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "ecgbridge", "bench", str(pages), "--batch",
         "--batch-engines", "local", "--batch-workers", "1", "--memory-paths", "300",
         "--json", str(report)], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    figures = json.loads(report.read_text())
    (local,) = figures["engines"]
    assert (local["engine"], local["workers"], local["pages"], local["failed"]) == (
        "local", 1, 1, 0)
    assert 0 < local["task_s"] <= local["wall_s"] * 1.05
    assert local["overhead_ms_per_page"] > -50  # wall x workers >= time inside the task
    assert figures["speedup_over_1_worker"] == {"local": {"1": 1.0}}
    (memory,) = figures["client_memory"]
    assert memory["paths"] == 300 and "no-op" in memory["stand_in"]
    assert memory["peak_rss_mb"] >= memory["baseline_rss_mb"] > 0
    assert "pages/s=" in run.stdout and "peak RSS" in run.stdout


def test_retry_failed_without_src_writes_into_the_input_sub_folder(
    tmp_path: Path, rendered_page: Callable[..., Any]
) -> None:
    """`--retry-failed` with no SRC redoes the journal's failures, into their sub-folder."""
    src = tmp_path / "archive"
    (src / "sub").mkdir(parents=True)
    page = rendered_page(layout="3x4+II", dpi=100, seed=3)
    cv2.imwrite(str(src / "a.png"), page.image[:, :, ::-1])
    (src / "sub" / "late.png").write_bytes(b"still being copied")
    out = tmp_path / "out"
    first = _batch(str(src), "--out", str(out), "--workers", "1", "--no-progress")
    assert first.returncode == 1, first.stderr
    rows = {Path(r["path"]).name: r for r in _index(out)}
    assert (rows["late.png"]["state"], rows["late.png"]["folder"]) == ("failed", "sub")
    cv2.imwrite(str(src / "sub" / "late.png"), page.image[:, :, ::-1])

    again = _batch("--out", str(out), "--retry-failed", "--workers", "1", "--no-progress")
    assert again.returncode == 0, again.stderr
    rows = {Path(r["path"]).name: r for r in _index(out)}
    assert rows["late.png"]["state"] == "done"
    assert (out / "sub" / "late.hea").is_file() and not (out / "late.hea").exists()


def test_a_journal_without_the_folder_column_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    from ecgbridge.batch.journal import Journal

    (tmp_path / "_batch").mkdir()
    db = sqlite3.connect(tmp_path / "_batch" / "journal.sqlite")
    db.execute("CREATE TABLE pages (path TEXT NOT NULL, page INTEGER NOT NULL, pages INTEGER, "
               "size INTEGER, sha256 TEXT, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',"
               " outputs TEXT NOT NULL DEFAULT '', layout TEXT NOT NULL DEFAULT '', quality TEXT "
               "NOT NULL DEFAULT '', seconds REAL, attempts INTEGER NOT NULL DEFAULT 1, "
               "finished_at REAL, PRIMARY KEY (path, page))")
    db.execute("INSERT INTO pages (path, page, state, reason) VALUES ('/a/x.png', 0, 'failed', "
               "'unreadable')")
    db.commit()
    db.close()
    journal = Journal(tmp_path)
    try:
        assert list(journal.failed_inputs()) == [("/a/x.png", "")]
        journal.record([{"path": "/a/y.png", "folder": "sub", "page": 1, "state": "done"}])
        assert {r["path"]: r["folder"] for r in journal.rows()} == {"/a/x.png": "",
                                                                    "/a/y.png": "sub"}
    finally:
        journal.close()


def test_local_pool_replaces_a_worker_that_died_while_idle(tmp_path: Path) -> None:
    from ecgbridge.batch.engines import LocalPool
    from ecgbridge.digitizer.options import DigitizeOptions

    pool = LocalPool(1)
    try:
        (idle,) = pool._slots
        idle.proc.kill()
        idle.proc.join(10)
        task = {"path": str(tmp_path / "missing.png"), "rel": "", "out_dir": str(tmp_path),
                "formats": ["wfdb"], "options": DigitizeOptions(), "attempts": 1}
        pool.submit("k1", task)
        results: list[Any] = []
        deadline = time.monotonic() + 60
        while not results and time.monotonic() < deadline:
            results = pool.poll(1.0)
    finally:
        pool.close()
    ((key, rows),) = results
    assert key == "k1" and isinstance(rows, list), rows  # answered by a fresh worker
    assert rows[0]["state"] == "failed" and rows[0]["reason"]


def test_the_parquet_index_is_written_in_batches_with_the_csv_rows(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from ecgbridge.batch.journal import Journal

    journal = Journal(tmp_path)
    try:
        journal.record([{"path": "/a/bad.png", "page": 0, "state": "failed", "reason": "empty"}])
        for i in range(7):
            journal.record([{"path": f"/a/p{i}.png", "folder": "sub", "page": 1, "pages": 1,
                             "size": 10 + i, "sha256": "ab", "state": "done",
                             "outputs": [f"sub/p{i}.hea"], "quality": {"II": 0.9},
                             "seconds": 0.5, "layout": "3x4+II"}])
        journal.write_index()
        journal._write_parquet(rows_per_batch=3)  # three batches
    finally:
        journal.close()
    table = pq.read_table(tmp_path / "_batch" / "index.parquet")
    assert table.num_rows == 8 and table.schema.field("size").type == "int64"
    rows = table.to_pylist()
    assert (rows[0]["path"], rows[0]["state"], rows[0]["size"]) == ("/a/bad.png", "failed", None)
    assert [r["path"] for r in rows] == [r["path"] for r in _index(tmp_path)]
