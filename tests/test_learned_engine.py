"""The learned engine: packaged model, its trace map on damaged pages, and ``--engine``.

The segmentation model ships as package data and runs through OpenCV's DNN module.
These tests check that a built wheel carries it, that on a damaged page rendered by
:mod:`ecgbridge.testing` its trace map covers the drawn trace and little else, and that
the engine choice works both ways and is recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import ecgbridge
from ecgbridge.digitizer import pipeline
from ecgbridge.digitizer.consistency import choose_reading, is_implausible, is_trusted
from ecgbridge.digitizer.segment import (
    MODEL_FILE,
    Segmentation,
    learned_masks,
    model_available,
    segment_page,
)
from ecgbridge.errors import DigitizationError

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not model_available(), reason="segmentation model not installed")

#: Damage our renderer can draw: shading, a crease, blur, noise, a low-quality JPEG.
DAMAGED = (("layout", "3x4+II"), ("dpi", 150), ("shading", 0.5), ("crease", True),
           ("blur_sigma", 0.6), ("noise_sigma", 6.0), ("jpeg_quality", 60),
           ("grid_color", "pink"), ("seed", 3))


def _truth_trace(page, shape: tuple[int, int]) -> np.ndarray:
    """The drawn traces as a 1-px polyline mask in the final image."""
    mask = np.zeros(shape, np.uint8)
    for panel in page.panels:
        pts = panel.trace_xy[np.isfinite(panel.trace_xy).all(axis=1)]
        if len(pts) > 1:
            cv2.polylines(mask, [np.round(pts * 16).astype(np.int32)], False, 1, 1,
                          cv2.LINE_8, shift=4)
    return mask


def _scored_region(page, shape: tuple[int, int]) -> np.ndarray:
    """Panel boxes without the first 8 mm of a row (pulse) and 2 mm around column joins
    (lead-change marks): where only trace, grid and paper are drawn."""
    region = np.zeros(shape, np.uint8)
    ppm = page.px_per_mm
    for panel in page.panels:
        pts = panel.trace_xy[np.isfinite(panel.trace_xy).all(axis=1)]
        if len(pts) < 2:
            continue
        x0, x1 = pts[0, 0] + 2 * ppm, pts[-1, 0] - 2 * ppm
        y0, y1 = pts[:, 1].min() - 3 * ppm, pts[:, 1].max() + 3 * ppm
        region[max(0, int(y0)):int(y1), max(0, int(x0)):int(x1)] = 1
    return region


def test_the_wheel_carries_the_model(tmp_path):
    """A wheel built from the source tree holds the model, and OpenCV reads it from there."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("ecgbridge-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(f"ecgbridge/data/models/{MODEL_FILE}")
    net = cv2.dnn.readNetFromONNX(np.frombuffer(data, np.uint8))
    net.setInput(np.zeros((1, 3, 64, 96), np.float32))
    assert net.forward().shape == (1, 2, 64, 96)


def test_trace_map_matches_the_drawn_trace_on_a_damaged_page(rendered_page):
    page = rendered_page("HR06004", **dict(DAMAGED))
    rgb = np.asarray(page.image)
    seg = segment_page(rgb)
    assert seg.trace.shape == rgb.shape[:2]
    truth = _truth_trace(page, rgb.shape[:2])
    region = _scored_region(page, rgb.shape[:2]).astype(bool)
    predicted = (seg.trace > 0.5) & region
    tol = max(2, int(round(0.3 * page.px_per_mm)))
    near_truth = cv2.dilate(truth, np.ones((2 * tol + 1, 2 * tol + 1), np.uint8)).astype(bool)
    near_pred = cv2.dilate(predicted.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    recall = float((near_pred & truth.astype(bool) & region).sum() / (truth.astype(bool)
                                                                      & region).sum())
    precision = float((predicted & near_truth).sum() / max(1, predicted.sum()))
    # Measured with the shipped model: recall 0.9+, precision 0.9+ (bounds with margin).
    assert recall >= 0.8, recall
    assert precision >= 0.75, precision


@pytest.mark.parametrize("engine", ["classical", "learned"])
def test_engine_option_both_ways(engine, rendered_page, tmp_path):
    page = rendered_page("HR06004", layout="3x4+II", dpi=150)
    src = tmp_path / "page.png"
    cv2.imwrite(str(src), cv2.cvtColor(np.asarray(page.image), cv2.COLOR_RGB2BGR))
    out = subprocess.run(
        [sys.executable, "-m", "ecgbridge", "digitize", str(src), "--out", str(tmp_path),
         "--format", "json", "--engine", engine], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "page.json").read_text())
    assert result["calibration"]["engine"] == engine
    assert len(result["present_leads"]) == 12


