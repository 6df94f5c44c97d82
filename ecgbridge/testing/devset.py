"""Render a scored set of synthetic ECG pages from a folder of WFDB records.

The set folder gets the images, a ``manifest.json`` in the format of the shared
scorer (``score.py --set DIR``), a ``meta/<image>.json.gz`` with every panel's
exact pixel trace, and (optionally) a copy of the records used under
``records/`` so the set is self-contained.

Page parameters are drawn from a seeded generator (:func:`plan_pages`): layout,
resolution, grid colour, lead order, labels, pulse, rotation, perspective,
blur, noise, creases and JPEG quality vary; the same seed gives the same set.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ecgbridge.ecg import LEADS
from ecgbridge.report.bench import load_record
from ecgbridge.testing.render import FONTS, GRID_COLORS, NO_GRID, RenderedPage, render_page

#: Layouts drawn in a "mixed" set and their relative frequencies.
LAYOUT_WEIGHTS: dict[str, float] = {
    "3x4+II": 0.35, "3x4": 0.1, "3x4+3": 0.1, "3x4+V1": 0.05,
    "6x2": 0.1, "6x2+II": 0.1, "12x1": 0.1, "12x1+II": 0.1,
}
#: Resolutions drawn in a "mixed" set.
DPI_CHOICES: tuple[int, ...] = (100, 120, 150, 200, 250, 300)
#: Set profiles: "clean" has no distortions, "mixed" the full variety.
PROFILES: tuple[str, ...] = ("clean", "mixed")
#: Folder names that must never be used as a source (held-out evaluation data).
FORBIDDEN_SOURCES: tuple[str, ...] = ("records-holdout",)


@dataclass(frozen=True)
class PagePlan:
    """What to render for one page: the record, the file name and the renderer keywords."""

    image: str
    record: str
    options: dict[str, Any] = field(default_factory=dict)


def list_records(records_dir: Path) -> list[str]:
    """Names of the WFDB records (``*.hea``) in a folder, sorted.

    Raises
    ------
    ValueError
        If the folder is a held-out evaluation folder or holds no records.
    """
    if any(part in FORBIDDEN_SOURCES for part in records_dir.resolve().parts):
        raise ValueError(f"{records_dir}: held-out records must not be used to render pages")
    names = sorted(p.stem for p in records_dir.glob("*.hea"))
    if not names:
        raise ValueError(f"{records_dir}: no WFDB records (*.hea) found")
    return names


def plan_pages(
    records: Sequence[str], n_pages: int, *, seed: int = 0, profile: str = "mixed"
) -> list[PagePlan]:
    """Draw the parameters of `n_pages` pages (records used in turn, shuffled).

    Parameters
    ----------
    records : sequence of str
        Record names to draw from.
    n_pages : int
        Number of pages.
    seed : int
        Seed of every choice.
    profile : str
        ``"clean"`` (200 dpi PNG, standard order, no distortion; layouts vary) or
        ``"mixed"`` (dpi 100-300, grid colours, +-8 degree rotation, perspective, blur,
        noise, creases, JPEG 60-95, some non-standard lead orders, no pulse, 50 mm/s...).

    Returns
    -------
    list of PagePlan
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if n_pages < 1:
        raise ValueError(f"number of pages must be at least 1, got {n_pages}")
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(records)))
    layouts = list(LAYOUT_WEIGHTS)
    weights = np.array(list(LAYOUT_WEIGHTS.values()))
    weights /= weights.sum()
    plans = []
    for i in range(n_pages):
        record = records[order[i % len(order)]]
        layout = str(rng.choice(layouts, p=weights))
        opts: dict[str, Any] = {"layout": layout, "seed": int(seed * 1000 + i)}
        suffix = ".png"
        if profile == "mixed":
            opts.update(_mixed_options(rng, layout))
            if opts.get("jpeg_quality") is not None:
                suffix = ".jpg"
        else:
            opts["dpi"] = 200
        plans.append(PagePlan(image=f"synth_{i + 1:03d}{suffix}", record=record, options=opts))
    return plans


