"""Step 7b: where a followed trace crosses each row of its steep strokes, to a sub-pixel.

One value per pixel column samples a trace at the column rate, 100-200 columns a
second at 100-200 dpi: too coarse for a QRS complex. A column crossed by a steep
stroke only says that the signal swept the column's whole run somewhere inside that
column, and its run centre puts the sweep's middle at the column centre, up to half
a column (3 ms at 150 dpi) from where the stroke is. Read across, each row of the
stroke crosses the pen narrowly: the darkness-weighted centre of that crossing is
where the trace passed the row, to a fraction of a pixel. Those crossings replace the
column values of the trace's monotone steep columns; flat columns, and the columns of
a peak or trough (whose tip the crossings cannot follow: there the up and down
strokes run into one another), keep their column value.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ecgbridge.digitizer.trace import TracePath, TracePoints, extreme_columns, stroke_runs

#: A crossing wider than the pen plus this many pixels is not a steep stroke's (a flat
#: stretch, or the up and down strokes of a narrow wave running together).
_CROSSING_SLACK_PX = 1.0


def with_stroke_crossings(path: TracePath, mask: np.ndarray, darkness: np.ndarray
                          ) -> TracePath:
    """The path with :class:`~ecgbridge.digitizer.trace.TracePoints` along its strokes.

    Parameters
    ----------
    path : TracePath
        A followed trace (its values and chosen runs).
    mask : numpy.ndarray
        The ink mask the trace was followed in (page coordinates, 0/1).
    darkness : numpy.ndarray
        The page's ink darkness (same shape as `mask`), weighting each crossing.

    Returns
    -------
    TracePath
        `path` with ``points`` set: one point per column with a value, except that
        monotone steep columns contribute their rows' crossings instead.
    """
    top, bottom = path.read_extent
    ok = np.isfinite(path.y) & np.isfinite(top) & np.isfinite(bottom)
    cols = np.nonzero(ok)[0]
    if cols.size < 3:
        return path
    peak, trough = extreme_columns(top, bottom, path.line_width)
    extreme = peak | trough
    steep = np.zeros(path.y.size, dtype=bool)
    steep[cols] = stroke_runs(top[cols], bottom[cols], path.line_width) & ~extreme[cols]
    xs, ys, read = _crossings(path, mask, darkness, np.nonzero(steep)[0], extreme)
    keep = ok & ~read
    x = np.concatenate([np.nonzero(keep)[0].astype(float), xs])
    y = np.concatenate([path.y[keep], ys])
    order = np.argsort(x, kind="stable")
    return replace(path, points=TracePoints(x[order], y[order]))


def _crossings(path: TracePath, mask: np.ndarray, darkness: np.ndarray, steep: np.ndarray,
               extreme: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crossing centres (column relative to ``path.x0``, row) of the steep columns' rows,
    and which columns got at least one."""
    read = np.zeros(path.y.size, dtype=bool)
    empty = np.zeros(0)
    if steep.size == 0:
        return empty, empty, read
    top, bottom = path.read_extent
    half = 0.5 * path.line_width
    r_first = np.ceil(top[steep] + half).astype(np.int64)
    r_last = np.floor(bottom[steep] - half).astype(np.int64)
    counts = np.maximum(r_last - r_first + 1, 0)
    if counts.sum() == 0:
        return empty, empty, read
    col = np.repeat(steep, counts)
    row = np.repeat(r_first, counts) + (np.arange(counts.sum())
                                        - np.repeat(np.cumsum(counts) - counts, counts))
    # The band of the page these rows and columns lie in, with a margin of columns.
    h, w = mask.shape
    reach = int(np.ceil(path.line_width + _CROSSING_SLACK_PX)) + 1
    r0, r1 = max(int(row.min()), 0), min(int(row.max()) + 1, h)
    c0 = max(path.x0 + int(col.min()) - reach - 1, 0)
    c1 = min(path.x0 + int(col.max()) + reach + 2, w)
    inside = (row >= r0) & (row < r1)
    col, row = col[inside], row[inside]
    cc = col + path.x0 - c0
    on_ink = mask[row, cc + c0] > 0
    col, row, cc = col[on_ink], row[on_ink], cc[on_ink]
    # Only the rows holding crossings are looked at (rr indexes them).
    rows_used, rr = np.unique(row, return_inverse=True)
    ink = mask[rows_used, c0:c1] > 0
    start, end = _run_bounds(ink)
    a, z = start[rr, cc], end[rr, cc]
    narrow = z - a + 1 <= path.line_width + _CROSSING_SLACK_PX
    # A crossing reaching a peak's or trough's column is its tip, not a stroke.
    ext_cols = np.nonzero(extreme)[0] + path.x0 - c0
    ext_cols = ext_cols[(ext_cols >= 0) & (ext_cols < ink.shape[1])]
    ext = np.zeros(ink.shape[1] + 1, dtype=np.int64)
    np.add.at(ext, ext_cols + 1, 1)
    ext = np.cumsum(ext)
    clear = ext[z + 1] - ext[a] == 0
    use = narrow & clear
    col, rr, a, z = col[use], rr[use], a[use], z[use]
    # One crossing per (row, run), however many steep columns share it.
    _, first = np.unique(rr * (ink.shape[1] + 1) + a, return_index=True)
    col, rr, a, z = col[first], rr[first], a[first], z[first]
    centre = _weighted_centre(darkness[rows_used, c0:c1], rr, a, z)
    read[col] = True
    return centre + c0 - path.x0, rows_used[rr].astype(float), read


def _run_bounds(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel, the first and last column of the horizontal ink run it is in."""
    w = ink.shape[1]
    idx = np.arange(w)
    start = np.maximum.accumulate(np.where(ink, 0, idx + 1), axis=1)
    end_rev = np.maximum.accumulate(np.where(ink[:, ::-1], 0, idx + 1), axis=1)
    end = w - 1 - end_rev[:, ::-1]
    return np.minimum(start, w - 1), np.maximum(end, 0)


def _weighted_centre(dark: np.ndarray, rows: np.ndarray, a: np.ndarray, z: np.ndarray
                     ) -> np.ndarray:
    """Darkness-weighted mean column of each run ``rows, a..z`` and one pixel either side
    (the pen's anti-aliased edge lies there)."""
    w = dark.shape[1]
    d = np.clip(dark, 0.0, None).astype(np.float64)
    cum = np.zeros((d.shape[0], w + 1))
    cum_x = np.zeros((d.shape[0], w + 1))
    cum[:, 1:] = np.cumsum(d, axis=1)
    cum_x[:, 1:] = np.cumsum(d * np.arange(w), axis=1)
    lo = np.maximum(a - 1, 0)
    hi = np.minimum(z + 1, w - 1) + 1
    mass = cum[rows, hi] - cum[rows, lo]
    moment = cum_x[rows, hi] - cum_x[rows, lo]
    plain = 0.5 * (a + z)
    return np.where(mass > 0, moment / np.where(mass > 0, mass, 1.0), plain)