def test_auto_keeps_the_reading_that_keeps_einthoven(rendered_page, monkeypatch):
    """A learned map with no trace at all: auto digitizes classically and says why."""
    page = rendered_page("HR06004", layout="3x4+II", dpi=150, shading=0.6, crease=True,
                         jpeg_quality=60, seed=5)

    def blank(rgb: np.ndarray) -> Segmentation:
        zeros = np.zeros(rgb.shape[:2], np.float32)
        return Segmentation(trace=zeros, text=zeros, scale=1.0)

    monkeypatch.setattr(pipeline, "segment_page", blank)
    monkeypatch.setattr(pipeline, "is_trusted", lambda signals: False)
    ecg = ecgbridge.digitize(np.asarray(page.image), engine="auto")
    assert ecg.calibration.engine == "classical"
    assert any("learned engine could not read the page" in w for w in ecg.calibration.warnings)
    with pytest.raises(DigitizationError):
        ecgbridge.digitize(np.asarray(page.image), engine="learned")


def test_choice_follows_the_limb_lead_laws():
    """The reading whose I + III = II and aVR + aVL + aVF = 0 hold best is delivered."""
    t = np.arange(2500) / 500.0
    i, iii = np.sin(2 * np.pi * 1.1 * t), 0.5 * np.cos(2 * np.pi * 1.7 * t)
    ii = i + iii
    avr, avl = -(i + ii) / 2, (i - iii) / 2
    good = {"I": i, "II": ii, "III": iii, "aVR": avr, "aVL": avl, "aVF": -(avr + avl)}
    rng = np.random.default_rng(0)
    bad = {k: v + rng.normal(0, 0.3, v.size) for k, v in good.items()}
    choice = choose_reading({"classical": bad, "learned": good}, {})
    assert choice.engine == "learned" and "residual" in choice.warning
    assert choose_reading({"classical": good, "learned": bad}, {}).engine == "classical"
    assert is_trusted(good) and not is_trusted(bad)
    # Limb leads read from unrelated places break the laws: such a reading is refused
    # when no other engine could read the page.
    unrelated = {k: rng.normal(0, 0.5, 2500) for k in good}
    assert is_implausible(unrelated) and not is_implausible(good)


def _twelve_leads() -> dict[str, np.ndarray]:
    """Twelve beating leads whose limb leads keep the laws (10 s at 500 Hz)."""
    t = np.arange(5000) / 500.0
    beat = np.exp(-(((t % 0.8) - 0.3) / 0.02) ** 2)
    i, iii = 0.8 * beat, 0.4 * beat + 0.05 * np.sin(2 * np.pi * 0.3 * t)
    ii = i + iii
    avr, avl = -(i + ii) / 2, (i - iii) / 2
    leads = {"I": i, "II": ii, "III": iii, "aVR": avr, "aVL": avl, "aVF": -(avr + avl)}
    leads.update({f"V{k}": (0.3 + 0.2 * k) * beat for k in range(1, 7)})
    return leads


def test_reading_trust_judges_both_engines_alike_and_counts_every_lead():
    """The engine is evidence on a lead, not between two readings of one page; a
    reading that lost half its leads is trusted less."""
    from ecgbridge.digitizer.quality import reading_trust
    from ecgbridge.ecg import Calibration

    leads = _twelve_leads()
    prior = dict.fromkeys(leads, 1.0)
    scale = {"px_per_mm_x": 5.9, "px_per_mm_y": 5.9}
    as_learned = reading_trust(leads, prior, [], Calibration(engine="learned", **scale), 500.0)
    as_classical = reading_trust(leads, prior, [], Calibration(engine="classical", **scale),
                                 500.0)
    assert as_learned == as_classical > 0.0
    half = {k: v for k, v in leads.items() if k in ("I", "II", "III", "V1", "V2", "V3")}
    assert reading_trust(half, prior, [], Calibration(engine="classical", **scale),
                         500.0) < 0.6 * as_classical
    assert reading_trust({}, prior, [], Calibration(), 500.0) == 0.0


