"""Registry of output formats for ``ecgbridge digitize --format``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path

from ecgbridge.ecg import ECG
from ecgbridge.encode.context import WriteContext
from ecgbridge.errors import EncodingError

Writer = Callable[[ECG, Path, str, WriteContext], list[Path]]

#: format name -> "module:function" (imported lazily so optional extras stay optional).
WRITERS: dict[str, str] = {
    "wfdb": "ecgbridge.encode.wfdb_format:write_wfdb",
    "csv": "ecgbridge.encode.csv_format:write_csv",
    "json": "ecgbridge.encode.json_format:write_json",
    "dicom": "ecgbridge.encode.dicom_waveform:write_dicom",
    "fhir-r4": "ecgbridge.encode.fhir_observation:write_fhir_r4",
    "fhir-r5": "ecgbridge.encode.fhir_observation:write_fhir_r5",
    "overlay": "ecgbridge.encode.overlay:write_overlay",
}


def available_formats() -> list[str]:
    """Names accepted by :func:`write_outputs`."""
    return list(WRITERS)


def resolve_writer(fmt: str) -> Writer:
    """Return the writer function of one format.

    Raises
    ------
    EncodingError
        If the format is unknown or its optional dependencies are missing.
    """
    if fmt not in WRITERS:
        raise EncodingError(f"unknown output format {fmt!r}; choose from {', '.join(WRITERS)}")
    module_name, func_name = WRITERS[fmt].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EncodingError(f"output format {fmt!r} is not available: {exc}") from exc
    return getattr(module, func_name)  # type: ignore[no-any-return]


def parse_formats(text: str) -> list[str]:
    """Split ``"wfdb,csv"`` into names, checking each one."""
    names = [f.strip().lower() for f in text.split(",") if f.strip()]
    if not names:
        raise EncodingError("no output format given")
    for name in names:
        if name not in WRITERS:
            raise EncodingError(
                f"unknown output format {name!r}; choose from {', '.join(WRITERS)}"
            )
    return names


def write_outputs(
    ecg: ECG,
    out_dir: Path,
    stem: str,
    formats: Iterable[str],
    context: WriteContext | None = None,
) -> list[Path]:
    """Write `ecg` in every requested format into `out_dir`; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = context or WriteContext()
    written: list[Path] = []
    for fmt in formats:
        written.extend(resolve_writer(fmt)(ecg, out_dir, stem, ctx))
    return written
