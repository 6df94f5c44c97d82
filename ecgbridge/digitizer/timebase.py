"""Time base of a raster page: where each trace row's time 0 lies, and its paper speed.

A row's time origin is its calibration pulse's falling edge (plus the printer's gap
before the signal) or, without a pulse, its first ink. The rows of a printout start
at one x; where no pulse marks time 0, the rows' first ink does. Two things make the
first ink of a row a poor origin on its own: stray ink just before the trace (a
grid-line fragment, a pulse drawn as a bare rectangle and not recognised) and the
pen's width (the first inked column is the pen's edge, the first sample lies at its
centre). Full rows (250 mm) also tell the origin from where they end, the paper
speed from the pulses' width, and, on a page without grid, the scale.
"""

from __future__ import annotations

import numpy as np

from ecgbridge.digitizer.pulse import CalibrationPulse
from ecgbridge.digitizer.trace import TracePath
from ecgbridge.standards import PULSE_SECONDS, STANDARD_DURATION_S, STANDARD_TRACE_MM

#: Rows whose first ink lies within this many mm of each other start together.
SAME_START_MM = 1.0
#: Rows within this many seconds of 10 s get their time origin from their end.
_ROW_END_SNAP_S = 0.25
#: Time of the last sample of a 10 s recording (at 500 Hz).
_LAST_SAMPLE_S = 0.002
#: A row starting this many mm after the others (no pulses) is moved to their origin.
_LATE_START_MM = 4.0
#: Blank gaps between a calibration pulse and the signal shorter or longer than these
#: (mm) are not a printer's pulse gap (pen edge noise; a lost start of the signal).
_MIN_PULSE_GAP_MM, _MAX_PULSE_GAP_MM = 0.5, 6.0
#: Without a grid, rows within this fraction of 250 mm (assumed scale) set the scale ...
_ROW_LENGTH_SCALE_TOLERANCE = 0.1
#: ... and off from it by more than this fraction (rows cut short explain less).
_ROW_LENGTH_SCALE_MIN_MISFIT = 0.03
#: Largest time-origin shift (mm) taken from row ends without a measured pulse gap.
MAX_ROW_END_SHIFT_MM = 3.0


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


def origins_from_row_ends(
    spans: list[tuple[float, float]], paths: list[TracePath], px_per_s: float, ppm: float,
    expected_s: float = STANDARD_DURATION_S, pen_px: float | None = None,
    max_shift_px: float | None = None,
) -> list[tuple[float, float]] | None:
    """Correct the rows' time origin from where full 10 s rows end.

    Printers leave a device-specific gap (0 to a few mm) between the calibration
    pulse and the signal, but a full row (250 mm: 10 s at 25 mm/s, 5 s at 50 mm/s)
    ends exactly `expected_s` after its start. For every row whose extent is within
    2.5 % of that the implied origin is computed; the largest (from the longest row,
    0.75 mm to `max_shift_px`, default 3 mm; beyond 3 mm only when two rows end
    together) is applied to every row, as rows can only be cut short. Returns None
    when no shift is found.
    """
    if max_shift_px is None:
        max_shift_px = MAX_ROW_END_SHIFT_MM * ppm
    deltas = []
    for (x_origin, x_end), path in zip(spans, paths, strict=True):
        pen = pen_px if pen_px is not None else path.line_width
        x_last = x_end - 0.5 - 0.5 * pen
        total = (x_last - x_origin) / px_per_s
        if abs(total - expected_s) <= _ROW_END_SNAP_S * expected_s / STANDARD_DURATION_S:
            deltas.append(x_last - (expected_s - _LAST_SAMPLE_S) * px_per_s - x_origin)
    if len(deltas) < 2:
        return None
    arr = np.sort(np.asarray(deltas))[::-1]
    # Rows are only ever cut short (page edges, faded ink, a last wave lost in the
    # next panel's marker), never longer: the longest full row is the one to trust;
    # rows agreeing with it (within 0.5 mm) refine the estimate.
    agree = np.abs(arr - arr[0]) <= 0.5 * ppm
    shift = float(np.median(arr[agree]))
    if not 0.75 * ppm < abs(shift) <= max_shift_px:
        return None
    if abs(shift) > MAX_ROW_END_SHIFT_MM * ppm and agree.sum() < 2:
        return None  # a large shift needs two rows ending together
    return [(o + shift, e) for o, e in spans]


