"""Step 1: normalise a page image into grey-level "ink" maps.

Two maps are produced, both float32 in [0, 1] where 1 is the darkest ink:

* ``any_ink`` -- darkness of the darkest colour channel relative to the local paper
  colour; grid lines of every colour show up here (used for grid pitch and deskew).
* ``dark_ink`` -- darkness of the *brightest* channel relative to the local paper
  colour; coloured grid lines (red, pink, orange, green, blue) vanish here because
  one of their channels stays bright, while black/blue-black trace ink stays dark.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Images are analysed at most this many pixels on the long side for background estimation.
_BACKGROUND_SCALE_PX = 600
#: Background window as a fraction of the long side of the page.
_BACKGROUND_WINDOW_FRACTION = 0.01
#: Brightest-channel level (0-255) below which a pixel may lie outside the paper.
_OUTSIDE_LEVEL = 60
#: A dark region touching the image border and larger than this fraction of the image
#: is the background around the paper (scanner lid, table, fill of a rotated scan).
_OUTSIDE_MIN_AREA = 0.002


@dataclass(frozen=True)
class InkMaps:
    """Darkness maps of one page (float32, 0 = paper, 1 = black)."""

    any_ink: np.ndarray
    dark_ink: np.ndarray


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return `image` as a contiguous uint8 RGB array.

    Parameters
    ----------
    image : numpy.ndarray
        Grey ``(h, w)``, RGB ``(h, w, 3)`` or RGBA ``(h, w, 4)`` array, uint8 or float in [0, 1].

    Raises
    ------
    ValueError
        If the array does not have one of those shapes.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"page image must be (h, w), (h, w, 3) or (h, w, 4), got {arr.shape}")
    return np.ascontiguousarray(arr)


def _relative_darkness(channel: np.ndarray) -> np.ndarray:
    """Darkness of `channel` relative to a smooth estimate of the local paper level."""
    h, w = channel.shape
    scale = min(1.0, _BACKGROUND_SCALE_PX / max(h, w))
    small = cv2.resize(channel, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    k = max(3, int(round(_BACKGROUND_WINDOW_FRACTION * max(small.shape))) | 1)
    paper = cv2.dilate(small, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    paper = cv2.GaussianBlur(paper, (0, 0), k / 2.0)
    paper = np.maximum(paper.astype(np.float32), 24.0)
    paper = cv2.resize(paper, (w, h), interpolation=cv2.INTER_LINEAR)
    ratio = np.asarray(cv2.divide(channel.astype(np.float32), paper))
    np.subtract(1.0, ratio, out=ratio)
    np.maximum(ratio, 0.0, out=ratio)
    return ratio


def outside_paper(hi: np.ndarray) -> np.ndarray | None:
    """Mask of the dark background around the paper, or None when there is none.

    A rotated or photographed page leaves solid dark regions (fill, table, scanner lid)
    that touch the image border. Taken for ink they swamp the grid's orientation and
    the ink statistics, so they are found at low resolution: dark, wider than a trace
    (a morphological opening removes pen strokes), touching the border, not tiny.

    Parameters
    ----------
    hi : numpy.ndarray
        uint8 brightest colour channel of the page.
    """
    h, w = hi.shape
    scale = min(1.0, _BACKGROUND_SCALE_PX / max(h, w))
    small = cv2.resize(hi, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    dark = cv2.morphologyEx((small < _OUTSIDE_LEVEL).astype(np.uint8), cv2.MORPH_OPEN,
                            np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=4)
    sh, sw = dark.shape
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    on_border = (x == 0) | (y == 0) | (x + bw == sw) | (y + bh == sh)
    keep = on_border & (area > _OUTSIDE_MIN_AREA * sh * sw)
    keep[0] = False
    if not keep.any():
        return None
    mask = cv2.dilate(keep[labels].astype(np.uint8), np.ones((3, 3), np.uint8))
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) > 0


def ink_maps(rgb: np.ndarray) -> InkMaps:
    """Compute the :class:`InkMaps` of an RGB page.

    The background around the paper (:func:`outside_paper`) counts as paper, not ink.

    Parameters
    ----------
    rgb : numpy.ndarray
        uint8 ``(h, w, 3)`` page.
    """
    r, g, b = cv2.split(rgb)
    lo = cv2.min(cv2.min(r, g), b)
    hi = cv2.max(cv2.max(r, g), b)
    any_ink, dark_ink = _relative_darkness(lo), _relative_darkness(hi)
    outside = outside_paper(hi)
    if outside is not None:
        any_ink[outside] = 0.0
    return InkMaps(any_ink=any_ink, dark_ink=dark_ink)
