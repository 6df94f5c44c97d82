"""The public Python API: ``ecgbridge.digitize``, and the one way from an input to an ECG.

:func:`digitize_input` (load, then digitize with options) is the single code path of the
API, the ``digitize`` and ``batch`` commands and the daemon's worker; :func:`digitize_file`
adds writing the outputs, for ``digitize`` and ``batch``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.ecg import ECG

if TYPE_CHECKING:
    from ecgbridge.inputs.page import LoadedInput

Source = str | os.PathLike[str] | bytes | np.ndarray


class Digitized(NamedTuple):
    """An input read and digitized: the ECG, and the input it came from."""

    ecg: ECG
    loaded: LoadedInput


def digitize(
    source: Source,
    *,
    layout: str = "auto",
    paper_speed: float | None = None,
    gain: float | None = None,
    fs: float = 500.0,
    engine: str = "auto",
) -> ECG:
    """Digitize one ECG document into 12 calibrated leads.

    Parameters
    ----------
    source : str, os.PathLike, bytes or numpy.ndarray
        A file path, the file's bytes, or an image array (grey ``(h, w)`` or
        RGB ``(h, w, 3)``). Files may be PNG, JPEG, TIFF, BMP, PDF (every page;
        vector traces are read from the paths) or DICOM (Secondary Capture,
        Encapsulated PDF, VL Photographic Image).
    layout : str
        ``"auto"`` (default) or a layout hint such as ``"3x4+II"``.
    paper_speed : float, optional
        Paper speed in mm/s, when known; otherwise read from the page (25 by default).
    gain : float, optional
        Gain in mm/mV, when known; otherwise from the calibration pulse (10 by default).
    fs : float
        Output sampling rate in Hz.
    engine : str
        ``"auto"`` (default), ``"learned"`` or ``"classical"``: how trace ink is told
        from grid, text and damage (see ``ecgbridge digitize --help``; auto reads the
        page classically and uses the model's reading where it keeps the limb-lead laws
        clearly better).

    Returns
    -------
    ECG
        12 leads in mV, NaN where the page does not show a lead.

    Raises
    ------
    ecgbridge.errors.OptionError
        An option is unknown or out of range (also a ``ValueError``).
    ecgbridge.errors.InputError
        The input cannot be read (corrupt, truncated, unsupported, too large).
    ecgbridge.errors.DigitizationError
        The input was read but holds no ECG that can be digitized reliably.
    """
    options = DigitizeOptions(layout=layout, paper_speed=paper_speed, gain=gain, fs=fs,
                              engine=engine)
    return digitize_input(source, options).ecg


def digitize_input(
    source: Source,
    options: DigitizeOptions,
    *,
    debug_dir: Path | None = None,
    folder_pattern: str | None = None,
    name: str | None = None,
    page_guard: Callable[[int], AbstractContextManager[object]] | None = None,
) -> Digitized:
    """Load one input (every page) and digitize it with `options`.

    Parameters
    ----------
    source : str, os.PathLike, bytes or numpy.ndarray
        As for :func:`digitize`.
    options : DigitizeOptions
        Validated digitizer options.
    debug_dir : Path, optional
        Write each pipeline stage's image into this folder (also when digitizing fails).
    folder_pattern : str, optional
        Patient folder convention of a path input (see
        :func:`ecgbridge.inputs.sidecar.folder_identity`).
    name : str, optional
        The input's name in messages and provenance (default: the file name), e.g. the
        name a file was received under when it is stored under another.
    page_guard : callable, optional
        Called with the number of pages; the context manager it returns is held
        around digitization (the daemon worker's per-page time limit).

    Returns
    -------
    Digitized
        The ECG and the loaded input (its pages feed the overlay writer).

    Raises
    ------
    ecgbridge.errors.InputError
        The input cannot be read.
    ecgbridge.errors.DigitizationError
        The input holds no ECG that can be digitized reliably.
    """
    from ecgbridge.digitizer.pipeline import digitize_pages
    from ecgbridge.inputs.load import load_input

    loaded = load_input(Path(source) if isinstance(source, str) else source, name=name)
    if folder_pattern and isinstance(source, (str, os.PathLike)):
        from ecgbridge.inputs.sidecar import with_folder_identity

        loaded = with_folder_identity(loaded, Path(source), folder_pattern)
    stages: dict[str, Any] | None = {} if debug_dir is not None else None
    guard = page_guard(len(loaded.pages)) if page_guard is not None else nullcontext()
    try:
        with guard:
            ecg = digitize_pages(loaded.pages, options, source=loaded.source, debug=stages)
    finally:
        if stages and debug_dir is not None:
            from ecgbridge.report.debug_images import write_debug_images

            write_debug_images(stages, debug_dir)
    return Digitized(ecg, loaded)


def digitize_file(
    path: Path,
    out_dir: Path,
    formats: Sequence[str],
    options: DigitizeOptions,
    *,
    debug_dir: Path | None = None,
    write_options: Mapping[str, Any] | None = None,
    stem: str | None = None,
) -> tuple[ECG, LoadedInput, list[Path]]:
    """Digitize one file and write its outputs as ``<out_dir>/<stem>.<ext>``.

    The one code path of ``ecgbridge digitize`` and ``ecgbridge batch``, so both write
    the same files.

    Parameters
    ----------
    path : Path
        The input file.
    out_dir : Path
        Folder of the outputs.
    formats : sequence of str
        Output format names (see :mod:`ecgbridge.encode.registry`).
    options : DigitizeOptions
        Validated digitizer options.
    debug_dir : Path, optional
        Folder for the stage images (a sub-folder named after the input is used).
    write_options : Mapping, optional
        The writers' options about the clinical record (FHIR subject, time zone,
        policies; see :mod:`ecgbridge.encode.record_facts`), and
        ``patient_folder_pattern`` (the input's patient folder convention).
    stem : str, optional
        Name of the outputs without suffix (default: the input's name without its
        suffix); ``digitize`` keeps same-named inputs apart with it.

    Returns
    -------
    tuple
        ``(ecg, loaded_input, files_written)``.

    Raises
    ------
    ecgbridge.errors.EcgBridgeError
        The input cannot be read or digitized, or an output cannot be written.
    """
    from ecgbridge.encode.registry import WriteContext, write_outputs

    stem = stem or path.stem
    stage_dir = debug_dir / stem if debug_dir is not None else None
    written_options = dict(write_options or {})
    pattern = written_options.get("patient_folder_pattern")
    ecg, loaded = digitize_input(path, options, debug_dir=stage_dir,
                                 folder_pattern=str(pattern) if pattern else None)
    context = WriteContext(loaded=loaded, options=written_options)
    written = write_outputs(ecg, out_dir, stem, formats, context)
    return ecg, loaded, written
