"""What an input turns into before digitization: one or more pages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecgbridge.ecg import SourceInfo


@dataclass(frozen=True)
class VectorPath:
    """One stroked path of a vector PDF page, in millimetres on the page.

    Attributes
    ----------
    points : numpy.ndarray
        ``(n, 2)`` array of ``(x_mm, y_mm)``, y growing downwards, in drawing order.
    stroke_rgb : tuple of float
        Stroke colour in 0-1.
    line_width_mm : float
        Stroke width.
    """

    points: np.ndarray
    stroke_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    line_width_mm: float = 0.0


@dataclass(frozen=True)
class TextItem:
    """A piece of text on a vector page, with its box in millimetres."""

    text: str
    box_mm: tuple[float, float, float, float]


@dataclass(frozen=True)
class Page:
    """One page to digitize.

    Attributes
    ----------
    image : numpy.ndarray
        RGB uint8 array ``(height, width, 3)``: the page as pixels (always present;
        for PDFs it is the rendered page).
    index : int
        0-based page number within the input.
    dpi : float or None
        Resolution the page was rendered at, when known (PDF). The scale of a raster
        page comes from its grid; only when no grid is found is it taken from `dpi`
        (with a warning). Vector pages use it to place their paths on the image.
    paths : tuple of VectorPath
        Vector strokes when the page came from a PDF with vector content.
    texts : tuple of TextItem
        Text items of a vector page.
    width_mm, height_mm : float
        Page size of a vector page (0 for raster inputs).
    """

    image: np.ndarray
    index: int = 0
    dpi: float | None = None
    paths: tuple[VectorPath, ...] = ()
    texts: tuple[TextItem, ...] = ()
    width_mm: float = 0.0
    height_mm: float = 0.0


@dataclass(frozen=True)
class LoadedInput:
    """Result of loading an input: its pages and provenance."""

    pages: tuple[Page, ...]
    source: SourceInfo = field(default_factory=SourceInfo)
