"""Step 4: separate trace ink from grid ink with a threshold the grid itself chooses.

On a page whose grid is as dark as (or darker than) the paper texture, no fixed
darkness threshold works. The grid is periodic with the measured pitch, the traces
are not: the threshold is the lowest one at which the thresholded mask no longer
contains the grid comb (its column/row profiles have no energy at the grid frequency).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Candidate thresholds on the darkness map, lowest first.
_THRESHOLDS = np.round(np.arange(0.22, 0.92, 0.04), 2)
#: A mask pixel must also be darker than this fraction of the page's darkest ink.
_MIN_RELATIVE_TO_TOP = 0.4
#: Ink blobs smaller than this (mm^2) are specks: grid dots, dotted-line crossings, noise.
_MIN_BLOB_MM2 = 0.45
#: Components at least this long (mm) are strokes, kept whatever their area.
_MIN_STROKE_MM = 1.5
#: Plateau test: the mask may shrink by at most this ratio over this threshold span.
_PLATEAU_RATIO = 1.3
_PLATEAU_SPAN = 0.12
#: Straight ink runs at least this long (mm) along x or y are ruled lines, not trace.
_RULED_LINE_MM = 40.0
#: Ink at least this much darker than the grid line under it is trace ink on the line.
_DARKER_THAN_LINE = 0.1
#: A steep stroke cut by a ruled line taken out is joined again across the cut where
#: both pieces run at least this long (mm) down their column (a 1-mm grid leaves
#: pieces of a millimetre less the cut) ...
_CUT_STROKE_MIN_RUN_MM = 0.5
#: ... and the cut is at most this long (mm).
_CUT_MAX_GAP_MM = 0.6
#: Length (px) of the running mean along a line before its darkness is measured.
_LINE_SMOOTH_PX = 5
#: Side (mm) of the square within which shading is taken as flat: a bit over a grid cell.
_SHADING_WINDOW_MM = 1.2
#: Shading darker than this over more than this fraction of the page is flattened.
_SHADOW_LEVEL = 0.2
_MIN_SHADED_FRACTION = 0.05
#: Darkest local paper level (relative brightness) that shading correction divides by.
_MIN_PAPER_LEVEL = 0.1
#: Grid lines are removed when more than this fraction of the thresholded ink is ruled lines.
_MAX_GRID_IN_MASK = 0.4


def _periodic_fraction(profile: np.ndarray, period_px: float) -> float:
    """|DTFT| at the grid fundamental and its 5th harmonic, relative to the profile mass."""
    total = float(profile.sum())
    if total <= 0 or not np.isfinite(period_px) or period_px <= 1.0:
        return 0.0
    x = np.arange(profile.size, dtype=np.float64)
    frac = 0.0
    for period in (period_px, period_px / 5.0):
        if period < 2.0:
            continue
        frac = max(frac, float(np.abs(np.exp(-2j * np.pi * x / period) @ profile)) / total)
    return frac


def choose_threshold(dark_ink: np.ndarray, px_per_mm_x: float, px_per_mm_y: float) -> float:
    """Pick the darkness threshold separating trace ink from grid lines.

    The count of mask pixels falls steeply while grid ink is being cut away and then
    levels off on the traces; the threshold is the start of that plateau. When the
    curve never levels off (blurred photos), the grid-periodicity test decides.

    Parameters
    ----------
    dark_ink : numpy.ndarray
        Darkness map where trace ink is near 1 (grid may or may not be visible).
    px_per_mm_x, px_per_mm_y : float
        Grid pitch (NaN when no grid was found).

    Returns
    -------
    float
        Threshold in (0, 1).
    """
    sub = dark_ink[::2, ::2]
    top = float(np.percentile(sub, 99.7))
    floor = max(float(_THRESHOLDS[0]), _MIN_RELATIVE_TO_TOP * top)
    cands = [float(t) for t in _THRESHOLDS if t >= floor and t < 0.92 * top] or [floor]
    counts = np.array([(sub > t).sum() for t in cands], dtype=np.float64)
    step = int(round(_PLATEAU_SPAN / 0.04))
    flat = [
        counts[i] <= _PLATEAU_RATIO * max(counts[i + step], 1.0)
        for i in range(len(cands) - step)
    ]
    # Grids with major and minor lines of different darkness give several plateaus:
    # the traces are the darkest ink, i.e. the last plateau (at least two steps long).
    runs: list[tuple[int, int]] = []
    for i, ok in enumerate(flat):
        if ok and (not runs or runs[-1][1] != i - 1):
            runs.append((i, i))
        elif ok:
            runs[-1] = (runs[-1][0], i)
    long_runs = [r for r in runs if r[1] > r[0]] or runs
    if long_runs:
        return cands[long_runs[-1][0]]
    return _periodic_choice(sub, cands, px_per_mm_x, px_per_mm_y)


def threshold_candidates(dark_ink: np.ndarray, px_per_mm_x: float, px_per_mm_y: float
                         ) -> list[float]:
    """Thresholds to try, best first: the chosen one, then lower plateau starts.

    Thin, light traces break apart at the darkest plateau; the caller falls back to
    the next lower candidate when the mask yields no usable trace rows.
    """
    best = choose_threshold(dark_ink, px_per_mm_x, px_per_mm_y)
    sub = dark_ink[::2, ::2]
    top = float(np.percentile(sub, 99.7))
    floor = max(float(_THRESHOLDS[0]), _MIN_RELATIVE_TO_TOP * top)
    lower = [float(t) for t in _THRESHOLDS if floor <= t < best - 1e-9]
    higher = [float(t) for t in _THRESHOLDS if best + 1e-9 < t < 0.95 * top]
    # Grids as dark as the trace need a higher threshold, thin light traces a lower
    # one; every other step is enough.
    return [best, *higher[1::2][:2 * _MAX_RETRIES], *lower[::-2][:_MAX_RETRIES]]


#: How many lower thresholds are tried when the first yields no trace rows.
_MAX_RETRIES = 4


def _periodic_choice(sub: np.ndarray, cands: list[float], px_per_mm_x: float,
                     px_per_mm_y: float) -> float:
    """Lowest threshold at which the mask is no more periodic than at its least."""
    if np.isfinite(px_per_mm_x) and np.isfinite(px_per_mm_y) and cands:
        fracs = []
        for t in cands:
            mask = (sub > t).astype(np.float32)
            fracs.append(max(
                _periodic_fraction(mask.mean(axis=0), 2.5 * px_per_mm_x),
                _periodic_fraction(mask.mean(axis=1), 2.5 * px_per_mm_y),
            ))
        ref = min(fracs)
        for t, f in zip(cands, fracs, strict=True):
            if f <= ref + 0.04:
                return t
    return cands[len(cands) // 2]


def ruled_lines(dark_ink: np.ndarray, px_per_mm_x: float, px_per_mm_y: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Darkness of the straight lines (grid lines) of a darkness map.

    A grey opening with a long line element keeps only ink that runs straight along
    x or y for at least ``_RULED_LINE_MM``: grid lines, never a trace.

    Parameters
    ----------
    dark_ink : numpy.ndarray
        float32 darkness map of the rectified page.
    px_per_mm_x, px_per_mm_y : float
        Grid pitch.

    Returns
    -------
    tuple of numpy.ndarray
        Darkness of the lines along x (horizontal) and along y (vertical).
    """
    lx = max(5, int(round(_RULED_LINE_MM * px_per_mm_x)))
    ly = max(5, int(round(_RULED_LINE_MM * px_per_mm_y)))
    # Averaging along the line keeps pixel noise, and the darkest pixel across it keeps
    # the sub-pixel phase of a resampled (deskewed) line, from lowering the opening.
    # 8-bit levels: long openings are several times faster than on floats.
    levels = np.clip(dark_ink * 255.0 + 0.5, 0, 255).astype(np.uint8)
    smooth_x = cv2.dilate(cv2.blur(levels, (_LINE_SMOOTH_PX, 1)), np.ones((3, 1), np.uint8))
    smooth_y = cv2.dilate(cv2.blur(levels, (1, _LINE_SMOOTH_PX)), np.ones((1, 3), np.uint8))
    along_x = cv2.morphologyEx(smooth_x, cv2.MORPH_OPEN,
                               cv2.getStructuringElement(cv2.MORPH_RECT, (lx, 1)))
    along_y = cv2.morphologyEx(smooth_y, cv2.MORPH_OPEN,
                               cv2.getStructuringElement(cv2.MORPH_RECT, (1, ly)))
    scale = np.float32(1.0 / 255.0)
    return along_x.astype(np.float32) * scale, along_y.astype(np.float32) * scale


