"""Speed, memory and (optionally) accuracy benchmark of :func:`ecgbridge.digitize` on a folder.

Every page is digitized single-threaded (OpenMP/BLAS/OpenCV limited to one
thread), `repeat` times; a page's time is the median of its repeats, and the
set's median / p95 are taken over the pages that digitized.  Memory is measured
in a separate pass with :mod:`tracemalloc` (Python and NumPy allocations; its
overhead would distort the timings) plus the process's peak resident set size.
With a scored set (``manifest.json`` in the format of the shared scorer), the
predictions of the first repeat are scored with :mod:`ecgbridge.report.metrics`,
which implements the scorer's definitions.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecgbridge.ecg import ECG, LEADS, normalise_lead_name
from ecgbridge.report.evaluate import json_safe

#: File suffixes treated as pages.
PAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pdf", ".dcm"}
)
#: Environment variables that cap native thread pools.
THREAD_VARIABLES: tuple[str, ...] = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)

Digitizer = Callable[[Path], ECG]


@dataclass(frozen=True)
class PageTiming:
    """Outcome of one page.

    Attributes
    ----------
    name : str
        File name.
    seconds : float
        Median wall time of the repeats.
    repeats : tuple of float
        Every repeat's wall time.
    ok : bool
        True when the page digitized.
    error : str
        Error type and message when it did not.
    traced_peak_mb : float
        tracemalloc peak while digitizing this page (NaN when not measured).
    """

    name: str
    seconds: float
    repeats: tuple[float, ...]
    ok: bool
    error: str = ""
    traced_peak_mb: float = math.nan


@dataclass(frozen=True)
class BenchReport:
    """Benchmark summary (times over the pages that digitized)."""

    pages: tuple[PageTiming, ...]
    repeat: int
    max_rss_mb: float
    scores: dict[str, Any] | None = field(default=None)

    @property
    def failed(self) -> int:
        """Number of pages that raised."""
        return sum(1 for p in self.pages if not p.ok)

    def _ok_times(self) -> list[float]:
        return [p.seconds for p in self.pages if p.ok]

    @property
    def median_s(self) -> float:
        """Median seconds per digitized page."""
        times = self._ok_times()
        return float(statistics.median(times)) if times else math.nan

    @property
    def p95_s(self) -> float:
        """95th percentile of seconds per digitized page (linear interpolation)."""
        times = self._ok_times()
        return float(np.percentile(times, 95)) if times else math.nan

    @property
    def mean_s(self) -> float:
        """Mean seconds per digitized page."""
        times = self._ok_times()
        return float(np.mean(times)) if times else math.nan

    @property
    def traced_peak_mb(self) -> float:
        """Largest tracemalloc peak of any page (NaN when memory was not traced)."""
        peaks = [p.traced_peak_mb for p in self.pages if math.isfinite(p.traced_peak_mb)]
        return max(peaks) if peaks else math.nan

    def summary_line(self) -> str:
        """One line: pages, failures, median/p95/mean seconds, memory."""
        return (
            f"SUMMARY pages={len(self.pages)} failed={self.failed} "
            f"median_s={self.median_s:.3f} p95_s={self.p95_s:.3f} mean_s={self.mean_s:.3f} "
            f"tracemalloc_peak_mb={self.traced_peak_mb:.1f} max_rss_mb={self.max_rss_mb:.1f} "
            f"repeat={self.repeat}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN as None)."""
        return json_safe({
            "pages": [p.__dict__ | {"repeats": list(p.repeats)} for p in self.pages],
            "repeat": self.repeat,
            "failed": self.failed,
            "median_s": self.median_s,
            "p95_s": self.p95_s,
            "mean_s": self.mean_s,
            "tracemalloc_peak_mb": self.traced_peak_mb,
            "max_rss_mb": self.max_rss_mb,
            "scores": self.scores,
        })


def limit_threads() -> None:
    """Make native libraries use one thread (benchmarks are per core)."""
    for var in THREAD_VARIABLES:
        os.environ[var] = "1"
    import cv2

    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


def find_pages(folder: Path) -> list[Path]:
    """Page files directly inside `folder`, sorted by name.

    Raises
    ------
    ValueError
        If `folder` is not a directory.
    """
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory")
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in PAGE_SUFFIXES and not p.name.startswith(".")
    )


