"""Intermediate images of the digitizer, for ``ecgbridge digitize --debug-dir``.

The digitizer fills a ``dict[str, numpy.ndarray]`` with one image per pipeline stage
(input page, rectified page, ink mask, grid, traces...), in pipeline order.
:func:`write_debug_images` writes each as ``<n>_<name>.png`` (n = 01, 02... in that
order) plus ``pipeline.png``: every stage side by side with its name, the
image-to-signal pipeline at a glance. OpenCV only (no matplotlib).

Conventions: 3-channel arrays are RGB; boolean masks are drawn as ink (True black on
white); float arrays in [0, 1] are scaled by 255, other numeric arrays are stretched
from their minimum to their maximum; NaN is drawn black.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ecgbridge.fsutil import write_bytes_atomic

log = logging.getLogger(__name__)

#: File name of the composed figure.
PIPELINE_FILE = "pipeline.png"

#: Height of each stage's tile in the pipeline figure, in pixels.
TILE_HEIGHT = 360

#: Stages per row of the pipeline figure.
TILES_PER_ROW = 4

_LEADING_NUMBER = re.compile(r"^\d+[_. -]+")
_CAPTION_HEIGHT = 34
_ARROW_WIDTH = 48
_MARGIN = 12
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def stage_label(name: str) -> str:
    """Stage name without a leading step number the digitizer may have put in it
    (``"2_grid_removed"`` -> ``"grid_removed"``)."""
    return _LEADING_NUMBER.sub("", name.strip()) or name.strip() or "stage"


def debug_file_name(number: int, name: str) -> str:
    """``<nn>_<name>.png`` with the name reduced to letters, digits, ``-`` and ``_``."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", stage_label(name)).strip("-") or "stage"
    return f"{number:02d}_{safe}.png"


def stage_to_rgb(image: Any) -> np.ndarray | None:
    """Convert one stage's array to RGB uint8 for display; None when it is not an image.

    Parameters
    ----------
    image : array-like
        ``(h, w)`` grey / mask / map, or ``(h, w, 3)`` RGB, or ``(h, w, 4)`` RGBA.
    """
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        return None
    if arr.dtype == np.bool_:
        grey = np.where(arr, 0, 255).astype(np.uint8)
    elif arr.dtype == np.uint8:
        grey = arr
    elif np.issubdtype(arr.dtype, np.number):
        grey = _stretch(arr.astype(np.float64))
    else:
        return None
    if grey.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2RGB)
    if grey.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_RGBA2RGB)
    return np.ascontiguousarray(grey)


def _stretch(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    scaled = np.where(np.isfinite(scaled), scaled, 0.0)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def write_debug_images(stages: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write every stage image as ``<n>_<name>.png`` and the composed ``pipeline.png``.

    Parameters
    ----------
    stages : Mapping
        Stage name -> image array, in pipeline order. Entries that are not images are
        skipped (logged at debug level).
    out_dir : Path
        Folder to write into (created).

    Returns
    -------
    list of Path
        Files written; ``pipeline.png`` last.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    shown: list[tuple[str, np.ndarray]] = []
    for number, (name, image) in enumerate(stages.items(), start=1):
        rgb = stage_to_rgb(image)
        if rgb is None:
            log.debug("debug stage %r is not an image (%s); skipped", name, type(image).__name__)
            continue
        written.append(_write_png(out_dir / debug_file_name(number, name), rgb))
        shown.append((f"{number}. {stage_label(name)}", rgb))
    if shown:
        written.append(_write_png(out_dir / PIPELINE_FILE, pipeline_figure(shown)))
    return written


def pipeline_figure(stages: list[tuple[str, np.ndarray]], tile_height: int = TILE_HEIGHT,
                    per_row: int = TILES_PER_ROW) -> np.ndarray:
    """Compose captioned stage images left to right with arrows, wrapping every `per_row`.

    Parameters
    ----------
    stages : list of (str, numpy.ndarray)
        Caption and RGB uint8 image per stage.
    tile_height : int
        Height every image is scaled to.
    per_row : int
        Stages per row.

    Returns
    -------
    numpy.ndarray
        RGB uint8 image.
    """
    if not stages:
        raise ValueError("pipeline_figure needs at least one stage image")
    if tile_height < 16 or per_row < 1:
        raise ValueError(
            f"pipeline_figure: tile_height {tile_height} and per_row {per_row} are too small"
        )
    tiles = [_tile(caption, image, tile_height) for caption, image in stages]
    rows = []
    for start in range(0, len(tiles), per_row):
        chunk = tiles[start : start + per_row]
        parts = []
        for i, tile in enumerate(chunk):
            if i:
                parts.append(_arrow(tile.shape[0]))
            parts.append(tile)
        rows.append(np.hstack(parts))
    width = max(r.shape[1] for r in rows) + 2 * _MARGIN
    canvas_rows = []
    for row in rows:
        padded = np.full((row.shape[0] + _MARGIN, width, 3), 255, dtype=np.uint8)
        padded[_MARGIN:, _MARGIN : _MARGIN + row.shape[1]] = row
        canvas_rows.append(padded)
    canvas_rows.append(np.full((_MARGIN, width, 3), 255, dtype=np.uint8))
    return np.vstack(canvas_rows)


def _tile(caption: str, image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, int(round(w * height / h)))
    interp = cv2.INTER_AREA if height < h else cv2.INTER_NEAREST
    body = cv2.resize(image, (width, height), interpolation=interp)
    cv2.rectangle(body, (0, 0), (width - 1, height - 1), (160, 160, 160), 1)
    strip = np.full((_CAPTION_HEIGHT, width, 3), 255, dtype=np.uint8)
    scale = 0.6
    text = caption
    while len(text) > 4 and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > width - 8:
        text = text[:-1]
    if text != caption:
        text = text[:-1] + "~"  # cut caption (Hershey fonts have no ellipsis)
    cv2.putText(strip, text, (4, _CAPTION_HEIGHT - 10), _FONT, scale, (20, 20, 20), 1,
                cv2.LINE_AA)
    return np.vstack([strip, body])


def _arrow(height: int) -> np.ndarray:
    strip = np.full((height, _ARROW_WIDTH, 3), 255, dtype=np.uint8)
    y = _CAPTION_HEIGHT + (height - _CAPTION_HEIGHT) // 2
    cv2.arrowedLine(strip, (8, y), (_ARROW_WIDTH - 8, y), (60, 60, 60), 2, cv2.LINE_AA,
                    tipLength=0.35)
    return strip


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 fails only on invalid arrays
        raise ValueError(f"could not encode debug image {path.name}")
    return write_bytes_atomic(path, png.tobytes(), fsync=False)