def _mixed_options(rng: np.random.Generator, layout: str) -> dict[str, Any]:
    grid_names = [*GRID_COLORS, NO_GRID]
    grid_p = np.array([0.3, 0.15, 0.12, 0.12, 0.15, 0.08, 0.08])
    opts: dict[str, Any] = {
        "dpi": int(rng.choice(DPI_CHOICES)),
        "grid_color": str(rng.choice(grid_names, p=grid_p / grid_p.sum())),
        "dotted_minor": bool(rng.random() < 0.2),
        "line_width_mm": round(float(rng.uniform(0.15, 0.4)), 3),
        "calibration_pulse": bool(rng.random() < 0.85),
        "label_position": "below" if rng.random() < 0.2 else "above",
        "separators": bool(rng.random() < 0.7),
        "print_scale": bool(rng.random() < 0.8),
        "pulse_gap_mm": float(rng.choice([0.0, 1.0, 1.5, 2.0, 4.0])),
        "label_font": str(rng.choice(list(FONTS))),
        "label_height_mm": round(float(rng.uniform(2.5, 4.0)), 2),
    }
    if rng.random() < 0.15:
        opts["lead_order"] = tuple(str(x) for x in rng.permutation(LEADS))
    if rng.random() < 0.4:
        opts["header_text"] = (
            f"ID: SYNTH-{int(rng.integers(1000, 9999))}   Vent. rate {int(rng.integers(50, 110))}"
            f" bpm\nSynthetic page rendered by ecgbridge"
        )
    r = rng.random()
    if r < 0.06:
        opts["paper_speed"] = 50.0
    if rng.random() < 0.1:
        opts["gain"] = float(rng.choice([5.0, 20.0]))
    if rng.random() < 0.6:
        opts["rotation_deg"] = round(float(rng.uniform(-8.0, 8.0)), 2)
    if rng.random() < 0.25:
        opts["perspective"] = round(float(rng.uniform(0.01, 0.05)), 3)
    if rng.random() < 0.2:
        opts["shading"] = round(float(rng.uniform(0.1, 0.4)), 2)
    if rng.random() < 0.1:
        opts["grayscale"] = True
    if rng.random() < 0.3:
        opts["blur_sigma"] = round(float(rng.uniform(0.5, 1.5)), 2)
    if rng.random() < 0.3:
        opts["noise_sigma"] = round(float(rng.uniform(2.0, 10.0)), 2)
    if rng.random() < 0.25:
        opts["crease"] = True
    if rng.random() < 0.6:
        opts["jpeg_quality"] = int(rng.integers(60, 96))
    if opts["grid_color"] == "black" and not layout.startswith("12x1"):
        opts["line_width_mm"] = max(opts["line_width_mm"], 0.3)
    return opts


def write_image(path: Path, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Save an RGB uint8 image as PNG, or as JPEG at `jpeg_quality` for ``.jpg`` names."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    is_jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if is_jpeg else []
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"could not write image {path}")


def meta_document(page: RenderedPage, record: str) -> dict[str, Any]:
    """Exact pixel traces of every panel (``[row, col]``, final image pixels)."""
    return {
        "record": record,
        "sampling_frequency": page.fs,
        "width": page.width,
        "height": page.height,
        "px_per_mm": page.px_per_mm,
        "page_to_image_homography": page.page_to_image.tolist(),
        "pixel_coordinate_order": "[row, col] in the final image's pixels",
        "leads": [
            {
                "lead_name": p.lead,
                "start_sample": p.start_sample,
                "end_sample": p.end_sample,
                "rhythm_strip": p.rhythm_strip,
                "baseline_px_undistorted": p.baseline_px,
                "plotted_pixels": [[round(float(y), 3), round(float(x), 3)]
                                   for x, y in p.trace_xy],
                "text_bounding_box_rc": [[round(float(y), 1), round(float(x), 1)]
                                         for x, y in p.label_box_xy],
            }
            for p in page.panels
        ],
    }


def render_set(
    records_dir: Path,
    out_dir: Path,
    n_pages: int,
    *,
    seed: int = 0,
    profile: str = "mixed",
    copy_records: bool = True,
    write_meta: bool = True,
) -> list[dict[str, Any]]:
    """Render a set of pages and write it with its manifest.

    Parameters
    ----------
    records_dir : pathlib.Path
        Folder of WFDB records (never the held-out set).
    out_dir : pathlib.Path
        Destination; created if needed.
    n_pages : int
        Number of pages.
    seed : int
        Seed of the set.
    profile : str
        ``"clean"`` or ``"mixed"`` (see :func:`plan_pages`).
    copy_records : bool
        Copy the records used into ``out_dir/records`` (the scorer's default location).
    write_meta : bool
        Write ``meta/<stem>.json.gz`` pixel traces.

    Returns
    -------
    list of dict
        The manifest entries written to ``out_dir/manifest.json``.
    """
    records = list_records(records_dir)
    plans = plan_pages(records, n_pages, seed=seed, profile=profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    if write_meta:
        (out_dir / "meta").mkdir(exist_ok=True)
    cache: dict[str, tuple[np.ndarray, float]] = {}
    manifest = []
    for plan in plans:
        if plan.record not in cache:
            cache[plan.record] = load_record(records_dir, plan.record)
        signals, fs = cache[plan.record]
        # the JPEG loss is applied once, by writing the file (not by the renderer as well)
        options = dict(plan.options)
        quality = options.pop("jpeg_quality", None)
        page = render_page(signals, fs, **options)
        write_image(out_dir / plan.image, page.image, quality or 95)
        entry = page.manifest_entry(plan.image, plan.record)
        if quality is not None:
            entry["distortions"]["jpeg_quality"] = int(quality)
        entry["subset"] = f"synth_{profile}"
        entry["render_options"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in plan.options.items()
        }
        if write_meta:
            meta_name = f"meta/{Path(plan.image).stem}.json.gz"
            with gzip.open(out_dir / meta_name, "wt", encoding="utf-8") as fh:
                json.dump(meta_document(page, plan.record), fh)
            entry["meta"] = meta_name
        manifest.append(entry)
    if copy_records:
        dest = out_dir / "records"
        dest.mkdir(exist_ok=True)
        for name in sorted(cache):
            for ext in (".hea", ".dat"):
                src = records_dir / f"{name}{ext}"
                if src.exists():
                    shutil.copyfile(src, dest / src.name)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest
