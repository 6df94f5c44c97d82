"""Image distortions applied to a rendered page: what scanning, photographing and handling do.

Geometric distortions are expressed as 3x3 homographies acting on ``(x, y, 1)``
pixel coordinates so the ground-truth traces can be moved with the pixels.
All functions are pure and deterministic given their ``rng``.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Page colour used to fill areas uncovered by a warp.
PAPER_WHITE: tuple[int, int, int] = (255, 255, 255)


def tilt_homography(angle_deg: float, width: int, height: int) -> np.ndarray:
    """Homography rotating the page about its centre.

    Parameters
    ----------
    angle_deg : float
        Angle in degrees, counter-clockwise on screen positive (OpenCV convention).
    width, height : int
        Image size in pixels.

    Returns
    -------
    numpy.ndarray
        3x3 float64 matrix mapping source to destination pixels.
    """
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    affine = cv2.getRotationMatrix2D(centre, float(angle_deg), 1.0)
    return np.vstack([affine, [0.0, 0.0, 1.0]])


def perspective_homography(
    strength: float, width: int, height: int, rng: np.random.Generator
) -> np.ndarray:
    """Homography of a random perspective view (a photo taken slightly off-axis).

    Each corner moves inwards by a random fraction in ``[0, strength]`` of the
    image width (horizontally) and height (vertically).

    Parameters
    ----------
    strength : float
        Largest corner displacement as a fraction of the image size, 0-0.3.
    width, height : int
        Image size in pixels.
    rng : numpy.random.Generator
        Source of the corner offsets.

    Returns
    -------
    numpy.ndarray
        3x3 float64 matrix mapping source to destination pixels.

    Raises
    ------
    ValueError
        If `strength` is outside 0-0.3.
    """
    if not 0.0 <= strength <= 0.3:
        raise ValueError(f"perspective strength must be 0-0.3 of the page size, got {strength}")
    w, h = float(width - 1), float(height - 1)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    offsets = rng.uniform(0.0, strength, size=(4, 2)) * np.array([w, h]) * inward
    dst = (src + offsets).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst).astype(np.float64)


def warp_page(image: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Warp `image` with `homography` (same output size, white border, bilinear)."""
    h, w = image.shape[:2]
    return cv2.warpPerspective(
        image, homography, (w, h), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=PAPER_WHITE,
    )


def transform_points(points_xy: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Apply a homography to an ``(n, 2)`` array of ``(x, y)`` points."""
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    ones = np.ones((pts.shape[0], 1))
    mapped = np.hstack([pts, ones]) @ homography.T
    return mapped[:, :2] / mapped[:, 2:3]


def add_crease(
    image: np.ndarray, px_per_mm: float, rng: np.random.Generator, *, darkness: float = 0.35
) -> tuple[np.ndarray, dict[str, float]]:
    """Draw a fold: a darker line across the page and a slight brightness step.

    The crease runs roughly horizontally or vertically (within +-20 degrees)
    through a random point of the middle 60 % of the page.

    Returns
    -------
    image : numpy.ndarray
        The creased uint8 image.
    info : dict
        ``angle_deg``, ``x``, ``y``: the crease line (for the manifest).
    """
    h, w = image.shape[:2]
    vertical = bool(rng.integers(0, 2))
    tilt = float(rng.uniform(-20.0, 20.0))
    angle = (90.0 if vertical else 0.0) + tilt
    cx = float(rng.uniform(0.2, 0.8) * w)
    cy = float(rng.uniform(0.2, 0.8) * h)
    theta = np.deg2rad(angle)
    normal = np.array([-np.sin(theta), np.cos(theta)], dtype=np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = (xs - cx) * normal[0] + (ys - cy) * normal[1]
    width_px = max(1.0, 0.4 * px_per_mm)
    shade = 1.0 - darkness * np.exp(-0.5 * (dist / width_px) ** 2)
    shade *= np.where(dist > 0, 0.94, 1.0).astype(np.float32)
    out = np.clip(image.astype(np.float32) * shade[..., None], 0, 255).astype(np.uint8)
    return out, {"angle_deg": angle, "x": cx, "y": cy}


def add_shading(
    image: np.ndarray, strength: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, float]]:
    """Uneven lighting: brightness falls linearly by up to `strength` along a random direction.

    Returns
    -------
    image : numpy.ndarray
        The shaded uint8 image.
    info : dict
        ``angle_deg`` of the direction of darkening and ``strength``.

    Raises
    ------
    ValueError
        If `strength` is outside 0-0.8.
    """
    if not 0.0 <= strength <= 0.8:
        raise ValueError(f"shading strength must be 0-0.8, got {strength}")
    h, w = image.shape[:2]
    angle = float(rng.uniform(0.0, 360.0))
    direction = np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))], np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xs - w / 2) * direction[0] + (ys - h / 2) * direction[1]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    gain = 1.0 - strength * ramp
    out = np.clip(image.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)
    return out, {"angle_deg": angle, "strength": float(strength)}


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Grey page (as from a monochrome scanner), still 3 equal RGB channels."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Blur with a Gaussian of `sigma_px` pixels (no-op for 0)."""
    if sigma_px <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma_px))


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise of standard deviation `sigma` (0-255 scale)."""
    if sigma <= 0:
        return image
    noise = rng.normal(0.0, float(sigma), size=image.shape).astype(np.float32)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB image as JPEG at `quality` (1-100) and decode it again.

    Raises
    ------
    ValueError
        If `quality` is outside 1-100.
    """
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be 1-100, got {quality}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise ValueError("OpenCV could not JPEG-encode the page")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:  # pragma: no cover - we just encoded it
        raise ValueError("OpenCV could not decode the JPEG it wrote")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
