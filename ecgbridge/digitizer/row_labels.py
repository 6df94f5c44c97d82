"""The lead labels of a page's trace rows, beyond the words read in each row.

Label words read in the rows (:func:`ecgbridge.digitizer.labels.find_label_words`)
are kept when they look like the page's labels (:func:`consistent_labels`); panels
left unnamed get their label read again where the page's other labels say it must be
(:func:`reread_missing_labels`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ecgbridge.digitizer.labels import LabelWord, read_label_at
from ecgbridge.digitizer.layout import PanelSlot
from ecgbridge.digitizer.rows import TraceRow
from ecgbridge.ecg import LEADS

#: Minimum match score of a label read at its expected place.
_REREAD_MIN_SCORE = 0.7
#: Label words enough to set the page's label size and offset (lettered ones, such as aVR
#: or V1, are used alone when there are this many) and to vouch for lone "I" strokes.
_MIN_REFERENCE_WORDS = 3


def consistent_labels(
    all_labels: list[list[LabelWord]], baselines: list[float], ppm: float
) -> list[list[LabelWord]]:
    """Keep label words that look like the page's labels.

    Lead labels of one page share their size and their vertical offset from the
    trace baseline; the reference is taken from multi-character labels (aVR, V1...),
    which random ink rarely imitates. Words with letters (aVR, V1...) set the reference
    when there are several: "II" and "III" are only bars, and close QRS spikes read as
    such can outnumber the real labels. Single "I"-like strokes must also score high.
    """
    # (height, offset from the baseline, lettered) of every confident multi-character word
    sure = [
        (w.box[3] - w.box[1], w.box[1] - base, set(w.lead) != {"I"})
        for row, base in zip(all_labels, baselines, strict=True)
        for w in row if len(w.lead) > 1 and w.score > 0.7
    ]
    lettered = [m for m in sure if m[2]]
    multi = lettered if len(lettered) >= _MIN_REFERENCE_WORDS else sure
    if not multi:
        # Lone "I"-like strokes (pulse edges, ticks) without any real label: no labels.
        return [[] for _ in all_labels]
    ref_h = float(np.median([m[0] for m in multi]))
    ref_dy = float(np.median([m[1] for m in multi]))
    strict_dy = len(multi) >= _MIN_REFERENCE_WORDS
    if not strict_dy:
        # Too few real labels to vouch for lone vertical strokes read as "I".
        all_labels = [[w for w in row if w.lead != "I"] for row in all_labels]
    out = []
    for row, base in zip(all_labels, baselines, strict=True):
        keep = []
        for w in row:
            if not 0.7 <= (w.box[3] - w.box[1]) / ref_h <= 1.4:
                continue
            if len(w.lead) == 1 and w.score < 0.7:
                continue
            # Rows' resting levels differ from where printers put labels by up to several
            # mm, so only lone strokes ("I") are held to the page's label offset.
            if (len(w.lead) == 1 and strict_dy
                    and abs((w.box[1] - base) - ref_dy) > max(1.5 * ppm, 0.5 * ref_h)):
                continue
            keep.append(w)
        out.append(keep)
    return out


def reread_missing_labels(
    row_slots: list[list[PanelSlot]], rows: list[TraceRow], all_labels: list[list[LabelWord]],
    mask: np.ndarray, erased_by_trace: np.ndarray, ppm: float,
) -> list[list[PanelSlot]]:
    """Read the label of unnamed panels where the page's other labels say it must be.

    Labels sit at the same offset from their panel start and baseline all over a
    page; the expected box is cut from a mask where only the pen line of the traces
    was erased (labels touching a trace keep their shape) and read directly.
    """
    offsets = []
    for row, slots, labels in zip(rows, row_slots, all_labels, strict=True):
        for s in slots:
            for lw in labels:
                if lw.lead == s.lead and s.x0 - 8 * ppm <= lw.box[0] < s.x1:
                    offsets.append((lw.box[0] - s.x0, lw.box[1] - row.baseline,
                                    lw.box[3] - lw.box[1]))
    if not offsets:
        return row_slots
    dx, dy, hh = (float(v) for v in np.median(np.asarray(offsets), axis=0))
    named = {s.lead for r in row_slots for s in r if s.lead}
    out = [list(r) for r in row_slots]
    h, w = mask.shape
    for row, slots in zip(rows, out, strict=True):
        for j, s in enumerate(slots):
            if s.lead:
                continue
            x0 = int(max(0, s.x0 + dx - 1.0 * ppm))
            y0 = int(max(0, row.baseline + dy - 0.3 * hh))
            x1 = int(min(w, x0 + 4.0 * hh + 2.0 * ppm))
            y1 = int(min(h, row.baseline + dy + 1.3 * hh))
            crop = mask[y0:y1, x0:x1]
            if crop.size == 0:
                continue
            found = _word_in_crop(crop, hh)
            if found is None:
                continue
            _word, (_wy0, _wy1, wx0, _wx1) = found
            allowed = {lead for lead in LEADS if lead not in named}
            valid = erased_by_trace == 0
            lead, score = read_label_at(mask, valid, x0 + wx0, int(round(row.baseline + dy)), hh,
                                        allowed)
            if lead and lead not in named and score >= _REREAD_MIN_SCORE:
                slots[j] = PanelSlot(lead, s.column, s.columns, s.x0, s.x1, score)
                named.add(lead)
    return out


def _word_in_crop(
    crop: np.ndarray, height: float
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The label-sized glyphs of a crop, cropped to their joint box."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, dtype=bool)
    for k in range(1, n):
        gh = stats[k, cv2.CC_STAT_HEIGHT]
        if 0.4 * height <= gh <= 1.35 * height and stats[k, cv2.CC_STAT_WIDTH] <= 2.5 * height:
            keep[k] = True
    if not keep.any():
        return None
    sel = keep[labels]
    ys, xs = np.nonzero(sel)
    # Glyphs of one word: keep the leftmost cluster (gaps below one glyph height).
    order = np.unique(xs)
    gaps = np.nonzero(np.diff(order) > 0.8 * height)[0]
    x_stop = order[gaps[0]] if gaps.size else order[-1]
    sel[:, x_stop + 1:] = False
    ys, xs = np.nonzero(sel)
    if ys.size == 0:
        return None
    box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    return sel[box[0]: box[1], box[2]: box[3]].astype(np.uint8), box
