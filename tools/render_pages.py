#!/usr/bin/env python3
"""Render a scored set of synthetic ECG pages from WFDB records.

    python tools/render_pages.py --records /work/shared/data/records --out /tmp/synth_dev \
        --pages 60 --seed 1 [--profile mixed|clean] [--no-copy-records] [--no-meta]

Writes the images, ``manifest.json`` (the format of the shared scorer, so
``score.py --pred PRED --set OUT --records RECORDS`` scores a digitizer on them),
``meta/*.json.gz`` (exact pixel traces) and ``records/`` (copies of the records used).
Never point --records at a held-out set: the tool refuses folders named records-holdout.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecgbridge.testing.devset import PROFILES, render_set  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, render the set, print a summary; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=Path, required=True, help="folder of WFDB records")
    ap.add_argument("--out", type=Path, required=True, help="output set folder")
    ap.add_argument("--pages", type=int, default=60, help="number of pages (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    ap.add_argument("--profile", choices=PROFILES, default="mixed")
    ap.add_argument("--no-copy-records", action="store_true",
                    help="do not copy the records into OUT/records")
    ap.add_argument("--no-meta", action="store_true", help="do not write meta/*.json.gz")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        manifest = render_set(
            args.records, args.out, args.pages, seed=args.seed, profile=args.profile,
            copy_records=not args.no_copy_records, write_meta=not args.no_meta,
        )
    except ValueError as exc:
        print(f"render_pages: error: {exc}", file=sys.stderr)
        return 2
    layouts = collections.Counter(e["layout"] for e in manifest)
    dpis = collections.Counter(e["dpi"] for e in manifest)
    print(f"wrote {len(manifest)} pages to {args.out} in {time.perf_counter() - t0:.1f} s")
    print("layouts: " + ", ".join(f"{k} {v}" for k, v in sorted(layouts.items())))
    print("dpi: " + ", ".join(f"{k:g} {v}" for k, v in sorted(dpis.items())))
    print(f"score with: python /work/shared/eval/score.py --pred PRED --set {args.out}"
          f" --records {args.out / 'records'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
