"""Where one row's wave runs through another row's trace, the crossed trace is not read.

A tall QRS complex reaches into the neighbouring row and crosses its trace. In the
columns of the crossing both rows' followed paths take the same ink: one vertical
stroke with the crossed trace inside it (or, where the crossed row's path climbed
the wave, the whole wave). For the row whose wave it is, the path is under way there
(on a steep stroke, or at another level after than before); for the crossed row,
whose trace is level on both sides and runs through the middle of the stroke, the
stroke is foreign ink: read, it would put a spike the height of the neighbour's wave
into that lead. Those columns are left unread (NaN): the samples bridge them from
either side (up to :data:`~ecgbridge.digitizer.postprocess.MAX_BRIDGED_GAP_S`). Where
both rows are level either side (a wave whose tip only touches the other trace),
nothing is left out.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ecgbridge.digitizer.rows import PageRow
from ecgbridge.digitizer.trace import TracePath, TracePoints

#: A crossing (or a stretch where a trace followed the wave that crossed it) spans at
#: most this many pen widths (columns), and 3 columns at least.
_MAX_CROSSING_PENS = 12.0
#: A trace is level across a crossing when its rows either side differ by at most this
#: many pen widths.
_LEVEL_PENS = 2.0


def without_crossed_columns(rows: list[PageRow]) -> list[PageRow]:
    """Each row with the columns where another row's wave crosses its trace unread.

    Parameters
    ----------
    rows : list of PageRow
        The page's rows as followed.

    Returns
    -------
    list of PageRow
        The rows, with ``path.y`` NaN (and no sub-pixel points) in crossed columns.
    """
    out = list(rows)
    for j, crossed in enumerate(rows):
        blank = np.zeros(crossed.path.y.size, dtype=bool)
        for i, other in enumerate(rows):
            if i != j:
                blank |= crossed_columns(crossed.path, other.path)
        if blank.any():
            out[j] = replace(crossed, path=_unread(crossed.path, blank))
    return out


def crossed_columns(path: TracePath, other: TracePath) -> np.ndarray:
    """Columns of `path` where `other`'s stroke runs through its level trace.

    Returns a boolean array over `path`'s columns.
    """
    hit = np.zeros(path.y.size, dtype=bool)
    lo, hi = max(path.x0, other.x0), min(path.x0 + path.y.size, other.x0 + other.y.size)
    if hi - lo < 3:
        return hit
    top, bottom = (a[lo - path.x0:hi - path.x0] for a in path.read_extent)
    o_top, o_bottom = (a[lo - other.x0:hi - other.x0] for a in other.read_extent)
    with np.errstate(invalid="ignore"):
        shared = (top <= o_bottom) & (o_top <= bottom)
    if not shared.any():
        return hit
    pen = max(path.line_width, other.line_width)
    widest = max(3, int(np.ceil(_MAX_CROSSING_PENS * pen)))
    starts = np.nonzero(np.diff(np.r_[0, shared.astype(np.int8)]) == 1)[0]
    ends = np.nonzero(np.diff(np.r_[shared.astype(np.int8), 0]) == -1)[0]
    for s, e in zip(starts, ends, strict=True):
        if e - s + 1 > widest:
            continue
        a, b = int(s) + lo, int(e) + lo  # page columns
        level = _level_across(path, a, b, pen)
        # The other row must be under way across them (its wave): where it too is level
        # either side, the wave is this row's own and only touches the other's trace.
        if level is not None and _level_either_side(other, a, b, pen) is None:
            hit[a - path.x0:b - path.x0 + 1] = True
    return hit


def _level_across(path: TracePath, a: int, b: int, pen: float) -> float | None:
    """The level `path` keeps either side of page columns ``a..b`` when its runs there
    reach beyond it on both sides (a stroke passes through it); else None."""
    level = _level_either_side(path, a, b, pen)
    if level is None:
        return None
    top, bottom = (v[a - path.x0:b - path.x0 + 1] for v in path.read_extent)
    if not np.isfinite(top).any():
        return None
    return level if np.nanmin(top) + pen < level < np.nanmax(bottom) - pen else None


def _level_either_side(path: TracePath, a: int, b: int, pen: float) -> float | None:
    """The level `path` is at a pen width before and after page columns ``a..b``, when
    it is level (one level) there; else None (also at the path's ends)."""
    before = _value_near(path, a - path.x0 - 1, -1, pen)
    after = _value_near(path, b - path.x0 + 1, 1, pen)
    if before is None or after is None or abs(before - after) > _LEVEL_PENS * pen:
        return None
    return 0.5 * (before + after)


def _value_near(path: TracePath, i: int, step: int, pen: float) -> float | None:
    """The path's value a pen width beyond column index `i` (in direction `step`),
    where its trace is level there (a run no taller than a stroke); else None."""
    k = i + step * int(np.ceil(pen))
    if not 0 <= k < path.y.size or not np.isfinite(path.y[k]):
        return None
    top, bottom = path.read_extent
    if bottom[k] - top[k] + 1 > _LEVEL_PENS * pen:
        return None  # on a steep wave: the stroke is this trace's own
    return float(path.y[k])


def _unread(path: TracePath, blank: np.ndarray) -> TracePath:
    """`path` with the `blank` columns' values (and their sub-pixel points) removed."""
    y = np.where(blank, np.nan, path.y)
    points = path.points
    if points is not None:
        col = np.clip(np.rint(points.x).astype(np.int64), 0, blank.size - 1)
        keep = ~blank[col]
        points = TracePoints(points.x[keep], points.y[keep])
    return replace(path, y=y, points=points)
