"""Step 5: find the trace rows (their baselines, vertical bands and horizontal extent).

:class:`TraceRow` is where a row lies; :class:`PageRow` is what the later stages
read in it (its trace, pulse, time origin, labels and panels).

Every long ink component contributes, per pixel column, the median row of its ink
there. Baselines are where traces spend most of their time, so a histogram of these
per-column medians peaks at each trace row regardless of how tall the QRS complexes are.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ecgbridge.digitizer.labels import LabelWord
from ecgbridge.digitizer.layout import PanelSlot
from ecgbridge.digitizer.pulse import CalibrationPulse
from ecgbridge.digitizer.trace import TracePath, column_run_lists

#: A component at least this wide (mm) is a trace candidate.
MIN_TRACE_COMPONENT_MM = 6.0
#: A gap up to this wide (mm) in a map whose grid lines were removed does not split a
#: trace piece: a line removed where the trace crossed it leaves one.
_BRIDGED_GAP_MM = 0.5
#: Minimum spacing of two trace rows (mm).
MIN_ROW_SPACING_MM = 7.0
#: A row must cover at least this many mm horizontally.
MIN_ROW_LENGTH_MM = 25.0
#: Rows needed to measure the row pitch before a row missing from it is looked for.
_MIN_PEAKS_FOR_PITCH = 4
#: A peak within this fraction of a pitch of a lattice position sits on the lattice ...
_LATTICE_TOLERANCE = 0.15
#: ... and at least this fraction of the peaks must, for the lattice to be trusted.
_MIN_ON_LATTICE_FRACTION = 0.75
#: A missing row is looked for within this fraction of a pitch of its position ...
_MISSING_ROW_SEARCH = 0.3
#: ... at a level at least this fraction of the highest baseline peak.
_MIN_MISSING_ROW_PEAK = 0.02


@dataclass(frozen=True)
class TraceRow:
    """One row of traces.

    Attributes
    ----------
    baseline : float
        Row (pixels) where the traces of this row mostly lie.
    top, bottom : int
        Vertical band around the row, half-way to the neighbouring rows (exclusive
        bottom): where its labels are looked for.
    x_start, x_end : int
        Horizontal extent of the row's ink (exclusive end).
    coverage : float
        Fraction of columns in [x_start, x_end) with ink near the baseline.
    trace_top, trace_bottom : int
        Wider band the trace may reach (tall waves and the calibration pulse extend
        beyond the half-way lines), up to near the neighbouring baselines.
    """

    baseline: float
    top: int
    bottom: int
    x_start: int
    x_end: int
    coverage: float
    trace_top: int = 0
    trace_bottom: int = 0


@dataclass(frozen=True)
class PageRow:
    """One trace row of a page, as the stages read it.

    Attributes
    ----------
    row : TraceRow
        Where the row lies on the page.
    path : TracePath
        The followed trace.
    pulse : CalibrationPulse or None
        The row's calibration pulse (at its start, else at its end): its gain and foot.
    start_pulse : CalibrationPulse or None
        The pulse before the signal, whose fall marks the row's time 0.
    signal_gap : float or None
        Blank gap (px) between `start_pulse`'s fall and the signal, if there is one.
    x_origin : float
        Column (px) of the row's time 0 (placed by the time base and the layout).
    x_end : float
        Column (px) where the row's signal ends.
    labels : tuple of LabelWord
        Lead labels read in the row (set by the layout stage).
    slots : tuple of PanelSlot
        The row's named panels (set by the layout stage).
    """

    row: TraceRow
    path: TracePath
    pulse: CalibrationPulse | None
    start_pulse: CalibrationPulse | None
    signal_gap: float | None
    x_origin: float
    x_end: float
    labels: tuple[LabelWord, ...] = ()
    slots: tuple[PanelSlot, ...] = ()


def column_medians(mask: np.ndarray, px_per_mm: float, bridge_gaps: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the short vertical ink runs of long components (flat trace pieces).

    Flat pieces of a trace are short runs in their column; counting them (not all ink
    pixels) makes baselines stand out even when tall waves of neighbouring rows touch.
    With `bridge_gaps`, pieces a removed grid line split (gaps up to
    ``_BRIDGED_GAP_MM``) count as one when their length is judged.

    Returns
    -------
    tuple of numpy.ndarray
        ``(xs, ys)``: column and centre row of every short run.
    """
    pieces = mask
    if bridge_gaps:
        bridge = max(3, int(round(_BRIDGED_GAP_MM * px_per_mm)) | 1)
        pieces = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((1, bridge), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(pieces, connectivity=8)
    long_ids = np.nonzero(stats[:, cv2.CC_STAT_WIDTH] >= MIN_TRACE_COMPONENT_MM * px_per_mm)[0]
    long_ids = long_ids[long_ids != 0]
    if long_ids.size == 0:
        return np.empty(0), np.empty(0)
    keep = np.zeros(n, dtype=bool)
    keep[long_ids] = True
    long_mask = keep[labels] & (mask > 0)
    h, w = long_mask.shape
    padded = np.zeros((w, h + 2), dtype=np.int8)
    padded[:, 1:-1] = long_mask.T
    d = np.diff(padded, axis=1)
    sc, sr = np.nonzero(d == 1)
    _ec, er = np.nonzero(d == -1)
    length = er - sr
    short = length <= max(3.0, 0.8 * px_per_mm)
    return sc[short].astype(np.float64), (0.5 * (sr + er - 1))[short].astype(np.float64)


def find_rows(mask: np.ndarray, px_per_mm_x: float, px_per_mm_y: float,
              bridge_gaps: bool = False) -> list[TraceRow]:
    """Find trace rows in a trace-ink mask.

    Parameters
    ----------
    mask : numpy.ndarray
        uint8 0/1 ink mask of the rectified page.
    px_per_mm_x, px_per_mm_y : float
        Scale.
    bridge_gaps : bool
        The mask had its grid lines removed: a trace crossing one may be split by a
        line-wide gap (see :func:`column_medians`).

    Returns
    -------
    list of TraceRow
        Top to bottom; empty if no row was found.
    """
    h, w = mask.shape
    mask = mask.copy()
    frame = 3
    mask[:frame] = 0
    mask[-frame:] = 0
    mask[:, :frame] = 0
    mask[:, -frame:] = 0
    xs, ys = column_medians(mask, px_per_mm_x, bridge_gaps)
    if xs.size == 0:
        return []
    hist = np.bincount(ys.astype(np.int64), minlength=h).astype(np.float64)
    sigma = max(1.0, 0.6 * px_per_mm_y)
    smooth = cv2.GaussianBlur(hist.reshape(-1, 1), (1, 0), sigmaX=0.1, sigmaY=sigma).ravel()
    min_len = MIN_ROW_LENGTH_MM * px_per_mm_x
    spacing = MIN_ROW_SPACING_MM * px_per_mm_y
    peaks: list[int] = []
    order = np.argsort(smooth)[::-1]
    level = smooth.max()
    if level <= 0:
        return []
    for y in order:
        if smooth[y] < 0.2 * level:
            break
        if all(abs(int(y) - p) >= spacing for p in peaks):
            peaks.append(int(y))
    peaks = _fill_pitch_gaps(sorted(peaks), smooth)
    rows: list[TraceRow] = []
    for i, p in enumerate(peaks):
        top = 0 if i == 0 else (peaks[i - 1] + p) // 2
        bottom = h if i == len(peaks) - 1 else (p + peaks[i + 1]) // 2
        # Limit the outer rows' bands to a plausible trace height.
        top = max(top, int(p - 25 * px_per_mm_y))
        bottom = min(bottom, int(p + 25 * px_per_mm_y))
        near = np.abs(ys - p) <= max(2.0, 6.0 * px_per_mm_y)
        if near.sum() < min_len * 0.3:
            continue
        cols = np.unique(xs[near].astype(np.int64))
        x_start, x_end = _longest_extent(cols, gap=int(15 * px_per_mm_x))
        if x_end - x_start < min_len:
            continue
        inside = cols[(cols >= x_start) & (cols < x_end)]
        coverage = inside.size / max(1, x_end - x_start)
        # Parabolic refinement of the baseline peak.
        a, b, c = (smooth[p - 1], smooth[p], smooth[p + 1]) if 0 < p < h - 1 else (0, 1, 0)
        d = a - 2 * b + c
        base = p + (0.5 * (a - c) / d if d != 0 else 0.0)
        margin = 1.5 * px_per_mm_y
        t_top = 0 if i == 0 else int(peaks[i - 1] + margin)
        t_bot = h if i == len(peaks) - 1 else int(peaks[i + 1] - margin)
        t_top = max(t_top, int(p - 30 * px_per_mm_y))
        t_bot = min(t_bot, int(p + 30 * px_per_mm_y))
        rows.append(TraceRow(float(base), int(top), int(bottom), x_start, x_end, float(coverage),
                             t_top, t_bot))
    return rows


def _fill_pitch_gaps(peaks: list[int], smooth: np.ndarray) -> list[int]:
    """Complete the evenly spaced rows of a page where baseline peaks were lost.

    Rows of a printout are evenly spaced. A trace that wanders or swings far from
    its resting level gives only a weak or misplaced baseline peak, lost next to
    flat or steady rows. When most peaks sit on one lattice of row positions, every
    lattice position between the first and last such peak without a peak gets the
    strongest level near it (whether it holds a trace is checked like any row's);
    peaks off the lattice are kept only when no lattice row is near them.
    """
    if len(peaks) < _MIN_PEAKS_FOR_PITCH:
        return peaks
    arr = np.asarray(peaks, dtype=np.float64)
    pitch = float(np.median(np.diff(arr)))
    if pitch <= 0:
        return peaks
    # Lattice index of every peak from the median spacing, then position and pitch
    # refined by a line fit through the peaks on the lattice (twice).
    k = np.round((arr - arr[0]) / pitch)
    phase = float(arr[0])
    on = np.ones(arr.size, dtype=bool)
    for _ in range(2):
        if on.sum() < 2 or np.unique(k[on]).size < 2:
            return peaks
        pitch, phase = (float(v) for v in np.polyfit(k[on], arr[on], 1))
        on = np.abs(arr - phase - k * pitch) <= _LATTICE_TOLERANCE * pitch
    if on.sum() < _MIN_ON_LATTICE_FRACTION * arr.size:
        return peaks
    level = float(smooth.max())
    by_slot = {int(kk): int(p) for kk, p, ok in zip(k, peaks, on, strict=True) if ok}
    out = list(by_slot.values())
    for slot in range(min(by_slot), max(by_slot) + 1):
        if slot in by_slot:
            continue
        centre = phase + slot * pitch
        lo = max(0, int(round(centre - _MISSING_ROW_SEARCH * pitch)))
        hi = min(smooth.size, int(round(centre + _MISSING_ROW_SEARCH * pitch)) + 1)
        if hi <= lo or smooth[lo:hi].max() < _MIN_MISSING_ROW_PEAK * level:
            continue
        out.append(lo + int(np.argmax(smooth[lo:hi])))
    for p, ok in zip(peaks, on, strict=True):
        if not ok and all(abs(p - q) >= 0.5 * pitch for q in out):
            out.append(p)
    return sorted(out)


def _longest_extent(cols: np.ndarray, gap: int) -> tuple[int, int]:
    """Span of the longest run of sorted column indices allowing gaps up to `gap`."""
    if cols.size == 0:
        return 0, 0
    breaks = np.nonzero(np.diff(cols) > gap)[0]
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks, cols.size - 1]
    spans = cols[ends] - cols[starts]
    k = int(np.argmax(spans))
    return int(cols[starts[k]]), int(cols[ends[k]]) + 1