def test_choice_follows_the_evidence_on_the_leads_when_both_are_judged():
    leads = _twelve_leads()
    rng = np.random.default_rng(1)
    noisy = {k: v + rng.normal(0, 0.3, v.size) for k, v in leads.items()}
    # The laws alone prefer the clean reading; the evidence on every lead decides.
    choice = choose_reading({"classical": leads, "learned": noisy}, {},
                            {"classical": 0.3, "learned": 0.6})
    assert choice.engine == "learned" and "mean lead quality" in choice.warning
    assert choose_reading({"classical": leads, "learned": noisy}, {},
                          {"classical": 0.5, "learned": 0.5}).engine == "classical"


def test_auto_asks_the_learned_engine_when_the_classical_leads_are_not_trusted(
        rendered_page, monkeypatch):
    """A classical reading whose limb leads keep the laws but whose leads the evidence
    does not trust on average gets a second reading, and the more trusted one wins."""
    page = rendered_page("HR06004", layout="3x4+II", dpi=150)
    judged: list[str] = []

    def trust(result, fs):
        judged.append(result.calibration.engine)
        return 0.2 if result.calibration.engine == "classical" else 0.7

    monkeypatch.setattr(pipeline, "is_trusted", lambda signals: True)
    monkeypatch.setattr(pipeline, "_reading_trust", trust)
    ecg = ecgbridge.digitize(np.asarray(page.image), engine="auto")
    assert judged == ["classical", "learned"]
    assert ecg.calibration.engine == "learned"
    assert any("mean lead quality classical 0.20, learned 0.70" in w
               for w in ecg.calibration.warnings)


def test_learned_engine_without_its_model_is_a_clear_error(rendered_page, monkeypatch):
    page = rendered_page("HR06004", layout="3x4+II", dpi=150)
    monkeypatch.setattr(pipeline, "model_available", lambda: False)
    with pytest.raises(DigitizationError, match="model is not installed"):
        ecgbridge.digitize(np.asarray(page.image), engine="learned")
    assert ecgbridge.digitize(np.asarray(page.image), engine="auto").calibration.engine == \
        "classical"


def test_stage_images_are_those_of_the_reading_delivered(rendered_page, monkeypatch):
    """With auto, --debug-dir shows the stages of the engine whose reading is delivered."""
    from ecgbridge.digitizer.consistency import ReadingChoice
    from ecgbridge.digitizer.options import DigitizeOptions

    monkeypatch.setattr(pipeline, "is_trusted", lambda signals: False)  # both engines read
    # The first engine to read is delivered: its images must not be the second one's.
    monkeypatch.setattr(pipeline, "choose_reading",
                        lambda readings, errors, trust=None: ReadingChoice("classical",
                                                                          "test choice"))
    page = rendered_page("HR06004", layout="3x4+II", dpi=150)
    image = np.asarray(page.image)
    shown: dict[str, np.ndarray] = {}
    result = pipeline.digitize_raster_page(image, DigitizeOptions(), debug=shown)
    alone: dict[str, np.ndarray] = {}
    pipeline.digitize_raster_page_with(result.calibration.engine, image, DigitizeOptions(),
                                       debug=alone)
    assert shown.keys() == alone.keys()
    assert np.array_equal(shown["2_grid_removed"], alone["2_grid_removed"])


def _pulse_with_a_gap(grid_darkness: float) -> tuple[np.ndarray, Segmentation]:
    """A pulse drawn on a grid, and model regions that missed its rise's upper half."""
    dark = np.zeros((200, 200), np.float32)
    dark[::8, :] = grid_darkness
    dark[:, ::8] = grid_darkness
    cv2.rectangle(dark, (60, 60), (100, 140), 0.9, 2)
    trace = cv2.dilate((dark >= 0.85).astype(np.float32), np.ones((3, 3), np.uint8))
    trace[55:100, 55:65] = 0.0
    return dark, Segmentation(trace=trace, text=np.zeros_like(trace), scale=1.0)


def test_pulse_search_mask_restores_the_strokes_the_model_missed():
    dark, seg = _pulse_with_a_gap(grid_darkness=0.3)
    masks = learned_masks(seg, dark, 8.0, 8.0, has_grid=True)
    assert masks.grid_told_apart
    assert masks.pulse_search[62:98, 59:62].all()
    assert not masks.pulse_search[16, 20] and not masks.pulse_search[20, 16]  # grid stays out
    assert not masks.trace[62:98, 59:62].any()  # the trace mask is the model's


def test_pulse_search_mask_adds_nothing_when_the_grid_is_as_dark_as_ink():
    dark, seg = _pulse_with_a_gap(grid_darkness=0.8)
    masks = learned_masks(seg, dark, 8.0, 8.0, has_grid=False)
    assert not masks.grid_told_apart
    assert not masks.pulse_search[62:98, 59:62].any()
    assert (masks.pulse_search == masks.trace).all()


