"""Time origin of trace rows found without a calibration pulse.

The rows of a printout start at one x; where no pulse marks time 0, the rows' first
ink does. Two things make the first ink of a row a poor origin on its own: stray ink
just before the trace (a grid-line fragment, a pulse drawn as a bare rectangle and not
recognised) and the pen's width (the first inked column is the pen's edge, the first
sample lies at its centre).
"""

from __future__ import annotations

import numpy as np

from ecgbridge.digitizer.trace import TracePath

#: Rows whose first ink lies within this many mm of each other start together.
SAME_START_MM = 1.0


def consensus_start(starts: np.ndarray, tol_px: float) -> float | None:
    """Earliest start of the largest group of rows that start together.

    Parameters
    ----------
    starts : numpy.ndarray
        First-ink column of each row (px).
    tol_px : float
        Starts chained by steps of at most this much form one group.

    Returns
    -------
    float or None
        The earliest start of the largest group (the earliest group on a tie);
        None when no two rows start together.
    """
    order = np.sort(np.asarray(starts, dtype=float))
    if order.size < 2:
        return None
    groups = np.split(order, np.nonzero(np.diff(order) > tol_px)[0] + 1)
    best = max(groups, key=len)  # max keeps the first (earliest) of equal sizes
    return float(best[0]) if best.size >= 2 else None


def first_sample_origin(starts: np.ndarray, ppm_x: float, pen_px: float) -> float | None:
    """Column of the first sample of rows whose first ink starts at `starts`.

    Parameters
    ----------
    starts : numpy.ndarray
        First-ink column of rows that start together (px).
    ppm_x : float
        Horizontal scale (px/mm).
    pen_px : float
        The pen's width (px): the first sample is at the centre of the first stroke.

    Returns
    -------
    float or None
        The origin most rows agree on (the earliest of them: a row on a steep or faint
        first wave is found to start a pixel or two late), moved half a pen width in;
        None when no two rows start together.
    """
    common = consensus_start(starts, SAME_START_MM * ppm_x)
    if common is None:
        return None
    return common + 0.5 * max(pen_px - 1.0, 0.0)


def pen_width(path: TracePath) -> float:
    """The pen's width (px) seen on a followed trace: its thinnest vertical strokes.

    :attr:`TracePath.line_width` (the median run) grows with the trace's slopes; on the
    flat stretches (the 10th percentile of the runs) a run is the pen's width.
    """
    runs = path.bottom - path.top
    runs = runs[np.isfinite(runs)]
    return float(np.percentile(runs, 10)) + 1.0 if runs.size else path.line_width
