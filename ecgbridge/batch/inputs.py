"""Stream batch inputs from folders, glob patterns and file lists without listing them."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterator
from pathlib import Path

#: File name suffixes a folder scan picks up (as ``ecgbridge digitize`` does).
SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pdf", ".dcm", ".dicom", ""}
)

#: Name of the journal folder inside the output folder; never scanned as input.
BATCH_DIR_NAME = "_batch"


def iter_inputs(specs: list[str]) -> Iterator[tuple[Path, str]]:
    """Yield ``(absolute path, output sub-folder)`` for every input, lazily.

    Parameters
    ----------
    specs : list of str
        Folders (scanned recursively with :func:`os.scandir`), glob patterns,
        files, ``-`` (paths on standard input) or ``@list.txt`` (one path a line).

    Yields
    ------
    tuple
        The file and the folder, relative to the output folder, its outputs go to
        (the file's folder below the scanned folder; ``""`` for files, globs, lists).
    """
    for spec in specs:
        if spec == "-":
            yield from _iter_list(sys.stdin)
        elif spec.startswith("@"):
            with open(spec[1:], encoding="utf-8") as fh:
                yield from _iter_list(fh)
        elif os.path.isdir(spec):
            yield from _scan(Path(spec).resolve(), "")
        elif glob.has_magic(spec):
            for name in glob.iglob(spec, recursive=True):
                if os.path.isfile(name):
                    yield Path(name).resolve(), ""
        else:
            yield Path(spec).resolve(), ""


def count_inputs(specs: list[str]) -> int:
    """Count what :func:`iter_inputs` yields (a second streaming pass, for the ETA)."""
    return sum(1 for spec in specs if spec != "-" for _ in iter_inputs([spec]))


def _iter_list(lines: object) -> Iterator[tuple[Path, str]]:
    for line in lines:  # type: ignore[attr-defined]
        name = str(line).strip()
        if name and not name.startswith("#"):
            yield Path(name).resolve(), ""


def _scan(folder: Path, rel: str) -> Iterator[tuple[Path, str]]:
    try:
        it = os.scandir(folder)
    except OSError:
        return
    subdirs: list[str] = []
    with it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if not (rel == "" and entry.name == BATCH_DIR_NAME):
                    subdirs.append(entry.name)
            elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in SUFFIXES:
                yield Path(entry.path), rel
    for name in subdirs:
        yield from _scan(folder / name, f"{rel}/{name}" if rel else name)
