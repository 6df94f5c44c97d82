"""Unit tests of the raster digitizer's stages on arrays drawn in the test."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ecgbridge.digitizer.deskew import estimate_rotation
from ecgbridge.digitizer.geometry import rotation_homography, warp_image
from ecgbridge.digitizer.grid import measure_grid, measure_pitch
from ecgbridge.digitizer.inkmask import (
    grid_line_map,
    is_grid_mask,
    threshold_candidates,
    trace_mask,
    without_dark_grid,
)
from ecgbridge.digitizer.labels import MIN_LABEL_SCORE, LabelWord, _font_path, recognise_word
from ecgbridge.digitizer.layout import (
    PanelSlot,
    assign_panels,
    choose_columns,
    fill_missing_leads,
)
from ecgbridge.digitizer.normalise import ink_maps
from ecgbridge.digitizer.pulse import find_pulse
from ecgbridge.digitizer.row_reading import erase_path
from ecgbridge.digitizer.rows import TraceRow, find_rows, reach_of_ink
from ecgbridge.digitizer.trace import follow_trace, pen_core_kernel, refine_with_core

DATA = Path(__file__).parent / "data"


def draw_grid(h: int, w: int, px_per_mm: float, *, dotted: bool = False,
              colour: tuple[int, int, int] = (255, 120, 120)) -> np.ndarray:
    """White page with 1-mm minor and 5-mm major lines at a non-integer pitch."""
    img = np.full((h, w, 3), 255, np.uint8)
    minor = tuple(int(255 - 0.35 * (255 - c)) for c in colour)
    for k in range(int(max(h, w) / px_per_mm) + 1):
        pos = int(round(k * px_per_mm))
        col = colour if k % 5 == 0 else minor
        if dotted and k % 5:
            continue
        if pos < w:
            img[:, pos] = col
        if pos < h:
            img[pos, :] = col
    return img


@pytest.mark.parametrize("ppm", [4.7244, 7.3, 11.81])
def test_grid_pitch_is_measured_to_a_tenth_of_a_percent(ppm: float) -> None:
    page = draw_grid(1200, 1600, ppm)
    gx, gy = measure_grid(ink_maps(page).any_ink)
    assert gx.px_per_mm == pytest.approx(ppm, rel=1e-3)
    assert gy.px_per_mm == pytest.approx(ppm, rel=1e-3)


def test_grid_with_only_major_lines_still_gives_millimetres() -> None:
    page = draw_grid(1000, 1500, 6.0, dotted=True, colour=(40, 40, 40))
    gx, gy = measure_grid(ink_maps(page).any_ink)
    assert gx.px_per_mm == pytest.approx(6.0, rel=2e-3)
    assert gy.px_per_mm == pytest.approx(6.0, rel=2e-3)


def test_blurred_grid_without_distinct_major_lines_gives_its_millimetres() -> None:
    """A grey 120-dpi copy, blurred: 1-mm and 5-mm lines alike, and no harmonics left.

    Only the 1-mm line frequency stands out of the spectrum; its sub-harmonics (which
    the trace rows make look like combs) are not the grid (read 1.6 times too coarse
    before).
    """
    ppm, rng = 4.7244, np.random.default_rng(3)
    h, w = 1020, 1320
    dark = np.zeros((h, w), np.float32)
    for pos in np.arange(3.0, max(h, w), ppm):
        k = int(round(pos))
        if k < w:
            dark[:, k] = 0.35
        if k < h:
            dark[k, :] = 0.35
    xs = np.arange(w)
    for row in range(6):
        ys = 90 + row * 112 + 6 * np.sin(xs / 17.0) + rng.normal(0.0, 1.0, w)
        dark[np.clip(ys.astype(int), 0, h - 1), xs] = 1.0
    dark = cv2.GaussianBlur(dark, (0, 0), 1.6) + rng.normal(0.0, 0.02, dark.shape)
    gx, gy = measure_grid(np.clip(dark, 0.0, 1.0).astype(np.float32))
    assert gx.px_per_mm == pytest.approx(ppm, rel=5e-3)
    assert gy.px_per_mm == pytest.approx(ppm, rel=5e-3)


def test_a_photo_s_grid_is_not_read_at_twice_its_5_mm_period() -> None:
    """A photographed page (tests/data/grid): its 1-mm lines are the strongest peak, and
    a 10-mm periodicity (moiré, trace rows) scored as the comb's fundamental once."""
    profile = np.load(DATA / "grid" / "photo_page_column_darkness.npy").astype(np.float64)
    pitch = measure_pitch(profile)
    assert pitch.px_per_mm == pytest.approx(5.63, rel=0.03)  # the 1-mm lines' spacing


