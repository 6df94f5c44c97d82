"""Reading a trace row: the pen's path, and erasing it so labels can be read.

The helpers the row stage needs: the ink eroded to the pen's core (:func:`pen_core`),
the trace just before a row's start where a calibration pulse may stand
(:func:`lead_in_path`), straight ruler lines told from traces
(:func:`is_straight_line`), and a followed trace erased from a mask
(:func:`erase_path`, :func:`erase_columns`, :func:`erase_thin`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ecgbridge.digitizer.rows import TraceRow
from ecgbridge.digitizer.trace import TracePath, follow_trace, pen_core_kernel

#: How far before a row's first trace ink a calibration pulse is looked for (mm).
_PULSE_LEAD_IN_MM = 16.0


def is_straight_line(path: TracePath, ppm_y: float) -> bool:
    """True for a ruler line or page edge: no vertical excursion at all."""
    y = path.y[np.isfinite(path.y)]
    return y.size > 0 and float(np.percentile(y, 99) - np.percentile(y, 1)) < 0.3 * ppm_y


def erase_thin(mask: np.ndarray, path: TracePath) -> None:
    """Erase only the pen line of the path (not whole tall runs, which may touch labels)."""
    half = int(np.ceil(path.line_width / 2.0)) + 1
    h = mask.shape[0]
    ok = np.nonzero(np.isfinite(path.y))[0]
    for c in ok:
        t, b = path.top[c], path.bottom[c]
        if b - t <= 2.5 * path.line_width + 1:
            y = int(round(path.y[c]))
            mask[max(0, y - half): min(h, y + half + 1), path.x0 + c] = 0
        else:
            mask[max(0, int(t) - 1): min(h, int(b) + 2), path.x0 + c] = 0


def pen_core(mask: np.ndarray, line_width: float, cache: dict[int, np.ndarray]) -> np.ndarray:
    """The ink mask eroded to the pen strokes' cores (cached per kernel size)."""
    k = pen_core_kernel(line_width)
    if k not in cache:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        cache[k] = cv2.erode(mask, kernel) if k > 1 else mask
    return cache[k]


def lead_in_path(mask: np.ndarray, row: TraceRow, ppm_x: float,
                 ppm_y: float) -> TracePath | None:
    """The trace just before and at a row's start, where a calibration pulse may stand."""
    x0 = max(0, int(row.x_start - _PULSE_LEAD_IN_MM * ppm_x))
    x1 = int(row.x_start + 2.0 * ppm_x)
    if row.x_start - x0 < 2.0 * ppm_x:
        return None
    return follow_trace(mask, x0, x1, row.trace_top, row.trace_bottom, row.baseline, ppm_y)


def erase_path(mask: np.ndarray, path: TracePath, pad: int) -> None:
    """Erase the path's ink (each column's run, `pad` px beyond) from `mask`."""
    erase_columns(mask, path, 0, path.y.size, pad)


def erase_columns(mask: np.ndarray, path: TracePath, c0: int, c1: int, pad: int) -> None:
    """Erase the path's ink in its columns [c0, c1) (`pad` px beyond each run)."""
    h = mask.shape[0]
    for c in range(max(c0, 0), min(c1, path.y.size)):
        t, b = path.top[c], path.bottom[c]
        if np.isfinite(t):
            mask[max(0, int(t) - pad): min(h, int(b) + pad + 1), path.x0 + c] = 0