#: How far (mm) a row's extent is followed beyond its first and last flat trace piece.
MAX_EXTENT_REACH_MM = 6.0


def reach_of_ink(mask: np.ndarray, row: TraceRow, px_per_mm: float, step: int) -> int:
    """Last column reached by ink connected to a row's trace beyond its flat extent.

    A row's extent is measured on flat trace pieces, so a row that starts or ends on a
    steep wave (a QRS cut at the panel's edge) looks shorter than printed. From the
    run nearest the baseline in the first (``step = -1``) or last (``step = 1``) column,
    ink is followed column by column while a run in the next column touches the
    current one (one empty column is bridged), up to :data:`MAX_EXTENT_REACH_MM`.

    Parameters
    ----------
    mask : numpy.ndarray
        0/1 trace ink.
    row : TraceRow
        The row, with its flat extent.
    px_per_mm : float
        Scale (px/mm).
    step : int
        -1 to extend the start, 1 to extend the end.

    Returns
    -------
    int
        The furthest column reached (the row's first or last column if none).
    """
    h, w = mask.shape
    top, bottom = max(0, row.trace_top), min(h, row.trace_bottom or h)
    col = row.x_start if step < 0 else row.x_end - 1
    limit = int(round(MAX_EXTENT_REACH_MM * px_per_mm))
    # The runs of every column the walk may visit, computed once.
    first = max(0, col - limit - 2 if step < 0 else col)
    starts, ends, _ = column_run_lists(mask[top:bottom, first:min(w, col + limit + 3)])

    def runs(c: int) -> list[tuple[int, int]]:
        return list(zip(starts[c - first], ends[c - first], strict=True))

    if not runs(col):
        return col
    base = row.baseline - top
    cur = min(runs(col), key=lambda r: abs(0.5 * (r[0] + r[1]) - base))
    reached = c = col
    # Backwards, ink must overlap (not merely touch) and no gap is bridged: lead
    # labels printed under a row's start touch its first stroke.
    slack, steps = (1, (step, 2 * step)) if step > 0 else (0, (step,))
    while abs(c - col) < limit:
        nxt = None
        for c2 in (c + s for s in steps):
            if not 0 <= c2 < w:
                break
            touching = [r for r in runs(c2)
                        if r[0] <= cur[1] + slack and r[1] >= cur[0] - slack]
            if touching:
                nxt = (c2, max(touching, key=lambda r: min(r[1], cur[1]) - max(r[0], cur[0])))
                break
        if nxt is None:
            break
        c, cur = nxt
        reached = c
    return reached
