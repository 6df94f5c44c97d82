"""Step 2: find the page rotation from the orientation of grid lines (or traces).

Grid lines and trace baselines are horizontal and vertical on a straight page. The
gradient orientation histogram of the ink map, folded modulo 90 degrees, peaks at the
page rotation. This works for solid, dotted (rows of dots still give axis-aligned edges
in aggregate) and grid-free pages (trace baselines and label text).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Largest rotation searched, in degrees (either direction).
MAX_ROTATION_DEG = 15.0
#: Long side of the image the orientation is measured on.
_ANALYSIS_SIZE_PX = 1400
#: Histogram resolution in degrees.
_BIN_DEG = 0.05
#: Rotations smaller than this (about 1 px over a 200-dpi page) are not corrected.
_NEGLIGIBLE_DEG = 0.05
#: Without a gradient peak, the best projection angle must beat the median angle's
#: profile sharpness by this factor.
_MIN_PROJECTION_CONTRAST = 1.3


def estimate_rotation(ink: np.ndarray) -> float:
    """Estimate the rotation of the page content, counter-clockwise positive, in degrees.

    Parameters
    ----------
    ink : numpy.ndarray
        float darkness map (0 = paper, 1 = ink), e.g. :attr:`InkMaps.any_ink`.

    Returns
    -------
    float
        Angle in degrees within +-:data:`MAX_ROTATION_DEG`; rotating the image by
        ``-angle`` (clockwise for positive) makes the grid axis-aligned. 0 when the
        image has no dominant orientation.
    """
    h, w = ink.shape
    scale = min(1.0, _ANALYSIS_SIZE_PX / max(h, w))
    if scale < 1:
        img = cv2.resize(ink, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    else:
        img = ink
    img = img.astype(np.float32)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.hypot(gx, gy)
    strong = mag > np.percentile(mag, 90)
    if strong.sum() < 100:
        return 0.0
    # Gradient direction of a horizontal line is vertical; fold everything modulo 90 deg.
    theta = np.degrees(np.arctan2(gy[strong], gx[strong]))
    folded = np.mod(theta + 45.0, 90.0) - 45.0
    weights = mag[strong]
    nbins = int(round(90.0 / _BIN_DEG))
    hist, edges = np.histogram(folded, bins=nbins, range=(-45.0, 45.0), weights=weights)
    # Smooth circularly (the Sobel angle estimate is noisy).
    sigma_bins = 0.25 / _BIN_DEG
    radius = int(4 * sigma_bins)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_bins) ** 2)
    padded = np.concatenate([hist[-radius:], hist, hist[:radius]])
    smooth = np.convolve(padded, kernel, mode="same")[radius:-radius]
    centres = 0.5 * (edges[:-1] + edges[1:])
    allowed = np.abs(centres) <= MAX_ROTATION_DEG
    idx = int(np.argmax(np.where(allowed, smooth, -1.0)))
    if smooth[idx] < 2.0 * np.median(smooth):
        # No dominant gradient direction: dense grids aliased at low resolution scatter
        # the gradients, yet their lines still give sharp projection profiles.
        return -_projection_fallback(img)
    # Parabolic refinement.
    if 0 < idx < nbins - 1:
        a, b, c = smooth[idx - 1], smooth[idx], smooth[idx + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
    else:
        offset = 0.0
    angle = float(centres[idx] + offset * _BIN_DEG)
    angle = _refine_by_projection(img, angle)
    if abs(angle) < _NEGLIGIBLE_DEG:
        return 0.0
    # Image y grows downward: a positive gradient angle is a clockwise rotation on screen.
    return -angle


def _sample_ink(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Centred coordinates and weights of (at most 100 000) ink pixels of `img`."""
    thr = max(float(np.percentile(img, 92)), 0.05)
    ys, xs = np.nonzero(img > thr)
    if ys.size < 200:
        return None
    if ys.size > 100_000:
        keep = np.random.default_rng(0).choice(ys.size, 100_000, replace=False)
        ys, xs = ys[keep], xs[keep]
    weights = img[ys, xs].astype(np.float64)
    yc, xc = ys.astype(np.float64) - img.shape[0] / 2, xs.astype(np.float64) - img.shape[1] / 2
    return yc, xc, weights


def _projection_fallback(img: np.ndarray) -> float:
    """Rotation (image-axis convention) from projection profiles alone, 0 if unclear.

    The angle is accepted only when its profiles are clearly sharper than those at
    most other angles (:data:`_MIN_PROJECTION_CONTRAST`).
    """
    sample = _sample_ink(img)
    if sample is None:
        return 0.0
    yc, xc, weights = sample
    step_pts = max(1, yc.size // 30_000)
    coarse = np.arange(-MAX_ROTATION_DEG, MAX_ROTATION_DEG + 0.01, 0.5)
    sharp = np.array([_profile_sharpness(yc[::step_pts], xc[::step_pts], weights[::step_pts],
                                         a, bin_px=2.0) for a in coarse])
    if sharp.max() < _MIN_PROJECTION_CONTRAST * np.median(sharp):
        return 0.0
    return _refine_by_projection(img, float(coarse[int(np.argmax(sharp))]))


def _profile_sharpness(ys: np.ndarray, xs: np.ndarray, weights: np.ndarray, angle: float,
                       bin_px: float = 1.0) -> float:
    """Sum of squared row- and column-profile values after rotating points by `angle`."""
    t = np.radians(angle)
    c, s = np.cos(t), np.sin(t)
    rows = np.floor((ys * c - xs * s) / bin_px).astype(np.int64)
    cols = np.floor((xs * c + ys * s) / bin_px).astype(np.int64)
    hr = np.bincount(rows - rows.min(), weights=weights)
    hc = np.bincount(cols - cols.min(), weights=weights)
    return float(np.dot(hr, hr) + np.dot(hc, hc))


def _refine_by_projection(img: np.ndarray, angle: float) -> float:
    """Refine `angle` (image-axis convention) by maximising projection-profile sharpness.

    Gradient histograms are biased toward 0 deg by pixel staircases; the sharpness of
    the row/column ink profiles is not.
    """
    sample = _sample_ink(img)
    if sample is None:
        return angle
    yc, xc, weights = sample
    # Compare the gradient estimate with a coarse projection search: the gradients of
    # thin stair-stepped lines are biased toward the axes by up to a couple of degrees.
    coarse = np.arange(-MAX_ROTATION_DEG, MAX_ROTATION_DEG + 0.01, 0.5)
    step_pts = max(1, yc.size // 30_000)
    ys_c, xs_c, w_c = yc[::step_pts], xc[::step_pts], weights[::step_pts]
    sharp = [_profile_sharpness(ys_c, xs_c, w_c, a, bin_px=2.0) for a in coarse]
    cand_proj = float(coarse[int(np.argmax(sharp))])
    best = angle
    if _profile_sharpness(ys_c, xs_c, w_c, cand_proj, 2.0) > _profile_sharpness(
        ys_c, xs_c, w_c, angle, 2.0
    ) and abs(cand_proj - angle) > 0.5:
        best = cand_proj
    for span, step in ((1.0, 0.1), (0.12, 0.02)):
        # Candidates on a grid anchored at 0 so an unrotated page is tested exactly.
        cands = np.unique(np.round((best + np.arange(-span, span + step / 2, step)) / step) * step)
        scores = np.array([_profile_sharpness(yc, xc, weights, a) for a in cands])
        top = np.nonzero(scores >= scores.max() * (1 - 1e-9))[0]
        best = float(cands[top[np.argmin(np.abs(cands[top]))]])
    return best
