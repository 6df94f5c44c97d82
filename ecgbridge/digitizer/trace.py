"""Step 7: follow one trace through the ink mask with dynamic programming.

In every pixel column of a row band the ink forms vertical runs (the trace, and
possibly grid remnants, text, or a neighbouring lead's tall QRS). The path chooses
one run per column minimising the vertical jumps between consecutive runs, with a
small pull toward the row's baseline. A column's value is the centre of its run,
except for vertical strokes (runs much taller than the line width): their extreme
end is used when both neighbours lie on the same side (a peak), so R and S waves
are not cut; a tall stroke the path passes by (threading through specks at the
foot of a narrow QRS) is read with the column it touches. Values are then re-read
from the stroke's core (the ink eroded by most of the pen width), which undoes the
pen's horizontal smearing of steep waves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

#: Cost per mm of distance from the baseline (tie-breaker only).
_BASELINE_PULL_PER_MM = 0.15
#: Cost per pixel of column without ink (keeps the path through gaps).
_EMPTY_COLUMN_COST = 0.5
#: Cost taken off per pixel shared by consecutive columns' runs. Where a narrow R wave's
#: up and down strokes leave a hole at its tip, the column holds two runs that both
#: touch the previous column's: the tall one continues the stroke, a speck of ink at
#: the hole's foot does not (the baseline pull alone preferred the speck).
_OVERLAP_BONUS = 0.15
#: A run taller than this many pen widths is a vertical stroke (a steep wave).
_STROKE_PENS = 2.0
#: Pens at least this wide (pixels) are read from their eroded core.
_MIN_CORE_PEN_PX = 3.0
#: Erosion disc size for those pens (pixels).
_CORE_KERNEL_PX = 3


@dataclass(frozen=True)
class TracePoints:
    """A followed trace as points finer than its columns (see :mod:`trace_fine`).

    Attributes
    ----------
    x : numpy.ndarray
        Column positions relative to the path's first column, sub-pixel, ascending.
    y : numpy.ndarray
        Page row of the trace at each position.
    """

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class TracePath:
    """The followed trace of one band segment.

    Attributes
    ----------
    x0 : int
        First pixel column.
    y : numpy.ndarray
        Row of the trace in every column from `x0` (NaN where no ink).
    top, bottom : numpy.ndarray
        Chosen run's first and last row per column (NaN where no ink).
    line_width : float
        Median run height (pixels): the pen width.
    stroke_top, stroke_bottom : numpy.ndarray or None
        Extent the column's value is read from: the chosen run widened over the QRS
        strokes the path touches there (see :func:`follow_trace`); None: `top` and
        `bottom`.
    """

    x0: int
    y: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    line_width: float
    stroke_top: np.ndarray | None = None
    stroke_bottom: np.ndarray | None = None
    points: TracePoints | None = None

    @property
    def read_extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Per column, the first and last row the value is read from."""
        if self.stroke_top is None or self.stroke_bottom is None:
            return self.top, self.bottom
        return self.stroke_top, self.stroke_bottom

    @property
    def found_fraction(self) -> float:
        """Fraction of columns where the trace was seen."""
        return float(np.isfinite(self.y).mean()) if self.y.size else 0.0


def column_run_lists(sub: np.ndarray) -> tuple[list[list[int]], list[list[int]], np.ndarray]:
    """Vertical ink runs of every column of a binary image, as Python lists.

    Returns
    -------
    tuple
        Per column, the list of run start rows and the list of run end rows (inclusive),
        and every run's height as one array.
    """
    h, w = sub.shape
    padded = np.zeros((w, h + 2), dtype=np.int8)
    padded[:, 1:-1] = sub.T > 0
    d = np.diff(padded, axis=1)
    sc, sr = np.nonzero(d == 1)
    _ec, er = np.nonzero(d == -1)
    er = er - 1
    bounds = np.searchsorted(sc, np.arange(w + 1)).tolist()
    s_all, e_all = sr.tolist(), er.tolist()
    starts = [s_all[bounds[c]: bounds[c + 1]] for c in range(w)]
    ends = [e_all[bounds[c]: bounds[c + 1]] for c in range(w)]
    return starts, ends, er - sr + 1


