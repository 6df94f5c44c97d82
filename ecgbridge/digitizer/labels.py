"""Lead labelling: read the printed lead names ("I", "aVR", "V1" ...) next to each trace.

Label words (groups of small ink blobs) are compared with the 12 lead names rendered
in a sans-serif and a serif font (DejaVu, shipped in ``ecgbridge/data/fonts``), scaled
to the word's box. The best normalised correlation wins; the aspect ratio of the word
separates I / II / III and V1 from V11-like noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ecgbridge.ecg import LEADS

#: Fonts the lead names are rendered in (files in ecgbridge/data/fonts).
FONT_FILES: tuple[str, ...] = ("DejaVuSans.ttf", "DejaVuSerif.ttf")
#: Size templates and words are compared at (height in pixels).
_CMP_HEIGHT = 24
#: Width of condensed print relative to the regular fonts' glyphs.
_CONDENSED_WIDTH = 0.72
#: Score weight of the condensed bold variants (less common print, easier to imitate).
_CONDENSED_WEIGHT = 0.96
#: Horizontal growth of each stroke side for bold print, as a fraction of the cap height.
_BOLD_GROWTH = 0.03
#: Minimum match score to accept a word as a lead label.
MIN_LABEL_SCORE = 0.68


@dataclass(frozen=True)
class LabelWord:
    """One recognised lead label in page pixels.

    Attributes
    ----------
    lead : str
        Canonical lead name.
    box : tuple of int
        ``(x0, y0, x1, y1)``, exclusive ends.
    score : float
        Match score in [0, 1].
    runner_up : str
        Second-best lead name (to resolve limb-lead ambiguities).
    """

    lead: str
    box: tuple[int, int, int, int]
    score: float
    runner_up: str = ""


def _font_path(name: str) -> str:
    return str(resources.files("ecgbridge") / "data" / "fonts" / name)


@lru_cache(maxsize=1)
def _templates() -> tuple[tuple[str, np.ndarray], ...]:
    """Binary templates (ink = 1) of every lead name in every font, cropped to the ink."""
    out: list[tuple[str, np.ndarray]] = []
    for font_file in FONT_FILES:
        try:
            font = ImageFont.truetype(_font_path(font_file), 64)
        except OSError:
            continue
        for lead in LEADS:
            img = Image.new("L", (400, 120), 0)
            ImageDraw.Draw(img).text((10, 10), lead, fill=255, font=font)
            arr = np.asarray(img) > 127
            ys, xs = np.nonzero(arr)
            crop = arr[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.float32)
            out.append((lead, crop))
    # OpenCV's Hershey stroke fonts (plain, duplex and serif styles), as other printers use.
    for face, thick in ((cv2.FONT_HERSHEY_SIMPLEX, 4), (cv2.FONT_HERSHEY_DUPLEX, 5),
                        (cv2.FONT_HERSHEY_COMPLEX, 4)):
        for lead in LEADS:
            canvas = np.zeros((140, 420), np.uint8)
            cv2.putText(canvas, lead, (10, 100), face, 2.5, 255, thick, cv2.LINE_AA)
            ys, xs = np.nonzero(canvas > 127)
            glyphs = canvas[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1] > 127
            out.append((lead, glyphs.astype(np.float32)))
    return tuple(out)


@lru_cache(maxsize=1)
def _word_templates() -> tuple[tuple[str, np.ndarray, float], ...]:
    """:func:`_templates` (weight 1) plus condensed bold variants of the DejaVu ones.

    Narrow heavy print (thermal cart paper) is matched only when a whole word was
    segmented, and its scores are weighted by :data:`_CONDENSED_WEIGHT` (the extra
    shapes fit noise more easily); reading at an expected place
    (:func:`read_label_at`) keeps the regular set.
    """
    regular = _templates()
    out = [(lead, crop, 1.0) for lead, crop in regular]
    n_dejavu = len(LEADS) * len(FONT_FILES)
    for lead, crop in regular[:n_dejavu]:
        h, w = crop.shape
        narrow = cv2.resize(crop, (max(1, int(round(w * _CONDENSED_WIDTH))), h),
                            interpolation=cv2.INTER_AREA)
        stroke = max(1, int(round(h * _BOLD_GROWTH)))
        bold = cv2.dilate((narrow > 0.5).astype(np.uint8), np.ones((1, 2 * stroke + 1), np.uint8))
        out.append((lead, bold.astype(np.float32), _CONDENSED_WEIGHT))
    return tuple(out)


#: Blank margin (pixels at comparison scale) around words and templates, so a solid
#: glyph such as "I" still has a shape to compare.
_PAD = 3


def _normalised(arr: np.ndarray, width: int) -> np.ndarray:
    img = cv2.resize(arr.astype(np.float32), (width, _CMP_HEIGHT), interpolation=cv2.INTER_AREA)
    img = cv2.copyMakeBorder(img, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_CONSTANT, value=0.0)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img -= img.mean()
    norm = float(np.linalg.norm(img))
    return img / norm if norm > 0 else img


@lru_cache(maxsize=4096)
def _normalised_template(words: bool, index: int, width: int) -> np.ndarray:
    """Template `index` of :func:`_word_templates` (or :func:`_templates`) at comparison
    scale `width`: the same for every word compared at that width."""
    tpl = _word_templates()[index][1] if words else _templates()[index][1]
    return _normalised(tpl, width)


def _padded_weight(valid: np.ndarray, width: int) -> np.ndarray:
    """Validity mask at comparison scale, with the blank margin counted as valid."""
    w = cv2.resize(valid.astype(np.float32), (width, _CMP_HEIGHT), interpolation=cv2.INTER_AREA)
    w = cv2.copyMakeBorder(w, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_CONSTANT, value=1.0)
    return w > 0.75


def _correlation_of_normalised(word: np.ndarray, tpl: np.ndarray, weight: np.ndarray) -> float:
    """Correlation of two :func:`_normalised` images over the valid pixels only."""
    return _correlation_of_centred(_centred(word[weight]), _centred(tpl[weight]))


def _centred(values: np.ndarray) -> tuple[np.ndarray, np.floating]:
    """`values` less their mean, and the norm of that."""
    centred = values - values.mean()
    return centred, np.linalg.norm(centred)


def _correlation_of_centred(a: tuple[np.ndarray, np.floating],
                            b: tuple[np.ndarray, np.floating]) -> float:
    """Correlation of two :func:`_centred` vectors (0 when either is constant)."""
    d = float(a[1] * b[1])
    return float(a[0] @ b[0]) / d if d > 0 else 0.0


def recognise_word(word: np.ndarray, valid: np.ndarray | None = None) -> tuple[str, float, str]:
    """Match a binary word image (ink = nonzero) against the lead-name templates.

    Parameters
    ----------
    word : numpy.ndarray
        2-D array cropped to the word's ink.
    valid : numpy.ndarray, optional
        Same shape; False where the pixels are unknown (e.g. a trace crossing the
        label was erased there): those pixels are ignored in the comparison.

    Returns
    -------
    tuple
        ``(lead, score, runner_up)``; score 0 when the word cannot be a lead name.
    """
    h, w = word.shape
    if h < 4 or w < 1:
        return "", 0.0, ""
    aspect = w / h
    width = max(4, int(round(_CMP_HEIGHT * aspect)))
    if width > 6 * _CMP_HEIGHT:
        return "", 0.0, ""
    weight = None
    if valid is not None and not valid.all():
        weight = _padded_weight(valid, width)
        if weight.mean() < 0.5:
            return "", 0.0, ""
    target = _normalised(word > 0, width)
    best: dict[str, float] = {}
    for index, (lead, tpl, prior) in enumerate(_word_templates()):
        t_aspect = tpl.shape[1] / tpl.shape[0]
        ratio = aspect / t_aspect
        if not 0.6 <= ratio <= 1.65:
            continue
        tpl_norm = _normalised_template(True, index, width)
        if weight is None:
            score = float((target * tpl_norm).sum())
        else:
            score = _correlation_of_normalised(target, tpl_norm, weight)
        score *= prior * min(ratio, 1.0 / ratio) ** 0.5
        if score > best.get(lead, -1.0):
            best[lead] = score
    if not best:
        return "", 0.0, ""
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    lead, score = ranked[0]
    runner = ranked[1][0] if len(ranked) > 1 else ""
    return lead, max(0.0, score), runner


#: Lead names printed as vertical bars only.
_STROKE_LEADS = frozenset({"I", "II", "III"})
#: A bar glyph (or bars joined by their serifs) is at most this wide relative to its height.
_BAR_MAX_ASPECT = 2.5
#: Some column of a bar glyph holds ink on at least this fraction of its rows.
_BAR_MIN_SPINE = 0.85


def _bar_like(sub: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """True if the glyph in `box` (x0, y0, x1, y1) of `sub` is made of vertical bars.

    A bar ("I", with or without serifs, or "II" joined at the serifs) has a column
    inked over its whole height; a "V" or "A", whose strokes slant, has none.
    """
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    if h <= 0 or w > _BAR_MAX_ASPECT * h:
        return False
    glyph = sub[y0:y1, x0:x1] > 0
    return float(glyph.mean(axis=0).max()) >= _BAR_MIN_SPINE


def _without_ticks(sub: np.ndarray, word: list[tuple[int, int, int, int]]
                   ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The word's pixels with grid remnants taken off its bars, and their new box.

    Grid lines crossing a label leave short stubs on its strokes (a "-|" where the
    line met the bar). On a bar-like glyph, columns beside its spine holding no more
    than a tenth of its height are such stubs (or serifs): they are cleared, as they
    make "I" fail to read and "II" read as "I" beside a tick.
    """
    bx0, by0 = min(b[0] for b in word), min(b[1] for b in word)
    bx1, by1 = max(b[2] for b in word), max(b[3] for b in word)
    out = sub[by0:by1, bx0:bx1].copy()
    for gx0, gy0, gx1, gy1 in word:
        if not _bar_like(sub, (gx0, gy0, gx1, gy1)):
            continue
        cols = out[:, gx0 - bx0:gx1 - bx0]
        inked = (cols > 0).sum(axis=0)
        spine = np.nonzero(inked >= _BAR_MIN_SPINE * (gy1 - gy0))[0]
        stub = inked <= max(1, 0.1 * (gy1 - gy0))
        stub[spine.min():spine.max() + 1] = False
        cols[:, stub] = 0
    ys, xs = np.nonzero(out)
    if ys.size == 0:
        return out, (bx0, by0, bx1, by1)
    box = (bx0 + int(xs.min()), by0 + int(ys.min()), bx0 + int(xs.max()) + 1,
           by0 + int(ys.max()) + 1)
    return out[ys.min():ys.max() + 1, xs.min():xs.max() + 1], box