def grid_line_map(dark_ink: np.ndarray, px_per_mm_x: float, px_per_mm_y: float
                  ) -> np.ndarray:
    """Darkness of the ruled lines of ``dark_ink[::2, ::2]``, for :func:`is_grid_mask`.

    Computed at half resolution: the test is a fraction of the ink, which every
    second row and column estimates well, at a quarter of the cost.
    """
    return np.maximum(*ruled_lines(dark_ink[::2, ::2], px_per_mm_x / 2, px_per_mm_y / 2))


def grid_in_mask(dark_ink: np.ndarray, lines: np.ndarray, threshold: float) -> float:
    """Fraction of the ink above `threshold` that belongs to ruled lines.

    `lines` is the :func:`grid_line_map` of `dark_ink` (half resolution).
    """
    ink = dark_ink[::2, ::2] > threshold
    if not ink.any():
        return 0.0
    return float((lines[ink] > threshold).mean())


def remove_ruled_lines(dark_ink: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Subtract grid lines that are as dark as the traces from a darkness map.

    Black, grey or dark grids survive in ``dark_ink`` and no threshold separates them
    from the trace. Subtracting the :func:`ruled_lines` leaves the traces; ink clearly
    darker than the line under it (a trace crossing or running along it) is kept
    whole. Where a trace is no darker than the grid the crossing leaves a gap of a
    line width, which trace following bridges.

    Parameters
    ----------
    dark_ink : numpy.ndarray
        float32 darkness map of the rectified page.
    lines : numpy.ndarray
        Darkness of its ruled lines (the larger of the two :func:`ruled_lines` maps).

    Returns
    -------
    numpy.ndarray
        New darkness map without ruled lines.
    """
    return np.where(dark_ink > lines + _DARKER_THAN_LINE, dark_ink,
                    np.maximum(dark_ink - lines, 0.0)).astype(np.float32)


def join_cut_strokes(mask: np.ndarray, cut: np.ndarray, px_per_mm: float) -> np.ndarray:
    """`mask` with steep strokes joined again where a horizontal ruled line cut them.

    Taking out a grid line as dark as the traces leaves a line-wide gap in every stroke
    crossing it. Along a flat trace the gap splits the trace between two columns, which
    trace following bridges; along a steep stroke (a QRS wave's) it splits the stroke's
    run within each column, and following stops at the first gap: the wave's tip is
    lost. Pixels in `cut` between two pieces of one column that each run at least
    :data:`_CUT_STROKE_MIN_RUN_MM` down it, at most :data:`_CUT_MAX_GAP_MM` apart, are
    put back.

    Parameters
    ----------
    mask : numpy.ndarray
        Trace mask (uint8, 0/1).
    cut : numpy.ndarray
        Boolean map of where horizontal ruled lines were taken out.
    px_per_mm : float
        Vertical scale.

    Returns
    -------
    numpy.ndarray
        New mask (same dtype as `mask`).
    """
    run = max(2, int(round(_CUT_STROKE_MIN_RUN_MM * px_per_mm)))
    gap = max(3, int(round(_CUT_MAX_GAP_MM * px_per_mm)))
    ink = (mask > 0).astype(np.uint8)
    long_runs = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((run, 1), np.uint8))
    joined = cv2.morphologyEx(long_runs, cv2.MORPH_CLOSE, np.ones((gap, 1), np.uint8))
    return np.maximum(mask, ((joined > 0) & cut).astype(mask.dtype))


def trace_mask(dark_ink: np.ndarray, threshold: float, px_per_mm: float) -> np.ndarray:
    """Binary mask (uint8 0/1) of trace-like ink: thresholded, specks removed.

    Parameters
    ----------
    dark_ink : numpy.ndarray
        Darkness map.
    threshold : float
        From :func:`choose_threshold`.
    px_per_mm : float
        Scale, used to size the speck filter.
    """
    mask = (dark_ink > threshold).astype(np.uint8)
    min_area = max(3, int(round(_MIN_BLOB_MM2 * px_per_mm * px_per_mm)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n > 1:
        # Specks are small every way; thin strokes (the "I" of a label) are long.
        long_side = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
        keep = (stats[:, cv2.CC_STAT_AREA] >= min_area) | (long_side >= _MIN_STROKE_MM * px_per_mm)
        keep[0] = False
        mask = keep[labels].astype(np.uint8)
    return mask



def is_grid_mask(dark_ink: np.ndarray, lines: np.ndarray, threshold: float) -> bool:
    """True when ruled lines make up most of the ink above `threshold` (a dark grid).

    `lines` is the :func:`grid_line_map` of `dark_ink`.
    """
    return grid_in_mask(dark_ink, lines, threshold) > _MAX_GRID_IN_MASK


def without_dark_grid(dark_ink: np.ndarray, px_per_mm_x: float, px_per_mm_y: float
                      ) -> np.ndarray:
    """`dark_ink` with its shading flattened and its grid lines removed.

    For pages whose grid is as dark as the traces (see :func:`is_grid_mask`).
    """
    # The line darkness must be the same all along a line: take out shading first.
    flat = flatten_shading(dark_ink, min(px_per_mm_x, px_per_mm_y))
    return remove_ruled_lines(flat, np.maximum(*ruled_lines(flat, px_per_mm_x, px_per_mm_y)))


def flatten_shading(dark_ink: np.ndarray, px_per_mm: float) -> np.ndarray:
    """Darkness relative to the paper within about a millimetre (shadows, creases removed).

    The paper level of :mod:`normalise` is smooth over several millimetres; wrinkles
    and folds cast sharper shadows. A grey opening with a square a little larger than
    a grid cell keeps only ink that is wide every way (shadows), never lines or
    traces; darkness is then re-expressed relative to that local level. Pages with
    hardly any such shading are returned as they are.

    Parameters
    ----------
    dark_ink : numpy.ndarray
        float32 darkness map.
    px_per_mm : float
        Scale.
    """
    side = max(3, int(round(_SHADING_WINDOW_MM * px_per_mm)))
    shade = cv2.morphologyEx(dark_ink, cv2.MORPH_OPEN,
                             cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    if float((shade[::2, ::2] > _SHADOW_LEVEL).mean()) < _MIN_SHADED_FRACTION:
        # Only ink clusters (QRS tips, bold text) fill such squares: nothing to flatten.
        return dark_ink
    paper = np.maximum(1.0 - shade, _MIN_PAPER_LEVEL)
    return (np.maximum(dark_ink - shade, 0.0) / paper).astype(np.float32)
