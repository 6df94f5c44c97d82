"""Vector-PDF trace reading: synthetic PDFs with a known signal, and real cart exports.

Real fixtures (tests/data/vector_pdf, MIT, see tests/data/README.md):
Schiller AT-102P 6x1 over 2 pages (10 s, 25 mm/s), GE CardioSoft 3 pages with
V3r/V4r/V7 on page 3 (5 s, 50 mm/s, grid drawn as font glyphs) and a CardioSoft
export re-distilled by PDF24 (no /Rotate).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vector_pdf_maker import PageSpec, Strip, layout_3x4_plus_ii, make_pdf

from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.vector import digitize_vector_pages
from ecgbridge.ecg import ECG, LEADS
from ecgbridge.inputs.load import load_input
from ecgbridge.inputs.page import Page, VectorPath

DATA = Path(__file__).parent / "data" / "vector_pdf"
SCHILLER = DATA / "schiller_6x1_2pages.pdf"
CARDIOSOFT = DATA / "cardiosoft_3pages_15lead.pdf"
CARDIOSOFT_PDF24 = DATA / "cardiosoft_pdf24_2pages.pdf"

#: Largest deviation (mV) between a drawn polyline and what is read back, after
#: removing a constant offset: only float rounding in the PDF remains.
EXACT_MV = 0.002


def _digitize(pdf: bytes | Path, **options: object) -> ECG | None:
    loaded = load_input(pdf)
    return digitize_vector_pages(loaded.pages, DigitizeOptions(**options), source=loaded.source)


def _max_deviation(read: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    shown = np.isfinite(read)
    err = read[shown] - truth[shown]
    return float(np.max(np.abs(err - np.median(err)))), int(shown.sum())


# ------------------------------------------------------------------ synthetic pages


@pytest.fixture(scope="module")
def record(record_signals):  # type: ignore[no-untyped-def]
    return record_signals("HR06004")


@pytest.mark.parametrize("rotate", [0, 90, 270])
def test_3x4_page_read_exactly_at_true_times(record, rotate: int) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    ecg = _digitize(make_pdf([layout_3x4_plus_ii(signals, fs)], fs=fs, rotate=rotate))
    assert ecg is not None
    cal = ecg.calibration
    assert (cal.method, cal.layout) == ("vector", "3x4+II")
    assert (cal.mm_per_mv, cal.gain_source) == (10.0, "pulse")
    assert (cal.mm_per_s, cal.speed_source) == (25.0, "printed")
    assert ecg.n_samples == 5000 and ecg.fs == fs
    columns = {"I": 0, "III": 0, "aVR": 1, "aVL": 1, "aVF": 1,
               "V1": 2, "V2": 2, "V3": 2, "V4": 3, "V5": 3, "V6": 3}
    for lead, column in columns.items():
        row = ecg.lead(lead)
        shown = np.flatnonzero(np.isfinite(row))
        # Column c shows 2.5c .. 2.5(c+1) s (one sample of slack at each end).
        assert abs(shown[0] - column * 1250) <= 1, lead
        assert abs(shown[-1] - (column + 1) * 1250 + 1) <= 2, lead
        deviation, _ = _max_deviation(row, signals[LEADS.index(lead)])
        assert deviation < EXACT_MV, lead
    deviation, n = _max_deviation(ecg.lead("II"), signals[LEADS.index("II")])
    assert n >= 4990 and deviation < EXACT_MV
    # The pulse foot is the 0 mV line of the first column: offset read exactly.
    assert abs(np.nanmedian(ecg.lead("I") - signals[0])) < EXACT_MV
    assert all(q == 1.0 for q in ecg.quality)


def test_rotation_does_not_change_the_result(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    upright = _digitize(make_pdf([layout_3x4_plus_ii(signals, fs)], fs=fs))
    rotated = _digitize(make_pdf([layout_3x4_plus_ii(signals, fs)], fs=fs, rotate=90))
    assert upright is not None and rotated is not None
    both = np.isfinite(upright.signals) & np.isfinite(rotated.signals)
    assert both.sum() > 12 * 1200
    assert np.max(np.abs(upright.signals[both] - rotated.signals[both])) < EXACT_MV
    for a, b in zip(upright.panels, rotated.panels, strict=True):
        assert a.lead == b.lead
        assert np.allclose(a.box, b.box, atol=1.5)


def test_page_scaled_on_the_way_is_corrected_from_its_grid(record) -> None:  # type: ignore[no-untyped-def]
    import io

    import pypdfium2 as pdfium

    signals, fs = record
    source = pdfium.PdfDocument(make_pdf([layout_3x4_plus_ii(signals, fs)], fs=fs))
    target = pdfium.PdfDocument.new()
    form = source.page_as_xobject(0, target).as_pageobject()
    form.transform(pdfium.PdfMatrix().scale(0.95, 0.95).translate(20, 15))  # "fit to page"
    page = target.new_page(842, 595)
    page.insert_obj(form)
    page.gen_content()
    buffer = io.BytesIO()
    target.save(buffer)

    loaded = load_input(buffer.getvalue())
    ecg = digitize_vector_pages(loaded.pages, DigitizeOptions())
    assert ecg is not None
    cal = ecg.calibration
    assert any("95.0% x 95.0%" in w for w in cal.warnings)
    assert (cal.layout, cal.mm_per_mv, cal.mm_per_s) == ("3x4+II", 10.0, 25.0)
    assert cal.px_per_mm_x == pytest.approx(0.95 * loaded.pages[0].dpi / 25.4, rel=1e-3)
    for i, lead in enumerate(LEADS):
        deviation, shown = _max_deviation(ecg.signals[i], signals[i])
        assert shown >= 1245 and deviation < 5 * EXACT_MV, lead
    assert _trace_pixels_are_ink(ecg, loaded.pages) > 0.97


def test_lead_order_comes_from_the_printed_labels(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    order = (("V4", "aVR", "II"), ("V1", "I", "V6"), ("aVF", "V2", "III"), ("V5", "aVL", "V3"))
    page = layout_3x4_plus_ii(signals, fs, order=order, rhythm="V1")
    ecg = _digitize(make_pdf([page], fs=fs))
    assert ecg is not None
    assert ecg.calibration.layout == "3x4+V1"
    for column, leads in enumerate(order):
        for lead in leads:
            row = ecg.lead(lead)
            if lead != "V1":
                assert abs(np.flatnonzero(np.isfinite(row))[0] - column * 1250) <= 1, lead
            deviation, _ = _max_deviation(row, signals[LEADS.index(lead)])
            assert deviation < EXACT_MV, lead


def test_row_drawn_as_one_polyline_is_cut_at_the_printed_labels(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    columns = (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))
    strips, texts = [], []
    for r in range(3):
        # One polyline per row: column c shows its lead during 2.5c .. 2.5(c+1) s.
        row = np.concatenate([
            signals[LEADS.index(columns[c][r]), c * 1250:(c + 1) * 1250] for c in range(4)
        ])
        strips.append(Strip("", row, 25.0, 50.0 + 35.0 * r))
        texts.extend((columns[c][r], 25.0 + c * 62.5 + 1.0, 50.0 + 35.0 * r + 5.0)
                     for c in range(4))
    spec = PageSpec(strips=strips, texts=(*texts, ("25 mm/s 10 mm/mV", 20.0, 195.0)))
    ecg = _digitize(make_pdf([spec], fs=fs))
    assert ecg is not None
    assert ecg.calibration.layout == "3x4"
    assert ecg.present_leads() == LEADS
    for c, column in enumerate(columns):
        for lead in column:
            shown = np.flatnonzero(np.isfinite(ecg.lead(lead)))
            assert abs(shown[0] - c * 1250) <= 1 and abs(shown[-1] - (c + 1) * 1250) <= 2, lead
            deviation, _ = _max_deviation(ecg.lead(lead), signals[LEADS.index(lead)])
            assert deviation < EXACT_MV, lead


def test_inverted_avr_of_a_cabrera_page_is_turned_back(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    avr = signals[LEADS.index("aVR"), :2500]
    strips = [Strip("aVL", signals[LEADS.index("aVL"), :2500], 20.0, 40.0),
              Strip("I", signals[0, :2500], 20.0, 70.0),
              Strip("-aVR", -avr, 20.0, 100.0)]
    spec = PageSpec(strips=strips, texts=(("25 mm/s 10 mm/mV", 20.0, 195.0),))
    ecg = _digitize(make_pdf([spec], fs=fs))
    assert ecg is not None
    assert ecg.present_leads() == ("I", "aVR", "aVL")
    assert _max_deviation(ecg.lead("aVR"), avr)[0] < EXACT_MV
    assert not ecg.calibration.warnings or all("-aVR" not in w for w in ecg.calibration.warnings)


def _six_by_one(signals: np.ndarray, leads: tuple[str, ...], n: int, *, pulse: str,
                texts: tuple[tuple[str, float, float], ...]) -> PageSpec:
    strips = [
        Strip(lead, signals[LEADS.index(lead), :n] if lead in LEADS else signals[1, :n],
              20.0, 35.0 + 28.0 * i, label_offset_mm=(-4.0, -6.0))
        for i, lead in enumerate(leads)
    ]
    return PageSpec(strips=strips, texts=texts, pulse=pulse)


def test_two_pages_at_50_mm_s_merge_and_extra_leads_are_ignored(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    n = 2500  # 5 s at 50 mm/s = 250 mm
    printed = (("50mm/s 10mm/mV 0.01-20Hz", 20.0, 200.0),)
    pages = [
        _six_by_one(signals, ("I", "II", "III", "aVR", "aVL", "aVF"), n, pulse="in_trace",
                    texts=printed),
        _six_by_one(signals, ("V1", "V2", "V3", "V4", "V5", "V6"), n, pulse="in_trace",
                    texts=printed),
        _six_by_one(signals, ("V3r", "V4r", "V7"), n, pulse="in_trace", texts=printed),
    ]
    ecg = _digitize(make_pdf(pages, fs=fs, speed=50.0))
    assert ecg is not None
    assert ecg.n_samples == 2500
    assert ecg.calibration.mm_per_s == 50.0 and ecg.calibration.speed_source == "printed"
    assert ecg.calibration.layout == "6x1"
    assert any("V3r" in w and "V7" in w for w in ecg.calibration.warnings)
    assert ecg.present_leads() == LEADS
    for i, lead in enumerate(LEADS):
        deviation, shown = _max_deviation(ecg.signals[i], signals[i, :n])
        assert shown >= 2495 and deviation < EXACT_MV, lead
        # The pulse drawn at the start of each polyline is not part of the lead.
        assert np.isfinite(ecg.signals[i, :3]).all(), lead
    assert {p.page for p in ecg.panels} == {0, 1}


def test_gain_from_pulse_then_printed_then_default_then_user(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    leads = ("I", "II", "III", "aVR", "aVL", "aVF")

    def page(pulse: str, text: str) -> PageSpec:
        return _six_by_one(signals, leads, 2500, pulse=pulse, texts=((text, 20.0, 200.0),))

    pulse_5 = _digitize(make_pdf([page("separate", "")], fs=fs, gain=5.0))
    assert pulse_5 is not None
    assert (pulse_5.calibration.mm_per_mv, pulse_5.calibration.gain_source) == (5.0, "pulse")
    assert _max_deviation(pulse_5.lead("II"), signals[1, :2500])[0] < 2 * EXACT_MV

    printed_20 = _digitize(make_pdf([page("none", "25 mm/s 20 mm/mV")], fs=fs, gain=20.0))
    assert printed_20 is not None
    assert printed_20.calibration.gain_source == "printed"
    assert printed_20.calibration.mm_per_mv == 20.0
    assert _max_deviation(printed_20.lead("II"), signals[1, :2500])[0] < EXACT_MV

    nothing = _digitize(make_pdf([page("none", "")], fs=fs))
    assert nothing is not None
    cal = nothing.calibration
    assert (cal.gain_source, cal.speed_source) == ("default", "default")
    assert any("assumed 10 mm/mV" in w for w in cal.warnings)
    assert any("assumed 25 mm/s" in w for w in cal.warnings)

    user = _digitize(make_pdf([page("separate", "")], fs=fs, gain=10.0), gain=20.0,
                     paper_speed=50.0)
    assert user is not None
    assert (user.calibration.gain_source, user.calibration.speed_source) == ("user", "user")
    assert user.n_samples == 1250  # 250 mm at 50 mm/s
    # Twice the gain -> half the millivolts.
    ratio = np.nanstd(user.lead("II")) / np.nanstd(signals[1, :2500])
    assert 0.45 < ratio < 0.55


def test_trace_split_into_two_strokes_is_rejoined(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    ii = signals[LEADS.index("II"), :2500]
    first = Strip("II", ii[:1000], 20.0, 60.0)
    t = np.arange(1000, 2500) / fs
    # Second stroke of the same trace: starts one sample later, not at the first's end.
    rest = np.column_stack([20.0 + t * 25.0, 60.0 - ii[1000:] * 10.0])
    spec = PageSpec(strips=[first], texts=(("25 mm/s 10 mm/mV", 20.0, 195.0),),
                    extra_lines=(rest,))
    ecg = _digitize(make_pdf([spec], fs=fs))
    assert ecg is not None
    assert not any("without a lead label" in w for w in ecg.calibration.warnings)
    deviation, shown = _max_deviation(ecg.lead("II"), ii)
    assert shown >= 2495 and deviation < EXACT_MV


def test_labels_set_glyph_by_glyph_are_read(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    strips = [Strip("", signals[LEADS.index(lead), :2500], 20.0, 40.0 + 30.0 * i)
              for i, lead in enumerate(("aVR", "V1", "III"))]
    glyphs = []
    advance = {"I": 0.8, "1": 1.3}  # mm, as a 7 pt font would space them; others 1.6
    for i, word in enumerate(("aVR", "V1", "III")):
        x = 21.0
        for char in word:  # one text object per character
            glyphs.append((char, x, 40.0 + 30.0 * i + 5.0))
            x += advance.get(char, 1.6)
    spec = PageSpec(strips=strips, texts=(*glyphs, ("25 mm/s 10 mm/mV", 20.0, 195.0)))
    ecg = _digitize(make_pdf([spec], fs=fs))
    assert ecg is not None
    assert ecg.present_leads() == ("III", "aVR", "V1")
    for lead in ecg.present_leads():
        assert _max_deviation(ecg.lead(lead), signals[LEADS.index(lead), :2500])[0] < EXACT_MV


def test_boxes_and_header_rectangles_are_not_calibration_pulses(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    page = _six_by_one(signals, ("I", "II", "III"), 2500, pulse="none",
                       texts=(("25 mm/s 20 mm/mV", 20.0, 200.0),))
    box = np.array([[5.0, 40.0], [15.0, 40.0], [15.0, 50.0], [5.0, 50.0], [5.0, 40.0]])
    header_step = np.array([[30.0, 16.0], [30.0, 6.0], [40.0, 6.0], [40.0, 16.0]])
    spec = PageSpec(strips=page.strips, texts=page.texts, pulse="none",
                    extra_lines=(box, header_step))
    ecg = _digitize(make_pdf([spec], fs=fs, gain=20.0))
    assert ecg is not None
    assert (ecg.calibration.gain_source, ecg.calibration.mm_per_mv) == ("printed", 20.0)


def test_pages_without_vector_traces_give_none() -> None:
    blank = np.full((100, 100, 3), 255, np.uint8)
    assert digitize_vector_pages([Page(image=blank)], DigitizeOptions()) is None
    grid_only = Page(
        image=blank,
        paths=tuple(
            VectorPath(points=np.array([[x, 0.0], [x, 100.0]]), stroke_rgb=(0.0, 0.0, 0.0))
            for x in range(0, 100, 5)
        ),
        dpi=72.0,
    )
    assert digitize_vector_pages([grid_only], DigitizeOptions()) is None


def test_image_only_pdf_gives_none() -> None:
    import io

    picture = Image.new("RGB", (800, 600), "white")
    buffer = io.BytesIO()
    picture.save(buffer, format="PDF", resolution=100.0)
    loaded = load_input(buffer.getvalue())
    assert loaded.pages[0].paths == ()
    assert digitize_vector_pages(loaded.pages, DigitizeOptions()) is None


def test_unlabelled_traces_are_reported_not_guessed(record) -> None:  # type: ignore[no-untyped-def]
    signals, fs = record
    page = _six_by_one(signals, ("I", "II", "III"), 1000, pulse="separate", texts=())
    # A fourth trace far from any label.
    far = Strip("", signals[3, :1000], 20.0, 150.0)
    spec = PageSpec(strips=[*page.strips, far], pulse="separate")
    ecg = _digitize(make_pdf([spec], fs=fs))
    assert ecg is not None
    assert ecg.present_leads() == ("I", "II", "III")
    assert any("without a lead label" in w for w in ecg.calibration.warnings)


# ---------------------------------------------------------------------- real PDFs


def _assert_plausible(ecg: ECG, n_samples: int) -> None:
    assert ecg.present_leads() == LEADS
    assert ecg.n_samples == n_samples
    for lead in LEADS:
        row = ecg.lead(lead)
        assert np.isfinite(row).mean() > 0.99, lead
        peak_to_peak = np.nanmax(row) - np.nanmin(row)
        assert 0.2 < peak_to_peak < 4.0, (lead, peak_to_peak)
    # Einthoven: II = I + III sample by sample, up to a constant (baselines).
    residual = ecg.lead("II") - ecg.lead("I") - ecg.lead("III")
    residual = residual[np.isfinite(residual)]
    assert np.median(np.abs(residual - np.median(residual))) < 0.01
    assert abs(np.median(residual)) < 0.05


def _trace_pixels_are_ink(ecg: ECG, pages: tuple[Page, ...]) -> float:
    """Share of read samples that land on dark pixels of the rendered page."""
    cal = ecg.calibration
    hits = total = 0
    for panel in ecg.panels:
        image = pages[panel.page].image
        grey = image.mean(axis=2)
        row = ecg.lead(panel.lead)
        k0 = int(round(panel.start_s * ecg.fs))
        k1 = int(round((panel.start_s + panel.duration_s) * ecg.fs))
        t = np.arange(k0, k1) / ecg.fs
        y = row[k0:k1]
        keep = np.isfinite(y)
        px = panel.box[0] + (t[keep] - panel.start_s) * cal.mm_per_s * cal.px_per_mm_x
        py = panel.baseline_px - y[keep] * cal.mm_per_mv * cal.px_per_mm_y
        for x, yy in zip(px.round().astype(int), py.round().astype(int), strict=True):
            window = grey[max(yy - 1, 0):yy + 2, max(x - 1, 0):x + 2]
            hits += int(window.size > 0 and window.min() < 100)
            total += 1
    return hits / total


def test_schiller_two_pages_6x1() -> None:
    loaded = load_input(SCHILLER)
    ecg = digitize_vector_pages(loaded.pages, DigitizeOptions(), source=loaded.source)
    assert ecg is not None
    _assert_plausible(ecg, 5000)
    cal = ecg.calibration
    assert (cal.layout, cal.mm_per_mv, cal.gain_source, cal.mm_per_s, cal.speed_source) == (
        "6x1", 10.0, "pulse", 25.0, "printed")
    assert {p.lead for p in ecg.panels if p.page == 0} == set(LEADS[:6])
    assert {p.lead for p in ecg.panels if p.page == 1} == set(LEADS[6:])
    assert cal.px_per_mm_x == pytest.approx(loaded.pages[0].dpi / 25.4)
    assert ecg.source.name == SCHILLER.name
    assert _trace_pixels_are_ink(ecg, loaded.pages) > 0.97


def test_cardiosoft_three_pages_with_extra_leads() -> None:
    loaded = load_input(CARDIOSOFT)
    ecg = digitize_vector_pages(loaded.pages, DigitizeOptions())
    assert ecg is not None
    _assert_plausible(ecg, 2500)
    cal = ecg.calibration
    assert (cal.mm_per_mv, cal.mm_per_s, cal.speed_source) == (10.0, 50.0, "printed")
    assert any("V3r" in w and "V4r" in w and "V7" in w for w in cal.warnings)
    assert {p.page for p in ecg.panels} == {0, 1}
    assert _trace_pixels_are_ink(ecg, loaded.pages) > 0.97


def test_cardiosoft_redistilled_without_rotation() -> None:
    loaded = load_input(CARDIOSOFT_PDF24)
    assert loaded.pages[0].image.shape[1] > loaded.pages[0].image.shape[0]
    ecg = digitize_vector_pages(loaded.pages, DigitizeOptions(fs=250.0))
    assert ecg is not None
    assert ecg.fs == 250.0
    _assert_plausible(ecg, 1250)
    assert _trace_pixels_are_ink(ecg, loaded.pages) > 0.97
