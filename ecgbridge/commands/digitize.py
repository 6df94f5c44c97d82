"""``ecgbridge digitize INPUT... --out DIR``: digitize files into WFDB/CSV/JSON/DICOM/FHIR."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ecgbridge.commands.record_args import add_record_arguments, record_options
from ecgbridge.digitizer.options import ENGINES, KNOWN_LAYOUTS, DigitizeOptions


def register(sub: Any) -> None:
    """Add the ``digitize`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "digitize",
        help="digitize ECG images, PDFs or DICOM objects",
        description="Digitize ECG pages into 12-lead signals. Every input is processed even if "
        "some fail; one line per failed file; exit code 1 if any failed.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or folders")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    p.add_argument(
        "--format", "-f", default="wfdb,csv,json",
        help="comma-separated: wfdb,csv,json,dicom,fhir-r4,fhir-r5,overlay (default wfdb,csv,json)",
    )
    add_option_arguments(p)
    p.add_argument("--debug-dir", type=Path, default=None,
                   help="write each pipeline stage's intermediate image here")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_record_arguments(p)
    p.set_defaults(func=run)


def add_option_arguments(p: argparse.ArgumentParser) -> None:
    """The digitizer options shared by ``digitize`` and ``batch`` (see :func:`options_from`)."""
    defaults = DigitizeOptions()
    p.add_argument("--layout", default=defaults.layout, choices=KNOWN_LAYOUTS,
                   help="layout hint")
    p.add_argument("--paper-speed", type=float, default=defaults.paper_speed, metavar="MM_S",
                   help="paper speed in mm/s (default: read from the page, else 25)")
    p.add_argument("--gain", type=float, default=defaults.gain, metavar="MM_MV",
                   help="gain in mm/mV (default: from the calibration pulse, else 10)")
    p.add_argument("--fs", type=float, default=defaults.fs, help="output sampling rate in Hz")
    p.add_argument("--engine", default=defaults.engine, choices=ENGINES,
                   help="how trace ink is found: the packaged segmentation model (learned), "
                   "thresholds and grid-line removal (classical), or auto: classical, and "
                   "the learned reading where it keeps the limb-lead laws clearly better "
                   "(default auto)")


def options_from(args: argparse.Namespace) -> DigitizeOptions:
    """The digitizer options given on the command line.

    Raises
    ------
    ecgbridge.errors.OptionError
        If a value is out of range.
    """
    return DigitizeOptions(layout=args.layout, paper_speed=args.paper_speed, gain=args.gain,
                           fs=args.fs, engine=args.engine)


_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pdf", ".dcm", ".dicom", ""}


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Expand folders into the files they hold (sorted); keep files as given."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in _SUFFIXES
                       and not f.name.startswith("."))
            )
        else:
            out.append(p)
    return out


def run(args: argparse.Namespace) -> int:
    """Digitize every input; return 1 if any failed."""
    from ecgbridge.api import digitize_file
    from ecgbridge.encode.registry import parse_formats
    from ecgbridge.errors import EcgBridgeError

    formats = parse_formats(args.format)
    options = options_from(args)
    files = expand_inputs(args.inputs)
    if not files:
        print("ecgbridge: error: no input files", file=sys.stderr)
        return 2
    show_bar = sys.stderr.isatty() and not args.no_progress and len(files) > 1
    iterator: Any = files
    if show_bar:
        from tqdm import tqdm

        iterator = tqdm(files, unit="page", file=sys.stderr)
    failed = 0
    for path in iterator:
        try:
            digitize_file(path, args.out, formats, options, debug_dir=args.debug_dir,
                          write_options=record_options(args))
        except EcgBridgeError as exc:
            failed += 1
            _report_failure(path, str(exc), show_bar)
        except MemoryError:
            failed += 1
            _report_failure(path, "out of memory while digitizing", show_bar)
        except Exception as exc:  # a bug must not stop the other files
            failed += 1
            _report_failure(path, f"internal error {type(exc).__name__}: {exc}", show_bar)
    if failed:
        print(f"ecgbridge: {failed} of {len(files)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def _report_failure(path: Path, reason: str, show_bar: bool) -> None:
    line = f"FAILED {path}: {reason}"
    if show_bar:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)
