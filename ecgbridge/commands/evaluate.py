"""``ecgbridge evaluate PRED REF --out DIR``: score digitized records against references."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ecgbridge.report.metrics import DEFAULT_MAX_SHIFT_S, DEFAULT_SNR_CAP_DB


def register(sub: Any) -> None:
    """Add the ``evaluate`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate",
        help="score digitized records against reference records",
        description=(
            "Pair digitized records (PRED: a file or folder of WFDB/CSV/DICOM/FHIR records) "
            "with references by name and compute per lead and per record: SNR (strict and "
            "aligned), Pearson r, MAE and RMSE in mV. REF is a record file, a folder of "
            "records (scored where the prediction is defined) or a set folder with a "
            "manifest.json (only the visible windows are scored; records looked up with "
            "--records). Writes metrics.csv, metrics_leads.csv, metrics.json, figures and "
            "index.html into --out. Exit code 1 if a partner was missing or unreadable, or the "
            "figures could not be drawn; the other records are still scored."
        ),
    )
    p.add_argument("prediction", type=Path, metavar="PRED", help="digitized record(s)")
    p.add_argument("reference", type=Path, metavar="REF", help="reference record(s) or set")
    p.add_argument("--out", "-o", type=Path, required=True, help="report folder")
    p.add_argument("--records", type=Path, action="append", default=[], metavar="DIR",
                   help="reference record folder for a set manifest (repeatable; default "
                   "REF/records)")
    p.add_argument("--record", default=None, metavar="NAME",
                   help="record drawn in the overlay figure (default: the median record)")
    p.add_argument("--cap-db", type=float, default=DEFAULT_SNR_CAP_DB,
                   help=f"SNR cap in dB (default {DEFAULT_SNR_CAP_DB:g})")
    p.add_argument("--max-shift-s", type=float, default=DEFAULT_MAX_SHIFT_S,
                   help=f"largest shift of the aligned SNR in s (default {DEFAULT_MAX_SHIFT_S:g})")
    p.add_argument("--no-figures", action="store_true",
                   help="write only the metrics and index.html (no matplotlib needed)")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; return 1 if any pair could not be scored or figures failed."""
    from ecgbridge.errors import EcgBridgeError
    from ecgbridge.report.evaluate import (
        MANIFEST_NAME,
        STATUS_OK,
        RecordResult,
        evaluate,
        pair_by_name,
        pairs_from_manifest,
        write_metrics,
    )
    from ecgbridge.report.html import write_index_html

    for path, what in ((args.prediction, "PRED"), (args.reference, "REF")):
        if not path.exists():
            print(f"ecgbridge: error: {what} {path} does not exist", file=sys.stderr)
            return 2
    if args.cap_db <= 0 or args.max_shift_s < 0:
        print("ecgbridge: error: --cap-db must be > 0 and --max-shift-s >= 0", file=sys.stderr)
        return 2
    set_mode = args.reference.is_dir() and (args.reference / MANIFEST_NAME).is_file()
    if set_mode:
        pairs = pairs_from_manifest(args.prediction, args.reference, args.records)
        if pairs and all(p.reference is None for p in pairs):
            where = ", ".join(str(d) for d in args.records) or str(args.reference / "records")
            print(f"ecgbridge: error: none of the manifest's reference records is in {where}; "
                  "give their folder with --records DIR", file=sys.stderr)
            return 2
    else:
        if args.records:
            print(f"ecgbridge: note: --records is only used with a set folder holding "
                  f"{MANIFEST_NAME}; {args.reference} has none", file=sys.stderr)
        pairs = pair_by_name(args.prediction, args.reference)
    if not pairs:
        print(f"ecgbridge: error: no records found in {args.prediction} or {args.reference}",
              file=sys.stderr)
        return 2
    show_bar = sys.stderr.isatty() and not args.no_progress and len(pairs) > 1

    def tell(result: RecordResult) -> None:
        label = "NOTE" if result.status == STATUS_OK else result.status.upper()
        line = f"{label} {result.name}: {'; '.join(result.notes)}"
        if show_bar:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    report = evaluate(pairs, cap_db=args.cap_db, max_shift_s=args.max_shift_s,
                      progress=show_bar, on_problem=tell, set_mode=set_mode)
    write_metrics(report, args.out)
    figures: dict[str, Path] = {}
    overlay_record = None
    failed_figures = False
    if not args.no_figures:
        try:
            from ecgbridge.report.figures import write_evaluation_figures

            figures, overlay_record = write_evaluation_figures(report, pairs, args.out,
                                                               args.record)
        except EcgBridgeError as exc:
            failed_figures = True
            print(f"ecgbridge: figures not written: {exc}", file=sys.stderr)
    write_index_html(report, args.out, figures, overlay_record)
    s = report.summary()
    print(
        f"records={s['records']} snr_db={s['snr_db']:.3f} aligned_snr_db="
        f"{s['aligned_snr_db']:.3f} pearson={s['pearson']:.4f} mae_mv={s['mae_mv']:.4f} "
        f"rmse_mv={s['rmse_mv']:.4f} missing_prediction={s['missing_prediction']} "
        f"missing_reference={s['missing_reference']} errors={s['error']} -> {args.out}"
    )
    unscored = any(r.status != STATUS_OK for r in report.results)
    return 1 if unscored or failed_figures else 0
