"""Step 6: the calibration pulse (1 mV rectangle, ~0.2 s wide) at the start of a row.

It gives the gain (its height is 1 mV) and the 0-mV level (its foot), and it must
not become part of the signal: the row's time origin is its falling edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgbridge.digitizer.trace import TracePath
from ecgbridge.standards import STANDARD_GAINS_MM_PER_MV

#: A measured gain within this fraction of a standard gain is that standard gain.
GAIN_SNAP_TOLERANCE: float = 0.12

#: Pulse width range in mm (0.2 s at 25 or 50 mm/s, with slack).
_MIN_WIDTH_MM, _MAX_WIDTH_MM = 1.5, 14.0
#: Pulse height range in mm.
_MIN_HEIGHT_MM, _MAX_HEIGHT_MM = 2.0, 24.0
#: The pulse must start within this many mm of the row start.
_SEARCH_MM = 16.0


@dataclass(frozen=True)
class CalibrationPulse:
    """A found calibration pulse (page pixels).

    Attributes
    ----------
    x_rise : int
        First column of the rising edge.
    x_fall : float
        Centre column of the falling edge (time 0 of the row's signal).
    height_px : float
        Pulse height (1 mV).
    foot_y : float
        Row of the pulse foot (0 mV).
    mm_per_mv : float
        Gain implied by the pulse (snapped to a standard value when close).
    edge_px : float
        Width of the rising edge in columns: the pen's horizontal width.
    """

    x_rise: int
    x_fall: float
    height_px: float
    foot_y: float
    mm_per_mv: float
    edge_px: float = 1.0


#: Crossings of a pulse's falling edge needed to place it between columns.
_MIN_EDGE_CROSSINGS = 3


def find_pulse(path: TracePath, px_per_mm_x: float, px_per_mm_y: float,
               from_end: bool = False) -> CalibrationPulse | None:
    """Look for a calibration pulse at the start (or end) of a followed row trace.

    Parameters
    ----------
    path : TracePath
        The trace followed over the whole row.
    px_per_mm_x, px_per_mm_y : float
        Scale.
    from_end : bool
        Look at the end of the row instead (some carts print the pulse on the right).
    """
    tall = (path.bottom - path.top) >= _MIN_HEIGHT_MM * px_per_mm_y
    tall &= np.isfinite(path.top)
    n = path.y.size
    search = int(_SEARCH_MM * px_per_mm_x)
    cols = np.nonzero(tall)[0]
    if from_end:
        cols = cols[cols >= n - search - int(_MAX_WIDTH_MM * px_per_mm_x)]
    else:
        cols = cols[cols <= search]
    if cols.size < 2:
        return None
    # Group adjacent tall columns into edges.
    groups = np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1)
    edges = [(int(g[0]), int(g[-1])) for g in groups]
    for i in range(len(edges) - 1):
        for j in range(i + 1, len(edges)):
            r0, r1 = edges[i]
            f0, f1 = edges[j]
            width_mm = (f0 - r1) / px_per_mm_x
            if width_mm > _MAX_WIDTH_MM:
                break
            if width_mm < _MIN_WIDTH_MM:
                continue
            top = _top_level(path, (r0, r1), (f0, f1), max(2.0, 0.3 * px_per_mm_y))
            if top is None:
                continue
            tops, seen_top = top
            hr = float(np.nanmax(path.bottom[r0:r1 + 1] - path.top[r0:r1 + 1]))
            hf = float(np.nanmax(path.bottom[f0:f1 + 1] - path.top[f0:f1 + 1]))
            if seen_top and not 0.8 <= hr / max(hf, 1.0) <= 1.25:
                continue
            # The foot is the level before the rise (the fall may run straight into a QRS),
            # where the rise's fullest column ends: a column beside it may hold a part of
            # the stroke only (a blurred or thin edge), and lost ink only shortens a stroke.
            # (Without its top line the rise's columns may hold stubs of it: its lowest end.)
            bottoms = path.bottom[r0:r1 + 1]
            runs = bottoms - path.top[r0:r1 + 1]
            foot = float(bottoms[int(np.nanargmax(runs))] if seen_top else np.nanmax(bottoms))
            foot -= 0.5 * (path.line_width - 1)
            height = foot - tops
            if not _MIN_HEIGHT_MM <= height / px_per_mm_y <= _MAX_HEIGHT_MM:
                continue
            gain = height / px_per_mm_y
            for std in STANDARD_GAINS_MM_PER_MV:
                if abs(gain / std - 1.0) <= GAIN_SNAP_TOLERANCE:
                    gain = std
                    # The top line's centre is exact, the foot depends on the pen's line
                    # caps: with a standard gain the foot is one gain below the top.
                    implied = tops + std * px_per_mm_y
                    if abs(implied - foot) <= path.line_width + 1.0:
                        foot, height = implied, implied - tops
                    break
            else:
                if not seen_top:  # without its top line only a standard gain is a pulse
                    continue
            # The fall may run straight into a QRS (a longer group of tall columns): its
            # width is taken from the clean rising edge.
            edge = min(f1 - f0 + 1, r1 - r0 + 1)
            x_fall = path.x0 + _fall_column(path, f0, edge, tops, foot)
            return CalibrationPulse(path.x0 + r0, x_fall, height, foot, gain, float(r1 - r0 + 1))
    return None


def _fall_column(path: TracePath, f0: int, edge: int, top: float, foot: float) -> float:
    """Column (from ``path.x0``) of the pulse's falling edge.

    Where the path has sub-pixel crossings of the edge's rows (away from the pulse's
    top line and foot) their median; else the middle of its first `edge` columns.
    """
    plain = f0 + 0.5 * (edge - 1)
    points = path.points
    if points is None:
        return plain
    margin = path.line_width
    on_edge = ((points.x > f0 - 1.0) & (points.x < f0 + edge)
               & (points.y > top + margin) & (points.y < foot - margin))
    if np.count_nonzero(on_edge) < _MIN_EDGE_CROSSINGS:
        return plain
    return float(np.median(points.x[on_edge]))


def _top_level(path: TracePath, rise: tuple[int, int], fall: tuple[int, int], tol: float
               ) -> tuple[float, bool] | None:
    """Row of a pulse's top line between its edges, and whether the line itself was seen.

    The top line is a thin straight stroke that a faint copy or the learned mask may
    lose, with the upper ends of the edges. When under 60 % of it is traced, the top is
    the higher edge's end (lost ink only shortens a stroke): the other edge must reach
    within a fifth of the pulse's height of it, and what is traced between them must lie
    at that height (but for specks: a fifth of those columns); the caller then accepts
    only a standard gain. None: no pulse top.
    """
    (r0, r1), (f0, f1) = rise, fall
    between = path.y[r1 + 1:f0]
    between = between[np.isfinite(between)]
    if between.size >= 0.6 * (f0 - r1 - 1):
        tops = float(np.median(between))
        return None if np.abs(between - tops).max() > tol else (tops, True)
    t_rise = float(np.nanmin(path.top[r0:r1 + 1]))
    t_fall = float(np.nanmin(path.top[f0:f1 + 1]))
    height = float(np.nanmedian(path.bottom[r0:r1 + 1])) - min(t_rise, t_fall)
    if abs(t_rise - t_fall) > max(tol, 0.2 * height):
        return None
    tops = min(t_rise, t_fall) + 0.5 * (path.line_width - 1)
    if between.size and np.mean(np.abs(between - tops) > tol) > 0.2:
        return None
    return tops, False
