"""Layout inferred from the rows a page shows when its lead labels are unreadable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ecgbridge.digitizer.labels import LabelWord
from ecgbridge.digitizer.layout import PanelSlot
from ecgbridge.digitizer.layout_inference import (
    RowShape,
    check_labels,
    infer_layout,
    row_slots_on_pitch,
    same_height_marks,
)
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.pipeline import digitize_pages
from ecgbridge.digitizer.quality import INFERRED_LAYOUT_FACTOR
from ecgbridge.inputs.page import Page
from tests.test_layout_completion import _blank_labels, _lead_at

ROW = 1000.0
FOUR = (True, True, True)
TWO = (False, True, False)
NONE = (False, False, False)


def _rows(marks: list[tuple[bool, ...]], pitch: float = 100.0) -> list[RowShape]:
    return [RowShape(200.0 + k * pitch, ROW, m) for k, m in enumerate(marks)]


def test_three_marked_rows_and_an_unmarked_one_are_3x4_with_a_strip() -> None:
    found = infer_layout(_rows([FOUR, FOUR, FOUR, NONE]), ROW)
    assert found is not None and found.candidate.name == "3x4+1"
    assert found.layout_rows == {0: 0, 1: 1, 2: 2, 3: 3}


def test_six_rows_tell_3x4_with_three_strips_from_6x2_by_their_markers() -> None:
    found = infer_layout(_rows([FOUR] * 3 + [NONE] * 3), ROW)
    assert found is not None and found.candidate.name == "3x4+3"
    found = infer_layout(_rows([TWO] * 6), ROW)
    assert found is not None and found.candidate.name == "6x2"


def test_qrs_complexes_at_the_quarter_boundaries_are_not_markers() -> None:
    """trn_58: a 6x2 page whose beats fall at 2.5 and 7.5 s in every row. Its markers at
    5 s are all 4.4-4.9 mm tall; the QRS complexes at 2.5 and 7.5 s differ by lead."""
    heights = [(6.8, 4.4, 7.0), (5.5, 4.7, 9.3), (10.8, 4.9, 6.8), (5.9, 4.9, 5.1),
               (9.1, 4.7, 7.0), (1.5, 4.7, 4.2), (5.9, 0.8, 0.4)]
    marks = [FOUR] * 5 + [(False, True, True), (True, False, False)]
    kept = same_height_marks(marks, heights)
    assert all(m[1] for m in kept[:6]) and not any(m[0] for m in kept)
    found = infer_layout(_rows(kept), ROW)
    assert found is not None and found.candidate.name == "6x2+1"
    # Markers of one height at every boundary (a 3x4 page) all stay.
    alike = [(6.9, 6.9, 6.9), (6.9, 6.9, 7.2), (7.0, 7.1, 7.0), (0.8, 0.8, 0.5)]
    assert same_height_marks([FOUR] * 3 + [NONE], alike) == [FOUR] * 3 + [NONE]


def test_row_counts_alone_give_6x2_with_strip_and_12x1() -> None:
    found = infer_layout(_rows([NONE] * 7), ROW)
    assert found is not None and found.candidate.name == "6x2+1"
    found = infer_layout(_rows([NONE] * 13, pitch=60.0), ROW)
    assert found is not None and found.candidate.name == "12x1+1"


def test_a_header_line_off_the_row_pitch_is_not_a_row() -> None:
    shapes = [RowShape(130.0, ROW, NONE)] + _rows([FOUR, FOUR, FOUR, NONE])
    found = infer_layout(shapes, ROW)
    assert found is not None and found.candidate.name == "3x4+1"
    assert 0 not in found.layout_rows


def test_uneven_baselines_stay_on_their_slots() -> None:
    rng = np.random.default_rng(3)
    ys = [200.0 + 80.0 * k + float(rng.uniform(-18, 18)) for k in range(13)]
    slots = row_slots_on_pitch(ys, [True] * 13)
    assert slots == {k: k for k in range(13)}


def test_too_few_rows_match_no_layout() -> None:
    assert infer_layout(_rows([FOUR, FOUR]), ROW) is None


def test_a_hint_decides_between_layouts() -> None:
    found = infer_layout(_rows([NONE] * 4), ROW, hint="3x4+II")
    assert found is not None and found.candidate.name == "3x4+II"


def _no_labels(page: Any) -> np.ndarray:
    """The page with every label (rhythm strips' too) painted over."""
    return _blank_labels(page, keep=(), strips=True)


def _check_panels(ecg: Any, page: Any) -> None:
    for panel in page.panels:
        if not panel.rhythm_strip:
            assert _lead_at(ecg, panel.x0_px + 20, panel.baseline_px) == panel.lead


def test_a_page_without_any_label_is_named_from_its_rows(
    rendered_page: Callable[..., Any],
) -> None:
    page = rendered_page(layout="3x4+II", dpi=150, seed=21)
    ecg = digitize_pages([Page(image=_no_labels(page))], DigitizeOptions())
    assert ecg.calibration.layout == "3x4+II"
    assert any("layout 3x4+1 inferred" in w and "lead-change markers" in w
               for w in ecg.calibration.warnings)
    _check_panels(ecg, page)
    # Named from the layout, not from labels: the quality says so.
    assert max(ecg.quality) <= INFERRED_LAYOUT_FACTOR


def test_a_layout_hint_is_used_without_labels(rendered_page: Callable[..., Any]) -> None:
    page = rendered_page(layout="3x4+II", dpi=150, seed=22)
    ecg = digitize_pages([Page(image=_no_labels(page))], DigitizeOptions(layout="3x4+II"))
    assert ecg.calibration.layout == "3x4+II"
    assert any("layout 3x4+II as given" in w for w in ecg.calibration.warnings)
    _check_panels(ecg, page)


def _limb_page(noise_on_i: float) -> list:
    """Trace paths of a generator-order 6x2 page (both columns 0-5 s) of smooth leads."""
    from ecgbridge.digitizer.trace import TracePath
    from ecgbridge.standards import KIT_ROWS_6X2

    rng = np.random.default_rng(7)
    n = 500

    def smooth() -> np.ndarray:
        return np.convolve(rng.standard_normal(n + 40), np.ones(41) / 41 * 6, mode="valid")[:n]

    lead_i, lead_ii = smooth(), smooth()
    sig = {"I": lead_i + noise_on_i * rng.standard_normal(n), "II": lead_ii,
           "III": lead_ii - lead_i, "aVR": -(lead_i + lead_ii) / 2,
           "aVL": lead_i - lead_ii / 2, "aVF": lead_ii - lead_i / 2}
    paths = []
    for r, leads in enumerate(KIT_ROWS_6X2):
        y = np.concatenate([100.0 * r + 50 - 20 * sig.get(lead, smooth()) for lead in leads])
        paths.append(TracePath(0, y, y - 1, y + 1, 2.0))
    return paths


def test_row_order_from_einthoven_and_goldberger() -> None:
    from ecgbridge.digitizer.layout_decision import choose_row_order
    from ecgbridge.digitizer.layout_inference import Candidate, LayoutInference
    from ecgbridge.standards import KIT_ROWS_6X2

    inference = LayoutInference(Candidate("6x2", 6, 2, 0), {i: i for i in range(6)}, "", 0.0)
    labels: list[list[Any]] = [[] for _ in range(6)]
    order, why = choose_row_order(inference, [0.0] * 6, 1000.0, labels, _limb_page(0.0), 4.0)
    assert order == KIT_ROWS_6X2 and "Einthoven's law" in why
    # Lead I badly traced: Einthoven's law alone cannot tell; Goldberger's can.
    order, why = choose_row_order(inference, [0.0] * 6, 1000.0, labels, _limb_page(0.7), 4.0)
    assert order == KIT_ROWS_6X2 and "Goldberger" in why


def _slots(leads: tuple[str, ...]) -> list[PanelSlot]:
    return [PanelSlot(lead, k, len(leads), int(k * ROW / 4), int((k + 1) * ROW / 4), 0.0)
            for k, lead in enumerate(leads)]


def _word(lead: str, column: int) -> LabelWord:
    x0 = int(column * ROW / 4) + 5
    return LabelWord(lead, (x0, 0, x0 + 20, 10), 0.9)


def test_one_lead_read_in_two_panels_contradicts_nothing() -> None:
    rows = [_slots(("I", "aVR", "V1", "V4")), _slots(("II", "aVL", "V2", "V5"))]
    # "II" read where aVL and V4 belong: a misread at least once, no evidence.
    doubled = check_labels(rows, [[_word("II", 3)], [_word("II", 1)]], 4.0)
    assert doubled.contradict == () and doubled.read_twice == ("II",)
    assert "II read in several panels" in doubled.words()
    # Read once where another lead belongs, it is a contradiction.
    once = check_labels(rows, [[_word("II", 3)], [_word("aVL", 1)]], 4.0)
    assert once.contradict == (("II", "V4"),) and once.agree == 1
