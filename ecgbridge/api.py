"""The public Python API: ``ecgbridge.digitize``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.ecg import ECG

Source = str | os.PathLike[str] | bytes | np.ndarray


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
    ecgbridge.errors.InputError
        The input cannot be read (corrupt, truncated, unsupported, too large).
    ecgbridge.errors.DigitizationError
        The input was read but holds no ECG that can be digitized reliably.
    """
    from ecgbridge.digitizer.pipeline import digitize_pages
    from ecgbridge.inputs.load import load_input

    options = DigitizeOptions(layout=layout, paper_speed=paper_speed, gain=gain, fs=fs,
                              engine=engine)
    loaded = load_input(Path(source) if isinstance(source, str) else source)
    return digitize_pages(loaded.pages, options, source=loaded.source)
