"""``ecgbridge bench DIR --batch``: throughput, overhead and client memory of ``batch``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def run_batch_bench(args: argparse.Namespace, pages: list[Path]) -> int:
    """Measure every engine x worker count on `pages`, then the client memory.

    Returns 2 for unusable options, 1 if a page failed, else 0.
    """
    from ecgbridge.batch.bench import (
        ENGINE_KINDS,
        bench_client_memory,
        bench_engine,
        figures_dict,
    )

    try:
        workers = [int(w) for w in args.batch_workers.split(",") if w.strip()]
        engines = [e.strip() for e in args.batch_engines.split(",") if e.strip()]
        if not workers or min(workers) < 1 or set(engines) - set(ENGINE_KINDS):
            raise ValueError
    except ValueError:
        print("ecgbridge: error: --batch-workers takes counts >= 1 (1,2) and --batch-engines "
              f"names from {', '.join(ENGINE_KINDS)}", file=sys.stderr)
        return 2
    logging.getLogger("distributed").setLevel(logging.WARNING)  # cluster start/stop chatter
    if "dask" in engines and not _has_distributed():
        print("bench: Dask distributed is not installed (pip install 'ecgbridge[cluster]'); "
              "the dask engine is skipped", file=sys.stderr)
        engines.remove("dask")
    with tempfile.TemporaryDirectory(prefix="ecgbridge-bench-batch-") as tmp:
        work = args.work_dir or Path(tmp)
        print(f"bench --batch: {len(pages)} page(s), {os.cpu_count()} core(s), "
              f"load average {_load()}", flush=True)
        figures = []
        for engine in engines:
            for n in workers:
                f = bench_engine(engine, n, pages, work / f"{engine}-{n}", ["wfdb", "csv", "json"])
                figures.append(f)
                print(f"{engine:5s} workers={n} pages={f.pages} failed={f.failed} "
                      f"wall={f.wall_s:.2f} s pages/s={f.pages_per_s:.3f} "
                      f"in-task={f.task_s:.2f} s overhead={f.overhead_ms_per_page:.0f} ms/page",
                      flush=True)
        memory = []
        if args.memory_paths > 0:
            m = bench_client_memory(args.memory_paths, work / "memory")
            memory.append(m)
            print(f"client memory, {m.paths} synthetic paths ({m.stand_in}): baseline "
                  f"{m.baseline_rss_mb:.1f} MB, peak RSS {m.peak_rss_mb:.1f} MB, at the end "
                  f"{m.end_rss_mb:.1f} MB, "
                  f"{m.inputs_per_s:.0f} inputs/s", flush=True)
    result = figures_dict(figures, memory)
    result["load_average_at_end"] = _load()
    print("speed-up over 1 worker: " + json.dumps(result["speedup_over_1_worker"]))
    _write_json(args.json, result)
    return 1 if any(f.failed for f in figures) else 0


def _has_distributed() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
