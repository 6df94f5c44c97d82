"""Figures of ``ecgbridge batch`` (``ecgbridge bench DIR --batch``).

* **throughput**: the pages of a folder digitized by :func:`run_batch` on the local
  pool and on a Dask ``LocalCluster`` (127.0.0.1), with 1, 2, ... workers, after a
  warm-up run (workers import the digitizer and load its models once);
* **scheduling overhead per page**: worker time not spent inside the task
  (``wall x workers - sum of task seconds``) divided by the pages;
* **client memory**: peak RSS of a fresh client process streaming N synthetic paths
  (an ``@list`` file) through input enumeration, the journal and the bounded in-flight
  queue, with a **no-op stand-in for digitizing** (nothing is read or digitized: the
  figure is the client's own memory, not a worker's).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ecgbridge.batch.journal import DONE
from ecgbridge.batch.runner import BatchConfig, run_batch
from ecgbridge.digitizer.options import DigitizeOptions

ENGINE_KINDS: tuple[str, ...] = ("local", "dask")
_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclass(frozen=True)
class EngineFigures:
    """Throughput of one engine with one worker count."""

    engine: str
    workers: int
    pages: int
    failed: int
    wall_s: float
    pages_per_s: float
    task_s: float
    overhead_ms_per_page: float


@dataclass(frozen=True)
class MemoryFigures:
    """Client memory while streaming `paths` synthetic inputs (no-op digitize stand-in).

    ``baseline_rss_mb``: resident memory after the imports, before the run;
    ``peak_rss_mb``: its peak resident memory (VmHWM, imports included); ``end_rss_mb``: resident
    memory after the run, index written.
    """

    paths: int
    baseline_rss_mb: float
    peak_rss_mb: float
    end_rss_mb: float
    wall_s: float
    inputs_per_s: float
    stand_in: str = "no-op digitize stand-in: nothing is read or digitized"


def bench_engine(kind: str, workers: int, pages: list[Path], work_dir: Path,
                 formats: list[str]) -> EngineFigures:
    """Digitize `pages` with `workers` workers of engine `kind` (``local`` or ``dask``).

    Parameters
    ----------
    kind : str
        ``local`` (process pool) or ``dask`` (a LocalCluster started for the run).
    workers : int
        Worker processes (one thread each).
    pages : list of Path
        The page files.
    work_dir : Path
        Scratch folder for the outputs (emptied first).
    formats : list of str
        Output formats, as for ``ecgbridge batch --format``.
    """
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    listing = work_dir / "pages.txt"
    listing.write_text("".join(f"{p.resolve()}\n" for p in pages), encoding="utf-8")
    with _engine(kind, workers) as engine:
        run_batch(_config(listing, work_dir / "warm-up", formats, limit=2 * workers), engine)
        started = time.perf_counter()
        summary = run_batch(_config(listing, work_dir / "timed", formats), engine)
        wall = time.perf_counter() - started
    n = int(summary["this_run"]["pages"])
    task_s = float(summary["digitize_seconds"])
    return EngineFigures(
        engine=kind, workers=workers, pages=n, failed=int(summary["this_run"]["failed_pages"]),
        wall_s=round(wall, 3), pages_per_s=round(n / wall, 3) if wall else 0.0,
        task_s=round(task_s, 3),
        overhead_ms_per_page=round(1000 * (wall * workers - task_s) / max(n, 1), 1),
    )


def _config(listing: Path, out: Path, formats: list[str], limit: int | None = None
            ) -> BatchConfig:
    return BatchConfig(sources=[f"@{listing}"], out_dir=out, formats=formats,
                       options=DigitizeOptions(), limit=limit, log_every_s=1e9)


@contextlib.contextmanager
def _engine(kind: str, workers: int) -> Iterator[Any]:
    if kind == "local":
        from ecgbridge.batch.engines import LocalPool

        pool = LocalPool(workers)
        try:
            yield pool
        finally:
            pool.close()
        return
    if kind != "dask":
        raise ValueError(f"unknown engine {kind!r}; choose from {', '.join(ENGINE_KINDS)}")
    from distributed import LocalCluster

    from ecgbridge.batch.engines import DaskEngine

    environ = dict(os.environ)
    try:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", scheduler_port=0, dashboard_address=None) as cluster:
            _restore_environ(environ)
            engine = DaskEngine(cluster.scheduler_address)
            try:
                yield engine
            finally:
                engine.close()
    finally:
        _restore_environ(environ)


def _restore_environ(environ: dict[str, str]) -> None:
    """Undo what starting a LocalCluster leaves in this process's environment
    (``MALLOC_TRIM_THRESHOLD_``, ``OMP_NUM_THREADS``...: the nanny's pre-spawn variables),
    which every later child process (local pool, memory figure) would inherit."""
    os.environ.clear()
    os.environ.update(environ)


def bench_client_memory(paths: int, work_dir: Path) -> MemoryFigures:
    """Peak RSS of a fresh client streaming `paths` synthetic inputs (no-op stand-in).

    The paths are written to an ``@list`` file in `work_dir` first (by this process);
    a fresh Python process then runs :func:`run_batch` over it with
    :class:`InstantEngine` and reports its memory.
    """
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    listing = work_dir / "paths.txt"
    with open(listing, "w", encoding="utf-8") as fh:
        for i in range(paths):
            fh.write(f"/synthetic/archive/{i // 1000:04d}/page{i:07d}.png\n")
    code = "import sys; from ecgbridge.batch.bench import memory_main; memory_main(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, str(listing), str(work_dir / "out")],
                          capture_output=True, text=True, check=True)
    return MemoryFigures(**json.loads(done.stdout.strip().splitlines()[-1]))


def memory_main(argv: list[str]) -> None:
    """Child of :func:`bench_client_memory`: ``LISTING OUT``; prints the figures as JSON."""
    listing, out = Path(argv[0]), Path(argv[1])
    baseline = _rss_mb()
    started = time.perf_counter()
    summary = run_batch(_config(listing, out, ["wfdb"]), InstantEngine())
    wall = time.perf_counter() - started
    n = int(summary["this_run"]["inputs"])
    peak = _peak_rss_mb()
    figures = MemoryFigures(paths=n, baseline_rss_mb=round(baseline, 1),
                            peak_rss_mb=round(peak, 1), end_rss_mb=round(_rss_mb(), 1),
                            wall_s=round(wall, 2),
                            inputs_per_s=round(n / wall, 1) if wall else 0.0)
    print(json.dumps(asdict(figures)))


def _peak_rss_mb() -> float:
    """Peak resident memory of this process's own address space.

    ``VmHWM`` from /proc: ``ru_maxrss`` would not do, as Linux carries the parent's
    high-water mark over the fork and exec that started this process (the bench's
    parent, with a Dask cluster behind it, is larger than the client measured).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class InstantEngine:
    """No-op stand-in for a digitizing engine, **for the memory figure only**.

    Answers every task at once with one ``done`` row of the usual size (outputs,
    layout, 12-lead quality) without reading the file, so what is measured is the
    client: enumeration, journal and in-flight bookkeeping.
    """

    capacity = 64
    describe = "no-op stand-in engine (memory measurement only: nothing is digitized)"

    def __init__(self) -> None:
        self._ready: list[tuple[str, list[dict[str, Any]]]] = []

    def submit(self, key: str, task: dict[str, Any]) -> None:
        """Answer `task` with a synthetic done row."""
        stem = Path(task["path"]).stem
        row = {"path": task["path"], "page": 1, "pages": 1, "size": 0, "sha256": "0" * 64,
               "state": DONE, "outputs": [f"{stem}.{ext}" for ext in ("hea", "dat", "csv")],
               "layout": "3x4+II", "quality": dict.fromkeys(_LEADS, 0.9), "seconds": 0.0}
        self._ready.append((key, [row]))

    def poll(self, timeout: float) -> list[tuple[str, list[dict[str, Any]]]]:
        """Every answer since the last poll."""
        ready, self._ready = self._ready, []
        return ready

    def running(self) -> dict[str, float]:
        """Nothing runs: answers are immediate."""
        return {}

    def expire(self, key: str) -> None:
        """Nothing to expire."""


def figures_dict(engines: list[EngineFigures], memory: list[MemoryFigures]) -> dict[str, Any]:
    """Every figure as JSON-ready data, with the speed-up of each engine over 1 worker."""
    speedup: dict[str, dict[str, float]] = {}
    for f in engines:
        one = next((g for g in engines if g.engine == f.engine and g.workers == 1), None)
        if one is not None and one.pages_per_s:
            speedup.setdefault(f.engine, {})[str(f.workers)] = round(
                f.pages_per_s / one.pages_per_s, 2)
    return {"engines": [asdict(f) for f in engines], "speedup_over_1_worker": speedup,
            "client_memory": [asdict(m) for m in memory]}
