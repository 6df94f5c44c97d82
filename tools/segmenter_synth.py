"""Training pages for the segmenter from the project's own renderer (:mod:`ecgbridge.testing`).

Pages drawn in other styles than the benchmark generator's (fonts, pens, grid colours,
dotted grids, pulse gaps, separators, 12x1/6x2 orders) with random damage, labelled
exactly from what the renderer knows: every sample's pixel (trace), the pulse it drew
(trace), the label boxes (text) and the lead-change separators (ignored).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import wfdb
from segmenter_data import TrainingPage, _dark_in, at_model_scale

from ecgbridge.ecg import LEADS
from ecgbridge.testing import render_page
from ecgbridge.testing.distort import transform_points
from ecgbridge.testing.render import PULSE_MV, PULSE_SECONDS, TRACE_X0_MM

#: Records never rendered for training (they are the shared validation set's).
VALIDATION_RECORDS = {"A1983", "A1984", "E07508", "E07509", "HR06003", "HR06004",
                      "JS20007", "JS20008"}
LAYOUTS = ("3x4+II", "3x4+II", "3x4", "3x4+V1", "3x4+3", "6x2", "6x2+II", "12x1")
GRIDS = ("red", "pink", (235, 150, 90), "green", "blue", "grey", "black", "none")


def _records(folder: Path) -> list[np.ndarray]:
    out = []
    for hea in sorted(folder.glob("*.hea")):
        if hea.stem in VALIDATION_RECORDS:
            continue
        rec = wfdb.rdrecord(str(hea.with_suffix("")))
        names = [n.upper() for n in rec.sig_name]
        out.append(np.stack([rec.p_signal[:, names.index(lead.upper())] for lead in LEADS]))
    return out


def _params(rng: np.random.Generator) -> dict:
    grid = GRIDS[int(rng.integers(len(GRIDS)))]
    grid = tuple(int(v) for v in rng.integers(60, 230, 3)) if rng.random() < 0.2 else grid
    return {
        "layout": LAYOUTS[int(rng.integers(len(LAYOUTS)))],
        "dpi": float(rng.uniform(90, 220)),
        "grid_color": grid,
        "dotted_minor": bool(rng.random() < 0.2),
        "line_width_mm": float(rng.uniform(0.15, 0.45)),
        "trace_color": tuple(int(v) for v in rng.integers(0, 70, 3)),
        "calibration_pulse": bool(rng.random() < 0.75),
        "pulse_gap_mm": float(rng.choice([0.0, 0.0, 1.5, 3.0])),
        "label_font": str(rng.choice(["sans", "sans-bold", "serif", "serif-bold"])),
        "label_position": str(rng.choice(["above", "below"])),
        "print_scale": False,
        "rotation_deg": float(rng.uniform(-6, 6)) if rng.random() < 0.6 else 0.0,
        "perspective": float(rng.uniform(0, 0.05)) if rng.random() < 0.4 else 0.0,
        "shading": float(rng.uniform(0, 0.8)) if rng.random() < 0.6 else 0.0,
        "grayscale": bool(rng.random() < 0.3),
        "blur_sigma": float(rng.uniform(0, 1.2)) if rng.random() < 0.5 else 0.0,
        "noise_sigma": float(rng.uniform(0, 12)) if rng.random() < 0.5 else 0.0,
        "jpeg_quality": int(rng.integers(40, 95)) if rng.random() < 0.7 else None,
        "crease": bool(rng.random() < 0.5),
        "seed": int(rng.integers(1 << 30)),
    }


def _labels(page, params: dict) -> np.ndarray:
    """Label bits at full resolution."""
    img = np.asarray(page.image)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    h, w = gray.shape
    ppm = page.px_per_mm
    pen = max(1, int(round(params["line_width_mm"] * ppm)))
    trace = np.zeros((h, w), np.uint8)
    text = np.zeros((h, w), np.uint8)
    ignore = np.zeros((h, w), np.uint8)
    for panel in page.panels:
        xy = panel.trace_xy[np.isfinite(panel.trace_xy).all(axis=1)]
        if len(xy) > 1:
            cv2.polylines(trace, [np.round(xy * 16).astype(np.int32)], False, 1, pen,
                          cv2.LINE_8, 4)
        if len(panel.label_box_xy):
            inside, dark = _dark_in(gray, np.round(panel.label_box_xy).astype(np.int32))
            text |= dark
            ignore |= inside & (1 - dark)
        first_column = abs(panel.x0_px - TRACE_X0_MM * ppm) < 1.0
        if params["calibration_pulse"] and first_column:
            fall = (TRACE_X0_MM - params["pulse_gap_mm"]) * ppm
            rise = fall - PULSE_SECONDS * page.paper_speed * ppm
            top = panel.baseline_px - PULSE_MV * page.gain * ppm
            pts = np.array([[rise - 2 * ppm, panel.baseline_px], [rise, panel.baseline_px],
                            [rise, top], [fall, top], [fall, panel.baseline_px]])
            pts = transform_points(pts, page.page_to_image)
            cv2.polylines(trace, [np.round(pts * 16).astype(np.int32)], False, 1, pen,
                          cv2.LINE_8, 4)
        elif not first_column and not panel.rhythm_strip:
            corners = np.array([[panel.x0_px - 1.5 * ppm, panel.baseline_px - 6 * ppm],
                                [panel.x0_px + 1.5 * ppm, panel.baseline_px - 6 * ppm],
                                [panel.x0_px + 1.5 * ppm, panel.baseline_px + 6 * ppm],
                                [panel.x0_px - 1.5 * ppm, panel.baseline_px + 6 * ppm]])
            quad = np.round(transform_points(corners, page.page_to_image)).astype(np.int32)
            cv2.fillPoly(ignore, [quad], 1)
    return trace, text, ignore


def render_training_pages(records_dir: Path, count: int, seed: int) -> list[TrainingPage]:
    """`count` random damaged pages of the renderer, labelled, at the model's scale."""
    rng = np.random.default_rng(seed)
    records = _records(records_dir)
    pages = []
    for k in range(count):
        params = _params(rng)
        signals = records[int(rng.integers(len(records)))]
        page = render_page(signals, 500.0, **params)
        trace, text, ignore = _labels(page, params)
        img = np.asarray(page.image)
        rgb = img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)
        pages.append(at_model_scale(f"synth_{seed}_{k}", rgb, trace, text, ignore))
    return pages
