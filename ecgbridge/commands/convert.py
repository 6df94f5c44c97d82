"""``ecgbridge convert INPUT... --out DIR --format ...``: convert stored ECG waveforms.

Reads WFDB, CSV, DICOM waveform or FHIR Observation files (see
:func:`ecgbridge.encode.readers.read_ecg`) and writes them in any output format.
Every input is processed even if some fail; one ``FAILED <input>: <reason>`` line per
failure on stderr; exit code 1 if any failed, 2 if there was nothing to convert.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ecgbridge.commands.record_args import add_record_arguments, record_options

#: Default output formats of ``convert``: the clinical ones.
DEFAULT_FORMATS = "dicom,fhir-r4"
#: Formats that need the page images, which a stored waveform does not have.
_IMAGE_ONLY_FORMATS = {"overlay"}
#: File suffixes taken from folders (WFDB records by their header).
_SUFFIXES = {".hea", ".csv", ".dcm", ".dicom", ".json"}


def register(sub: Any) -> None:
    """Add the ``convert`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "convert",
        help="convert stored ECG waveforms (WFDB, CSV, DICOM, FHIR) to other formats",
        description="Convert WFDB records, CSV files, DICOM ECG waveforms or FHIR "
        "Observations into WFDB/CSV/JSON/DICOM/FHIR. Every input is processed even if some "
        "fail; one line per failed file; exit code 1 if any failed.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="files or folders (WFDB records by their .hea)")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    p.add_argument("--format", "-f", default=DEFAULT_FORMATS,
                   help="comma-separated: wfdb,csv,json,dicom,fhir-r4,fhir-r5 "
                   f"(default {DEFAULT_FORMATS})")
    add_record_arguments(p)
    p.set_defaults(func=run)


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Expand folders into the waveform files they hold (sorted); keep files as given.

    From folders, JSON files are taken only when they look like FHIR resources, so the
    digitization summaries (``<stem>.json``) next to the outputs are not converted.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in _SUFFIXES
                       and not f.name.startswith(".") and _wanted_from_folder(f))
            )
        else:
            out.append(p)
    return out


def _wanted_from_folder(path: Path) -> bool:
    if path.suffix.lower() != ".json":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return True  # let the reader report it
    return b'"resourceType"' in head


def output_stem(path: Path, used: set[str]) -> str:
    """Stem of the outputs of `path`, made unique within one run (``x``, then ``x_csv``...)."""
    stem = path.stem if path.suffix.lower() in (*_SUFFIXES, ".dat") else path.name
    if stem in used:
        base = f"{stem}_{path.suffix.lstrip('.').lower() or 'file'}"
        stem, n = base, 2
        while stem in used:
            stem, n = f"{base}{n}", n + 1
    used.add(stem)
    return stem


def run(args: argparse.Namespace) -> int:
    """Convert every input; return 1 if any failed, 2 if there was no input."""
    from ecgbridge.encode.readers import read_ecg
    from ecgbridge.encode.registry import WriteContext, parse_formats, write_outputs
    from ecgbridge.errors import EcgBridgeError, EncodingError

    formats = parse_formats(args.format)
    unusable = sorted(set(formats) & _IMAGE_ONLY_FORMATS)
    if unusable:
        raise EncodingError(
            f"format {', '.join(unusable)} needs the page image; convert has only waveforms"
        )
    files = expand_inputs(args.inputs)
    if not files:
        print("ecgbridge: error: no input files", file=sys.stderr)
        return 2
    context = WriteContext(options=record_options(args))
    used: set[str] = set()
    failed = 0
    for path in files:
        try:
            ecg = read_ecg(path)
            write_outputs(ecg, args.out, output_stem(path, used), formats, context)
        except EcgBridgeError as exc:
            failed += 1
            reason = str(exc)
            if reason.startswith(f"{path}:"):  # readers name the file themselves
                reason = reason[len(str(path)) + 1 :].strip()
            print(f"FAILED {path}: {reason}", file=sys.stderr)
        except MemoryError:
            failed += 1
            print(f"FAILED {path}: out of memory", file=sys.stderr)
        except Exception as exc:  # a bug must not stop the other files
            failed += 1
            print(f"FAILED {path}: internal error {type(exc).__name__}: {exc}", file=sys.stderr)
    if failed:
        print(f"ecgbridge: {failed} of {len(files)} inputs failed", file=sys.stderr)
    return 1 if failed else 0