def test_no_grid_on_a_plain_page() -> None:
    page = np.full((600, 900, 3), 250, np.uint8)
    xs = np.arange(50, 850)
    pts = np.stack([xs, 300 + 40 * np.sin(xs / 60.0)], axis=1).astype(np.int32)
    cv2.polylines(page, [pts.reshape(-1, 1, 2)], False, (0, 0, 0), 2)
    gx, gy = measure_grid(ink_maps(page).any_ink)
    assert np.isnan(gx.px_per_mm) and np.isnan(gy.px_per_mm)


@pytest.mark.parametrize("angle", [-8.0, -2.5, 3.0, 6.0])
def test_deskew_recovers_the_rotation(angle: float) -> None:
    page = draw_grid(1100, 1500, 7.874)
    h, w = page.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)  # counter-clockwise positive
    rotated = cv2.warpAffine(page, rot, (w, h), borderValue=(255, 255, 255))
    found = estimate_rotation(ink_maps(rotated).any_ink)
    assert found == pytest.approx(angle, abs=0.1)


def test_straight_page_is_not_rotated() -> None:
    assert estimate_rotation(ink_maps(draw_grid(800, 1000, 5.0)).any_ink) == 0.0


def _trace_with_pulse(ppm: float, gain: float, height: int = 400, width: int = 900):
    """Binary mask with a 1-mV pulse (0.2 s at 25 mm/s) then a sine trace."""
    mask = np.zeros((height, width), np.uint8)
    base = 250
    x_rise = 40
    x_fall = x_rise + int(round(5 * ppm))
    top = int(round(base - gain * ppm))
    cv2.line(mask, (10, base), (x_rise, base), 1, 2)
    cv2.line(mask, (x_rise, base), (x_rise, top), 1, 2)
    cv2.line(mask, (x_rise, top), (x_fall, top), 1, 2)
    cv2.line(mask, (x_fall, top), (x_fall, base), 1, 2)
    xs = np.arange(x_fall, width - 10)
    ys = base - 3 * ppm * np.sin((xs - x_fall) / 25.0)
    pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
    cv2.polylines(mask, [pts.reshape(-1, 1, 2)], False, 1, 2)
    return mask, base, x_fall, xs, ys


@pytest.mark.parametrize("gain", [5.0, 10.0, 20.0])
def test_calibration_pulse_gives_gain_foot_and_time_origin(gain: float) -> None:
    ppm = 7.874
    mask, base, x_fall, _, _ = _trace_with_pulse(ppm, gain, height=600)
    path = follow_trace(mask, 5, mask.shape[1], 0, mask.shape[0], base, ppm)
    pulse = find_pulse(path, ppm, ppm)
    assert pulse is not None
    assert pulse.mm_per_mv == gain
    assert pulse.foot_y == pytest.approx(base, abs=1.0)
    assert pulse.x_fall == pytest.approx(x_fall, abs=1.0)


def test_a_pulse_whose_top_line_was_lost_still_gives_gain_and_foot() -> None:
    """A faint copy or the learned mask loses the thin top line and the rise's top."""
    ppm = 5.118
    mask, base, x_fall, _, _ = _trace_with_pulse(ppm, 10.0, height=400)
    top = int(round(base - 10.0 * ppm))
    x_rise = int(np.nonzero(mask[top + 1])[0].min())
    mask[top - 1:top + 2, x_rise + 3:x_fall - 8] = 0  # most of the top line ...
    mask[top - 1:top + 8, x_rise - 1:x_rise + 2] = 0  # ... and the rise's upper end
    mask[top + 20, x_rise + 2] = 1  # a speck below the lost line
    path = follow_trace(mask, 5, mask.shape[1], 0, mask.shape[0], base, ppm)
    pulse = find_pulse(path, ppm, ppm)
    assert pulse is not None
    assert pulse.mm_per_mv == 10.0
    assert pulse.foot_y == pytest.approx(base, abs=1.5)
    assert pulse.x_fall == pytest.approx(x_fall, abs=1.0)


