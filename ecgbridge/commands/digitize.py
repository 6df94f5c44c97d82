"""``ecgbridge digitize INPUT... --out DIR``: digitize files into WFDB/CSV/JSON/DICOM/FHIR."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ecgbridge.commands.record_args import add_record_arguments, record_options
from ecgbridge.digitizer.options import ENGINES, KNOWN_LAYOUTS


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
    p.add_argument("--layout", default="auto", choices=KNOWN_LAYOUTS, help="layout hint")
    p.add_argument("--paper-speed", type=float, default=None, metavar="MM_S",
                   help="paper speed in mm/s (default: read from the page, else 25)")
    p.add_argument("--gain", type=float, default=None, metavar="MM_MV",
                   help="gain in mm/mV (default: from the calibration pulse, else 10)")
    p.add_argument("--fs", type=float, default=500.0, help="output sampling rate in Hz")
    add_engine_argument(p)
    p.add_argument("--debug-dir", type=Path, default=None,
                   help="write each pipeline stage's intermediate image here")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_record_arguments(p)
    p.set_defaults(func=run)


def add_engine_argument(p: argparse.ArgumentParser) -> None:
    """The ``--engine`` option shared by ``digitize`` and ``batch``."""
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="how trace ink is found: the packaged segmentation model (learned), "
                   "thresholds and grid-line removal (classical), or auto: classical, and "
                   "the learned reading where it keeps the limb-lead laws clearly better "
                   "(default auto)")


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
    from ecgbridge.digitizer.options import DigitizeOptions
    from ecgbridge.encode.registry import parse_formats
    from ecgbridge.errors import EcgBridgeError

    formats = parse_formats(args.format)
    options = DigitizeOptions(
        layout=args.layout, paper_speed=args.paper_speed, gain=args.gain, fs=args.fs,
        engine=args.engine,
    )
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


def digitize_file(
    path: Path,
    out_dir: Path,
    formats: list[str],
    options: Any,
    *,
    debug_dir: Path | None = None,
    write_options: dict[str, Any] | None = None,
) -> tuple[Any, Any, list[Path]]:
    """Digitize one file and write its outputs as ``<out_dir>/<stem>.<ext>``.

    The one code path of ``digitize`` and ``batch``, so both write the same files.
    `write_options` are the writers' options (FHIR subject, time zone, policies; see
    :mod:`ecgbridge.commands.record_args`).

    Returns
    -------
    tuple
        ``(ecg, loaded_input, files_written)``.

    Raises
    ------
    EcgBridgeError
        The input cannot be read or digitized, or an output cannot be written.
    """
    from ecgbridge.digitizer.pipeline import digitize_pages
    from ecgbridge.encode.registry import WriteContext, write_outputs
    from ecgbridge.inputs.load import load_input

    loaded = load_input(path)
    pattern = (write_options or {}).get("patient_folder_pattern")
    if pattern:
        loaded = with_folder_identity(loaded, path, str(pattern))
    stages: dict[str, Any] | None = {} if debug_dir is not None else None
    try:
        ecg = digitize_pages(loaded.pages, options, source=loaded.source, debug=stages)
    finally:
        if stages and debug_dir is not None:
            from ecgbridge.report.debug_images import write_debug_images

            write_debug_images(stages, debug_dir / path.stem)
    context = WriteContext(loaded=loaded, options=dict(write_options or {}))
    written = write_outputs(ecg, out_dir, path.stem, formats, context)
    return ecg, loaded, written


def with_folder_identity(loaded: Any, path: Path, pattern: str) -> Any:
    """`loaded` with the identity its folder names give (a sidecar file wins)."""
    from ecgbridge.inputs.page import LoadedInput
    from ecgbridge.inputs.sidecar import folder_identity, read_sidecar

    from_folder = folder_identity(path, pattern)
    given = read_sidecar(path)
    values = {k: v for k, v in from_folder.items() if k not in given}
    source = loaded.source.replace(dicom={**loaded.source.dicom, **values})
    return LoadedInput(pages=loaded.pages, source=source)


def _report_failure(path: Path, reason: str, show_bar: bool) -> None:
    line = f"FAILED {path}: {reason}"
    if show_bar:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)
