"""Scale of a raster page: pixels per mm across and down.

The ECG grid gives it (1 mm minor lines, :func:`ecgbridge.digitizer.grid.measure_grid`).
A page without a grid takes it from its rendering resolution (PDF pages), else from
an assumed page width; the time base may later re-measure it from the trace rows'
length (:func:`ecgbridge.digitizer.timebase.place_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgbridge.digitizer.grid import measure_grid

#: Page width assumed for a gridless raster page without a known resolution: US letter
#: landscape, 11 inches (an A4 page's rows then measure 6 % long, and the rows' length
#: takes over, :func:`ecgbridge.digitizer.timebase.scale_from_row_length`).
ASSUMED_PAGE_WIDTH_MM = 279.4
#: Where a page's scale came from, and what the page's warnings say about it.
_NOTES: dict[str, str] = {
    "grid": "",
    "dpi": "no grid found: scale taken from the rendering resolution ({dpi:g} dpi)",
    "page width": "no grid found: scale assumed from the page width (279.4 mm, US letter)",
    "row length": "no grid found: scale taken from the length of the trace rows (250 mm)",
}


@dataclass(frozen=True)
class PageScale:
    """The page's scale and where it came from.

    Attributes
    ----------
    px_per_mm_x, px_per_mm_y : float
        Pixels per mm across and down.
    source : str
        ``"grid"``, ``"dpi"`` (rendering resolution), ``"page width"`` (assumed) or
        ``"row length"`` (full trace rows taken as 250 mm).
    dpi : float or None
        The rendering resolution, when the page has one.
    """

    px_per_mm_x: float
    px_per_mm_y: float
    source: str
    dpi: float | None = None

    @property
    def has_grid(self) -> bool:
        """True when the ECG grid was measured."""
        return self.source == "grid"

    @property
    def note(self) -> str:
        """What the page's warnings say about the scale ("" for a measured grid)."""
        return _NOTES[self.source].format(dpi=self.dpi or 0.0)


def measure_scale(any_ink: np.ndarray, dpi: float | None) -> PageScale:
    """The page's scale: from its grid, else its resolution, else an assumed width.

    Parameters
    ----------
    any_ink : numpy.ndarray
        Darkness map of the rectified page (grid visible).
    dpi : float, optional
        Rendering resolution of the page (PDF pages).

    Returns
    -------
    PageScale
    """
    gx, gy = measure_grid(any_ink)
    if np.isfinite(gx.px_per_mm) and np.isfinite(gy.px_per_mm):
        return PageScale(float(gx.px_per_mm), float(gy.px_per_mm), "grid", dpi)
    if dpi:
        return PageScale(float(dpi) / 25.4, float(dpi) / 25.4, "dpi", dpi)
    # No grid (pure black/white print): assume a landscape US letter page.
    width = any_ink.shape[1] / ASSUMED_PAGE_WIDTH_MM
    return PageScale(width, width, "page width", dpi)