def find_label_words(
    mask: np.ndarray, region: tuple[int, int, int, int], px_per_mm: float,
    baseline: float | None = None,
) -> list[LabelWord]:
    """Find and read lead-label words inside `region` of a trace-ink mask.

    Parameters
    ----------
    mask : numpy.ndarray
        uint8 ink mask of the rectified page.
    region : tuple of int
        ``(x0, y0, x1, y1)`` to search (e.g. one trace row's band).
    px_per_mm : float
        Scale; glyphs are 1.2-8 mm tall.
    baseline : float, optional
        Row of the trace's baseline: words straddling it are lead-change ticks or
        pieces of the trace, not labels.

    Returns
    -------
    list of LabelWord
        Accepted labels (score >= :data:`MIN_LABEL_SCORE`), left to right.
    """
    x0, y0, x1, y1 = (int(v) for v in region)
    sub = mask[max(y0, 0): y1, max(x0, 0): x1]
    if sub.size == 0:
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8)
    min_h, max_h = 1.2 * px_per_mm, 8.0 * px_per_mm
    glyphs = [
        (int(s[0]), int(s[1]), int(s[0] + s[2]), int(s[1] + s[3]))
        for s in stats[1:]
        if min_h * 0.5 <= s[3] <= max_h and s[2] <= 6.0 * px_per_mm and s[4] >= 3
    ]
    glyphs.sort()
    # Group glyphs into words: horizontally close, vertically overlapping.
    words: list[list[tuple[int, int, int, int]]] = []
    for g in glyphs:
        placed = False
        for wd in words:
            bx0 = min(b[0] for b in wd)
            bx1 = max(b[2] for b in wd)
            by0 = min(b[1] for b in wd)
            by1 = max(b[3] for b in wd)
            hgt = by1 - by0
            overlap = min(by1, g[3]) - max(by0, g[1])
            if g[0] - bx1 <= 0.7 * max(hgt, g[3] - g[1]) and g[0] >= bx0 and overlap > 0.3 * min(
                hgt, g[3] - g[1]
            ):
                wd.append(g)
                placed = True
                break
        if not placed:
            words.append([g])
    found: list[LabelWord] = []
    for wd in words:
        bx0 = min(b[0] for b in wd)
        bx1 = max(b[2] for b in wd)
        by0 = min(b[1] for b in wd)
        by1 = max(b[3] for b in wd)
        if not (min_h <= by1 - by0 <= max_h) or len(wd) > 4:
            continue
        if bx1 - bx0 > 12.0 * px_per_mm:
            continue
        if baseline is not None and by0 + max(y0, 0) < baseline - 1 < by1 + max(y0, 0):
            continue
        lead, score, runner = recognise_word(sub[by0:by1, bx0:bx1])
        cleaned, box = _without_ticks(sub, wd)
        if cleaned.sum() < sub[by0:by1, bx0:bx1].sum():  # stubs were taken off
            alt = recognise_word(cleaned)
            if alt[1] > score:
                (lead, score, runner), (bx0, by0, bx1, by1) = alt, box
        if lead in _STROKE_LEADS and not all(_bar_like(sub, b) for b in wd):
            # "I", "II", "III" are vertical bars only: another glyph (the V of "|V1"
            # after a lead-change marker) makes the reading wrong.
            lead, score, runner = "", 0.0, ""
        if len(wd) >= 2:
            # A lead-change tick or a grid remnant may have joined the word at either end.
            for part in (wd[1:], wd[:-1]):
                px0 = min(b[0] for b in part)
                px1 = max(b[2] for b in part)
                py0 = min(b[1] for b in part)
                py1 = max(b[3] for b in part)
                if not min_h <= py1 - py0:
                    continue
                alt = recognise_word(sub[py0:py1, px0:px1])
                if alt[0] in _STROKE_LEADS and not all(_bar_like(sub, b) for b in part):
                    continue
                if alt[1] > score + 0.1:
                    lead, score, runner = alt
                    bx0, bx1, by0, by1 = px0, px1, py0, py1
        if lead and score >= MIN_LABEL_SCORE:
            found.append(
                LabelWord(lead, (bx0 + max(x0, 0), by0 + max(y0, 0), bx1 + max(x0, 0),
                                 by1 + max(y0, 0)), score, runner)
            )
    return sorted(found, key=lambda w: w.box[0])