def follow_trace(
    mask: np.ndarray, x0: int, x1: int, top: int, bottom: int, baseline: float, px_per_mm: float
) -> TracePath:
    """Follow the trace in ``mask[top:bottom, x0:x1]``.

    Parameters
    ----------
    mask : numpy.ndarray
        uint8 0/1 ink mask of the rectified page.
    x0, x1 : int
        Column range (exclusive end).
    top, bottom : int
        Row band (exclusive bottom).
    baseline : float
        Expected resting row of the trace (page coordinates).
    px_per_mm : float
        Vertical scale.
    """
    x0, x1 = max(0, x0), min(mask.shape[1], x1)
    top, bottom = max(0, top), min(mask.shape[0], bottom)
    w = max(0, x1 - x0)
    nan = np.full(w, np.nan)
    if w == 0 or bottom <= top:
        return TracePath(x0, nan, nan.copy(), nan.copy(), 1.0)
    starts, ends, heights = column_run_lists(mask[top:bottom, x0:x1])
    line_width = float(np.median(heights)) if heights.size else 1.0
    base = baseline - top
    pull = _BASELINE_PULL_PER_MM / max(px_per_mm, 1e-6)
    # Plain Python lists: columns hold a handful of runs, where numpy's per-call
    # overhead would dominate.
    back: list[list[int] | None] = []
    cost: list[float] = []
    prev_t: list[int] = []
    prev_b: list[int] = []
    for s_list, e_list in zip(starts, ends, strict=True):
        if not s_list:
            back.append(None)
            cost = [c + _EMPTY_COLUMN_COST for c in cost]
            continue
        nodes = [pull * abs(0.5 * (a + b) - base) for a, b in zip(s_list, e_list, strict=True)]
        if not cost:
            back.append([-1] * len(s_list))
            cost = nodes
        else:
            new_cost = []
            choice = []
            for a, b, node in zip(s_list, e_list, nodes, strict=True):
                best_i, best = 0, float("inf")
                for i, (c, pt, pb) in enumerate(zip(cost, prev_t, prev_b, strict=True)):
                    step: float
                    if a > pb:
                        step = a - pb
                    elif pt > b:
                        step = pt - b
                    else:  # overlapping runs: the more they share, the likelier one stroke
                        step = -_OVERLAP_BONUS * (min(b, pb) - max(a, pt) + 1)
                    if c + step < best:
                        best_i, best = i, c + step
                choice.append(best_i)
                new_cost.append(best + node)
            back.append(choice)
            cost = new_cost
        prev_t, prev_b = s_list, e_list
    y_top = nan.copy()
    y_bot = nan.copy()
    if cost:
        j = int(np.argmin(cost))
        for c in range(w - 1, -1, -1):
            bp = back[c]
            if bp is None:
                continue
            y_top[c], y_bot[c] = starts[c][j], ends[c][j]
            j = bp[j]
            if j < 0:
                break
    s_top, s_bot = _with_touching_strokes(y_top, y_bot, starts, ends, line_width,
                                          bottom - top)
    y = _run_values(s_top, s_bot, line_width)
    return TracePath(x0, y + top, y_top + top, y_bot + top, line_width, s_top + top,
                     s_bot + top)


def _with_touching_strokes(y_top: np.ndarray, y_bot: np.ndarray, starts: list[list[int]],
                           ends: list[list[int]], line_width: float, band_height: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Each column's chosen run widened over the strokes the path touches there.

    Where a narrow QRS's up and down strokes leave a hole at their foot, the path
    can thread through specks in the hole and skip a stroke: the column's chosen
    run is a speck, and the column holds a stroke (:func:`_is_stroke`) that
    continues the stroke the path took in the next or previous column but is not
    chosen. It is part of the trace: where the widened run holds the wave's peak
    or trough, the column is read from it. (A label glyph touching a flat stretch
    of trace is not taken, nor a stroke reaching the band's edge: it runs on into
    a neighbouring row, whose QRS falls at the same instants on a 12x1 page.)

    Parameters
    ----------
    y_top, y_bot : numpy.ndarray
        Chosen run's first and last row per column (band coordinates, NaN: none).
    starts, ends : list of list of int
        Every column's runs (:func:`column_run_lists`).
    line_width : float
        Pen width (pixels).
    band_height : int
        Rows of the band followed.

    Returns
    -------
    tuple of numpy.ndarray
        Widened first and last rows (the chosen runs themselves are unchanged: the
        pulse, marker and row-extent readings measure those).
    """
    w = y_top.size
    out_t, out_b = y_top.copy(), y_bot.copy()
    with np.errstate(invalid="ignore"):
        on_stroke = y_bot - y_top + 1 > _STROKE_PENS * line_width
    beside = np.zeros(w, dtype=bool)
    beside[1:] |= on_stroke[:-1]
    beside[:-1] |= on_stroke[1:]
    # Only a speck beside a column the path took on a stroke can be widened.
    for c in np.nonzero(np.isfinite(y_top) & ~on_stroke & beside)[0]:
        t, b = int(y_top[c]), int(y_bot[c])
        for a, e in zip(starts[c], ends[c], strict=True):
            if not _is_stroke(a, e, line_width) or (a <= b and e >= t) \
                    or a == 0 or e == band_height - 1:
                continue
            if any(0 <= n < w and _is_stroke(y_top[n], y_bot[n], line_width)
                   and a <= y_bot[n] + 1 and e >= y_top[n] - 1 for n in (c - 1, c + 1)):
                t, b = min(t, a), max(b, e)
        out_t[c], out_b[c] = t, b
    # Only a wave's extreme is read from the stroke: elsewhere the wider run would
    # move the column's centre.
    peak, trough = extreme_columns(out_t, out_b, line_width)
    keep = ~(peak | trough)
    out_t[keep], out_b[keep] = y_top[keep], y_bot[keep]
    return out_t, out_b


def _is_stroke(top: float, bottom: float, line_width: float) -> bool:
    """True for a run of a vertical stroke: taller than :data:`_STROKE_PENS` pen widths."""
    return bool(bottom - top + 1 > _STROKE_PENS * line_width)


def stroke_runs(top: np.ndarray, bottom: np.ndarray, line_width: float) -> np.ndarray:
    """:func:`_is_stroke` of every run ``top[i]..bottom[i]`` (boolean array)."""
    return bottom - top + 1 > _STROKE_PENS * line_width


def _run_values(t: np.ndarray, b: np.ndarray, line_width: float) -> np.ndarray:
    """One value per column: run centre, or the stroke's extreme end at a peak.

    A column whose run reaches higher than both neighbours' runs holds a peak (its top
    is the value); lower than both, a trough. The pen inks a peak's top over its width:
    of a flat top over several columns the middle one holds the peak. Otherwise the
    run centre is used.
    """
    y = 0.5 * (t + b)
    peak, trough = extreme_columns(t, b, line_width)
    half = 0.5 * (line_width - 1)
    y[peak] = t[peak] + half
    y[trough] = b[trough] - half
    return y


def extreme_columns(t: np.ndarray, b: np.ndarray, line_width: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Columns holding a peak (a tall run reaching higher than its neighbours') and a
    trough (lower than theirs), as boolean masks over all columns."""
    peak = np.zeros(t.size, dtype=bool)
    trough = np.zeros(t.size, dtype=bool)
    idx = np.nonzero(np.isfinite(t) & np.isfinite(b))[0]
    if idx.size < 3:
        return peak, trough
    tf, bf = t[idx], b[idx]
    tall = (bf - tf) > _STROKE_PENS * line_width
    is_peak = tall & _plateau_extreme(-tf)
    peak[idx] = is_peak
    trough[idx] = tall & _plateau_extreme(bf) & ~is_peak
    return peak, trough


