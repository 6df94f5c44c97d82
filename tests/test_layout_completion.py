"""Layout completion: panels whose labels are unreadable are named from the standard
arrangement that the labels that were read agree with, and never against them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import pytest

from ecgbridge.digitizer.layout import LabelEvidence, PanelSlot, complete_standard_layout
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.pipeline import digitize_pages
from ecgbridge.digitizer.postprocess import name_unlabelled_strips
from ecgbridge.digitizer.quality import INFERRED_LAYOUT_FACTOR
from ecgbridge.ecg import ECG, LEADS, PanelInfo
from ecgbridge.errors import DigitizationError
from ecgbridge.inputs.page import Page

STANDARD_3X4 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _blank_labels(page: Any, keep: Sequence[str], strips: bool = False) -> np.ndarray:
    """The page image with every grid-panel label except `keep` painted over in white
    (and the rhythm strips' labels too if `strips`)."""
    image = page.image.copy()
    for panel in page.panels:
        if panel.rhythm_strip and not strips:
            continue
        if (panel.lead in keep and not panel.rhythm_strip) or not panel.label_box_xy.size:
            continue
        x0, y0 = np.floor(panel.label_box_xy.min(axis=0)).astype(int) - 3
        x1, y1 = np.ceil(panel.label_box_xy.max(axis=0)).astype(int) + 3
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), (255, 255, 255), -1)
    return image


def _lead_at(ecg: ECG, x: float, y: float) -> str | None:
    """Name of the digitized grid panel whose box holds page point (x, y)."""
    for p in ecg.panels:
        bx0, by0, bx1, by1 = p.box
        if not p.rhythm_strip and bx0 <= x < bx1 and by0 <= y <= by1:
            return p.lead
    return None


def _digitize(image: np.ndarray) -> ECG:
    return digitize_pages([Page(image=image)], DigitizeOptions())


def test_unreadable_labels_are_named_from_the_standard_layout(
    rendered_page: Callable[..., Any],
) -> None:
    page = rendered_page(layout="3x4+V1", dpi=150, seed=11)
    # Three labels in three columns stay; the fourth column (V4-V6) and the rhythm
    # strip keep none.
    ecg = _digitize(_blank_labels(page, keep=("I", "aVL", "V3"), strips=True))
    assert ecg.present_leads() == LEADS
    # The unlabelled rhythm strip is named after the grid panel it repeats.
    assert ecg.calibration.layout == "3x4+V1"
    assert [p.lead for p in ecg.panels if p.rhythm_strip] == ["V1"]
    for panel in page.panels:
        if panel.rhythm_strip:
            continue
        # Every panel carries the name of the lead drawn there.
        assert _lead_at(ecg, panel.x0_px + 20, panel.baseline_px) == panel.lead
    warning = next(w for w in ecg.calibration.warnings if "standard 3x4 layout" in w)
    assert "V4" in warning and "their labels were unreadable" in warning
    # Named from the layout, not read: lower quality than a lead whose label was read.
    quality = dict(zip(LEADS, ecg.quality, strict=True))
    assert quality["V5"] < quality["aVL"]


def test_labels_contradicting_the_standard_layout_are_not_overruled(
    rendered_page: Callable[..., Any],
) -> None:
    order = ("V4", "V1", "aVR", "I", "V5", "V2", "aVL", "II", "V6", "V3", "aVF", "III")
    page = rendered_page(layout="3x4", lead_order=order, dpi=150, seed=12)
    kept = ("V4", "I", "V1", "V5", "aVR", "V2")  # the first two columns
    ecg = _digitize(_blank_labels(page, keep=kept))
    assert not any("standard" in w for w in ecg.calibration.warnings)
    # Chest leads whose labels were blanked cannot be named: they are left out.
    for lead in ("V3", "V6"):
        assert np.isnan(ecg.lead(lead)).all(), lead
    for panel in page.panels:
        if panel.lead in kept:
            assert _lead_at(ecg, panel.x0_px + 20, panel.baseline_px) == panel.lead


SPANS = [(100.0, 1100.0)] * 4
ROW_LENGTH = 1000.0
PPM = 4.0


def _evidence(*items: tuple[int, int, str]) -> list[LabelEvidence]:
    """``(row, column, lead)`` -> labels read at those column starts (4 columns)."""
    return [LabelEvidence(row, SPANS[row][0] + col * ROW_LENGTH / 4 + 5, lead, 0.8)
            for row, col, lead in items]


def _no_panels() -> list[list[PanelSlot]]:
    return [[] for _ in SPANS]


def test_completion_names_every_grid_panel_and_keeps_read_scores() -> None:
    done = complete_standard_layout(_evidence((0, 1, "aVR"), (1, 2, "V2")), SPANS,
                                    _no_panels(), ROW_LENGTH, PPM)
    assert done is not None and done.arrangement == "3x4" and done.first_row == 0
    assert [[s.lead for s in r] for r in done.rows[:3]] == [
        ["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"], ["III", "aVF", "V3", "V6"]]
    # An unread rhythm strip is left unnamed (named later from the panel it repeats).
    assert [(s.lead, s.columns) for s in done.rows[3]] == [("", 1)]
    assert done.rows[0][1].label_score == pytest.approx(0.8)
    assert done.rows[0][0].label_score == 0.0
    assert set(done.inferred) == set(STANDARD_3X4) - {"aVR", "V2"}


def test_a_contradicting_label_rejects_the_arrangement() -> None:
    # V1 where the 3x4 layout prints aVL: another lead family, not a misread.
    ev = _evidence((0, 1, "aVR"), (1, 2, "V2"), (2, 3, "V6"), (1, 1, "V1"))
    assert complete_standard_layout(ev, SPANS, _no_panels(), ROW_LENGTH, PPM) is None