def gap_after_pulse(path: TracePath, pulse: CalibrationPulse, ppm_x: float) -> float | None:
    """Distance (px) from a pulse's fall to the row's first signal sample, if there is a gap.

    Printers leave a device-specific blank gap (0 to a few mm) between the calibration
    pulse and the signal; the signal's time origin is where its ink starts again (the
    centre of the pen's first column). Returns None when the trace runs on from the
    pulse or when the gap is implausibly short or long.
    """
    pen = max(pulse.edge_px, 1.0)
    c = int(np.ceil(pulse.x_fall + 0.5 * pen)) - path.x0
    n = path.y.size
    if not 0 <= c < n:
        return None
    empty = ~np.isfinite(path.y[c:])
    if not empty[: int(np.ceil(pen)) + 1].any():
        return None  # the trace continues from the pulse's foot
    first_empty = int(np.argmax(empty))
    inked = np.nonzero(~empty[first_empty:])[0]
    if inked.size == 0:
        return None
    start = path.x0 + c + first_empty + int(inked[0]) + 0.5 * (pen - 1.0)
    gap = start - pulse.x_fall
    if not _MIN_PULSE_GAP_MM * ppm_x <= gap <= _MAX_PULSE_GAP_MM * ppm_x:
        return None
    return float(gap)


def speed_from_pulses(pulses: list[CalibrationPulse], ppm_x: float) -> float | None:
    """Paper speed from the calibration pulses' width (0.2 s: 5 mm at 25, 10 mm at 50 mm/s).

    Returns None when no pulse was found or their width matches neither speed.
    """
    if not pulses:
        return None
    width_mm = float(np.median([(p.x_fall - p.x_rise) / ppm_x for p in pulses]))
    for speed in (25.0, 50.0):
        nominal = PULSE_SECONDS * speed
        if 0.75 * nominal <= width_mm <= 1.3 * nominal:
            return speed
    return None


def scale_from_row_length(
    spans: list[tuple[float, float]], from_fall: set[int], gap: float, ppm: float
) -> float | None:
    """Horizontal scale (px/mm) from full trace rows, for a page without a grid.

    A full row of a standard printout is 250 mm long (10 s at 25 mm/s, 5 s at
    50 mm/s). When the typical row, measured with the assumed scale `ppm`, is off
    from that by more than row ends cut short explain but less than
    :data:`_ROW_LENGTH_SCALE_TOLERANCE`, it is the better ruler: the page size
    behind the assumed scale was wrong (A4 rather than letter, a scan's margins).
    """
    lengths = [e - (o + gap if i in from_fall else o) for i, (o, e) in enumerate(spans)]
    if not lengths:
        return None
    row_length = typical_row_length(lengths)
    misfit = abs(row_length / ppm / STANDARD_TRACE_MM - 1.0)
    if not _ROW_LENGTH_SCALE_MIN_MISFIT < misfit <= _ROW_LENGTH_SCALE_TOLERANCE:
        # Close to the assumed scale: rows cut short (faint ends) would only distort it.
        return None
    return float(row_length / STANDARD_TRACE_MM)


def typical_row_length(lengths: list[float]) -> float:
    """The rows' common length: the longest, unless it alone sticks out by over 3 %."""
    arr = sorted(lengths, reverse=True)
    if len(arr) >= 3 and arr[0] > 1.03 * arr[1] and arr[1] <= 1.03 * arr[2]:
        return float(arr[1])
    return float(arr[0])


def late_starts_to_common_origin(
    spans: list[tuple[float, float]], ppm_x: float
) -> list[tuple[float, float]]:
    """Without calibration pulses, move rows that start late to the page's common origin.

    The rows of a printout start at one x; a row found to start well after the
    others (its first waves faint or lost) but ending with them starts there too.
    The common origin is where most rows start together (stray ink before one row's
    trace does not move it), else the earliest start that two rows share.
    """
    tol = _LATE_START_MM * ppm_x
    starts = sorted(o for o, _e in spans)
    shared = [a for a, b in zip(starts, starts[1:], strict=False) if b - a <= tol]
    if not shared:
        return spans
    common = consensus_start(np.array(starts), SAME_START_MM * ppm_x)
    common = shared[0] if common is None else common
    end = float(np.median([e for _o, e in spans]))
    out = []
    for o, e in spans:
        if o - common > tol and abs(e - end) <= tol and o < common + 0.5 * (end - common):
            o = common
        out.append((o, e))
    return out


def first_ink_to_first_sample(
    spans: list[tuple[float, float]], ppm_x: float, pen_px: float = 1.0
) -> list[tuple[float, float]]:
    """Without pulses, give the rows that start together their first sample's column.

    Rows of a page start at one x, but a row whose first samples are faint or lie on a
    steep wave is found to start a pixel or two late, and stray ink can make one start
    early; rows starting within :data:`_LATE_START_MM` of the median start share the
    start most of them agree on (:func:`first_sample_origin`, the earliest
    of them when no two agree), moved in by half the pen's width `pen_px`.
    """
    if not spans:
        return spans
    tol = _LATE_START_MM * ppm_x
    starts = np.array([o for o, _e in spans])
    together = np.abs(starts - np.median(starts)) <= tol
    if not together.any():
        return spans
    origin = first_sample_origin(starts[together], ppm_x, pen_px)
    if origin is None:
        origin = float(starts[together].min()) + 0.5 * max(pen_px - 1.0, 0.0)
    return [(origin if ok else o, e) for ok, (o, e) in zip(together, spans, strict=True)]
