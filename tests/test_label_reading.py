"""Label reading on printouts unlike the regular fonts: condensed bold print, lead-change
markers before the name, and row origins on pages without calibration pulses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ecgbridge.digitizer.labels import LabelWord, find_label_words
from ecgbridge.digitizer.layout import LabelEvidence, complete_standard_layout
from ecgbridge.digitizer.row_labels import consistent_labels
from ecgbridge.digitizer.timebase import late_starts_to_common_origin

#: A condensed bold face (as thermal cart printouts use); not shipped with ecgbridge.
CONDENSED_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf")
PX_PER_MM = 12.0
#: Horizontal squeeze of the rendered labels.
NARROWING = 0.5


def _ink_of_text(text: str, font_path: Path, height_px: int = 40) -> np.ndarray:
    """uint8 ink mask (1 = ink) of `text` on a blank strip, with a lead-change bar before it."""
    font = ImageFont.truetype(str(font_path), height_px)
    img = Image.new("L", (40 + 2 * height_px * len(text), 3 * height_px), 0)
    draw = ImageDraw.Draw(img)
    top = height_px // 2
    # Lead-change marker: a bar as tall as the capitals, a small gap before the name.
    draw.rectangle((10, top + 2, 10 + max(2, height_px // 10), top + int(0.95 * height_px)),
                   fill=255)
    draw.text((10 + height_px // 3, top - height_px // 5), text, fill=255, font=font)
    # Thermal cart fonts are narrower still.
    img = img.resize((int(img.width * NARROWING), img.height), Image.Resampling.BILINEAR)
    return (np.asarray(img) > 127).astype(np.uint8)


@pytest.mark.skipif(not CONDENSED_BOLD.exists(), reason="system DejaVu condensed bold missing")
@pytest.mark.parametrize("lead", ["aVR", "aVL", "V1", "V3"])
def test_condensed_bold_labels_after_a_marker_are_read(lead: str) -> None:
    ink = _ink_of_text(lead, CONDENSED_BOLD)
    words = find_label_words(ink, (0, 0, ink.shape[1], ink.shape[0]), PX_PER_MM)
    # Never "II"/"III" from the marker plus the V's strokes.
    assert all(w.lead not in ("II", "III") for w in words)
    assert [w.lead for w in words] == [lead]


def test_late_row_starts_move_to_the_shared_origin() -> None:
    ppm = 10.0
    spans = [(300.0, 5000.0), (1500.0, 5000.0), (310.0, 5010.0), (320.0, 2500.0)]
    moved = late_starts_to_common_origin(spans, ppm)
    # The late row (its first waves lost) starts with the others; short rows keep their end.
    assert moved == [(300.0, 5000.0), (300.0, 5000.0), (310.0, 5010.0), (320.0, 2500.0)]
    # Without two rows sharing a start there is no common origin to trust.
    assert late_starts_to_common_origin([(300.0, 5000.0), (1500.0, 5000.0)], ppm) == [
        (300.0, 5000.0), (1500.0, 5000.0)]


SPANS = [(100.0, 1100.0)] * 3


def _evidence(*items: tuple[int, int, str]) -> list[LabelEvidence]:
    return [LabelEvidence(row, 100.0 + col * 250.0 + 5, lead, 0.8) for row, col, lead in items]


def test_bar_labels_contradicting_the_layout_yield_to_two_shaped_labels() -> None:
    shaped = [(0, 1, "aVR"), (1, 1, "aVL")]
    # "III" where V1 belongs: a marker and the V's strokes, outvoted by aVR and aVL.
    done = complete_standard_layout(_evidence(*shaped, (0, 2, "III")), SPANS,
                                    [[] for _ in SPANS], 1000.0, 4.0)
    assert done is not None and done.rows[0][2].lead == "V1"
    # With only one shaped label agreeing, the bar reading still counts as a contradiction.
    alone = _evidence((0, 1, "aVR"), (0, 0, "I"), (0, 2, "III"))
    assert complete_standard_layout(alone, SPANS, [[] for _ in SPANS], 1000.0, 4.0) is None


@pytest.mark.parametrize("lead", ["I", "II", "III"])
def test_bar_labels_with_grid_stubs_are_read(lead: str) -> None:
    """Grid lines crossing a label leave stubs on its bars ("-|"): "I" then failed to
    read and "II" was read as "I" from its clean bar alone (a 200 dpi training page)."""
    mask = np.zeros((60, 80), np.uint8)
    for k in range(len(lead)):
        x = 20 + 9 * k
        mask[15:37, x:x + 3] = 1  # a bar 22 px tall (about 2.8 mm at 200 dpi)
        mask[21, x - 3:x] = 1  # the stub a horizontal grid line left on it
    words = find_label_words(mask, (0, 0, 80, 60), 7.87)
    assert [w.lead for w in words] == [lead]


def _word(lead: str, x: int, top: int, height: int, score: float = 0.9) -> LabelWord:
    return LabelWord(lead=lead, box=(x, top, x + height, top + height), score=score,
                     runner_up="")


def test_qrs_spikes_read_as_ii_do_not_set_the_label_reference() -> None:
    # 12x1 rows 15 mm apart: real labels 3 mm tall, 1 mm above their baseline; close QRS
    # spikes read as "II" (9 mm tall, off the label place) outnumber them on the top row.
    ppm = 6.0
    baselines = [100.0 + 90.0 * i for i in range(4)]
    label_h, spike_h = int(3 * ppm), int(9 * ppm)
    rows = [[_word(lead, 20, int(base - ppm - label_h), label_h)]
            for lead, base in zip(("V4", "V1", "aVR", "I"), baselines, strict=True)]
    rows[0] += [_word("II", x, int(baselines[0] - spike_h), spike_h) for x in (250, 700, 910,
                                                                                1130, 1340)]
    kept = consistent_labels(rows, baselines, ppm)
    assert [[w.lead for w in r] for r in kept] == [["V4"], ["V1"], ["aVR"], ["I"]]