def test_a_pulse_rise_with_a_half_inked_column_beside_it_keeps_its_foot() -> None:
    """A blurred rise: the column beside the full stroke holds its upper part only."""
    ppm = 5.118
    mask, base, x_fall, _, _ = _trace_with_pulse(ppm, 10.0, height=400)
    top = int(round(base - 10.0 * ppm))
    x_rise = int(np.nonzero(mask[top + 1])[0].min())
    mask[top:base + 2, x_rise + 2] = 0
    mask[top:top + 30, x_rise + 2] = 1  # partial column: top 30 px of a 51-px edge
    mask[top:base + 2, x_rise] = 0
    path = follow_trace(mask, 5, mask.shape[1], 0, mask.shape[0], base, ppm)
    pulse = find_pulse(path, ppm, ppm)
    assert pulse is not None
    assert pulse.mm_per_mv == 10.0
    assert pulse.foot_y == pytest.approx(base, abs=1.5)


def test_two_equal_spikes_with_trace_between_are_not_a_pulse() -> None:
    ppm = 5.118
    mask = np.zeros((400, 400), np.uint8)
    base = 250
    cv2.line(mask, (5, base), (395, base), 1, 2)
    for x in (60, 95):  # two 10-mm spikes 7 mm apart, baseline between them
        cv2.line(mask, (x, base), (x, base - 51), 1, 2)
    path = follow_trace(mask, 5, 400, 0, 400, base, ppm)
    assert find_pulse(path, ppm, ppm) is None


def test_no_pulse_on_a_plain_trace() -> None:
    mask = np.zeros((300, 800), np.uint8)
    xs = np.arange(10, 790)
    pts = np.stack([xs, 150 + 20 * np.sin(xs / 30.0)], axis=1).astype(np.int32)
    cv2.polylines(mask, [pts.reshape(-1, 1, 2)], False, 1, 2)
    path = follow_trace(mask, 0, 800, 0, 300, 150.0, 7.874)
    assert find_pulse(path, 7.874, 7.874) is None


def test_trace_following_ignores_a_neighbour_and_text() -> None:
    ppm = 7.874
    mask = np.zeros((500, 1000), np.uint8)
    xs = np.arange(0, 1000)
    ys = 250 + 25 * np.sin(xs / 40.0)
    pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
    cv2.polylines(mask, [pts.reshape(-1, 1, 2)], False, 1, 2)
    # A neighbouring trace's tall QRS reaching into the band, and a label.
    cv2.line(mask, (500, 120), (505, 330), 1, 2)
    cv2.line(mask, (505, 330), (510, 120), 1, 2)
    cv2.putText(mask, "V1", (300, 320), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1, 2)
    path = follow_trace(mask, 0, 1000, 100, 400, 250.0, ppm)
    assert path.found_fraction > 0.98
    err = np.abs(path.y - ys)
    assert np.nanmedian(err) < 1.0
    assert np.nanpercentile(err, 97) < 3.0


def test_trace_following_keeps_qrs_peaks() -> None:
    mask = np.zeros((400, 300), np.uint8)
    pts = np.array([[0, 300], [100, 300], [105, 60], [110, 330], [120, 300], [299, 300]],
                   np.int32)
    cv2.polylines(mask, [pts.reshape(-1, 1, 2)], False, 1, 2)
    path = follow_trace(mask, 0, 300, 0, 400, 300.0, 7.874)
    assert np.nanmin(path.y) < 65  # the R peak at row 60 is kept
    assert np.nanmax(path.y) > 325  # and the S trough at row 330


def test_a_hole_at_a_narrow_peak_does_not_notch_it() -> None:
    """Up and down strokes of a 3-column R wave leave a hole with a speck at its foot.

    The speck's column holds two runs touching the previous column's run; the tall one
    continues the stroke (the baseline pull alone chose the speck: a notch at the peak).
    """
    mask = np.zeros((120, 40), np.uint8)
    mask[80:82, :] = 1  # the baseline trace
    mask[30:82, 18] = 1  # upstroke
    mask[30:52, 19] = 1  # the tip's middle column ...
    mask[56, 19] = 1  # ... with a speck below its hole
    mask[30:82, 20] = 1  # downstroke
    path = follow_trace(mask, 0, 40, 0, 120, 81.0, 5.0)
    assert path.top[19] == 30 and path.bottom[19] == 51
    assert np.nanmin(path.y[17:22]) < 35  # the peak is kept