def test_grid_lines_beside_a_stroke_stay_out_of_the_learned_mask():
    """Model regions are coarser than the pen: a grid line as dark as a stroke's
    edge, inside the region, is not taken for ink."""
    dark = np.zeros((300, 400), np.float32)
    for k in range(0, 400, 8):
        dark[:, k] = 0.5
    for k in range(0, 300, 8):
        dark[k, :] = 0.5
    xs = np.arange(20, 380)
    ys = (150 + 40 * np.sin(xs / 25.0)).astype(int)
    for x, y in zip(xs, ys, strict=True):
        dark[y - 1:y + 2, x] = 0.95
    region = cv2.dilate((dark > 0.9).astype(np.float32), np.ones((7, 7), np.uint8))
    seg = Segmentation(trace=region, text=np.zeros_like(region), scale=1.0)
    masks = learned_masks(seg, dark, 8.0, 8.0, has_grid=True)
    on_grid_only = (dark == 0.5) & (region > 0)
    assert masks.trace[on_grid_only].mean() < 0.1
    assert masks.trace[dark > 0.9].mean() > 0.8


def test_traces_are_followed_without_the_ink_the_model_takes_for_text():
    """A label under a faint stretch of trace is read from the mask, not followed."""
    glyphs = np.zeros((200, 300), np.uint8)
    cv2.putText(glyphs, "V5", (120, 150), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    dark = np.where(glyphs > 0, 0.9, 0.0).astype(np.float32)
    dark[99:102, 10:290] = 0.9  # the trace
    trace_p = np.zeros_like(dark)
    trace_p[95:106, 5:295] = 1.0
    text_p = np.zeros_like(dark)
    text_p[120:160, 110:180] = 1.0
    seg = Segmentation(trace=trace_p, text=text_p, scale=1.0)
    masks = learned_masks(seg, dark, 8.0, 8.0, has_grid=False)
    assert masks.trace[125:155, 115:175].any()  # the label stays readable
    assert masks.follow is not None
    assert not masks.follow[125:155, 115:175].any()  # but is not followed
    assert masks.follow[99:102, 20:280].mean() > 0.9


def test_the_model_runs_in_bands_with_the_same_result(rendered_page, monkeypatch):
    """Bands (for memory) with context rows give the whole-page logits."""
    from ecgbridge.digitizer import segment

    page = rendered_page("HR06004", layout="3x4+II", dpi=100)
    blob, _scale = segment.model_input(np.asarray(page.image))
    monkeypatch.setattr(segment, "_BAND_PIXELS", 10**9)
    whole = segment._forward_in_bands(segment._network(), blob)
    monkeypatch.setattr(segment, "_BAND_PIXELS", blob.shape[2] * blob.shape[3] // 3)
    banded = segment._forward_in_bands(segment._network(), blob)
    assert banded.shape == whole.shape
    assert np.abs(banded - whole).max() < 1e-3


def test_a_trace_drawn_along_a_grid_line_is_kept_where_the_model_is_sure() -> None:
    """A baseline printed on a major grid line is as dark as the line: taking the grid
    lines out of the darkness takes that stretch of trace with them (the rows of a
    clean page were lost so); where the model is sure of a trace the ink stays."""
    from ecgbridge.digitizer.segment import Segmentation, learned_masks

    ppm = 8.0
    h, w = 240, 480
    dark = np.zeros((h, w), np.float32)
    dark[::8, :] = 0.7  # grid lines every mm, as dark as the trace ...
    dark[:, ::8] = 0.7
    dark[120:122, :] = 0.8  # ... and the trace's baseline lying on one of them
    trace_p = np.zeros((h, w), np.float32)
    trace_p[118:124, 100:380] = 0.95  # the model sees the trace there only
    seg = Segmentation(trace=trace_p, text=np.zeros_like(trace_p), scale=1.0)
    masks = learned_masks(seg, dark, ppm, ppm, has_grid=True)
    assert masks.trace[120:122, 100:380].mean() > 0.9
    # Elsewhere the grid stays out of the trace mask.
    assert masks.trace[:, :90].sum() == 0 and masks.trace[60, :].sum() == 0


@pytest.mark.parametrize(("px_per_mm", "fringe_followed"), [(8.0, False), (4.0, True)])
def test_half_dark_fringe_beside_a_stroke_is_followed_only_on_coarse_pages(
        px_per_mm: float, fringe_followed: bool) -> None:
    """A 3-px stroke with a 0.6-dark row beside it (blur, a grid-line remnant): on a
    page scanned at 8 px/mm that row is not the pen's (its core spans whole, fully
    dark pixels) and traces are not followed in it; at 4 px/mm a pen is a pixel or two
    and its anti-aliased half-dark pixels are its ink. Rows and labels are found in
    the half-dark mask either way."""
    h, w = 120, 400
    dark = np.zeros((h, w), np.float32)
    dark[59:62, 20:380] = 1.0  # the stroke
    dark[62, 20:380] = 0.6  # its fringe, on one side
    trace_p = np.zeros((h, w), np.float32)
    trace_p[50:72, 10:390] = 0.95
    seg = Segmentation(trace=trace_p, text=np.zeros_like(trace_p), scale=1.0)
    masks = learned_masks(seg, dark, px_per_mm, px_per_mm, has_grid=False)
    assert masks.follow[59:62, 30:370].all() and masks.trace[59:63, 30:370].all()
    assert bool(masks.follow[62, 30:370].all()) is fringe_followed


def test_a_faint_stroke_beside_black_ink_is_followed_on_fine_pages() -> None:
    """A faint trace (0.6 dark: thermal paper, uneven light) running up to a black
    lead-change marker: within half a millimetre of the marker no pixel of the trace
    is 70 % as dark as the marker. Its half-dark pixels are all there is of it there
    and stay in the mask traces are followed in; the trace has no gap beside it."""
    ppm = 8.0
    h, w = 120, 400
    dark = np.zeros((h, w), np.float32)
    dark[59:62, 20:380] = 0.6  # the faint stroke ...
    dark[40:80, 200:202] = 1.0  # ... and a black marker across it
    trace_p = np.zeros((h, w), np.float32)
    trace_p[38:82, 10:390] = 0.95
    seg = Segmentation(trace=trace_p, text=np.zeros_like(trace_p), scale=1.0)
    masks = learned_masks(seg, dark, ppm, ppm, has_grid=False)
    assert masks.follow[59:62, 30:370].any(axis=0).all()


def test_a_steep_stroke_cut_by_grid_lines_is_followed_to_its_tip() -> None:
    """A tall, narrow QRS spike (two 2-px strokes up 100 px and back) on a grid as dark
    as the pen: taking the lines out cuts the strokes every millimetre into pieces
    small enough to be taken for specks, and trace following stopped at the first
    cut. The cuts are joined again; the followed trace reaches the tip."""
    from ecgbridge.digitizer.trace import follow_trace

    ppm = 8.0
    h, w = 400, 480
    dark = np.zeros((h, w), np.float32)
    dark[::8, :] = 0.8  # grid lines every mm, as dark as the trace
    dark[:, 4::8] = 0.8
    dark[279:282, 20:238] = 0.8  # baseline, then the spike from y = 280 up to y = 180
    dark[180:282, 238:242] = 0.8
    dark[279:282, 242:460] = 0.8
    trace_p = np.zeros((h, w), np.float32)  # the model, not quite sure of the spike
    trace_p[274:287, 14:466] = trace_p[176:287, 237:243] = 0.7
    seg = Segmentation(trace=trace_p, text=np.zeros_like(trace_p), scale=1.0)
    masks = learned_masks(seg, dark, ppm, ppm, has_grid=True)
    path = follow_trace(masks.follow, 20, 460, 160, 300, 280.0, ppm)
    # Near the tip (its last piece, under half a millimetre, may stay apart), not the
    # baseline: the pieces were taken for specks.
    assert np.nanmin(path.y) < 200
    # Grid lines away from the stroke stay out.
    assert masks.follow[200, :230].sum() == 0 and masks.follow[200, 250:].sum() == 0


def test_join_cut_strokes_joins_only_long_runs_across_a_cut() -> None:
    from ecgbridge.digitizer.inkmask import join_cut_strokes

    mask = np.zeros((60, 30), np.uint8)
    cut = np.zeros((60, 30), bool)
    cut[30:33, :] = True  # a line 3 px wide taken out
    mask[10:30, 5] = mask[33:50, 5] = 1  # a steep stroke cut by it
    mask[29, 15] = mask[33, 15] = 1  # single pixels (a flat trace's edge, a speck)
    mask[10:25, 25] = mask[28:45, 25] = 1  # a gap of 3 px but beside no cut
    out = join_cut_strokes(mask, cut, 8.0)
    assert out[30:33, 5].all()
    assert not out[30:33, 15].any()
    assert not out[25:28, 25].any()
    assert (out >= mask).all() and out.dtype == mask.dtype
