"""Trace ink of a raster page and the trace rows it shows.

The learned engine takes the segmentation model's trace map; the classical engine
takes ink darker than a threshold once grid lines are removed, the threshold kept
being the first candidate whose mask gives plausible, well-covered trace rows
(:func:`trace_mask_and_rows`). A page with no trace row, or with more line-like
rows than an ECG has, is refused (:func:`find_trace_ink`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgbridge.digitizer.inkmask import (
    grid_line_map,
    is_grid_mask,
    threshold_candidates,
    trace_mask,
    without_dark_grid,
)
from ecgbridge.digitizer.rectify import RectifiedPage
from ecgbridge.digitizer.rows import TraceRow, find_rows
from ecgbridge.digitizer.scale import PageScale
from ecgbridge.digitizer.segment import learned_masks
from ecgbridge.errors import DigitizationError, NotAnEcgError

#: More trace rows than this on one page: not an ECG (or grid lines taken for traces).
_MAX_ROWS = 20
#: Most rows a known layout has (12x1 plus 3 rhythm strips); more: grid lines kept.
_MAX_PLAUSIBLE_ROWS = 15
#: Median fraction of a row's columns with trace ink for the ink threshold to be accepted.
_MIN_ROW_COVERAGE = 0.6


@dataclass(frozen=True)
class TraceInk:
    """The page's trace ink and the trace rows found in it.

    Attributes
    ----------
    mask : numpy.ndarray
        Trace-ink mask (uint8, 1 = trace ink) of the rectified page.
    rows : tuple of TraceRow
        Trace rows, top to bottom.
    pulse_search : numpy.ndarray
        The mask calibration pulses are looked for in before a row's start (the
        learned engine restores there the thin strokes its model half-missed).
    follow : numpy.ndarray or None
        The mask traces are followed in, where it differs from `mask` (the learned
        engine leaves out ink its model takes for printed text); None: `mask`.
    """

    mask: np.ndarray
    rows: tuple[TraceRow, ...]
    pulse_search: np.ndarray
    follow: np.ndarray | None = None

    @property
    def follow_mask(self) -> np.ndarray:
        """The mask traces are followed in."""
        return self.mask if self.follow is None else self.follow


def find_trace_ink(page: RectifiedPage, scale: PageScale, page_index: int) -> TraceInk:
    """Trace ink (learned or classical, as the page was read) and its trace rows.

    Raises
    ------
    NotAnEcgError
        No grid and no trace rows, or more line-like rows than an ECG has.
    DigitizationError
        A grid but no trace rows.
    """
    ppm_x, ppm_y = scale.px_per_mm_x, scale.px_per_mm_y
    if page.segmentation is not None:
        masks = learned_masks(page.segmentation, page.dark_ink, ppm_x, ppm_y, scale.has_grid)
        mask, pulse_search, follow = masks.trace, masks.pulse_search, masks.follow
        # Where the grid is as dark as the ink, its lines were taken out across the
        # trace too, leaving line-wide gaps.
        rows = find_rows(mask, ppm_x, ppm_y,
                         bridge_gaps=scale.has_grid and not masks.grid_told_apart)
    else:
        mask, rows = trace_mask_and_rows(page.dark_ink, ppm_x, ppm_y, scale.has_grid)
        pulse_search, follow = mask, None
    if not rows:
        if not scale.has_grid:
            raise NotAnEcgError(
                f"page {page_index + 1} does not look like an ECG: no grid and no trace rows found"
            )
        raise DigitizationError(f"page {page_index + 1}: grid found but no trace rows")
    if len(rows) > _MAX_ROWS:
        raise NotAnEcgError(
            f"page {page_index + 1} does not look like an ECG: {len(rows)} line-like rows found"
        )
    return TraceInk(mask, tuple(rows), pulse_search, follow)


def trace_mask_and_rows(dark_ink: np.ndarray, ppm_x: float, ppm_y: float, has_grid: bool
                        ) -> tuple[np.ndarray, list[TraceRow]]:
    """Trace-ink mask and its trace rows, at the first convincing ink threshold.

    When the ink above the first candidate threshold is mostly grid lines (a grid as
    dark as the traces), the grid lines are removed from the darkness map first; if
    that map gives no convincing rows, the thresholds are tried on the original map,
    passing over those whose mask is mostly grid. When none is convincing (noisy
    traces have few flat pieces), the threshold whose rows show the most trace is
    kept, or the first choice (its failure is reported by the caller).
    """
    lines = grid_line_map(dark_ink, ppm_x, ppm_y) if has_grid else None
    thresholds = threshold_candidates(dark_ink, ppm_x if has_grid else np.nan,
                                      ppm_y if has_grid else np.nan)
    if lines is not None and is_grid_mask(dark_ink, lines, thresholds[0]):
        cleaned = without_dark_grid(dark_ink, ppm_x, ppm_y)
        found, tried = _first_convincing(cleaned, None, ppm_x, ppm_y, has_grid,
                                         bridge_gaps=True)
        if found is None:
            found, _ = _first_convincing(dark_ink, lines, ppm_x, ppm_y, has_grid)
        if found is not None:
            return found
        dark_ink, bridge_gaps = cleaned, True
        thresholds = threshold_candidates(dark_ink, ppm_x, ppm_y)
    else:
        found, tried = _first_convincing(dark_ink, None, ppm_x, ppm_y, has_grid)
        if found is not None:
            return found
        bridge_gaps = False
    usable = [t for t in tried if t[1] and len(t[1]) <= _MAX_PLAUSIBLE_ROWS]
    if usable:
        threshold, rows = max(usable, key=lambda t: _median_trace_seen(t[1]))
        return trace_mask(dark_ink, threshold, ppm_x), rows
    mask = trace_mask(dark_ink, thresholds[0], ppm_x)
    return mask, find_rows(mask, ppm_x, ppm_y, bridge_gaps)


def _first_convincing(dark_ink: np.ndarray, lines: np.ndarray | None, ppm_x: float,
                      ppm_y: float, has_grid: bool, bridge_gaps: bool = False
                      ) -> tuple[tuple[np.ndarray, list[TraceRow]] | None,
                                 list[tuple[float, list[TraceRow]]]]:
    """Mask and rows at the first candidate threshold giving plausible trace rows.

    Also returns the rows of every threshold tried (those not passed over as grid).
    """
    tried: list[tuple[float, list[TraceRow]]] = []
    for threshold in threshold_candidates(dark_ink, ppm_x if has_grid else np.nan,
                                          ppm_y if has_grid else np.nan):
        if lines is not None and is_grid_mask(dark_ink, lines, threshold):
            continue
        mask = trace_mask(dark_ink, threshold, ppm_x)
        rows = find_rows(mask, ppm_x, ppm_y, bridge_gaps)
        tried.append((threshold, rows))
        if rows and len(rows) <= _MAX_PLAUSIBLE_ROWS and _median_coverage(rows) \
                >= _MIN_ROW_COVERAGE:
            return (mask, rows), tried
    return None, tried


def _median_coverage(rows: list[TraceRow]) -> float:
    """Median fraction of their columns in which the rows' trace was seen."""
    return float(np.median([r.coverage for r in rows])) if rows else 0.0


def _median_trace_seen(rows: list[TraceRow]) -> float:
    """Median number of columns in which the rows' trace was seen."""
    return float(np.median([r.coverage * (r.x_end - r.x_start) for r in rows]))