def test_wide_pen_is_read_from_the_stroke_core() -> None:
    """A 5-px pen smears a steep QRS sideways; the core gives the centre line back."""
    ppm = 7.874
    mask = np.zeros((400, 600), np.uint8)
    xs = np.arange(0, 600, 0.25)
    # A 12-px wide QRS (100 px tall) whose knees the run centres round off.
    ys = 300 - 100 * np.clip(1 - np.abs(xs - 300) / 6.0, 0, None) + 10 * np.sin(xs / 40.0)
    pts = np.stack([xs * 16, ys * 16], axis=1).round().astype(np.int32)
    cv2.polylines(mask, [pts.reshape(-1, 1, 2)], False, 1, 5, lineType=cv2.LINE_8, shift=4)
    path = follow_trace(mask, 0, 600, 100, 400, 300.0, ppm)
    k = pen_core_kernel(path.line_width)
    assert k == 3
    core = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    refined = refine_with_core(path, core)
    cols = np.arange(600)
    truth = np.interp(cols, xs, ys)
    qrs = (cols >= 290) & (cols <= 310)
    err_ink = np.nanmean(np.abs(path.y - truth)[qrs])
    err_core = np.nanmean(np.abs(refined.y - truth)[qrs])
    assert err_core < 0.6 * err_ink
    # Away from the QRS nothing changes by more than a pixel.
    assert np.nanmax(np.abs(refined.y - path.y)[~qrs & (cols > 5) & (cols < 595)]) <= 1.0


def test_thin_pens_are_not_eroded() -> None:
    assert pen_core_kernel(2.0) == 1


def _render_text(text: str, height: int, font_file: str = "DejaVuSans.ttf") -> np.ndarray:
    font = ImageFont.truetype(_font_path(font_file), height * 2)
    img = Image.new("L", (height * 12, height * 4), 0)
    ImageDraw.Draw(img).text((5, 5), text, fill=255, font=font)
    arr = np.asarray(img) > 127
    ys, xs = np.nonzero(arr)
    return arr[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.uint8)


