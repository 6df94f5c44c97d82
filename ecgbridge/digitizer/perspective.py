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
_FINE_STEP = 0.02
#: Below this spread of directions (degrees) across the page there is no perspective.
_MIN_SPREAD_DEG = 0.4
#: Tile directions may deviate at most this much (deg, std) from a smooth trend.
_MAX_DIRECTION_SCATTER_DEG = 0.15
#: Keystone below this relative scale change across the page is left alone.
_MIN_KEYSTONE = 0.01


def _direction(ys: np.ndarray, xs: np.ndarray, w: np.ndarray, centre: float,
               horizontal: bool) -> float:
    """Angle (deg, image axes) of the dominant horizontal or vertical lines of points."""
    best = centre
    for span, step in ((_SEARCH_DEG, _COARSE_STEP), (2 * _COARSE_STEP, _FINE_STEP)):
        cands = best + np.arange(-span, span + step / 2, step)
        scores = []
        for a in cands:
            t = np.radians(a)
            if horizontal:
                coord = ys * np.cos(t) - xs * np.sin(t)
            else:
                coord = xs * np.cos(t) + ys * np.sin(t)
            idx = np.floor(coord).astype(np.int64)
            hist = np.bincount(idx - idx.min(), weights=w)
            scores.append(float(hist @ hist))
        best = float(cands[int(np.argmax(scores))])
    return best


def _meeting_point(points: np.ndarray, angles_deg: np.ndarray, horizontal: bool
                   ) -> np.ndarray:
    """Homogeneous least-squares intersection of lines through `points` at `angles`."""
    t = np.radians(angles_deg)
    # Direction of a "horizontal" line rotated by t (image y down): (cos t, -sin t)...
    if horizontal:
        d = np.stack([np.cos(t), -np.sin(t)], axis=1)
    else:
        d = np.stack([np.sin(t), np.cos(t)], axis=1)
    lines = np.cross(np.c_[points, np.ones(len(points))],
                     np.c_[points + d, np.ones(len(points))])
    lines /= np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(lines)
    return vt[-1]


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
            yc = ys - (y1 - y0) / 2.0
            xc = xs - (x1 - x0) / 2.0
            ang_h.append(_direction(yc, xc, wts, centre_angle, True))
            ang_v.append(_direction(yc, xc, wts, centre_angle, False))
            pts.append(((x0 + x1) / 2.0, (y0 + y1) / 2.0))
    if len(pts) < 6:
        return None
    a_h, a_v = np.asarray(ang_h), np.asarray(ang_v)
    if max(np.ptp(a_h), np.ptp(a_v)) < _MIN_SPREAD_DEG:
        return None
    p = np.asarray(pts)
    # Perspective turns the line directions smoothly across the page; scattered
    # directions (dotted or missing grids, trace slopes) are not a keystone.
    design = np.c_[np.ones(len(p)), p / max(h, w)]
    for angles in (a_h, a_v):
        coef, *_ = np.linalg.lstsq(design, angles, rcond=None)
        if float(np.std(angles - design @ coef)) > _MAX_DIRECTION_SCATTER_DEG:
            return None
    v_h = _meeting_point(p, a_h, True)
    v_v = _meeting_point(p, a_v, False)
    horizon = np.cross(v_h, v_v)
    if abs(horizon[2]) < 1e-12:
        return None
    horizon = horizon / horizon[2]
    if float(np.hypot(horizon[0], horizon[1])) * max(h, w) < _MIN_KEYSTONE:
        return None
    hom = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-horizon[0], -horizon[1], 1.0]])
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
