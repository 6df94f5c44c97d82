"""Review overlays and debug images on rendered pages of real records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ecgbridge.ecg import ECG, LEADS, Calibration, PanelInfo
from ecgbridge.encode.overlay import (
    QUALITY_GOOD_RGB,
    QUALITY_POOR_RGB,
    TRACE_RGB,
    draw_overlay,
    overlay_file_name,
    panel_trace,
    rectified_page,
)
from ecgbridge.encode.registry import WriteContext, write_outputs
from ecgbridge.errors import EncodingError
from ecgbridge.inputs.page import LoadedInput, Page
from ecgbridge.report.debug_images import (
    PIPELINE_FILE,
    debug_file_name,
    stage_to_rgb,
    write_debug_images,
)


def _ecg_from_rendered(page: Any, page_index: int = 0, signals: np.ndarray | None = None,
                       quality: float = 0.9) -> ECG:
    """The ECG a perfect digitizer would return for a rendered page (truth + its geometry)."""
    panels = tuple(
        PanelInfo(lead=p.lead, page=page_index,
                  box=(p.x0_px, p.box_px[1], p.box_px[2], p.box_px[3]),
                  baseline_px=p.baseline_px, start_s=p.start_s, duration_s=p.duration_s,
                  rhythm_strip=p.rhythm_strip)
        for p in page.panels
    )
    to_rectified = np.linalg.inv(page.page_to_image)
    to_rectified /= to_rectified[2, 2]
    cal = Calibration(layout=page.layout, px_per_mm_x=page.px_per_mm, px_per_mm_y=page.px_per_mm,
                      mm_per_mv=page.gain, mm_per_s=page.paper_speed,
                      transform=tuple(float(v) for v in to_rectified.ravel()))
    return ECG(signals=page.truth_signals if signals is None else signals, fs=page.fs,
               calibration=cal, panels=panels, quality=(quality,) * 12)


def _trace_points(ecg: ECG) -> np.ndarray:
    pts = [seg for p in ecg.panels for seg in panel_trace(ecg, p)]
    return np.vstack(pts)


def _dark_fraction(rectified: np.ndarray, points: np.ndarray, radius: int = 2) -> float:
    """Fraction of `points` with a dark (printed trace) pixel within `radius`."""
    grey = cv2.cvtColor(rectified, cv2.COLOR_RGB2GRAY)
    dark = cv2.dilate((grey < 100).astype(np.uint8), np.ones((2 * radius + 1,) * 2, np.uint8))
    xy = np.round(points).astype(int)
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < grey.shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < grey.shape[0])
    xy = xy[ok]
    return float(dark[xy[:, 1], xy[:, 0]].mean())


def _imread_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _imread_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, f"{path} is not a readable image"
    return image


def _is_trace_colour(pixels: np.ndarray) -> np.ndarray:
    target = np.array(TRACE_RGB, dtype=float)
    return np.abs(pixels.astype(float) - target).sum(axis=-1) < 60


@pytest.fixture()
def rotated_page(rendered_page):  # type: ignore[no-untyped-def]
    return rendered_page("E07506", layout="3x4+II", dpi=100.0, rotation_deg=3.0, seed=5)


def test_overlay_traces_lie_on_the_printed_traces(rotated_page: Any, tmp_path: Path) -> None:
    ecg = _ecg_from_rendered(rotated_page)
    loaded = LoadedInput(pages=(Page(image=rotated_page.image),))
    written = write_outputs(ecg, tmp_path, "page", ["overlay"], WriteContext(loaded=loaded))
    assert written == [tmp_path / "page.overlay.png"]
    overlay = _imread_rgb(written[0])
    rectified = rectified_page(rotated_page.image, ecg.calibration)
    banner = overlay.shape[0] - rectified.shape[0]
    assert banner > 0 and overlay.shape[1] == rectified.shape[1]

    points = _trace_points(ecg)
    assert len(points) > 5000  # 12 panels of 2.5 s + a 10 s strip at 500 Hz
    # the geometry puts every sample on the printed (de-rotated) trace ...
    assert _dark_fraction(rectified, points) > 0.97
    # ... and the overlay draws it there in the trace colour
    coloured = cv2.dilate(_is_trace_colour(overlay).astype(np.uint8), np.ones((3, 3), np.uint8))
    xy = np.round(points).astype(int)
    inside = (xy[:, 0] < overlay.shape[1]) & (xy[:, 1] + banner < overlay.shape[0])
    assert coloured[xy[inside, 1] + banner, xy[inside, 0]].mean() > 0.97
    # the page itself is faded, so the trace colour appears nowhere else in bulk
    assert _is_trace_colour(overlay).sum() < 0.1 * overlay.shape[0] * overlay.shape[1]


def test_wrong_digitization_is_visible(rotated_page: Any) -> None:
    """A trace 0.5 mV off (5 mm) no longer lies on the print: what a reviewer must see."""
    good = _ecg_from_rendered(rotated_page)
    bad = _ecg_from_rendered(rotated_page, signals=rotated_page.truth_signals + 0.5)
    rectified = rectified_page(rotated_page.image, good.calibration)
    assert _dark_fraction(rectified, _trace_points(good)) > 0.97
    assert _dark_fraction(rectified, _trace_points(bad)) < 0.5


def test_labels_are_coloured_by_quality(rotated_page: Any) -> None:
    good = draw_overlay(rotated_page.image, _ecg_from_rendered(rotated_page, quality=0.95))
    poor = draw_overlay(rotated_page.image, _ecg_from_rendered(rotated_page, quality=0.1))

    def count(img: np.ndarray, rgb: tuple[int, int, int]) -> int:
        return int((np.abs(img.astype(int) - np.array(rgb)).sum(axis=-1) < 30).sum())

    assert count(good, QUALITY_GOOD_RGB) > 200 and count(good, QUALITY_POOR_RGB) < 50
    assert count(poor, QUALITY_POOR_RGB) > 200 and count(poor, QUALITY_GOOD_RGB) < 50


def test_one_overlay_per_page(rendered_page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = rendered_page("HR06004", layout="6x2", dpi=80.0)
    ecg = _ecg_from_rendered(first)
    second_panels = tuple(
        PanelInfo(p.lead, 1, p.box, p.baseline_px, p.start_s, p.duration_s) for p in ecg.panels
        if p.lead in LEADS[6:]
    )
    two_page = ecg.replace(panels=tuple(p for p in ecg.panels if p.lead in LEADS[:6])
                           + second_panels)
    grey = cv2.cvtColor(first.image, cv2.COLOR_RGB2GRAY)  # grey pages are accepted too
    loaded = LoadedInput(pages=(Page(image=first.image, index=0), Page(image=grey, index=1)))
    written = write_outputs(two_page, tmp_path, "scan", ["overlay"], WriteContext(loaded=loaded))
    assert [p.name for p in written] == ["scan.overlay.png", "scan.p2.overlay.png"]
    assert overlay_file_name("x", 2) == "x.p3.overlay.png"
    for path in written:
        img = _imread_rgb(path)
        assert _is_trace_colour(img).sum() > 1000


def test_overlay_needs_pages_and_geometry(rotated_page: Any, tmp_path: Path) -> None:
    ecg = _ecg_from_rendered(rotated_page)
    with pytest.raises(EncodingError, match="needs the source page images"):
        write_outputs(ecg, tmp_path, "x", ["overlay"], WriteContext())
    loaded = LoadedInput(pages=(Page(image=rotated_page.image),))
    with pytest.raises(EncodingError, match="no panel geometry"):
        write_outputs(ecg.replace(panels=()), tmp_path, "x", ["overlay"],
                      WriteContext(loaded=loaded))
    no_scale = ecg.replace(calibration=Calibration())
    with pytest.raises(EncodingError, match="px_per_mm_x"):
        write_outputs(no_scale, tmp_path, "x", ["overlay"], WriteContext(loaded=loaded))


# --------------------------------------------------------------------------- debug images
def test_debug_images_and_pipeline_figure(rotated_page: Any, tmp_path: Path) -> None:
    image = rotated_page.image
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    stages = {
        "input": image,
        "ink mask": grey < 100,
        "darkness": 1.0 - grey / 255.0,
        "summary": {"not": "an image"},
        "score map": np.linspace(-3.0, 7.0, 2000).reshape(40, 50),
    }
    written = write_debug_images(stages, tmp_path / "dbg")
    names = [p.name for p in written]
    assert names == ["01_input.png", "02_ink-mask.png", "03_darkness.png", "05_score-map.png",
                     PIPELINE_FILE]
    mask = _imread_grey(tmp_path / "dbg" / "02_ink-mask.png")
    assert mask.shape == grey.shape
    assert set(np.unique(mask)) == {0, 255}
    assert int((mask == 0).sum()) == int((grey < 100).sum())  # ink drawn black
    assert np.array_equal(_imread_rgb(written[0]), image)
    pipeline = _imread_rgb(tmp_path / "dbg" / PIPELINE_FILE)
    assert pipeline.shape[1] > 3 * 360  # four stages side by side
    assert float(pipeline.std()) > 10.0


def test_stage_conversion() -> None:
    ramp = stage_to_rgb(np.array([[-1.0, 0.0, 1.0]]))
    assert ramp is not None and ramp[0, :, 0].tolist() == [0, 128, 255]
    unit = stage_to_rgb(np.array([[0.0, 0.5, np.nan]]))
    assert unit is not None and unit[0, :, 0].tolist() == [0, 128, 0]
    assert stage_to_rgb(np.zeros(5)) is None
    assert stage_to_rgb("text") is None
    assert debug_file_name(3, "grid / lines") == "03_grid-lines.png"
    assert debug_file_name(2, "2_grid_removed") == "02_grid_removed.png"
