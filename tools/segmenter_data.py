"""Training pages for the trace segmenter: page images with per-pixel class labels.

Reads pages rendered by the field's benchmark generator together with its per-page JSON
(`meta/<stem>.json.gz`: every plotted panel's pixel trace, lead box and label box, in the
final image's pixels) and turns each into an image at the model's scale plus a label map:

* bit 1 (``TRACE``): the drawn ECG trace (the polyline through the plotted pixels,
  drawn with the page's pen width at full resolution, kept where it covers at least a
  quarter of a model pixel), and the calibration pulse in front of a row: the pixels of
  its region (not in the JSON) about as dark as the traced ones;
* bit 2 (``TEXT``): dark pixels inside the lead-name boxes;
* bit 4 (``IGNORE``): pixels the loss skips: the edge of a trace (partly covered
  pixels), the rest of a pulse's region, the light pixels of a name box, and the
  printed header above and below the rows (text the JSON does not locate).

Everything else (paper, grid, creases, shadows, noise) is background.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ecgbridge.digitizer.segment import MODEL_LONG_SIDE_PX

TRACE, TEXT, IGNORE = 1, 2, 4
#: Pen width of the generator's traces (mm); its matplotlib line is about 0.2-0.3 mm.
PEN_MM = 0.25


@dataclass(frozen=True)
class TrainingPage:
    """One page at the model's scale: RGB image and its label bits."""

    name: str
    image: np.ndarray  # HxWx3 uint8
    labels: np.ndarray  # HxW uint8 (TRACE | TEXT | IGNORE bits)


def _quad(box: dict) -> np.ndarray:
    """A JSON box (four [row, col] corners) as an int32 polygon of (x, y) points."""
    pts = np.array([box[k] for k in ("0", "1", "2", "3")], dtype=np.float64)
    return np.round(pts[:, ::-1]).astype(np.int32)


def _dark_in(gray: np.ndarray, poly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inside-polygon mask, and its pixels darker than the box's Otsu threshold."""
    inside = np.zeros(gray.shape, np.uint8)
    cv2.fillPoly(inside, [poly], 1)
    vals = gray[inside > 0]
    dark = np.zeros(gray.shape, np.uint8)
    if vals.size >= 16 and int(vals.max()) - int(vals.min()) > 30:
        t, _ = cv2.threshold(vals.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        dark = ((gray <= t) & (inside > 0)).astype(np.uint8)
    return inside, dark


def _pulse_region(lead: dict) -> np.ndarray | None:
    """Polygon of a first-column panel's box left of its first plotted sample."""
    pixels = np.asarray(lead["plotted_pixels"], dtype=np.float64)
    if lead.get("start_sample", 1) != 0 or pixels.size == 0:
        return None
    q = _quad(lead["lead_bounding_box"]).astype(np.float64)
    top = q[1] - q[0]
    length2 = float(top @ top)
    if length2 <= 0:
        return None
    first = pixels[0, ::-1]
    f = float(np.clip((first - q[0]) @ top / length2, 0.0, 1.0))
    poly = np.array([q[0], q[0] + f * top, q[3] + f * (q[2] - q[3]), q[3]])
    return np.round(poly).astype(np.int32)


def _label_pulse(gray: np.ndarray, poly: np.ndarray, trace: np.ndarray,
                 ignore: np.ndarray, px_per_mm: float) -> None:
    """Label a calibration pulse's ink as trace; the rest of its region is ignored.

    The generator's JSON does not locate the pulse's strokes. Inside its region, pixels
    at least about as dark as the page's traced pixels are its ink (a grid line, far
    lighter than the pen on all but copies, stays out), in strokes at least 2 mm long
    (grid crossings are dark specks). Where that takes in a fifth of the region, the
    grid is as dark as the pen and the region stays unlabelled.
    """
    inside = np.zeros(gray.shape, np.uint8)
    cv2.fillPoly(inside, [poly], 1)
    grow = 2 * int(round(px_per_mm)) + 1  # the top line lies on the box's edge
    region = cv2.dilate(inside, np.ones((grow, grow), np.uint8)) > 0
    traced = trace > 0
    if not region.any() or not traced.any():
        ignore[region] = 1
        return
    ink = float(np.median(gray[traced]))
    paper = float(np.median(gray[region]))
    if paper - ink < 40:
        ignore[region] = 1
        return
    dark = (region & (gray <= ink + 0.35 * (paper - ink))).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    long_enough = np.zeros(n, bool)
    long_enough[1:] = np.maximum(stats[1:, cv2.CC_STAT_WIDTH],
                                 stats[1:, cv2.CC_STAT_HEIGHT]) >= 2.0 * px_per_mm
    dark = long_enough[lab]
    if dark.sum() > 0.2 * region.sum():  # the grid is as dark as the pen: unlabelled
        ignore[region] = 1
        return
    trace[dark] = 1
    ignore[region & ~dark] = 1


def _mark_lead_change(ignore: np.ndarray, first: np.ndarray, px_per_mm: float) -> None:
    """Ignore the lead-change bar the generator draws where a later panel starts."""
    r, c = first
    dx, dy = 1.2 * px_per_mm, 6.0 * px_per_mm
    ignore[max(0, int(r - dy)):int(r + dy) + 1, max(0, int(c - dx)):int(c + dx) + 1] = 1


def full_resolution_labels(gray: np.ndarray, meta: dict, px_per_mm: float
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trace coverage, text mask and ignore mask at the page's own resolution."""
    h, w = gray.shape
    trace = np.zeros((h, w), np.uint8)
    text = np.zeros((h, w), np.uint8)
    ignore = np.zeros((h, w), np.uint8)
    pen = max(1, int(round(PEN_MM * px_per_mm)))
    rows_top, rows_bottom = h, 0
    pulses: list[np.ndarray] = []
    for lead in meta["leads"]:
        pixels = np.asarray(lead["plotted_pixels"], dtype=np.float64)
        if pixels.size:
            pts = np.round(pixels[:, ::-1] * 16).astype(np.int32)
            cv2.polylines(trace, [pts], False, 1, thickness=pen, lineType=cv2.LINE_8, shift=4)
        box = lead.get("lead_bounding_box")
        if box:
            q = _quad(box)
            rows_top, rows_bottom = min(rows_top, q[:, 1].min()), max(rows_bottom, q[:, 1].max())
            pulse = _pulse_region(lead)
            if pulse is not None and meta.get("dc_pulse", True):
                pulses.append(pulse)
            if lead.get("start_sample", 0) > 0 and pixels.size:
                _mark_lead_change(ignore, pixels[0], px_per_mm)
        tbox = lead.get("text_bounding_box")
        if tbox:
            inside, dark = _dark_in(gray, _quad(tbox))
            text |= dark
            ignore |= inside & (1 - dark)
    for pulse in pulses:
        _label_pulse(gray, pulse, trace, ignore, px_per_mm)
    if meta.get("printed_text") or meta.get("print_header", False):
        margin = int(6 * px_per_mm)
        ignore[: max(0, rows_top - margin)] = 1
        ignore[min(h, rows_bottom + margin):] = 1
    return trace, text, ignore


def load_page(image_path: Path, meta_path: Path, px_per_mm: float) -> TrainingPage:
    """Read one generator page and build its labels at the model's scale."""
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {image_path}")
    with gzip.open(meta_path, "rt") as f:
        meta = json.load(f)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    trace, text, ignore = full_resolution_labels(gray, meta, px_per_mm)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return at_model_scale(image_path.stem, rgb, trace, text, ignore)


def at_model_scale(name: str, rgb: np.ndarray, trace: np.ndarray, text: np.ndarray,
                   ignore: np.ndarray) -> TrainingPage:
    """A page and its full-resolution label masks, resized to the model's scale.

    A model pixel is trace (or text) when the mask covers at least a quarter of it;
    pixels a trace only grazes, and ignored regions off the trace, are ignored.
    """
    h, w = trace.shape
    s = MODEL_LONG_SIDE_PX / max(h, w)
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    cover, text_s, ign = (cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA)
                          for m in (trace, text, ignore))
    labels = np.zeros(size[::-1], np.uint8)
    labels[cover >= 0.25] |= TRACE
    labels[text_s >= 0.25] |= TEXT
    edge = (cover > 0.02) & (cover < 0.25)
    labels[edge | ((ign > 0.5) & (cover < 0.25))] |= IGNORE
    return TrainingPage(name, np.ascontiguousarray(small), labels)


def load_set(folder: Path, limit: int | None = None) -> list[TrainingPage]:
    """Every page of a generator set folder (``manifest.json`` + ``meta/``)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    pages = []
    for entry in manifest[:limit]:
        pages.append(load_page(folder / entry["image"], folder / entry["meta"],
                               float(entry["px_per_mm"])))
    return pages
