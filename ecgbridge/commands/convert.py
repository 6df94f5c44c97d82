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

from ecgbridge.commands.digitize import summary_line
from ecgbridge.commands.progress import with_progress
from ecgbridge.commands.record_args import add_record_arguments, record_options
from ecgbridge.commands.values import unique_stem

#: Default output formats of ``convert``: the clinical ones.
DEFAULT_FORMATS = "dicom,fhir-r4"
#: Formats that need the page images, which a stored waveform does not have.
_IMAGE_ONLY_FORMATS = {"overlay"}
#: File suffixes taken from folders (WFDB records by their header), in the order one
#: is preferred when a folder holds one recording in several formats (same stem).
_SUFFIXES = (".dcm", ".dicom", ".json", ".hea", ".csv")
#: Format markers of our own output names (``x.fhir-r4.json``), not part of the stem.
_FORMAT_MARKERS = (".fhir-r4", ".fhir-r5")


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
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=run)


def expand_inputs(paths: list[Path], skipped: list[Path] | None = None) -> list[Path]:
    """Expand folders into the waveform files they hold (sorted); keep files as given.

    From folders, JSON files are taken only when they look like FHIR resources, so the
    digitization summaries (``<stem>.json``) next to the outputs are not converted; and
    one recording kept in several formats (``x.dcm``, ``x.hea``, ``x.csv``: one stem) is
    converted once, from the first of :data:`_SUFFIXES` (the others go to `skipped`).
    """
    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            out.append(p)
            continue
        found = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in _SUFFIXES
                 and not f.name.startswith(".") and _wanted_from_folder(f)]
        found.sort(key=lambda f: (_stem(f), _SUFFIXES.index(f.suffix.lower()), f.name))
        stems: set[str] = set()
        for f in found:
            if _stem(f) in stems:
                if skipped is not None:
                    skipped.append(f)
                continue
            stems.add(_stem(f))
            out.append(f)
    return out


def _stem(path: Path) -> str:
    """The recording's name: the file name without its suffix and format marker."""
    stem = path.stem if path.suffix.lower() in (*_SUFFIXES, ".dat") else path.name
    for marker in _FORMAT_MARKERS:
        if stem.lower().endswith(marker) and len(stem) > len(marker):
            return stem[: -len(marker)]
    return stem


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
    return unique_stem(_stem(path), used, path.suffix)


def run(args: argparse.Namespace) -> int:
    """Convert every input; return 1 if any failed, 2 if there was no input."""
    from ecgbridge.encode.readers import read_ecg
    from ecgbridge.encode.registry import WriteContext, parse_formats, write_outputs
    from ecgbridge.errors import EcgBridgeError, EncodingError, describe_failure

    formats = parse_formats(args.format)
    unusable = sorted(set(formats) & _IMAGE_ONLY_FORMATS)
    if unusable:
        raise EncodingError(
            f"format {', '.join(unusable)} needs the page image; convert has only waveforms"
        )
    skipped: list[Path] = []
    files = expand_inputs(args.inputs, skipped)
    if not files:
        print("ecgbridge: error: no input files", file=sys.stderr)
        return 2
    iterator, bar_write = with_progress(files, "file", args.no_progress)
    report = bar_write or print
    context = WriteContext(options=record_options(args))
    used: set[str] = set()
    renamed: list[str] = []
    failed = written = 0
    for path in iterator:
        stem = output_stem(path, used)
        if stem != _stem(path):
            renamed.append(f"{path.name} -> {stem}.*")
        try:
            ecg = read_ecg(path)
            written += len(write_outputs(ecg, args.out, stem, formats, context))
        except EcgBridgeError as exc:
            failed += 1
            reason = describe_failure(exc)
            if reason.startswith(f"{path}:"):  # readers name the file themselves
                reason = reason[len(str(path)) + 1 :].strip()
            report(f"FAILED {path}: {reason}", file=sys.stderr)
        except MemoryError:
            failed += 1
            report(f"FAILED {path}: out of memory", file=sys.stderr)
        except Exception as exc:  # a bug must not stop the other files
            failed += 1
            report(f"FAILED {path}: {describe_failure(exc)}", file=sys.stderr)
    summary = summary_line(len(files), failed, "converted", args.out, written, renamed)
    if skipped:
        summary += f"; {len(skipped)} other format(s) of the same recordings not converted " \
            f"({', '.join(p.name for p in skipped)})"
    print(summary, file=sys.stderr)
    return 1 if failed else 0