def _plateau_extreme(v: np.ndarray) -> np.ndarray:
    """Columns of the local maxima of `v`: the middle of a flat maximum over columns.

    A run of equal values is a maximum when the values just before and after it are
    both lower (the ends of the array count as lower); its middle column (the two
    middle ones for an even run) is marked, so a peak stays where it was drawn.
    """
    if v.size == 0:
        return np.zeros(0, dtype=bool)
    starts = np.r_[0, np.nonzero(np.diff(v) != 0)[0] + 1]
    ends = np.r_[starts[1:], v.size]  # exclusive
    level = v[starts]
    before = np.r_[-np.inf, level[:-1]]
    after = np.r_[level[1:], -np.inf]
    is_max = (level > before) & (level > after)
    out = np.zeros(v.size, dtype=bool)
    # The pen inks a peak's top over its width: the peak is the flat top's middle.
    s, n = starts[is_max], (ends - starts)[is_max]
    out[s + (n - 1) // 2] = True
    out[s + n // 2] = True
    return out


def pen_core_kernel(line_width: float) -> int:
    """Size of the disc that erodes a pen stroke of `line_width` pixels to its core.

    Returns 1 (no erosion) for pens under 3 pixels: thinner strokes would break up.
    Wider pens lose one pixel on every side; eroding more also eats into the sharp
    tips of narrow QRS complexes (their ink there is thinner than the pen).
    """
    if line_width < _MIN_CORE_PEN_PX:
        return 1
    return _CORE_KERNEL_PX


def refine_with_core(path: TracePath, core: np.ndarray) -> TracePath:
    """Read the followed trace's values from the stroke's core instead of its full ink.

    A pen of width w inks every column over the signal's extent within +-w/2 columns,
    so the centre of a column's ink run is a max-min average over that window: knees
    of steep waves are rounded off and narrow peaks are read early or low. `core` is
    the ink mask eroded by a disc a little smaller than the pen; inside each chosen
    run its rows give the centre line. Columns whose run has no core keep their value.

    Parameters
    ----------
    path : TracePath
        The path found on the full ink mask.
    core : numpy.ndarray
        The eroded ink mask (page coordinates, 0/1).
    """
    read_top, read_bottom = path.read_extent
    ok = np.isfinite(read_top)
    if not ok.any():
        return path
    cols = np.nonzero(ok)[0]
    t = read_top[cols].astype(np.int64)
    b = read_bottom[cols].astype(np.int64)
    lo, hi = int(t.min()), int(b.max()) + 1
    band = core[lo:hi, path.x0 + cols] > 0
    rows = np.arange(lo, hi)[:, None]
    inside = band & (rows >= t[None, :]) & (rows <= b[None, :])
    has = inside.any(axis=0)
    if not has.any():
        return path
    first = lo + np.argmax(inside, axis=0)
    last = hi - 1 - np.argmax(inside[::-1], axis=0)
    core_top = np.full(path.y.size, np.nan)
    core_bot = np.full(path.y.size, np.nan)
    core_top[cols[has]] = first[has]
    core_bot[cols[has]] = last[has]
    heights = (last - first + 1)[has]
    core_width = float(np.median(heights)) if heights.size else 1.0
    values = _run_values(core_top, core_bot, core_width)
    y = np.where(np.isfinite(values), values, path.y)
    return replace(path, y=y)
