"""Perspective (keystone) estimate for photographed pages, from the grid lines.

Under a perspective view the page's horizontal grid lines are no longer parallel:
they meet at a vanishing point, and so do the vertical ones. The direction of both
line families is measured in a 3x3 set of tiles (projection-profile sharpness of the
ink there); each tile gives a line through its centre. The least-squares meeting
point of each family gives the two vanishing points; the line through them (the
image of the line at infinity) defines the projective part of the rectifying
homography. Pages photographed square-on (parallel lines) return None.
"""

from __future__ import annotations

import numpy as np

#: Tiles per side, and ink points sampled per tile.
_TILES = 3
_POINTS_PER_TILE = 6_000
#: Direction search around the page's rotation, degrees (either side), and steps.
_SEARCH_DEG = 3.0
_COARSE_STEP = 0.25
_FINE_STEP = 0.01
#: Below this spread of directions (degrees) across the page there is no perspective.
_MIN_SPREAD_DEG = 0.15
#: Tile directions may deviate at most this much (deg, std) from their vanishing point,
#: or this share of their range when larger.
_MAX_DIRECTION_SCATTER_DEG = 0.15
_MAX_SCATTER_SHARE = 0.1
#: Keystone below this relative scale change across the page is left alone.
_MIN_KEYSTONE = 0.01
#: ... down to this one when the direction trend is this many times its scatter.
_MIN_CLEAR_KEYSTONE = 0.004
_MIN_TREND_TO_NOISE = 6.0


def _sharpness(ys: np.ndarray, xs: np.ndarray, w: np.ndarray, angle: float,
               horizontal: bool) -> float:
    """Sum of squares of the 1-px ink profile across lines at `angle` (deg, image axes).

    A horizontal line at angle ``t`` runs along ``(cos t, sin t)`` (image y down), a
    vertical one along ``(-sin t, cos t)``.
    """
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    coord = ys * c - xs * s if horizontal else xs * c + ys * s
    idx = np.floor(coord).astype(np.int64)
    hist = np.bincount(idx - idx.min(), weights=w)
    return float(hist @ hist)


