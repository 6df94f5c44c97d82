"""Time base of a raster page: where each trace row's time 0 lies, and its paper speed.

A row's time origin is its calibration pulse's falling edge (plus the printer's gap
before the signal) or, without a pulse, its first ink. The rows of a printout start
at one x; where no pulse marks time 0, the rows' first ink does. Two things make the
first ink of a row a poor origin on its own: stray ink just before the trace (a
grid-line fragment, a pulse drawn as a bare rectangle and not recognised) and the
pen's width (the first inked column is the pen's edge, the first sample lies at its
centre). Full rows (250 mm) also tell the origin from where they end, the paper
speed from the pulses' width, and, on a page without grid, the scale
(:func:`place_rows`, the time-base stage).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecgbridge.digitizer.pulse import CalibrationPulse
from ecgbridge.digitizer.rows import PageRow
from ecgbridge.digitizer.scale import PageScale
from ecgbridge.digitizer.trace import TracePath
from ecgbridge.standards import (
    DEFAULT_SPEED_MM_S,
    PULSE_SECONDS,
    STANDARD_DURATION_S,
    STANDARD_TRACE_MM,
)

#: An origin read at the first ink and the rows' ends' one are averaged within this (mm).
_END_AGREE_MM = 0.75
#: ... and a pulse's fall edge (within half a pixel, but for a renderer's snapping).
_PULSE_END_AGREE_MM = 0.25
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


@dataclass(frozen=True)
class TimeBase:
    """The page's rows placed in time, with the paper speed and the final scale.

    Attributes
    ----------
    rows : tuple of PageRow
        The rows, each with `x_origin` at its time 0.
    scale : PageScale
        The page's scale (re-measured from the rows' length on a page without grid).
    speed : float
        Paper speed in mm/s.
    speed_source : str
        ``"user"``, ``"pulse"`` (the pulses' width) or ``"default"``.
    """

    rows: tuple[PageRow, ...]
    scale: PageScale
    speed: float
    speed_source: str

    @property
    def note(self) -> str:
        """What the page's warnings say about the speed ("" unless assumed)."""
        if self.speed_source != "default":
            return ""
        return f"paper speed {DEFAULT_SPEED_MM_S:g} mm/s assumed"


def place_rows(rows: tuple[PageRow, ...], scale: PageScale, paper_speed: float | None,
               even_scale: bool = True) -> TimeBase:
    """Put every row's time 0, and find the paper speed (the user's, else the pulses').

    Rows with a calibration pulse start at the pulses' common fall (plus the printer's
    gap before the signal); rows without share the others' start. Full rows' ends
    refine the origin (averaged with it when they agree within 0.25 mm of a pulse's
    fall or 0.75 mm of the first ink, else
    :func:`origins_from_row_ends` corrects larger errors). On a page without grid nor
    resolution, full rows re-measure the scale (:func:`scale_from_row_length`).
    `even_scale` False (a photographed page whose perspective was taken out: the
    scale may still vary along a row) keeps the pulses' fall as it is.
    """
    speed = paper_speed or DEFAULT_SPEED_MM_S
    speed_source = "user" if paper_speed else "default"
    ppm_x = scale.px_per_mm_x
    start_pulses = [r.start_pulse for r in rows]
    pulses = [p for p in start_pulses if p is not None]
    signal_gaps = [r.signal_gap for r in rows if r.signal_gap is not None]
    spans = [(r.x_origin, r.x_end) for r in rows]
    if pulses:
        spans, from_fall = _pulse_origins(spans, start_pulses, ppm_x)
    else:
        from_fall = set()
        spans = late_starts_to_common_origin(spans, ppm_x)
        spans = first_ink_to_first_sample(
            spans, ppm_x, float(np.median([pen_width(r.path) for r in rows])))
    # Most rows' signal starts a printer-specific gap after the pulse's fall.
    gap = float(np.median(signal_gaps)) if 2 * len(signal_gaps) > len(pulses) else 0.0
    if scale.source == "page width":
        by_rows = scale_from_row_length(spans, from_fall, gap, ppm_x)
        if by_rows is not None:
            scale = PageScale(by_rows, by_rows, "row length", scale.dpi)
            ppm_x = by_rows
    if speed_source == "default":
        pulse_speed = speed_from_pulses(pulses, ppm_x)
        if pulse_speed is not None:
            speed, speed_source = pulse_speed, "pulse"
    # The pen's horizontal width is best seen on the pulse's vertical edges.
    edges = [p.edge_px for p in pulses]
    pen_px = float(np.median(edges)) if edges else None
    max_shift = max(MAX_ROW_END_SHIFT_MM * ppm_x, gap + 1.0 * ppm_x)
    if not pulses:
        # No pulse marks time 0: the first ink may be a pulse not recognised as one
        # (0.2 s) or stray ink before the trace; full rows' ends still tell the origin.
        max_shift = max(max_shift, (PULSE_SECONDS * speed + 1.0) * ppm_x)
    paths, expected_s = [r.path for r in rows], STANDARD_TRACE_MM / speed
    starts = [(o + gap, e) if i in from_fall else (o, e) for i, (o, e) in enumerate(spans)]
    # An origin read at the pulses' fall or where the first ink starts is as uncertain
    # as the rows' ends, in the opposite way (a rendered pulse's edges snap to whole
    # pixels; a row's end carries the pen's cap): both are averaged.
    timed_by_fall = bool(pulses) and gap == 0
    averaged = (_with_row_ends(starts, paths, ppm_x * speed, ppm_x, expected_s, pen_px,
                               _PULSE_END_AGREE_MM if timed_by_fall else _END_AGREE_MM)
                if even_scale or not timed_by_fall else None)
    shifted = averaged or origins_from_row_ends(
        spans, paths, ppm_x * speed, ppm_x, expected_s=expected_s, pen_px=pen_px,
        max_shift_px=max_shift)
    if shifted is None:
        # Rows not full length (or a gap too small to tell from the row ends).
        shifted = starts
    placed = tuple(replace(r, x_origin=o, x_end=e)
                   for r, (o, e) in zip(rows, shifted, strict=True))
    return TimeBase(placed, scale, speed, speed_source)


def _with_row_ends(
    spans: list[tuple[float, float]], paths: list[TracePath], px_per_s: float, ppm: float,
    expected_s: float, pen_px: float | None, agree_mm: float,
) -> list[tuple[float, float]] | None:
    """Origins read at a pulse's fall or the first ink, averaged with the row ends' origin.

    A first sample found where the ink starts (or at a pulse's fall edge, which a
    renderer snaps to whole pixels) and a last one found where it ends are both off by
    the pen's cap and by up to half a pixel; the mean of the two origins cancels the
    cap (the pen's width drops out) and halves the rounding. Used only when both agree
    within `agree_mm` (2 px at least; None otherwise).
    """
    found = row_end_shift(spans, paths, px_per_s, ppm, expected_s, pen_px)
    if found is None or abs(found[0]) > max(2.0, agree_mm * ppm):
        return None
    return [(o + 0.5 * found[0], e) for o, e in spans]


def _pulse_origins(
    spans: list[tuple[float, float]], start_pulses: list[CalibrationPulse | None], ppm_x: float
) -> tuple[list[tuple[float, float]], set[int]]:
    """Rows' origins at their pulses' common fall; also the rows timed from a fall.

    A row without a pulse of its own that starts at (or after) the others' pulse
    takes their fall as its origin; rows whose fall is within 1 mm of the common one
    share it (edge noise averaged out).
    """
    spans = list(spans)
    falls = [p.x_fall for p in start_pulses if p is not None]
    # Rows whose time origin is a pulse's fall (their signal may start after a gap).
    from_fall = {i for i, p in enumerate(start_pulses) if p is not None}
    common = float(np.median(falls))
    rise = float(np.median([p.x_rise for p in start_pulses if p is not None]))
    for i, p in enumerate(start_pulses):
        x_origin, x_end = spans[i]
        # A row starting at the others' pulse (undetected here) or after it.
        if p is None and (x_origin > common - 5.0 * ppm_x or abs(x_origin - rise) < 3 * ppm_x):
            spans[i] = (common, x_end)
            from_fall.add(i)
        elif p is not None and abs(p.x_fall - common) <= 1.0 * ppm_x:
            # Rows of one page share their time origin: average out edge noise.
            spans[i] = (common, x_end)
    return spans, from_fall


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
    found = row_end_shift(spans, paths, px_per_s, ppm, expected_s, pen_px)
    if found is None:
        return None
    shift, n_agree = found
    if not 0.75 * ppm < abs(shift) <= max_shift_px:
        return None
    if abs(shift) > MAX_ROW_END_SHIFT_MM * ppm and n_agree < 2:
        return None  # a large shift needs two rows ending together
    return [(o + shift, e) for o, e in spans]


def row_end_shift(
    spans: list[tuple[float, float]], paths: list[TracePath], px_per_s: float, ppm: float,
    expected_s: float = STANDARD_DURATION_S, pen_px: float | None = None,
) -> tuple[float, int] | None:
    """Shift of the rows' origins implied by where full rows end, and how many agree.

    See :func:`origins_from_row_ends`; None when fewer than two rows are full length.
    """
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
    return float(np.median(arr[agree])), int(agree.sum())


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