@pytest.mark.parametrize("lead", ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V4", "V6"])
def test_lead_names_are_read(lead: str) -> None:
    word = _render_text(lead, 14)
    found, score, _ = recognise_word(word)
    assert found == lead
    assert score > 0.7


def test_lead_name_in_another_font_and_size_is_read() -> None:
    mask = np.zeros((60, 200), np.uint8)
    cv2.putText(mask, "aVL", (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1, 2)
    ys, xs = np.nonzero(mask)
    found, _, _ = recognise_word(mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1])
    assert found == "aVL"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_blob_is_not_a_lead_name(seed: int) -> None:
    rng = np.random.default_rng(seed)
    blob = (rng.random((20, 30)) > 0.5).astype(np.uint8)
    _, score, _ = recognise_word(blob)
    assert score < MIN_LABEL_SCORE


def _label(lead: str, x: int) -> LabelWord:
    return LabelWord(lead, (x, 100, x + 20, 115), 0.9)


def test_layout_columns_and_rhythm_strip_from_label_positions() -> None:
    ppm = 7.874
    origin, length = 100.0, 250 * ppm
    col = length / 4
    rows = [
        [_label(lead, int(origin + k * col + 3)) for k, lead in enumerate(group)]
        for group in (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"),
                      ("III", "aVF", "V3", "V6"))
    ] + [[_label("II", int(origin + 3))]]
    n = choose_columns(rows, [origin] * 4, length, ppm)
    assert n == 4
    slots = [assign_panels(r, origin, length, n, ppm) for r in rows]
    assert [s.lead for s in slots[0]] == ["I", "aVR", "V1", "V4"]
    assert len(slots[3]) == 1 and slots[3][0].columns == 1
    assert slots[1][2].x0 == int(round(origin + 2 * col))


def test_layout_6x2_labels_give_two_columns() -> None:
    ppm = 7.874
    origin, length = 100.0, 250 * ppm
    rows = [[_label(a, int(origin + 2)), _label(b, int(origin + length / 2 + 2))]
            for a, b in (("V1", "V4"), ("I", "aVR"), ("V2", "V5"))]
    assert choose_columns(rows, [origin] * 3, length, ppm) == 2


def test_unread_labels_are_inferred_from_their_column_group() -> None:
    def slot(lead: str, k: int) -> PanelSlot:
        return PanelSlot(lead, k, 4, k * 100, (k + 1) * 100, 0.9)

    rows = [
        [slot("", 0), slot("", 1), slot("V1", 2), slot("V4", 3)],
        [slot("II", 0), slot("aVL", 1), slot("V2", 2), slot("V5", 3)],
        [slot("III", 0), slot("aVF", 1), slot("V3", 2), slot("V6", 3)],
    ]
    named = fill_missing_leads(rows)
    assert [s.lead for s in named[0]] == ["I", "aVR", "V1", "V4"]


def test_ambiguous_unread_labels_are_dropped() -> None:
    rows = [[PanelSlot("", 0, 2, 0, 100, 0.0), PanelSlot("", 1, 2, 100, 200, 0.0)],
            [PanelSlot("", 0, 2, 0, 100, 0.0), PanelSlot("V5", 1, 2, 100, 200, 0.9)]]
    named = fill_missing_leads(rows)
    assert [s.lead for r in named for s in r] == ["V5"]


def test_missing_limb_leads_are_derived_where_two_others_overlap() -> None:
    from ecgbridge.digitizer.postprocess import derive_missing_limb_leads

    t = np.linspace(0, 2, 1000)
    lead_i = np.sin(2 * np.pi * t)
    lead_ii = 0.5 * np.cos(2 * np.pi * 3 * t)
    avl = lead_i - lead_ii / 2
    shown_avl = avl.copy()
    shown_avl[500:] = np.nan  # aVL printed for the first second only
    derived = derive_missing_limb_leads({"II": lead_ii, "aVL": shown_avl})
    assert set(derived) == {"I", "III", "aVR", "aVF"}
    np.testing.assert_allclose(derived["I"][:500], lead_i[:500], atol=1e-9)
    np.testing.assert_allclose(derived["III"][:500], (lead_ii - lead_i)[:500], atol=1e-9)
    assert np.isnan(derived["aVR"][500:]).all()


def test_limb_leads_read_together_are_reconciled() -> None:
    from ecgbridge.digitizer.postprocess import reconcile_limb_leads

    rng = np.random.default_rng(0)
    t = np.linspace(0, 2.5, 1250)
    lead_i = np.sin(2 * np.pi * t)
    lead_ii = 0.5 * np.cos(2 * np.pi * 3 * t)
    truth = {"I": lead_i, "II": lead_ii, "III": lead_ii - lead_i}
    read = {k: v + rng.normal(0, 0.02, v.size) for k, v in truth.items()}
    read["V1"] = np.zeros(t.size)
    read["III"][600:700] += 1.0  # a misread stretch: left as read
    out = reconcile_limb_leads(read)
    good = np.r_[0:600, 700:1250]
    np.testing.assert_allclose((out["I"] + out["III"] - out["II"])[good], 0, atol=1e-9)
    for lead in truth:
        before = np.sqrt(np.mean((read[lead] - truth[lead])[good] ** 2))
        after = np.sqrt(np.mean((out[lead] - truth[lead])[good] ** 2))
        assert after < 0.85 * before, lead
    np.testing.assert_array_equal(out["III"][600:700], read["III"][600:700])
    assert out["V1"] is read["V1"]


def test_limb_leads_out_of_step_are_left_as_read() -> None:
    from ecgbridge.digitizer.postprocess import reconcile_limb_leads

    t = np.arange(1250) / 500.0
    beats = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in (0.4, 1.2, 2.0))
    lead_i = 0.6 * beats
    lead_ii = 1.0 * beats
    # Lead I read from a row whose time is 20 ms off (a photographed page's row).
    read = {"I": np.roll(lead_i, 10), "II": lead_ii, "III": lead_ii - lead_i}
    out = reconcile_limb_leads(read)
    for lead in read:
        np.testing.assert_array_equal(out[lead], read[lead])


def test_fewer_than_three_limb_leads_are_left_alone() -> None:
    from ecgbridge.digitizer.postprocess import reconcile_limb_leads

    read = {"I": np.ones(5), "II": np.zeros(5)}
    assert reconcile_limb_leads(read) is read


def test_no_limb_leads_are_derived_from_a_single_lead() -> None:
    from ecgbridge.digitizer.postprocess import derive_missing_limb_leads

    assert derive_missing_limb_leads({"II": np.zeros(10), "V1": np.zeros(10)}) == {}


def test_misread_rhythm_strip_label_is_corrected_from_the_grid() -> None:
    from ecgbridge.digitizer.postprocess import relabel_rhythm_strips
    from ecgbridge.ecg import PanelInfo

    rng = np.random.default_rng(0)
    lead_ii = np.cumsum(rng.standard_normal(5000)) * 0.01
    lead_i = np.cumsum(rng.standard_normal(5000)) * 0.01
    panel_ii = np.full(5000, np.nan)
    panel_ii[:1250] = lead_ii[:1250]
    panel_i = np.full(5000, np.nan)
    panel_i[1250:2500] = lead_i[1250:2500]  # some other place: no overlap with the strip's II

    def info(lead: str, strip: bool) -> PanelInfo:
        return PanelInfo(lead, 0, (0.0, 0.0, 1.0, 1.0), 0.0, 0.0, 10.0 if strip else 2.5, strip)

    cands = {
        "II": [(panel_ii, 0.9, info("II", False))],
        "I": [(panel_i, 0.9, info("I", False)), (lead_ii.copy(), 0.8, info("I", True))],
    }
    fixed = relabel_rhythm_strips(cands)
    assert [c[2].rhythm_strip for c in fixed["II"]] == [False, True]
    assert [c[2].rhythm_strip for c in fixed["I"]] == [False]