def read_label_at(
    mask: np.ndarray,
    valid: np.ndarray,
    x_left: int,
    y_top: int,
    height: float,
    allowed: set[str],
) -> tuple[str, float]:
    """Read a label whose top-left corner and cap height are (about) known.

    Each allowed lead name is compared with the page pixels in a box of the
    template's aspect ratio at that place (searching +-2 px), ignoring pixels
    marked invalid (erased trace crossings).

    Parameters
    ----------
    mask : numpy.ndarray
        Ink mask of the page (traces' pen lines erased).
    valid : numpy.ndarray
        Boolean, False where pixels were erased.
    x_left, y_top : int
        Expected top-left corner of the word.
    height : float
        Expected cap height in pixels.
    allowed : set of str
        Lead names that may be there.

    Returns
    -------
    tuple
        ``(lead, score)``; ``("", 0.0)`` when nothing matches.
    """
    h_img, w_img = mask.shape
    hgt = int(round(height))
    if hgt < 4:
        return "", 0.0
    best_lead, best_score = "", 0.0
    # Templates of equal width compare the same page boxes: each is prepared once.
    boxes: dict[tuple[int, int, int, int], _Box | None] = {}
    for index, (lead, tpl) in enumerate(_templates()):
        if lead not in allowed:
            continue
        width = max(2, int(round(hgt * tpl.shape[1] / tpl.shape[0])))
        cmp_w = max(4, int(round(_CMP_HEIGHT * width / hgt)))
        tpl_norm = _normalised_template(False, index, cmp_w)
        tpl_whole = _centred(tpl_norm.ravel())
        for dy in (-2, -1, 0, 1, 2):
            for dx in (-2, -1, 0, 1, 2):
                y0, x0 = y_top + dy, x_left + dx
                if y0 < 0 or x0 < 0 or y0 + hgt > h_img or x0 + width > w_img:
                    continue
                key = (y0, x0, width, cmp_w)
                if key not in boxes:
                    boxes[key] = _comparable_box(mask, valid, (y0, x0, hgt, width), cmp_w)
                prepared = boxes[key]
                if prepared is None:
                    continue
                word_norm, weight, whole = prepared
                if whole is not None:  # nothing erased: the correlation of whole images
                    score = _correlation_of_centred(whole, tpl_whole)
                else:
                    score = _correlation_of_normalised(word_norm, tpl_norm, weight)
                if score > best_score and (lead not in _STROKE_LEADS or _bars_only(
                        mask[y0: y0 + hgt, x0: x0 + width])):
                    best_lead, best_score = lead, score
    return best_lead, best_score


#: A page box at comparison scale, its valid pixels, and (all valid) it centred.
_Box = tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.floating] | None]


def _comparable_box(mask: np.ndarray, valid: np.ndarray, box: tuple[int, int, int, int],
                    cmp_w: int) -> _Box | None:
    """A page box ``(y0, x0, height, width)`` at comparison scale, its valid pixels
    and, when all are valid, its :func:`_centred` pixels; None when under half of it
    is valid."""
    y0, x0, hgt, width = box
    ok = valid[y0: y0 + hgt, x0: x0 + width]
    weight = _padded_weight(ok, cmp_w)
    if weight.mean() < 0.5:
        return None
    word = _normalised(mask[y0: y0 + hgt, x0: x0 + width] > 0, cmp_w)
    return word, weight, _centred(word.ravel()) if weight.all() else None


def _bars_only(word: np.ndarray) -> bool:
    """True if every sizeable glyph of a word image is a vertical bar (I, II, III)."""
    n, _labels, stats, _ = cv2.connectedComponentsWithStats((word > 0).astype(np.uint8),
                                                            connectivity=8)
    h = word.shape[0]
    for k in range(1, n):
        x, y, w, gh = (int(v) for v in stats[k, :4])
        if gh >= 0.5 * h and not _bar_like(word, (x, y, x + w, y + gh)):
            return False
    return True
