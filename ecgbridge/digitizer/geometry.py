"""The rectified frame: the page after rotation / perspective correction.

Panel boxes and baselines (:class:`ecgbridge.ecg.PanelInfo`) are given in this frame;
:func:`rectify_image` reproduces it from the input page for overlays.
"""

from __future__ import annotations

import cv2
import numpy as np

from ecgbridge.ecg import Calibration


def rotation_homography(shape: tuple[int, ...], angle_deg: float) -> np.ndarray:
    """Return the 3x3 homography that removes a rotation of `angle_deg` about the centre.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width, ...)`` of the image; the output frame has the same size.
    angle_deg : float
        Rotation of the page content, counter-clockwise positive (as returned by
        :func:`ecgbridge.digitizer.deskew.estimate_rotation`).
    """
    h, w = shape[:2]
    affine = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), -angle_deg, 1.0)
    return np.vstack([affine, [0.0, 0.0, 1.0]])


def axis_alignment_homography(
    shape: tuple[int, ...], angle_h_deg: float, angle_v_deg: float
) -> np.ndarray:
    """Return the affine homography that makes two line families axis-aligned.

    Horizontal lines running along ``(cos a_h, sin a_h)`` and vertical lines along
    ``(-sin a_v, cos a_v)`` (image axes, y down) become horizontal and vertical; lengths
    along each family are kept and the image centre stays in place. With
    ``a_h == a_v`` this is :func:`rotation_homography` for a rotation of ``-a_h``.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width, ...)`` of the image.
    angle_h_deg, angle_v_deg : float
        Directions of the two families in degrees (see
        :func:`ecgbridge.digitizer.perspective.estimate_axes`).
    """
    h, w = shape[:2]
    th, tv = np.radians(angle_h_deg), np.radians(angle_v_deg)
    directions = np.array([[np.cos(th), -np.sin(tv)], [np.sin(th), np.cos(tv)]])
    linear = np.linalg.inv(directions)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    hom = np.eye(3)
    hom[:2, :2] = linear
    hom[:2, 2] = centre - linear @ centre
    return hom


def warp_image(
    image: np.ndarray, homography: np.ndarray, size: tuple[int, int], fill: float = 255.0
) -> np.ndarray:
    """Warp `image` with `homography` into an image of ``size = (width, height)``.

    Uncovered areas are filled with `fill` (255 = white paper for images; use 0 for
    darkness maps).
    """
    border = (fill,) * (image.shape[2] if image.ndim == 3 else 1)
    if np.allclose(homography[2], [0.0, 0.0, 1.0]):
        return cv2.warpAffine(
            image, homography[:2], size, flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=border,
        )
    return cv2.warpPerspective(
        image, homography, size, flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=border,
    )


def rectify_image(image: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Reproduce the rectified frame the digitizer worked in from the input page image.

    Parameters
    ----------
    image : numpy.ndarray
        The input page as given to the digitizer (grey or RGB uint8).
    calibration : Calibration
        The calibration of the ECG digitized from that page; its ``transform`` is the
        input->rectified homography (empty = identity).

    Returns
    -------
    numpy.ndarray
        The image in the rectified frame (same size as the input), where the
        :class:`ecgbridge.ecg.PanelInfo` boxes apply.
    """
    if not calibration.transform:
        return np.array(image, copy=True)
    if len(calibration.transform) != 9:
        raise ValueError(
            "calibration transform must have 9 values (3x3 homography), "
            f"got {len(calibration.transform)}"
        )
    hom = np.asarray(calibration.transform, dtype=np.float64).reshape(3, 3)
    h, w = image.shape[:2]
    return warp_image(np.ascontiguousarray(image), hom, (w, h))
