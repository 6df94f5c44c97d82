"""Review overlay: the extracted traces drawn over the (rectified) source page.

``ecgbridge digitize --format overlay`` writes ``<stem>.overlay.png`` (and
``<stem>.p2.overlay.png``... for further pages): the page faded towards white, every
extracted lead redrawn in a contrasting blue at the place the digitizer found it, the
panel boxes, and per panel a label with the lead name and its quality. A reviewer sees at
a glance whether each trace sits on the printed one and carries the right name.

Drawn with OpenCV only (no matplotlib), so the daemon can produce overlays.

Geometry (see :class:`ecgbridge.ecg.PanelInfo`): the sample at time ``t`` with value ``v``
is drawn at ``x = x0 + (t - start_s) * mm_per_s * px_per_mm_x`` and
``y = baseline_px - v * mm_per_mv * px_per_mm_y`` in the rectified frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ecgbridge.ecg import ECG, LEADS, Calibration, PanelInfo
from ecgbridge.encode.context import file_mode_of
from ecgbridge.errors import EncodingError
from ecgbridge.fsutil import write_bytes_atomic

#: Colour of the redrawn traces (RGB): a saturated blue stands out on red, pink, green,
#: grey and black grids and on black printed traces.
TRACE_RGB: tuple[int, int, int] = (0, 90, 255)

#: Colour of the panel boxes (RGB).
BOX_RGB: tuple[int, int, int] = (0, 170, 220)

#: Label colours by quality (RGB): good, doubtful, poor.
QUALITY_GOOD_RGB: tuple[int, int, int] = (0, 140, 0)
QUALITY_DOUBTFUL_RGB: tuple[int, int, int] = (220, 120, 0)
QUALITY_POOR_RGB: tuple[int, int, int] = (200, 0, 0)

#: Quality thresholds of the label colours.
QUALITY_GOOD: float = 0.7
QUALITY_DOUBTFUL: float = 0.4

#: How much of the page is kept when fading it towards white (1 = unchanged).
PAGE_OPACITY: float = 0.55

#: Height of label text in millimetres on the page.
LABEL_HEIGHT_MM: float = 2.5

#: Trace line width in millimetres on the page.
TRACE_WIDTH_MM: float = 0.25

#: Sub-pixel precision bits for cv2 drawing.
_SHIFT_BITS = 4

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def overlay_file_name(stem: str, page_index: int) -> str:
    """``<stem>.overlay.png`` for the first page, ``<stem>.p<N>.overlay.png`` for page N >= 2."""
    return f"{stem}.overlay.png" if page_index == 0 else f"{stem}.p{page_index + 1}.overlay.png"


def write_overlay(ecg: ECG, out_dir: Path, stem: str, context: Any = None) -> list[Path]:
    """Write one overlay PNG per page of the input the ECG was digitized from.

    Parameters
    ----------
    ecg : ECG
        The digitized ECG (needs ``panels`` and a calibration with px/mm).
    out_dir : Path
        Output folder.
    stem : str
        File name stem.
    context : WriteContext
        ``context.loaded`` is the :class:`~ecgbridge.inputs.page.LoadedInput` with the pages.

    Returns
    -------
    list of Path
        The PNG files written, in page order.

    Raises
    ------
    EncodingError
        If the page images are not available or the ECG carries no page geometry.
    """
    loaded = getattr(context, "loaded", None)
    pages = getattr(loaded, "pages", None)
    if not pages:
        raise EncodingError(
            f"{stem}: the overlay format needs the source page images (digitize the file "
            "with `ecgbridge digitize --format overlay`); none were given"
        )
    check_geometry(ecg, stem)
    mode = file_mode_of(context)
    written = []
    for position, page in enumerate(pages):
        index = int(getattr(page, "index", position))
        image = draw_overlay(page.image, ecg, index, n_pages=len(pages))
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:  # pragma: no cover - cv2 fails only on invalid arrays
            raise EncodingError(f"{stem}: could not encode the overlay of page {index + 1}")
        written.append(write_bytes_atomic(out_dir / overlay_file_name(stem, index), png.tobytes(),
                                          mode=mode))
    return written


def check_geometry(ecg: ECG, stem: str = "ECG") -> None:
    """Raise EncodingError unless `ecg` says where its traces are on the page."""
    cal = ecg.calibration
    if not ecg.panels:
        raise EncodingError(
            f"{stem}: the ECG has no panel geometry (it was not digitized from a page), "
            "so there is nothing to overlay"
        )
    for name, value in (("px_per_mm_x", cal.px_per_mm_x), ("px_per_mm_y", cal.px_per_mm_y),
                        ("mm_per_s", cal.mm_per_s), ("mm_per_mv", cal.mm_per_mv)):
        if not (math.isfinite(value) and value > 0):
            raise EncodingError(f"{stem}: calibration {name} is {value!r}; cannot place traces")


def rectified_page(image: np.ndarray, calibration: Calibration) -> np.ndarray:
    """The page image in the rectified frame the panel geometry refers to (RGB uint8)."""
    rgb = _as_rgb(image)
    try:
        from ecgbridge.digitizer import geometry
    except ImportError:
        geometry = None  # type: ignore[assignment]
    rectify = getattr(geometry, "rectify_image", None)
    if rectify is not None:
        return _as_rgb(rectify(rgb, calibration))
    if not calibration.transform:
        return rgb.copy()
    if len(calibration.transform) != 9:
        raise EncodingError(
            f"calibration transform needs 9 values (3x3 homography), got "
            f"{len(calibration.transform)}"
        )
    hom = np.asarray(calibration.transform, dtype=np.float64).reshape(3, 3)
    h, w = rgb.shape[:2]
    return cv2.warpPerspective(rgb, hom, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))


def panel_trace(ecg: ECG, panel: PanelInfo) -> list[np.ndarray]:
    """Pixel polylines ``(k, 2)`` of one panel's samples (split where samples are NaN).

    Samples whose time lies within ``[start_s, start_s + duration_s]`` are placed with the
    geometry in the module docstring.
    """
    cal = ecg.calibration
    row = ecg.lead(panel.lead)
    t = ecg.time_s
    half = 0.5 / ecg.fs
    inside = (t >= panel.start_s - half) & (t <= panel.start_s + panel.duration_s + half)
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return []
    x = panel.box[0] + (t[idx] - panel.start_s) * cal.mm_per_s * cal.px_per_mm_x
    y = panel.baseline_px - row[idx] * cal.mm_per_mv * cal.px_per_mm_y
    finite = np.isfinite(y)
    segments = []
    # split into runs of finite samples
    edges = np.flatnonzero(np.diff(finite.astype(np.int8)) != 0) + 1
    for run in np.split(np.arange(idx.size), edges):
        if run.size and finite[run[0]]:
            segments.append(np.column_stack([x[run], y[run]]))
    return segments


def draw_overlay(image: np.ndarray, ecg: ECG, page_index: int = 0, n_pages: int = 1
                 ) -> np.ndarray:
    """Return the overlay of one page as an RGB uint8 array.

    The result is the rectified page with a text strip (calibration, warnings) stacked on
    top, so it is taller than the page by that strip.

    Parameters
    ----------
    image : numpy.ndarray
        The input page (grey or RGB uint8), before rectification.
    ecg : ECG
        The ECG digitized from it.
    page_index : int
        0-based page number; only panels of this page are drawn.
    n_pages : int
        Number of pages of the input (shown in the banner).
    """
    check_geometry(ecg)
    cal = ecg.calibration
    page = rectified_page(image, cal)
    canvas = (PAGE_OPACITY * page.astype(np.float32) + (1 - PAGE_OPACITY) * 255.0)
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    px_mm = float(min(cal.px_per_mm_x, cal.px_per_mm_y))
    thickness = max(2, int(round(TRACE_WIDTH_MM * px_mm)))
    panels = [p for p in ecg.panels if p.page == page_index]
    occupied = np.zeros(canvas.shape[:2], dtype=np.uint8)  # traces and labels already drawn
    for panel in panels:
        x0, y0, x1, y1 = panel.box
        _rectangle(canvas, (x0, y0), (x1, y1), BOX_RGB, 1)
        for seg in panel_trace(ecg, panel):
            pts = np.round(seg * (1 << _SHIFT_BITS)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [pts], False, TRACE_RGB, thickness, cv2.LINE_AA, _SHIFT_BITS)
            cv2.polylines(occupied, [pts], False, 1, thickness, cv2.LINE_8, _SHIFT_BITS)
    for panel in panels:
        quality = ecg.quality[LEADS.index(panel.lead)]
        _label(canvas, occupied, f"{panel.lead}  q={quality:.2f}", panel.box,
               quality_colour(quality), px_mm)
    banner = _banner(canvas.shape[1], ecg, page_index, n_pages, len(panels), px_mm)
    return np.vstack([banner, canvas])


def quality_colour(quality: float) -> tuple[int, int, int]:
    """Label colour (RGB) for a lead quality in [0, 1]."""
    if quality >= QUALITY_GOOD:
        return QUALITY_GOOD_RGB
    if quality >= QUALITY_DOUBTFUL:
        return QUALITY_DOUBTFUL_RGB
    return QUALITY_POOR_RGB


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img)
    raise EncodingError(f"page image must be grey, RGB or RGBA, got shape {img.shape}")


def _rectangle(canvas: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
               colour: tuple[int, int, int], thickness: int) -> None:
    a = (int(round(p0[0])), int(round(p0[1])))
    b = (int(round(p1[0])), int(round(p1[1])))
    cv2.rectangle(canvas, a, b, colour, thickness, cv2.LINE_AA)


def _font_scale(px_per_mm: float) -> float:
    # Hershey simplex cap height is about 22 px at scale 1.
    return max(0.35, LABEL_HEIGHT_MM * px_per_mm / 22.0)


def _label(canvas: np.ndarray, occupied: np.ndarray, text: str,
           box: tuple[float, float, float, float], colour: tuple[int, int, int],
           px_per_mm: float) -> None:
    """Draw a label at the corner of `box` where it hides the fewest traces and labels."""
    scale = _font_scale(px_per_mm)
    weight = max(1, int(round(scale * 1.5)))
    (w, h), base = cv2.getTextSize(text, _FONT, scale, weight)
    pad = max(2, int(round(0.4 * px_per_mm)))
    width, height = w + 2 * pad, h + base + 2 * pad
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    candidates = [
        (x0 + pad, y0 + pad),  # inside, top left
        (x0, y0 - height - 1),  # above, left
        (x0 + pad, y1 - height - pad),  # inside, bottom left
        (x0, y1 + 1),  # below, left
        (x1 - width - pad, y0 + pad),  # inside, top right
    ]
    best: tuple[int, int, int] | None = None
    for cx, cy in candidates:
        cx = min(max(0, cx), max(0, canvas.shape[1] - width))
        cy = min(max(0, cy), max(0, canvas.shape[0] - height))
        hidden = int(occupied[cy : cy + height, cx : cx + width].sum())
        if best is None or hidden < best[0]:
            best = (hidden, cx, cy)
    assert best is not None
    _, x, y = best
    occupied[y : y + height, x : x + width] = 1
    cv2.rectangle(canvas, (x, y), (x + width, y + height), (255, 255, 255), -1)
    cv2.rectangle(canvas, (x, y), (x + width, y + height), colour, 1)
    cv2.putText(canvas, text, (x + pad, y + pad + h), _FONT, scale, colour, weight, cv2.LINE_AA)


def _banner(width: int, ecg: ECG, page_index: int, n_pages: int, n_panels: int,
            px_per_mm: float) -> np.ndarray:
    """A white strip with what was found, stacked above the page so it hides nothing."""
    cal = ecg.calibration
    lines = [
        f"ecgbridge overlay - page {page_index + 1}/{n_pages}: {n_panels} traces (blue), "
        f"layout {cal.layout}",
        f"{cal.mm_per_s:g} mm/s ({cal.speed_source}), {cal.mm_per_mv:g} mm/mV "
        f"({cal.gain_source}), {cal.px_per_mm_x:.3f} x {cal.px_per_mm_y:.3f} px/mm, "
        f"rotation {cal.rotation_deg:+.2f} deg, {cal.method}",
    ]
    if n_panels == 0:
        lines.append("no traces were found on this page")
    lines.extend(f"warning: {w}" for w in cal.warnings[:5])
    scale = 0.8 * _font_scale(px_per_mm)
    weight = max(1, int(round(scale * 1.5)))
    sizes = [cv2.getTextSize(s, _FONT, scale, weight) for s in lines]
    line_h = max(h + b for (_, h), b in sizes) + 4
    strip = np.full((line_h * len(lines) + 8, width, 3), 255, dtype=np.uint8)
    for i, text in enumerate(lines):
        colour = QUALITY_POOR_RGB if text.startswith(("warning", "no traces")) else (20, 20, 20)
        cv2.putText(strip, text, (6, 4 + line_h * (i + 1) - 4), _FONT, scale, colour, weight,
                    cv2.LINE_AA)
    cv2.line(strip, (0, strip.shape[0] - 1), (width - 1, strip.shape[0] - 1), (150, 150, 150), 1)
    return strip
