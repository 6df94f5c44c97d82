"""The page renderer: exact geometry, time windows per layout, truth signals, distortions."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ecgbridge.ecg import LEADS
from ecgbridge.testing import render_page
from ecgbridge.testing.distort import tilt_homography, transform_points
from ecgbridge.testing.layouts import parse_layout
from ecgbridge.testing.render import TRACE_X0_MM


def _grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64).mean(axis=2)


def _panel(page, lead, rhythm=False):
    return next(p for p in page.panels if p.lead == lead and p.rhythm_strip == rhythm)


def test_trace_pixels_follow_the_exact_formula(sample_record):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4+II", dpi=200, seed=0)
    ppm = 200 / 25.4
    assert page.px_per_mm == pytest.approx(ppm)
    for p in page.panels:
        i = np.arange(p.start_sample, p.end_sample)
        v = signals[LEADS.index(p.lead), i]
        x = p.x0_px + (i / fs - p.start_s) * 25.0 * ppm
        y = p.baseline_px - v * 10.0 * ppm
        np.testing.assert_allclose(p.trace_xy[:, 0], x, atol=1e-9)
        np.testing.assert_allclose(p.trace_xy[:, 1], y, atol=1e-9)
    # columns of a 3x4 page are contiguous in time and space: 62.5 mm per 2.5 s
    x0s = sorted({round(p.x0_px, 6) for p in page.panels if not p.rhythm_strip})
    np.testing.assert_allclose(np.diff(x0s), 62.5 * ppm)
    assert x0s[0] == pytest.approx(TRACE_X0_MM * ppm)


def test_truth_pixels_are_ink_in_the_image(sample_record):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4+II", dpi=200, grid_color="red")
    grey = _grey(page.image)
    for p in page.panels:
        cols = np.round(p.trace_xy[:, 0]).astype(int)
        rows = np.round(p.trace_xy[:, 1]).astype(int)
        dark = grey[rows, cols] < 100
        assert dark.mean() > 0.99, f"{p.lead}: only {dark.mean():.3f} of truth pixels are ink"


def test_rendered_grid_has_the_stated_pitch(sample_record):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4", dpi=150, labels=False)
    # red grid: the green channel dips on grid lines; the pitch is 1 mm
    area = page.image[int(0.05 * page.height):int(0.9 * page.height),
                      int(0.05 * page.width):int(0.95 * page.width), 1].astype(float)
    profile = (255.0 - area).mean(axis=0)
    profile -= profile.mean()
    spectrum = np.abs(np.fft.rfft(profile, n=1 << 16))
    freqs = np.fft.rfftfreq(1 << 16)
    band = (freqs > 1 / 12) & (freqs < 1 / 3)  # pitch between 3 and 12 px
    pitch = 1.0 / freqs[band][np.argmax(spectrum[band])]
    assert pitch == pytest.approx(150 / 25.4, rel=0.005)


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("3x4", {"I": [(0, 1250)], "aVR": [(1250, 2500)], "V1": [(2500, 3750)],
                 "V6": [(3750, 5000)], "II": [(0, 1250)]}),
        ("3x4+II", {"II": [(0, 5000)], "III": [(0, 1250)], "aVF": [(1250, 2500)]}),
        ("3x4+3", {"V1": [(0, 5000)], "II": [(0, 5000)], "V5": [(0, 5000)],
                   "V2": [(2500, 3750)]}),
        ("6x2", {"I": [(0, 2500)], "aVF": [(0, 2500)], "V1": [(2500, 5000)],
                 "V6": [(2500, 5000)]}),
        ("6x2+II", {"II": [(0, 5000)], "III": [(0, 2500)], "V3": [(2500, 5000)]}),
        ("12x1", {lead: [(0, 5000)] for lead in LEADS}),
    ],
)
def test_layout_windows(sample_record, layout, expected):
    signals, fs = sample_record
    page = render_page(signals, fs, layout=layout, dpi=100)
    windows = page.windows()
    assert set(windows) == set(LEADS)
    for lead, spans in expected.items():
        assert windows[lead] == spans, lead
    n_panels = {"3x4": 12, "3x4+II": 13, "3x4+3": 15, "6x2": 12, "6x2+II": 13, "12x1": 12}
    assert len(page.panels) == n_panels[layout]


def test_truth_signals_are_nan_outside_the_windows(sample_record):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4", dpi=100)
    truth = page.truth_signals
    assert truth.shape == signals.shape
    for lead, spans in page.windows().items():
        row = LEADS.index(lead)
        shown = np.zeros(signals.shape[1], dtype=bool)
        for a, b in spans:
            shown[a:b] = True
        np.testing.assert_array_equal(truth[row, shown], signals[row, shown])
        assert np.isnan(truth[row, ~shown]).all()
    assert page.truth_ecg().present_leads() == LEADS


def test_custom_lead_order_places_leads_top_to_bottom(sample_record):
    signals, fs = sample_record
    order = ("V4", "V1", "aVR", "I", "V5", "V2", "aVL", "II", "V6", "V3", "aVF", "III")
    page = render_page(signals, fs, layout="12x1", lead_order=order, dpi=100)
    by_row = sorted(page.panels, key=lambda p: p.baseline_px)
    assert tuple(p.lead for p in by_row) == order


def test_rhythm_strips_sit_under_the_main_grid(sample_record):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4+3", dpi=100)
    strips = [p for p in page.panels if p.rhythm_strip]
    assert [p.lead for p in sorted(strips, key=lambda p: p.baseline_px)] == ["V1", "II", "V5"]
    lowest_panel = max(p.baseline_px for p in page.panels if not p.rhythm_strip)
    assert all(p.baseline_px > lowest_panel for p in strips)
    assert parse_layout("3x4+V1").rhythm_leads == ("V1",)


def test_speed_and_gain_change_windows_and_scale(sample_record):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4", dpi=100, paper_speed=50, gain=20)
    assert page.windows()["aVR"] == [(625, 1250)]  # 1.25 s columns: the page shows 5 s
    p = _panel(page, "I")
    ppm = 100 / 25.4
    np.testing.assert_allclose(
        p.trace_xy[:, 1], p.baseline_px - signals[0, :625] * 20 * ppm, atol=1e-9
    )
    np.testing.assert_allclose(np.diff(p.trace_xy[:, 0]), 50 * ppm / fs)


def test_rotation_moves_truth_with_the_pixels(sample_record):
    signals, fs = sample_record
    flat = render_page(signals, fs, layout="3x4+II", dpi=150)
    turned = render_page(signals, fs, layout="3x4+II", dpi=150, rotation_deg=5.0)
    h = tilt_homography(5.0, flat.width, flat.height)
    for a, b in zip(flat.panels, turned.panels, strict=True):
        np.testing.assert_allclose(b.trace_xy, transform_points(a.trace_xy, h), atol=1e-6)
    # counter-clockwise: the right end of the rhythm strip moves up
    strip = _panel(turned, "II", rhythm=True)
    assert strip.trace_xy[-1, 1] < _panel(flat, "II", rhythm=True).trace_xy[-1, 1] - 50
    grey = _grey(turned.image)
    for p in turned.panels:
        a = p.visible_start_sample - p.start_sample
        b = p.visible_end_sample - p.start_sample
        xy = np.round(p.trace_xy[a:b]).astype(int)
        assert (grey[xy[:, 1], xy[:, 0]] < 140).mean() > 0.97, p.lead


def test_strong_distortion_trims_windows_that_leave_the_image(sample_record):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4+II", dpi=100, rotation_deg=12.0)
    trimmed = [p for p in page.panels
               if (p.visible_start_sample, p.visible_end_sample) != (p.start_sample, p.end_sample)]
    assert trimmed, "a 12 degree rotation should push some trace ends off the page"
    for p in trimmed:
        row = LEADS.index(p.lead)
        inside = p.trace_xy[p.visible_start_sample - p.start_sample]
        assert 0 <= inside[0] <= page.width - 1 and 0 <= inside[1] <= page.height - 1
        if p.visible_end_sample < p.end_sample and not any(
            q.lead == p.lead and q is not p for q in page.panels
        ):
            assert np.isnan(page.truth_signals[row, p.visible_end_sample:p.end_sample]).all()


def test_distortions_are_deterministic_per_seed(sample_record):
    signals, fs = sample_record
    kwargs = dict(layout="6x2", dpi=100, perspective=0.05, noise_sigma=6.0, blur_sigma=0.8,
                  jpeg_quality=70, crease=True, grid_color="green", dotted_minor=True)
    a = render_page(signals, fs, seed=3, **kwargs)
    b = render_page(signals, fs, seed=3, **kwargs)
    c = render_page(signals, fs, seed=4, **kwargs)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    assert a.distortions["crease"] == b.distortions["crease"]
    assert a.image.dtype == np.uint8 and a.image.shape == (850, 1100, 3)


def test_no_grid_leaves_the_paper_white(sample_record):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4", dpi=100, grid_color="none", labels=False,
                       calibration_pulse=False, print_scale=False, separators=False)
    grey = _grey(page.image)
    ink = grey < 250
    assert 0.002 < ink.mean() < 0.05
    # every ink pixel lies within 3 px of the truth polyline
    near = np.zeros(ink.shape, dtype=np.uint8)
    for p in page.panels:
        pts = np.round(p.trace_xy).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(near, [pts], False, 1, thickness=7)
    assert (ink & (near == 0)).sum() == 0


def test_manifest_entry_matches_the_scorer_format(sample_record):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4+II", dpi=120, jpeg_quality=80, rotation_deg=2)
    entry = json.loads(json.dumps(page.manifest_entry("p1.jpg", "HR06004")))
    for key in ("image", "record", "fs", "n_samples", "layout", "windows", "dpi", "width",
                "height", "px_per_mm", "gain_mm_per_mv", "paper_speed_mm_per_s", "panels",
                "distortions", "rhythm_leads", "columns"):
        assert key in entry, key
    assert entry["windows"]["II"] == [0, 5000]
    assert entry["windows"]["V1"] == [2500, 3750]
    assert entry["distortions"]["jpeg_quality"] == 80
    assert entry["distortions"]["rotation_deg"] == 2.0
    assert len(entry["panels"]) == 13
    corners = np.array(entry["panels"][0]["lead_bbox_rc"])
    assert corners.shape == (4, 2)
    assert (corners[:, 0] < entry["height"]).all() and (corners[:, 1] < entry["width"]).all()


def test_nan_samples_are_not_drawn(sample_record):
    signals, fs = sample_record
    gapped = np.array(signals)
    gapped[0, 200:600] = np.nan
    page = render_page(gapped, fs, layout="3x4", dpi=200, grid_color="none", labels=False,
                       calibration_pulse=False)
    p = _panel(page, "I")
    assert np.isnan(p.trace_xy[200:600, 1]).all()
    cols = np.round(p.x0_px + (np.arange(250, 550) / fs) * 25 * 200 / 25.4).astype(int)
    band = _grey(page.image)[int(p.baseline_px) - 60:int(p.baseline_px) + 60, cols]
    assert band.min() > 250, "lead I was drawn where its samples are NaN"
    assert np.isnan(page.truth_signals[0, 200:600]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layout": "4x3"}, "unknown layout"),
        ({"layout": "3x4+X7"}, "not a lead"),
        ({"dpi": 20}, "dpi"),
        ({"grid_color": "purple"}, "grid colour"),
        ({"rotation_deg": 90}, "rotation"),
        ({"lead_order": ("I", "I")}, "exactly once"),
        ({"jpeg_quality": 0}, "JPEG quality"),
        ({"perspective": 0.5}, "perspective"),
        ({"label_font": "comic"}, "label font"),
        ({"label_height_mm": 10}, "label height"),
        ({"pulse_gap_mm": -1}, "pulse gap"),
    ],
)
def test_bad_arguments_are_refused(sample_record, kwargs, message):
    signals, fs = sample_record
    with pytest.raises(ValueError, match=message):
        render_page(signals, fs, **{"dpi": 60, **kwargs})


def test_signals_must_have_twelve_leads():
    with pytest.raises(ValueError, match=r"shape \(12, n_samples\)"):
        render_page(np.zeros((3, 100)), 500.0)


def test_grayscale_and_shading(sample_record):
    signals, fs = sample_record
    flat = render_page(signals, fs, layout="3x4", dpi=80, grid_color="green")
    grey = render_page(signals, fs, layout="3x4", dpi=80, grid_color="green", grayscale=True)
    assert np.array_equal(grey.image[..., 0], grey.image[..., 1])
    assert np.array_equal(grey.image[..., 1], grey.image[..., 2])
    assert not np.array_equal(flat.image[..., 0], flat.image[..., 1])
    shaded = render_page(signals, fs, layout="3x4", dpi=80, shading=0.4, seed=2)
    ratio = _grey(shaded.image) / np.maximum(_grey(render_page(signals, fs, layout="3x4",
                                                                dpi=80).image), 1.0)
    paper = _grey(flat.image) > 250
    assert ratio[paper].min() == pytest.approx(0.6, abs=0.02)
    assert ratio[paper].max() == pytest.approx(1.0, abs=0.01)
    assert shaded.distortions["shading"]["strength"] == 0.4


@pytest.mark.parametrize("gap_mm", [0.0, 4.0])
def test_calibration_pulse_is_one_millivolt_before_the_trace(sample_record, gap_mm):
    signals, fs = sample_record
    page = render_page(signals, fs, layout="3x4", dpi=200, grid_color="none", labels=False,
                       pulse_gap_mm=gap_mm, separators=False)
    ppm = page.px_per_mm
    grey = _grey(page.image)
    p = _panel(page, "I")
    fall_x = int(round((TRACE_X0_MM - gap_mm) * ppm))
    top_y = int(round(p.baseline_px - 10.0 * ppm))  # 1 mV at 10 mm/mV
    column = grey[:, fall_x - 1:fall_x + 2].min(axis=1)
    inked = np.flatnonzero(column[top_y - 20:int(p.baseline_px) + 3] < 128) + top_y - 20
    assert inked.min() == pytest.approx(top_y, abs=1)
    assert inked.max() >= int(p.baseline_px) - 1
    rise_x = int(round((TRACE_X0_MM - gap_mm - 5.0) * ppm))  # 0.2 s at 25 mm/s
    assert grey[top_y, rise_x:fall_x].max() < 128, "the pulse top is not 0.2 s long"
    gap = grey[int(p.baseline_px) - 3:int(p.baseline_px) + 4,
               fall_x + 3:int(round(TRACE_X0_MM * ppm)) - 3]
    assert gap.size == 0 or gap.min() > 200, "ink between the pulse and the trace"
