"""``ecgbridge batch SRC... --out DIR``: digitize whole archives, resumably."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ecgbridge.commands.digitize import add_option_arguments, options_from
from ecgbridge.commands.record_args import add_file_mode_argument
from ecgbridge.commands.values import positive_float, positive_int


def register(sub: Any) -> None:
    """Add the ``batch`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "batch",
        help="digitize a whole archive (local pool or Dask cluster), resumably",
        description="Digitize every input under SRC into DIR with a journal in DIR/_batch/ "
        "(one row per page), index.csv and summary.json. Exit code 1 if any page failed.",
    )
    p.add_argument("sources", nargs="*", metavar="SRC",
                   help="folders (recursive), glob patterns, files, - or @list.txt")
    p.add_argument("--out", "-o", type=Path, default=None, help="output folder")
    p.add_argument("--status", type=Path, default=None, metavar="DIR",
                   help="print the summary of the batch in DIR (rewrites its index) and exit")
    p.add_argument("--format", "-f", default="wfdb,csv,json",
                   help="comma-separated output formats, as for digitize (default wfdb,csv,json)")
    add_option_arguments(p)
    p.add_argument("--workers", type=positive_int, default=None,
                   help="local worker processes (default: every core)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler, e.g. tcp://host:8786 (default: batch.scheduler)")
    p.add_argument("--resume", action="store_true", help="carry on: skip inputs already done")
    p.add_argument("--retry-failed", action="store_true", help="redo inputs that failed")
    p.add_argument("--limit", type=positive_int, default=None, help="stop after N inputs")
    p.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                   help="per-input time limit in seconds (default batch.timeout_s, 600)")
    p.add_argument("--config", "-c", type=Path, default=None, help="YAML configuration")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_file_mode_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the batch (or print ``--status``); return 1 if any page failed."""
    from ecgbridge.batch.journal import Journal

    if args.status is not None:
        if not (args.status / "_batch").is_dir():
            print(f"ecgbridge: error: {args.status} holds no batch journal", file=sys.stderr)
            return 2
        journal = Journal(args.status)
        try:
            journal.write_index()
            summary = journal.write_summary()
        finally:
            journal.close()
        print(json.dumps(summary, indent=1))
        return 1 if summary["counts"]["failed"] else 0
    if args.out is None:
        print("ecgbridge: error: --out is required", file=sys.stderr)
        return 2
    if not args.sources and not args.retry_failed:
        print("ecgbridge: error: no SRC given", file=sys.stderr)
        return 2
    config, engine = _setup(args)
    from ecgbridge.batch.runner import run_batch

    try:
        summary = run_batch(config, engine)
    except ValueError as exc:
        print(f"ecgbridge: error: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.close()
    this = summary["this_run"]
    print(f"batch: {this['inputs']} input(s), {this['pages']} page(s), "
          f"{this['failed_pages']} failed, {this['skipped_inputs']} skipped, "
          f"{this['pages_per_second']} pages/s on {summary['engine']}; "
          f"journal totals {summary['counts']}")
    if this["interrupted"]:
        return 130
    return 1 if summary["counts"]["failed"] else 0


def _setup(args: argparse.Namespace) -> tuple[Any, Any]:
    from ecgbridge.batch.runner import BatchConfig
    from ecgbridge.config import load_settings
    from ecgbridge.encode.registry import parse_formats

    full = load_settings(args.config)
    settings = full.batch
    config = BatchConfig(
        sources=list(args.sources), out_dir=args.out, formats=parse_formats(args.format),
        options=options_from(args),
        resume=args.resume, retry_failed=args.retry_failed, limit=args.limit,
        timeout_s=args.timeout or settings.timeout_s,
        progress=sys.stderr.isatty() and not args.no_progress,
        write_options={**full.records.writer_options(),
                       **({"file_mode": args.file_mode} if args.file_mode else {})},
    )
    if not config.progress:
        logging.getLogger("ecgbridge.batch").setLevel(logging.INFO)
    scheduler = args.scheduler or settings.scheduler
    if scheduler:
        from ecgbridge.batch.engines import DaskEngine

        try:
            return config, DaskEngine(scheduler)
        except ValueError as exc:
            print(f"ecgbridge: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
    from ecgbridge.batch.engines import LocalPool

    return config, LocalPool(args.workers or settings.workers)