def test_one_look_alike_misread_is_tolerated_per_two_agreeing_labels() -> None:
    agreeing = [(0, 1, "aVR"), (1, 2, "V2"), (2, 3, "V6")]
    done = complete_standard_layout(_evidence(*agreeing, (1, 1, "aVF")), SPANS, _no_panels(),
                                    ROW_LENGTH, PPM)
    assert done is not None and done.misreads == (("aVF", "aVL"),)
    assert done.rows[1][1].lead == "aVL"
    two_misreads = _evidence(*agreeing, (1, 1, "aVF"), (2, 1, "aVR"))
    assert complete_standard_layout(two_misreads, SPANS, _no_panels(), ROW_LENGTH, PPM) is None


def test_five_agreeing_names_outvote_two_v_misreads_and_a_bar() -> None:
    # A 150-dpi wrinkled page: V2 and V3 both read as V1, III read as II (bars).
    agreeing = [(0, 1, "aVR"), (0, 3, "V4"), (1, 1, "aVL"), (1, 3, "V5"), (2, 1, "aVF")]
    ev = _evidence(*agreeing, (1, 2, "V1"), (2, 2, "V1"), (2, 0, "II"))
    done = complete_standard_layout(ev, SPANS, _no_panels(), ROW_LENGTH, PPM)
    assert done is not None and done.arrangement == "3x4"
    assert [[s.lead for s in r] for r in done.rows[:3]] == [
        ["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"], ["III", "aVF", "V3", "V6"]]
    assert set(done.misreads) == {("V1", "V2"), ("V1", "V3")}


def test_twelve_rows_are_not_completed_as_6x2_with_six_rhythm_strips() -> None:
    # Limb-lead labels read at the start of the first six of twelve full rows fit the
    # first column of a 6x2 page as well as a 12x1 page; six strips under a 6x2 grid
    # do not exist, so the page is 12x1.
    spans = [(100.0, 100.0 + ROW_LENGTH)] * 12
    ev = [LabelEvidence(i, 105.0, lead, 0.8)
          for i, lead in enumerate(("I", "II", "III", "aVR", "aVL", "aVF"))]
    done = complete_standard_layout(ev, spans, [[] for _ in spans], ROW_LENGTH, PPM)
    assert done is not None and done.arrangement == "12x1"
    assert [r[0].lead for r in done.rows] == list(STANDARD_3X4)


def test_a_single_read_label_is_not_enough() -> None:
    assert complete_standard_layout(_evidence((1, 2, "V2")), SPANS, _no_panels(), ROW_LENGTH,
                                    PPM) is None


def test_one_readable_label_agreeing_with_the_standard_layout(
    rendered_page: Callable[..., Any],
) -> None:
    page = rendered_page(layout="3x4+II", dpi=150, seed=13)
    ecg = _digitize(_blank_labels(page, keep=("aVF",)))
    # The layout is inferred from the rows; the one readable grid label agrees.
    assert any("layout 3x4+1 inferred" in w and "1 read label(s) agree" in w
               for w in ecg.calibration.warnings)
    for panel in page.panels:
        if not panel.rhythm_strip:
            assert _lead_at(ecg, panel.x0_px + 20, panel.baseline_px) == panel.lead
    # An assumed layout, as on a page without labels: the quality says so.
    assert max(ecg.quality) <= INFERRED_LAYOUT_FACTOR


def test_one_readable_label_contradicting_the_standard_layout_is_refused(
    rendered_page: Callable[..., Any],
) -> None:
    # aVF printed where the standard 3x4 layout has V2.
    order = ("I", "II", "III", "aVR", "aVL", "V2", "V1", "aVF", "V3", "V4", "V5", "V6")
    page = rendered_page(layout="3x4", lead_order=order, dpi=150, seed=14)
    with pytest.raises(DigitizationError, match="only 1 lead"):
        _digitize(_blank_labels(page, keep=("aVF",)))


def _candidate(signal: np.ndarray, start: int, stop: int, lead: str,
               strip: bool) -> tuple[np.ndarray, float, PanelInfo]:
    shown = np.full(signal.size, np.nan)
    shown[start:stop] = signal[start:stop]
    info = PanelInfo(lead=lead, page=0, box=(float(start), 0.0, float(stop), 10.0),
                     baseline_px=5.0, start_s=start / 500, duration_s=(stop - start) / 500,
                     rhythm_strip=strip)
    return shown, 0.5, info


def test_an_unlabelled_strip_is_named_only_when_one_panel_clearly_matches(
    sample_record: tuple[np.ndarray, float],
) -> None:
    signals, fs = sample_record
    v1, v2 = signals[LEADS.index("V1")], signals[LEADS.index("V2")]
    strip = _candidate(v2, 0, 5000, "", True)
    named = name_unlabelled_strips({"V1": [_candidate(v1, 0, 1250, "V1", False)],
                                    "V2": [_candidate(v2, 1250, 2500, "V2", False)],
                                    "": [strip]}, fs)
    assert [c[2].lead for c in named["V2"]] == ["V2", "V2"] and "" not in named
    # Two panels showing the same trace: which lead the strip repeats is unknown.
    twins = name_unlabelled_strips({"V1": [_candidate(v2, 0, 1250, "V1", False)],
                                    "V2": [_candidate(v2, 1250, 2500, "V2", False)],
                                    "": [strip]}, fs)
    assert sum(len(v) for v in twins.values()) == 2
