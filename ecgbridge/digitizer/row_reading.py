"""Reading the trace rows of a page: each row's pen path and calibration pulse.

:func:`read_rows` follows every trace row, finds its calibration pulse at the start
(or the end) and erases traces and pulses from copies of the trace mask so that the
labels can be read. Each row becomes a :class:`~ecgbridge.digitizer.rows.PageRow`,
the one record a row keeps through the later stages. Helpers: the ink eroded to the
pen's core (:func:`pen_core`), the trace just before a row's start where a
calibration pulse may stand (:func:`lead_in_path`), straight ruler lines told from
traces (:func:`is_straight_line`), and a followed trace erased from a mask
(:func:`erase_path`, :func:`erase_columns`, :func:`erase_thin`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ecgbridge.digitizer import timebase
from ecgbridge.digitizer.pulse import find_pulse
from ecgbridge.digitizer.row_overlap import without_crossed_columns
from ecgbridge.digitizer.rows import PageRow, TraceRow, reach_of_ink
from ecgbridge.digitizer.scale import PageScale
from ecgbridge.digitizer.trace import TracePath, follow_trace, pen_core_kernel, refine_with_core
from ecgbridge.digitizer.trace_fine import with_stroke_crossings
from ecgbridge.digitizer.trace_ink import TraceInk
from ecgbridge.errors import DigitizationError

#: How far before a row's first trace ink a calibration pulse is looked for (mm).
_PULSE_LEAD_IN_MM = 16.0


@dataclass(frozen=True)
class RowReadings:
    """The page's trace rows and the masks the labels are read from.

    Attributes
    ----------
    rows : tuple of PageRow
        Trace rows (straight ruler lines left out), top to bottom.
    erased : numpy.ndarray
        Trace mask with every trace and pulse erased: labels and text remain.
    thin_erased : numpy.ndarray
        Trace mask with only the traces' pen lines erased (labels touching a trace
        keep their shape).
    """

    rows: tuple[PageRow, ...]
    erased: np.ndarray
    thin_erased: np.ndarray


def read_rows(ink: TraceInk, scale: PageScale, page_index: int,
              darkness: np.ndarray | None = None) -> RowReadings:
    """Follow every trace row, find its calibration pulse, erase traces before labels.

    With the page's ink `darkness`, each path also gets its steep strokes' sub-pixel
    crossings (:func:`~ecgbridge.digitizer.trace_fine.with_stroke_crossings`).

    Raises
    ------
    DigitizationError
        Every row is a straight line (no trace).
    """
    mask, ppm_x, ppm_y = ink.mask, scale.px_per_mm_x, scale.px_per_mm_y
    follow = ink.follow_mask
    erased = mask.copy()
    thin_erased = mask.copy()
    # Rows starting or ending on a steep wave reach beyond their flat pieces.
    reached = [replace(r, x_start=reach_of_ink(follow, r, ppm_x, -1),
                       x_end=reach_of_ink(follow, r, ppm_x, 1) + 1) for r in ink.rows]
    page_x_end = max(r.x_end for r in reached)
    cores: dict[int, np.ndarray] = {}
    rows: list[PageRow] = []
    for row in reached:
        path = follow_trace(follow, row.x_start, page_x_end, row.trace_top, row.trace_bottom,
                            row.baseline, ppm_y)
        path = refine_with_core(path, pen_core(follow, path.line_width, cores))
        if darkness is not None:
            path = with_stroke_crossings(path, follow, darkness)
        if is_straight_line(path, ppm_y):
            continue
        page_row, pulse_path = _read_row(ink.pulse_search, row, path, ppm_x, ppm_y)
        rows.append(page_row)
        erase_path(erased, path, pad=max(1, int(round(0.15 * ppm_y))))
        erase_thin(thin_erased, path)
        pulse = page_row.pulse
        if pulse is not None:
            x0p = pulse.x_rise - pulse_path.x0
            x1p = min(int(pulse.x_fall) - pulse_path.x0 + 2, pulse_path.y.size)
            erase_columns(erased, pulse_path, x0p, x1p, pad=2)
    if not rows:
        raise DigitizationError(f"page {page_index + 1}: only straight lines found, no traces")
    return RowReadings(tuple(without_crossed_columns(rows)), erased, thin_erased)


def _read_row(pulse_search: np.ndarray, row: TraceRow, path: TracePath, ppm_x: float,
              ppm_y: float) -> tuple[PageRow, TracePath]:
    """A followed row's pulses and extent; also the path its pulse was found on.

    A pulse before the row's start is looked for in `pulse_search`.
    """
    pulse = find_pulse(path, ppm_x, ppm_y)
    pulse_path = path
    if pulse is None:
        # Rows are found where ink stays near the baseline; a pulse drawn without a
        # foot line (a bare rectangle) lies just before that start.
        lead_in = lead_in_path(pulse_search, row, ppm_x, ppm_y)
        pulse = find_pulse(lead_in, ppm_x, ppm_y) if lead_in is not None else None
        if pulse is not None and pulse.x_fall < row.x_start - 3.0 * ppm_x:
            pulse = None
        if pulse is not None and lead_in is not None:
            pulse_path = lead_in
    x_origin = pulse.x_fall if pulse else float(row.x_start)
    x_end = float(row.x_end)
    end_pulse = find_pulse(path, ppm_x, ppm_y, from_end=True)
    if end_pulse is not None and end_pulse.x_rise > x_origin + 20 * ppm_x:
        x_end = end_pulse.x_rise
        pulse = pulse or end_pulse
    start_pulse = pulse if pulse is not None and pulse is not end_pulse else None
    gap = (timebase.gap_after_pulse(pulse_path, start_pulse, ppm_x)
           if start_pulse is not None else None)
    return PageRow(row, path, pulse, start_pulse, gap, x_origin, x_end), pulse_path


def is_straight_line(path: TracePath, ppm_y: float) -> bool:
    """True for a ruler line or page edge: no vertical excursion at all."""
    y = path.y[np.isfinite(path.y)]
    return y.size > 0 and float(np.percentile(y, 99) - np.percentile(y, 1)) < 0.3 * ppm_y


def erase_thin(mask: np.ndarray, path: TracePath) -> None:
    """Erase only the pen line of the path (not whole tall runs, which may touch labels)."""
    half = int(np.ceil(path.line_width / 2.0)) + 1
    h = mask.shape[0]
    ok = np.nonzero(np.isfinite(path.y))[0]
    tops, bottoms = path.read_extent
    for c in ok:
        t, b = tops[c], bottoms[c]
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
    """Erase the path's ink (each column's run and the strokes it touches, `pad` px
    beyond) from `mask`."""
    erase_columns(mask, path, 0, path.y.size, pad)


def erase_columns(mask: np.ndarray, path: TracePath, c0: int, c1: int, pad: int) -> None:
    """Erase the path's ink in its columns [c0, c1) (`pad` px beyond each run)."""
    h = mask.shape[0]
    tops, bottoms = path.read_extent
    for c in range(max(c0, 0), min(c1, path.y.size)):
        t, b = tops[c], bottoms[c]
        if np.isfinite(t):
            mask[max(0, int(t) - pad): min(h, int(b) + pad + 1), path.x0 + c] = 0