def _dithered(ys: np.ndarray, xs: np.ndarray, y0: float, x0: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates relative to ``(y0, x0)``, spread uniformly over each pixel's area.

    Integer coordinates make the profile sharpness jump at the pixel-staircase angles
    (multiples of ``atan(1 / length)``), which biases line directions on low-resolution
    pages; spreading each point over its pixel removes that quantisation.
    """
    return (ys - y0 + rng.uniform(-0.5, 0.5, ys.size),
            xs - x0 + rng.uniform(-0.5, 0.5, xs.size))


def _direction(ys: np.ndarray, xs: np.ndarray, w: np.ndarray, centre: float,
               horizontal: bool, search_deg: float = _SEARCH_DEG) -> float:
    """Angle (deg, image axes) of the dominant horizontal or vertical lines of points.

    Coarse-to-fine search within ``centre +- search_deg``, ending at
    :data:`_FINE_STEP` resolution.
    """
    best = centre
    span, step = search_deg, _COARSE_STEP
    while True:
        cands = best + np.arange(-span, span + step / 2, step)
        scores = [_sharpness(ys, xs, w, a, horizontal) for a in cands]
        best = float(cands[int(np.argmax(scores))])
        if step <= _FINE_STEP:
            return best
        span, step = step, max(step / 5.0, _FINE_STEP)


def _meeting_point(points: np.ndarray, angles_deg: np.ndarray, horizontal: bool
                   ) -> np.ndarray:
    """Homogeneous least-squares intersection of lines through `points` at `angles`."""
    t = np.radians(angles_deg)
    # Directions as measured by _sharpness (image y down): horizontal lines at angle t
    # run along (cos t, sin t), vertical ones along (-sin t, cos t).
    if horizontal:
        d = np.stack([np.cos(t), np.sin(t)], axis=1)
    else:
        d = np.stack([-np.sin(t), np.cos(t)], axis=1)
    lines = np.cross(np.c_[points, np.ones(len(points))],
                     np.c_[points + d, np.ones(len(points))])
    lines /= np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(lines)
    return vt[-1]


def _angles_towards(points: np.ndarray, vanish: np.ndarray, horizontal: bool) -> np.ndarray:
    """Angles (deg, as :func:`_direction` measures them) of lines from `points` to a
    homogeneous vanishing point (at infinity: a common direction)."""
    d = vanish[:2][None, :] - points * vanish[2]
    if horizontal:  # along (cos t, sin t)
        t = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    else:  # along (-sin t, cos t)
        t = np.degrees(np.arctan2(-d[:, 0], d[:, 1]))
    return (t + 90.0) % 180.0 - 90.0


#: Tiles whose direction misses the vanishing point by more than this many times the
#: others' typical miss (text or a steep trace dominating a tile) are left out, ...
_OUTLIER_FACTOR = 3.0
#: ... at most this many per line family.
_MAX_OUTLIER_TILES = 2


def _vanishing_point(points: np.ndarray, angles: np.ndarray, horizontal: bool
                     ) -> tuple[np.ndarray, float, float]:
    """A line family's vanishing point, the tiles' scatter about it, and their spread.

    Tiles whose direction misses the point clearly more than the others' do are
    left out (at most :data:`_MAX_OUTLIER_TILES`) and the point refitted.

    Returns
    -------
    tuple
        Homogeneous vanishing point, standard deviation (deg) of the kept tiles'
        directions about it, and the range (deg) of their directions.
    """
    keep = np.ones(len(points), dtype=bool)
    for _ in range(_MAX_OUTLIER_TILES + 1):
        vanish = _meeting_point(points[keep], angles[keep], horizontal)
        residual = angles - _angles_towards(points, vanish, horizontal)
        miss = np.abs(residual)
        typical = float(np.median(miss[keep]))
        worst = int(np.argmax(np.where(keep, miss, -1.0)))
        if keep.sum() <= 6 or miss[worst] <= _OUTLIER_FACTOR * max(typical, 0.02):
            break
        keep[worst] = False
    scatter = float(np.std(residual[keep]))
    return vanish, scatter, float(np.ptp(angles[keep]))


def estimate_perspective(ink: np.ndarray, rotation_deg: float) -> np.ndarray | None:
    """Projective rectification homography of a photographed grid page, or None.

    Parameters
    ----------
    ink : numpy.ndarray
        Darkness map with the grid visible (e.g. ``InkMaps.any_ink``), input frame.
    rotation_deg : float
        Global rotation (counter-clockwise positive) from
        :func:`ecgbridge.digitizer.deskew.estimate_rotation`.

    Returns
    -------
    numpy.ndarray or None
        3x3 homography that makes both grid line families parallel (to be followed by
        the usual rotation), or None when the lines are already parallel.
    """
    h, w = ink.shape
    thr = max(float(np.percentile(ink[::2, ::2], 92)), 0.05)
    centre_angle = -rotation_deg  # image-axis convention of the profile search
    pts, ang_h, ang_v = [], [], []
    rng = np.random.default_rng(0)
    for i in range(_TILES):
        for j in range(_TILES):
            y0, y1 = int(i * h / _TILES), int((i + 1) * h / _TILES)
            x0, x1 = int(j * w / _TILES), int((j + 1) * w / _TILES)
            ys, xs = np.nonzero(ink[y0:y1, x0:x1] > thr)
            if ys.size < 500:
                continue
            if ys.size > _POINTS_PER_TILE:
                keep = rng.choice(ys.size, _POINTS_PER_TILE, replace=False)
                ys, xs = ys[keep], xs[keep]
            wts = ink[y0:y1, x0:x1][ys, xs].astype(np.float64)
            yc, xc = _dithered(ys, xs, (y1 - y0) / 2.0, (x1 - x0) / 2.0, rng)
            ang_h.append(_direction(yc, xc, wts, centre_angle, True))
            ang_v.append(_direction(yc, xc, wts, centre_angle, False))
            pts.append(((x0 + x1) / 2.0, (y0 + y1) / 2.0))
    if len(pts) < 6:
        return None
    a_h, a_v = np.asarray(ang_h), np.asarray(ang_v)
    if max(np.ptp(a_h), np.ptp(a_v)) < _MIN_SPREAD_DEG:
        return None
    p = np.asarray(pts)
    # Under perspective every tile's lines point at their family's vanishing point;
    # directions scattered about those (dotted or missing grids, trace slopes) are
    # not a keystone.
    trend_to_noise = 0.0
    vanishing = []
    for angles, horizontal in ((a_h, True), (a_v, False)):
        vanish, scatter, spread = _vanishing_point(p, angles, horizontal)
        # A strong keystone (directions turning by degrees) is told with more scatter.
        if scatter > max(_MAX_DIRECTION_SCATTER_DEG, _MAX_SCATTER_SHARE * spread):
            return None
        vanishing.append(vanish)
        trend_to_noise = max(trend_to_noise, spread / max(scatter, 1e-3))
    v_h, v_v = vanishing
    horizon = np.cross(v_h, v_v)
    if abs(horizon[2]) < 1e-12:
        return None
    horizon = horizon / horizon[2]
    keystone = float(np.hypot(horizon[0], horizon[1])) * max(h, w)
    # A mild keystone still bends the time axis by ~0.3 mm over a page; accept it when
    # the directions follow their trend closely.
    min_keystone = _MIN_CLEAR_KEYSTONE if trend_to_noise >= _MIN_TREND_TO_NOISE \
        else _MIN_KEYSTONE
    if keystone < min_keystone:
        return None
    # Send the horizon (l1, l2, 1) to infinity: w' = l1 x + l2 y + 1.
    hom = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [horizon[0], horizon[1], 1.0]])
    # Keep the page centre in place and its scale there unchanged.
    c = np.array([w / 2.0, h / 2.0, 1.0])
    mapped = hom @ c
    scale = mapped[2]
    shift = np.array([[1.0, 0.0, c[0] - mapped[0] / scale],
                      [0.0, 1.0, c[1] - mapped[1] / scale],
                      [0.0, 0.0, 1.0]])
    hom = shift @ hom
    hom = hom / hom[2, 2]
    # Sanity: a photo's keystone is mild; reject wild estimates.
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64)
    warped = (hom @ corners.T).T
    if np.any(warped[:, 2] <= 0):
        return None
    warped = warped[:, :2] / warped[:, 2:3]
    if np.any(np.abs(warped - corners[:, :2]) > 0.3 * max(h, w)):
        return None
    return hom


#: Ink points sampled over the whole page for the line-family directions.
_AXIS_POINTS = 20_000
#: Widest shear (deg) between the two line families searched for.
_MAX_SHEAR_DEG = 6.0
#: Shear below this (deg; ~1 px over 1000 px) is not corrected.
_MIN_SHEAR_DEG = 0.06
#: The vertical profile must be this much sharper at its own direction than at the
#: horizontal lines' one for a shear to count (gridless pages have no vertical lines).
_MIN_SHEAR_GAIN = 1.10


def estimate_axes(ink: np.ndarray, rotation_deg: float) -> tuple[float, float] | None:
    """Directions of the horizontal and of the vertical grid lines over the whole page.

    A photograph is rarely a pure rotation plus keystone: after the projective part is
    removed the two line families may still meet at an angle other than 90 degrees
    (shear). Each family's direction is measured on its own here.

    Parameters
    ----------
    ink : numpy.ndarray
        Darkness map with the grid visible, in the keystone-corrected frame.
    rotation_deg : float
        Approximate rotation, counter-clockwise positive (search centre).

    Returns
    -------
    tuple of float or None
        ``(angle_h, angle_v)`` in degrees, image-axis convention of
        :func:`_sharpness`; None when the families are perpendicular (within
        :data:`_MIN_SHEAR_DEG`) or the vertical direction is not well defined.
    """
    h, w = ink.shape
    thr = max(float(np.percentile(ink[::2, ::2], 92)), 0.05)
    ys, xs = np.nonzero(ink > thr)
    rng = np.random.default_rng(0)
    if ys.size < 2_000:
        return None
    if ys.size > _AXIS_POINTS:
        keep = rng.choice(ys.size, _AXIS_POINTS, replace=False)
        ys, xs = ys[keep], xs[keep]
    wts = ink[ys, xs].astype(np.float64)
    yc, xc = _dithered(ys, xs, h / 2.0, w / 2.0, rng)
    centre = -rotation_deg
    angle_h = _direction(yc, xc, wts, centre, True, search_deg=1.5)
    angle_v = _direction(yc, xc, wts, angle_h, False, search_deg=_MAX_SHEAR_DEG)
    if abs(angle_v - angle_h) < _MIN_SHEAR_DEG:
        return None
    gain = _sharpness(yc, xc, wts, angle_v, False) / _sharpness(yc, xc, wts, angle_h, False)
    if gain < _MIN_SHEAR_GAIN:
        return None
    return angle_h, angle_v