def test_slots_take_the_names_their_panels_are_delivered_under() -> None:
    """A rhythm strip whose "II" label was read as "I" and renamed: the layout says +II."""
    from ecgbridge.digitizer.layout import PanelSlot, layout_name
    from ecgbridge.digitizer.panels import names_from_panels
    from ecgbridge.ecg import PanelInfo

    rows = [TraceRow(100.0 + 80.0 * i, 60 + 80 * i, 140 + 80 * i, 10, 1010, 0.9, 60 + 80 * i,
                     140 + 80 * i) for i in range(2)]
    slots = [[PanelSlot("I", 0, 2, 10, 510, 0.9), PanelSlot("V1", 1, 2, 510, 1010, 0.9)],
             [PanelSlot("I", 0, 1, 10, 1010, 0.8)]]

    def cand(lead: str, slot: PanelSlot, row: TraceRow) -> tuple[np.ndarray, float, PanelInfo]:
        box = (float(slot.x0), float(row.top), float(slot.x1), float(row.bottom))
        return (np.zeros(10), 0.9, PanelInfo(lead, 0, box, 0.0, 0.0, 2.5, slot.columns == 1))

    delivered = {"I": [cand("I", slots[0][0], rows[0])], "V1": [cand("V1", slots[0][1], rows[0])],
                 "II": [cand("II", slots[1][0], rows[1])]}
    named = names_from_panels(slots, delivered, rows)
    assert [[s.lead for s in r] for r in named] == [["I", "V1"], ["II"]]
    assert layout_name(named) == "1x2+II"


def test_qrs_right_after_the_pulse_fall_is_kept() -> None:
    from ecgbridge.digitizer.layout import PanelSlot
    from ecgbridge.digitizer.panels import blank_pulse_fall

    ppm = 7.874
    mask = np.zeros((400, 700), np.uint8)
    base, top = 300, 300 - int(round(10 * ppm))
    x_rise, x_fall = 40, 40 + int(round(5 * ppm))
    pts = np.array([[10, base], [x_rise, base], [x_rise, top], [x_fall, top], [x_fall, base],
                    [x_fall + 8, base], [x_fall + 12, base - 45], [x_fall + 16, base + 10],
                    [x_fall + 20, base], [690, base]], np.int32)
    cv2.polylines(mask, [pts.reshape(-1, 1, 2)], False, 1, 3)
    path = follow_trace(mask, 5, 700, 0, 400, base, ppm)
    pulse = find_pulse(path, ppm, ppm)
    assert pulse is not None
    slot = PanelSlot("I", 0, 4, int(pulse.x_fall), 690, 1.0)
    ys = path.y[slot.x0 - path.x0: slot.x1 - path.x0].copy()
    blank_pulse_fall(ys, path, slot, pulse)
    blanked = np.flatnonzero(np.isnan(ys))
    assert blanked.size and blanked.max() <= 4  # the fall stroke only
    assert np.nanmin(ys[:20]) < base - 35  # the R wave 12 px after the fall is kept


