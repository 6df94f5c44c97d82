"""``ecgbridge digitize INPUT... --out DIR``: digitize files into WFDB/CSV/JSON/DICOM/FHIR."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecgbridge.commands.progress import with_progress
from ecgbridge.commands.record_args import add_record_arguments, record_options
from ecgbridge.commands.values import input_stem, option_value, unique_stem
from ecgbridge.digitizer.options import (
    ENGINES,
    FS_RANGE_HZ,
    GAIN_RANGE_MM_MV,
    KNOWN_LAYOUTS,
    PAPER_SPEED_RANGE_MM_S,
    DigitizeOptions,
)


def register(sub: Any) -> None:
    """Add the ``digitize`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "digitize",
        help="digitize ECG images, PDFs or DICOM objects",
        description="Digitize ECG pages into 12-lead signals, written as OUT/<name>.<ext>. "
        "Every input is processed even if some fail; one line per failed file and a "
        "summary line; exit code 1 if any failed. Two inputs with the same name (x.png, "
        "x.pdf) get x.* and x_pdf.* in one run.",
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
    (speed_low, speed_high), (gain_low, gain_high) = PAPER_SPEED_RANGE_MM_S, GAIN_RANGE_MM_MV
    fs_low, fs_high = FS_RANGE_HZ
    p.add_argument("--paper-speed", type=option_value("paper_speed"),
                   default=defaults.paper_speed, metavar="MM_S",
                   help=f"paper speed in mm/s, {speed_low:g}-{speed_high:g} (default: read "
                   "from the page, else 25)")
    p.add_argument("--gain", type=option_value("gain"), default=defaults.gain, metavar="MM_MV",
                   help=f"gain in mm/mV, {gain_low:g}-{gain_high:g} (default: from the "
                   "calibration pulse, else 10)")
    p.add_argument("--fs", type=option_value("fs"), default=defaults.fs, metavar="HZ",
                   help=f"output sampling rate in Hz, {fs_low:g}-{fs_high:g} (default "
                   f"{defaults.fs:g}; the DICOM waveform resamples to 200-1000 Hz as documented)")
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
    from ecgbridge.errors import EcgBridgeError, describe_failure

    formats = parse_formats(args.format)
    options = options_from(args)
    files = expand_inputs(args.inputs)
    if not files:
        print("ecgbridge: error: no input files", file=sys.stderr)
        return 2
    iterator, bar_write = with_progress(files, "page", args.no_progress)
    failed = written = 0
    used: set[str] = set()
    renamed: list[str] = []
    for path in iterator:
        stem = unique_stem(input_stem(path), used, path.suffix)
        if stem != input_stem(path):
            renamed.append(f"{path.name} -> {stem}.*")
        try:
            written += len(digitize_file(path, args.out, formats, options,
                                         debug_dir=args.debug_dir, stem=stem,
                                         write_options=record_options(args))[2])
        except EcgBridgeError as exc:
            failed += 1
            _report_failure(path, describe_failure(exc), bar_write)
        except MemoryError:
            failed += 1
            _report_failure(path, "out of memory while digitizing", bar_write)
        except Exception as exc:  # a bug must not stop the other files
            failed += 1
            logging.getLogger("ecgbridge.commands.digitize").debug(
                "unexpected failure", exc_info=True)
            _report_failure(path, describe_failure(exc), bar_write)
    print(summary_line(len(files), failed, "digitized", args.out, written, renamed),
          file=sys.stderr)
    return 1 if failed else 0


def summary_line(total: int, failed: int, verb: str, out: Path, files: int,
                 renamed: list[str]) -> str:
    """The last line of ``digitize``/``convert``: what was done, where, what failed."""
    done = total - failed
    text = (f"ecgbridge: {failed} of {total} inputs failed; {done} {verb}" if failed
            else f"ecgbridge: {done} of {total} inputs {verb}") + f" into {out} ({files} files)"
    if renamed:
        text += f"; same names kept apart: {', '.join(renamed)}"
    return text


def _report_failure(path: Path, reason: str, bar_write: Callable[..., Any] | None) -> None:
    reason = reason.removeprefix(f"{path.name}: ")  # the line names the file already
    (bar_write or print)(f"FAILED {path}: {reason}", file=sys.stderr)
