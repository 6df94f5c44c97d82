"""Rectification of a raster page: the homography that makes its grid lines axis-aligned.

Rotation (deskew), keystone (a page photographed at an angle) and shear between the
two grid-line families are measured on the page's darkness map and combined into
one input->rectified homography; corrections too small to matter are dropped
(:func:`rectify_homography`). :func:`rectify_page` brings the page's ink maps into
that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecgbridge.digitizer.deskew import estimate_rotation
from ecgbridge.digitizer.geometry import (
    axis_alignment_homography,
    rotation_homography,
    warp_image,
)
from ecgbridge.digitizer.normalise import InkMaps
from ecgbridge.digitizer.perspective import estimate_axes, estimate_perspective
from ecgbridge.digitizer.segment import Segmentation

#: Keystone and shear corrections moving no page corner further than this (pixels,
#: beyond the page's rotation) are not applied.
_MIN_GEOMETRY_CORRECTION_PX = 2.0
#: Keystone estimates made again on the corrected page (a strong one is underestimated).
_KEYSTONE_REFINEMENTS = 3


@dataclass(frozen=True)
class RectifiedPage:
    """A raster page in the frame where its grid lines are axis-aligned.

    Attributes
    ----------
    rgb : numpy.ndarray
        The page as given (RGB, not warped).
    any_ink, dark_ink : numpy.ndarray
        Its darkness maps (:func:`ecgbridge.digitizer.normalise.ink_maps`), rectified.
    segmentation : Segmentation or None
        The learned engine's class maps, rectified (None for the classical engine).
    homography : numpy.ndarray
        The 3x3 input->rectified matrix.
    rotation_deg : float
        Page rotation (counter-clockwise positive).
    rectified : bool
        Whether `homography` differs from the identity.
    notes : tuple of str
        Perspective and shear corrections made, for the page's warnings.
    """

    rgb: np.ndarray
    any_ink: np.ndarray
    dark_ink: np.ndarray
    segmentation: Segmentation | None
    homography: np.ndarray
    rotation_deg: float
    rectified: bool
    notes: tuple[str, ...]

    @property
    def transform(self) -> np.ndarray | None:
        """The homography when the page was warped, else None."""
        return self.homography if self.rectified else None

    @property
    def keystoned(self) -> bool:
        """Whether a perspective (a page photographed at an angle) was taken out."""
        return bool(np.any(np.abs(self.homography[2, :2]) > 1e-9))


def rectify_page(rgb: np.ndarray, ink: InkMaps, segmentation: Segmentation | None
                 ) -> RectifiedPage:
    """Measure the page's rectification and warp its ink (and class) maps into that frame.

    Parameters
    ----------
    rgb : numpy.ndarray
        The page (RGB).
    ink : InkMaps
        Its darkness maps.
    segmentation : Segmentation or None
        The learned engine's class maps of the page, if that engine reads it.

    Returns
    -------
    RectifiedPage
    """
    h, w = rgb.shape[:2]
    notes: list[str] = []
    homography, angle, rectified = rectify_homography(ink.any_ink, notes)
    if rectified:
        any_ink = warp_image(ink.any_ink, homography, (w, h), fill=0.0)
        dark_ink = warp_image(ink.dark_ink, homography, (w, h), fill=0.0)
        if segmentation is not None:
            segmentation = replace(
                segmentation, trace=warp_image(segmentation.trace, homography, (w, h), fill=0.0),
                text=warp_image(segmentation.text, homography, (w, h), fill=0.0))
    else:
        any_ink, dark_ink = ink.any_ink, ink.dark_ink
    return RectifiedPage(rgb, any_ink, dark_ink, segmentation, homography, float(angle),
                         rectified, tuple(notes))


def rectify_homography(any_ink: np.ndarray, warnings: list[str]
                       ) -> tuple[np.ndarray, float, bool]:
    """Homography from the input page to the frame where the grid lines are axis-aligned.

    Perspective (keystone) is removed first, then rotation; a photographed page may
    also leave the two grid-line families non-perpendicular (shear), which an affine
    alignment of each family with its axis removes.

    Parameters
    ----------
    any_ink : numpy.ndarray
        Darkness map of the input page (grid visible).
    warnings : list of str
        Receives a note when perspective or shear is corrected.

    Returns
    -------
    tuple
        ``(homography, rotation_deg, rectified)``: the 3x3 input->rectified matrix,
        the page rotation (counter-clockwise positive) and whether the matrix differs
        from the identity.
    """
    h, w = any_ink.shape
    angle = estimate_rotation(any_ink)
    notes: list[str] = []
    keystone = estimate_perspective(any_ink, angle)
    if keystone is not None:
        # Photographed at an angle: make the grid lines parallel, then align them.
        framed = warp_image(any_ink, keystone, (w, h), fill=0.0)
        # A strong keystone is measured on bent lines: measure what is left, again.
        for _ in range(_KEYSTONE_REFINEMENTS):
            residual = estimate_perspective(framed, angle)
            if residual is None:
                break
            keystone = residual @ keystone
            framed = warp_image(any_ink, keystone, (w, h), fill=0.0)
        notes.append("perspective corrected from the grid lines")
    else:
        framed, keystone = any_ink, np.eye(3)
    axes = estimate_axes(framed, rotation_after(keystone, angle, (w, h)))
    if axes is not None:
        notes.append(f"shear of {axes[1] - axes[0]:+.2f} deg between grid lines corrected")
        angle = -axes[0]
        align = axis_alignment_homography(any_ink.shape, *axes)
    else:
        if framed is not any_ink:
            angle = estimate_rotation(framed)
        align = rotation_homography(any_ink.shape, angle)
    homography = align @ keystone
    rotation = rotation_homography(any_ink.shape, angle)
    if largest_corner_shift(homography, rotation, (w, h)) < _MIN_GEOMETRY_CORRECTION_PX:
        # Keystone and shear corrections this small are not worth a resampling (on a
        # small scan they cost more than they give): the page is only rotated.
        homography, notes = rotation, []
    warnings.extend(notes)
    return homography, angle, not np.allclose(homography, np.eye(3))


def largest_corner_shift(a: np.ndarray, b: np.ndarray, size: tuple[int, int]) -> float:
    """Largest distance (pixels) between where two homographies put a page corner."""
    w, h = size
    corners = np.array([[0.0, w, 0.0, w], [0.0, 0.0, h, h], [1.0, 1.0, 1.0, 1.0]])
    pa, pb = a @ corners, b @ corners
    return float(np.abs(pa[:2] / pa[2] - pb[:2] / pb[2]).max())


def rotation_after(homography: np.ndarray, angle_deg: float, size: tuple[int, int]) -> float:
    """Rotation (counter-clockwise positive) of the page's horizontal lines after a warp.

    A keystone correction also turns the lines near the page centre by up to a couple
    of degrees; this is where the line directions are searched for afterwards.
    """
    w, h = size
    centre = np.array([w / 2.0, h / 2.0, 1.0])
    t = np.radians(-angle_deg)
    ahead = centre + 50.0 * np.array([np.cos(t), np.sin(t), 0.0])
    p, q = homography @ centre, homography @ ahead
    d = q[:2] / q[2] - p[:2] / p[2]
    return -float(np.degrees(np.arctan2(d[1], d[0])))