def _black_grid_page(ppm: float = 6.0, shadow: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A page with a black grid (major lines as dark as the trace) and one wavy trace.

    Returns the grey image and the trace's row for every column.
    """
    h, w = int(60 * ppm), int(200 * ppm)
    img = np.full((h, w), 255, np.uint8)
    for mm in range(0, 201):
        shade, width = (40, max(1, int(round(0.2 * ppm)))) if mm % 5 == 0 else (150, 1)
        x = int(round(mm * ppm))
        cv2.line(img, (x, 0), (x, h - 1), shade, width)
        if mm <= 60:
            y = int(round(mm * ppm))
            cv2.line(img, (0, y), (w - 1, y), shade, width)
    xs = np.arange(int(10 * ppm), int(190 * ppm))
    t = (xs - xs[0]) / (25.0 * ppm)
    # Flat stretches lie on the 30 mm grid line; a QRS-like spike every 0.8 s.
    ys = 30 * ppm - 12 * ppm * np.exp(-(((t % 0.8) - 0.4) / 0.02) ** 2) \
        - 2 * ppm * np.exp(-(((t % 0.8) - 0.6) / 0.06) ** 2)
    pts = np.column_stack([xs, ys]).round().astype(np.int32)
    cv2.polylines(img, [pts], False, 0, max(1, int(round(0.3 * ppm))), cv2.LINE_AA)
    if shadow:
        yy, xx = np.mgrid[0:h, 0:w]
        # A crease's shadow: sharp-edged, darker than the paper texture allows for.
        inside = ((xx - 0.4 * w) / (30 * ppm)) ** 2 + ((yy - 0.5 * h) / (15 * ppm)) ** 2 < 1
        blob = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), ppm)
        img = (img * (1.0 - 0.5 * blob)).astype(np.uint8)
    return img, ys


@pytest.mark.parametrize("shadow", [False, True])
def test_black_grid_lines_are_removed_and_the_trace_kept(shadow: bool) -> None:
    ppm = 6.0
    img, ys = _black_grid_page(ppm, shadow)
    dark = ink_maps(np.stack([img] * 3, axis=-1)).dark_ink
    lines = grid_line_map(dark, ppm, ppm)
    assert is_grid_mask(dark, lines, threshold_candidates(dark, ppm, ppm)[0])
    cleaned = without_dark_grid(dark, ppm, ppm)
    mask = trace_mask(cleaned, threshold_candidates(cleaned, ppm, ppm)[0], ppm)
    rows = find_rows(mask, ppm, ppm)
    assert len(rows) == 1 and abs(rows[0].baseline - 30 * ppm) < 1.0
    x0 = int(10 * ppm)
    near = np.zeros_like(mask)
    pts = np.column_stack([np.arange(x0, x0 + ys.size), ys]).round().astype(np.int32)
    cv2.polylines(near, [pts], False, 1, int(round(1.5 * ppm)))
    # Nearly all mask ink is trace, and nearly every trace column has mask ink.
    assert mask[near == 0].sum() <= 0.03 * mask.sum()
    covered = (mask * near)[:, x0:x0 + ys.size].any(axis=0)
    assert covered.mean() >= 0.95


@pytest.mark.parametrize("record", ["A1983", "JS20005"])
def test_grid_pitch_of_a_blurred_noisy_100_dpi_scan(rendered_page, record: str) -> None:
    # Blur leaves little but the 5-mm fundamental: its sub-harmonics must not win.
    page = rendered_page(record, layout="3x4+3", dpi=100, grid_color="grey", rotation_deg=1.6,
                         blur_sigma=1.21, noise_sigma=9.58, jpeg_quality=75)
    ink = ink_maps(np.array(page.image)).any_ink
    h, w = ink.shape
    rectified = warp_image(ink, rotation_homography((h, w, 3), estimate_rotation(ink)), (w, h),
                           fill=0.0)
    gx, gy = measure_grid(rectified)
    assert gx.px_per_mm == pytest.approx(page.px_per_mm, rel=0.01)
    assert gy.px_per_mm == pytest.approx(page.px_per_mm, rel=0.01)


def test_wandering_rows_between_flat_rows_are_found() -> None:
    """Flat rows pile up one baseline peak each; swinging traces between them still count."""
    ppm, pitch = 8.0, 120
    mask = np.zeros((1100, 2100), np.uint8)
    x = np.arange(100, 2060)
    bases = [100 + pitch * i for i in range(8)]
    for i, base in enumerate(bases):
        y = np.full(x.shape, float(base))
        if i in (3, 6):
            y += 45 * np.sin(2 * np.pi * x / 90.0) + 25 * np.sin(2 * np.pi * x / 1500.0)
        pts = np.column_stack([x, y]).round().astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(mask, [pts], False, 1, 2)
    rows = find_rows(mask, ppm, ppm)
    assert len(rows) == len(bases)
    for row, base in zip(rows, bases, strict=True):
        assert abs(row.baseline - base) < 0.3 * pitch


def test_a_trace_split_by_removed_grid_lines_is_still_a_row() -> None:
    """Where a dark grid's lines were taken out, a trace crossing them is cut every few
    mm; the pieces are too short to count unless the line-wide gaps are bridged."""
    ppm = 8.0
    mask = np.zeros((400, 1600), np.uint8)
    x = np.arange(80, 1520)
    y = 200 + 6 * np.sin(2 * np.pi * x / 160.0)
    pts = np.column_stack([x, y]).round().astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(mask, [pts], False, 1, 2)
    # A 2-px gap at every 5-mm line: pieces of 38 px, shorter than a trace piece.
    for gx in range(84, 1520, int(5 * ppm)):
        mask[:, gx:gx + 2] = 0
    assert find_rows(mask, ppm, ppm) == []
    rows = find_rows(mask, ppm, ppm, bridge_gaps=True)
    assert len(rows) == 1 and abs(rows[0].baseline - 200) < 2.0
    assert rows[0].x_start <= 90 and rows[0].x_end >= 1500


def test_einthoven_check_accepts_rows_of_different_lengths() -> None:
    """12x1 rows may run past 10 s by different amounts; the check must not fail."""
    from ecgbridge.digitizer.postprocess import check_einthoven
    from ecgbridge.ecg import PanelInfo

    t = np.arange(5200) / 500.0
    lead_i, lead_iii = np.sin(2 * np.pi * t), 0.5 * np.cos(2 * np.pi * 1.3 * t)
    signals = {"I": lead_i[:5000], "II": (lead_i + lead_iii)[:5124], "III": lead_iii[:5060]}
    candidates = {
        lead: [(sig, 1.0, PanelInfo(lead, 0, (0.0, 0.0, 1.0, 1.0), 0.0, 0.0, sig.size / 500.0))]
        for lead, sig in signals.items()
    }
    out = check_einthoven(candidates)
    assert {lead: out[lead][0][2].lead for lead in out} == {"I": "I", "II": "II", "III": "III"}


def test_a_flat_peak_top_is_read_at_its_middle() -> None:
    """A pen draws a narrow peak's top over its width: the peak is the middle column."""
    mask = np.zeros((120, 40), np.uint8)
    mask[80:82, :] = 1
    mask[30:82, 17:22] = 1  # a 5-column flat top, centred on column 19
    path = follow_trace(mask, 0, 40, 0, 120, 81.0, 5.0)
    assert int(np.nanargmin(path.y[10:30])) + 10 == 19


#: Columns of a narrow R wave read at 100 dpi (trn_82, rows from 60 px above the
#: baseline): specks fill the hole at the foot of its up and down strokes.
_SPECKLED_R_WAVE = (
    "........................................................#...",
    ".........................................#..#############...",
    ".................#...#..##################..#...............",
    ".....###################################....##..............",
    ".................#...#.#.#.###.#####################........",
    ".............................#...#..............#####.......",
    "....................................................####....",
    "........................................................#...",
)


def test_a_stroke_the_path_threads_past_still_gives_the_wave_its_tip() -> None:
    mask = np.zeros((60, 40), np.uint8)
    mask[56, :16] = 1
    mask[56, 24:] = 1
    for k, column in enumerate(_SPECKLED_R_WAVE):
        mask[:, 16 + k] = [ch == "#" for ch in column]
    path = follow_trace(mask, 0, 40, 0, 60, 56.0, 3.94)
    # The up stroke reaches row 5 in column 19: the peak is read there, not on the
    # specks at rows 44-45 that the path threads through.
    assert np.nanmin(path.y) <= 6.0
    assert int(np.nanargmin(path.y)) == 19
    # The chosen runs stay as they were (pulses and markers are measured on them);
    # erasing the trace before labels are read takes the stroke too.
    assert path.top[19] == 44 and path.read_extent[0][19] == 5
    erased = mask.copy()
    erase_path(erased, path, pad=0)
    assert not erased[5:40, 19].any()
    # Followed in a band whose edge the stroke reaches, it may be a neighbouring
    # row's QRS (12x1 pages): not taken.
    cut = follow_trace(mask, 0, 40, 5, 60, 56.0, 3.94)
    assert np.nanmin(cut.y) > 25.0  # the chosen runs reach row 31 at most


def test_a_row_ending_on_a_steep_stroke_reaches_its_last_ink() -> None:
    """Row extents are measured on flat pieces; the last stroke still belongs to the row."""
    mask = np.zeros((100, 200), np.uint8)
    mask[50:52, 10:150] = 1  # the flat trace
    mask[20:52, 150:153] = 1  # it ends on a steep upstroke
    row = TraceRow(51.0, 0, 100, 10, 150, 1.0, 0, 100)
    assert reach_of_ink(mask, row, 5.0, 1) == 152
    assert reach_of_ink(mask, row, 5.0, -1) == 10