def run_benchmark(
    paths: Sequence[Path],
    *,
    repeat: int = 1,
    trace_memory: bool = True,
    digitizer: Digitizer,
    on_page: Callable[[PageTiming], None] | None = None,
) -> tuple[BenchReport, dict[str, ECG]]:
    """Digitize every page `repeat` times and measure time and memory.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        Page files.
    repeat : int
        Timed runs per page (>= 1).
    trace_memory : bool
        Run one extra pass under tracemalloc to measure each page's peak allocation.
    digitizer : callable
        ``f(path) -> ECG``, e.g. :func:`ecgbridge.api.digitize` with the options to time.
    on_page : callable, optional
        Called with each page's timing result as soon as it is known.

    Returns
    -------
    report : BenchReport
    predictions : dict
        File stem -> ECG of the first repeat, for the pages that digitized.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    limit_threads()
    run = digitizer
    results: list[PageTiming] = []
    predictions: dict[str, ECG] = {}
    for path in paths:
        times: list[float] = []
        error = ""
        for r in range(repeat):
            t0 = time.perf_counter()
            try:
                ecg = run(path)
            except Exception as exc:  # every failure is a result, not a crash
                times.append(time.perf_counter() - t0)
                error = f"{type(exc).__name__}: {exc}"
                break
            times.append(time.perf_counter() - t0)
            if r == 0:
                predictions[path.stem] = ecg
        result = PageTiming(
            name=path.name, seconds=float(statistics.median(times)), repeats=tuple(times),
            ok=not error, error=error,
        )
        results.append(result)
        if on_page is not None:
            on_page(result)
    if trace_memory:
        results = [_with_traced_peak(r, path, run) for r, path in zip(results, paths, strict=True)]
    report = BenchReport(pages=tuple(results), repeat=repeat, max_rss_mb=_max_rss_mb())
    return report, predictions


def _with_traced_peak(result: PageTiming, path: Path, run: Digitizer) -> PageTiming:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with contextlib.suppress(Exception):  # the timing pass already recorded a failure
            run(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return PageTiming(**(result.__dict__ | {"traced_peak_mb": peak / 2**20}))


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def score_predictions(
    predictions: dict[str, ECG],
    set_dir: Path,
    record_dirs: Sequence[Path] = (),
    *,
    images: Collection[str] | None = None,
) -> dict[str, Any]:
    """Score predictions against a set's ``manifest.json`` like the shared scorer.

    Parameters
    ----------
    predictions : dict
        Image stem -> ECG (missing stems count as all-zero predictions).
    set_dir : pathlib.Path
        Folder with ``manifest.json``.
    record_dirs : sequence of pathlib.Path
        Where the truth records are; default ``set_dir/records``.
    images : collection of str, optional
        Score only the manifest entries with these image file names (e.g. the pages
        actually benchmarked); default all.

    Returns
    -------
    dict
        ``summary`` (snr_db, aligned_snr_db, pearson, mae_mv, rmse_mv, images, missing),
        ``by_layout`` (mean snr_db / aligned_snr_db per layout) and ``images``.

    Raises
    ------
    ValueError
        If the manifest or a truth record is missing.
    """
    from ecgbridge.report.metrics import (
        resample_to_grid,
        score_record,
        windows_from_manifest,
    )
    manifest_path = set_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{set_dir}: no manifest.json")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if images is not None:
        manifest = [e for e in manifest if e["image"] in images]
    dirs = list(record_dirs) or [set_dir / "records"]
    rows: list[dict[str, Any]] = []
    missing = 0
    for entry in manifest:
        folder = next((d for d in dirs if (d / f"{entry['record']}.hea").exists()), None)
        if folder is None:
            where = ", ".join(str(d) for d in dirs)
            raise ValueError(f"truth record {entry['record']} not found in {where}")
        truth, fs = load_record(folder, entry["record"])
        n = truth.shape[1]
        ecg = predictions.get(Path(entry["image"]).stem)
        if ecg is None:
            missing += 1
            pred = np.full_like(truth, np.nan)
        else:
            pred = resample_to_grid(ecg.signals, ecg.fs, n, fs)
        score = score_record(truth, pred, fs, windows_from_manifest(entry["windows"], n))
        rows.append({
            "image": entry["image"], "layout": entry.get("layout", ""),
            "snr_db": score.snr_db, "aligned_snr_db": score.aligned_snr_db,
            "pearson": score.means["pearson"], "mae_mv": score.means["mae_mv"],
            "rmse_mv": score.means["rmse_mv"], "shift_s": score.shift_s,
            "leads_predicted": score.leads_predicted, "predicted": ecg is not None,
        })
    summary: dict[str, Any] = {
        m: float(np.mean([i[m] for i in rows])) if rows else math.nan
        for m in ("snr_db", "aligned_snr_db", "pearson", "mae_mv", "rmse_mv")
    }
    summary.update({"images": len(rows), "missing": missing})
    by_layout: dict[str, dict[str, float]] = {}
    for layout in sorted({i["layout"] for i in rows}):
        sel = [i for i in rows if i["layout"] == layout]
        by_layout[layout] = {
            "images": len(sel),
            "snr_db": float(np.mean([i["snr_db"] for i in sel])),
            "aligned_snr_db": float(np.mean([i["aligned_snr_db"] for i in sel])),
        }
    return json_safe({"summary": summary, "by_layout": by_layout, "images": rows})


def load_record(records_dir: Path, name: str) -> tuple[np.ndarray, float]:
    """Read one record into ``(signals (12, n) mV in LEADS order, fs)``.

    Raises
    ------
    ValueError
        If the record does not hold the 12 standard leads.
    """
    import wfdb

    rec = wfdb.rdrecord(str(records_dir / name))
    signals = np.full((len(LEADS), rec.sig_len), np.nan)
    for i, lead in enumerate(rec.sig_name):
        try:
            row = LEADS.index(normalise_lead_name(lead))
        except ValueError:
            continue
        scale = 1e-3 if (rec.units[i] or "").lower() in ("uv", "µv") else 1.0
        signals[row] = rec.p_signal[:, i] * scale
    missing = [lead for lead, row in zip(LEADS, signals, strict=True) if np.isnan(row).all()]
    if missing:
        raise ValueError(f"record {name}: leads {', '.join(missing)} are missing")
    return signals, float(rec.fs)
