"""``ecgbridge bench DIR``: time (and optionally score) the digitizer on a folder of pages."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ecgbridge.commands.values import positive_int
from ecgbridge.digitizer.options import ENGINES


def register(sub: Any) -> None:
    """Add the ``bench`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="measure digitizing speed, memory and (with --score) accuracy on a folder",
        description="Digitize every page in DIR single-threaded and print seconds per page, "
        "the median and p95, peak memory (tracemalloc + max RSS) and failures. With --score "
        "SETDIR, score the predictions against SETDIR/manifest.json (the shared scorer's "
        "format, e.g. a set written by tools/render_pages.py); the manifest and every truth "
        "record are checked before anything is digitized. Exit code 1 if any page failed.",
    )
    p.add_argument("folder", type=Path, metavar="DIR", help="folder of page files")
    p.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                   help="timed runs per page; a page's time is their median (default 1)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="only the first N pages (sorted by name)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="write every number to this JSON file")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the tracemalloc pass (halves the run time)")
    p.add_argument("--score", type=Path, default=None, metavar="SETDIR",
                   help="score against SETDIR/manifest.json (usually SETDIR = DIR)")
    p.add_argument("--records", type=Path, action="append", default=[], metavar="RDIR",
                   help="truth record folder for --score (repeatable; default SETDIR/records)")
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="digitizer engine (default auto, as digitize)")
    p.add_argument("--pred-out", type=Path, default=None, metavar="PRED",
                   help="also write each prediction as WFDB here (for an external scorer)")
    g = p.add_argument_group(
        "batch figures (--batch)",
        "Instead of the single-threaded timing: pages/s of `ecgbridge batch` over DIR on "
        "the local pool and a Dask LocalCluster with each worker count (after a warm-up), "
        "the scheduling overhead per page, and the peak RSS of a client streaming N "
        "synthetic paths with a no-op digitize stand-in.")
    g.add_argument("--batch", action="store_true", help="measure the batch engines")
    g.add_argument("--batch-workers", default="1,2", metavar="N,N",
                   help="worker counts (default 1,2)")
    g.add_argument("--batch-engines", default="local,dask", metavar="E,E",
                   help="engines: local, dask (default both; dask needs the cluster extra)")
    g.add_argument("--memory-paths", type=int, default=1_000_000, metavar="N",
                   help="synthetic paths for the client memory figure (0: skip; "
                   "default 1000000, about 4 minutes)")
    g.add_argument("--work-dir", type=Path, default=None, metavar="TMP",
                   help="scratch folder for the batch outputs (default: a temporary one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 2 if there is nothing to run or the score set is unusable,
    1 if any page failed, else 0."""
    from ecgbridge.report.bench import PageTiming, find_pages, run_benchmark, score_predictions

    try:
        pages = find_pages(args.folder)
    except ValueError as exc:
        print(f"ecgbridge: error: {exc}", file=sys.stderr)
        return 2
    if args.limit is not None:
        pages = pages[: max(0, args.limit)]
    if not pages:
        print(f"ecgbridge: error: no page files in {args.folder}", file=sys.stderr)
        return 2
    if args.batch:
        from ecgbridge.commands.bench_batch import run_batch_bench

        return run_batch_bench(args, pages)
    if args.score is not None:
        problem = check_score_set(args.score, args.records, {p.name for p in pages})
        if problem:
            print(f"ecgbridge: error: --score: {problem}", file=sys.stderr)
            return 2

    def show(result: PageTiming) -> None:
        status = "ok" if result.ok else f"FAILED {result.error}"
        print(f"{result.name:32s} {result.seconds:8.3f} s  {status}", flush=True)

    def digitize_page(path: Path) -> Any:
        from ecgbridge.api import digitize

        return digitize(path, engine=args.engine)

    report, predictions = run_benchmark(
        pages, repeat=args.repeat, trace_memory=not args.no_memory, on_page=show,
        digitizer=digitize_page,
    )
    if args.pred_out is not None:
        from ecgbridge.encode.wfdb_format import write_wfdb

        for stem, ecg in predictions.items():
            write_wfdb(ecg, args.pred_out, stem)
    scores = None
    if args.score is not None:
        try:
            scores = score_predictions(predictions, args.score, args.records,
                                       images={p.name for p in pages})
        except ValueError as exc:
            print(f"ecgbridge: error: --score: {exc}", file=sys.stderr)
            return 2
        report = type(report)(pages=report.pages, repeat=report.repeat,
                              max_rss_mb=report.max_rss_mb, scores=scores)
        for layout, s in scores["by_layout"].items():
            print(f"layout {layout:9s} images={s['images']:3d} snr_db={s['snr_db']:7.2f} "
                  f"aligned_snr_db={s['aligned_snr_db']:7.2f}")
        summ = scores["summary"]
        print(f"SCORE snr_db={_fmt(summ['snr_db'])} aligned_snr_db={_fmt(summ['aligned_snr_db'])}"
              f" pearson={_fmt(summ['pearson'])} mae_mv={_fmt(summ['mae_mv'])} "
              f"images={summ['images']} missing={summ['missing']}")
    print(report.summary_line())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
    return 1 if any(not p.ok for p in report.pages) else 0


def check_score_set(set_dir: Path, record_dirs: list[Path], images: set[str]) -> str | None:
    """Why `set_dir` cannot score these pages (no manifest, a truth record missing), or None."""
    manifest_path = set_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = [e for e in manifest if e["image"] in images]
        records = {str(e["record"]) for e in entries}
    except FileNotFoundError:
        return f"{set_dir} has no manifest.json"
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return f"{manifest_path} is not a usable manifest ({exc})"
    if not entries:
        return f"{manifest_path} lists none of the pages in the folder"
    dirs = list(record_dirs) or [set_dir / "records"]
    missing = sorted(r for r in records if not any((d / f"{r}.hea").exists() for d in dirs))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        return (f"{len(missing)} truth record(s) not found in {', '.join(map(str, dirs))} "
                f"({shown}); give their folder with --records")
    return None


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3f}"
