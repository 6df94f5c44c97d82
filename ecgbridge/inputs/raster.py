"""Raster image files (PNG, JPEG, TIFF, BMP...) decoded to RGB pages with Pillow."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from ecgbridge.errors import ImageTooLargeError, InputError
from ecgbridge.inputs.page import Page

#: Frames beyond this in a multi-page TIFF are refused.
MAX_FRAMES: int = 64
#: Most pixels of all pages of one input together, checked before any is decoded or
#: rendered (64 huge blank PDF pages or 8 TIFF pages of 100 Mpx would otherwise need
#: gigabytes); a page is digitized at some 50 bytes per pixel at its peak.
MAX_TOTAL_PIXELS: int = 200_000_000


def check_pixel_count(width: int, height: int, max_pixels: int, name: str, what: str = "image"
                      ) -> None:
    """Raise :class:`ImageTooLargeError` when ``width * height`` exceeds `max_pixels`."""
    if width <= 0 or height <= 0:
        raise InputError(f"{name}: the {what} has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: the {what} is {width} x {height} = {width * height} pixels, more than "
            f"the limit of {max_pixels}; refusing to decode it (decompression bomb guard)"
        )


def check_total_pixels(total: int, name: str, what: str = "pages") -> None:
    """Raise :class:`ImageTooLargeError` when the pages of one input exceed
    :data:`MAX_TOTAL_PIXELS` together (memory guard, checked before decoding)."""
    if total > MAX_TOTAL_PIXELS:
        raise ImageTooLargeError(
            f"{name}: its {what} add up to {total:,} pixels, more than the limit of "
            f"{MAX_TOTAL_PIXELS:,} for one input; refusing to decode them (memory guard)"
        )


def _total_frame_pixels(image: Image.Image, n_frames: int) -> int:
    """Pixels of the first `n_frames` frames, read from their headers only."""
    total = 0
    try:
        for index in range(n_frames):
            image.seek(index)
            total += image.width * image.height
        image.seek(0)
    except (EOFError, OSError, SyntaxError, ValueError):
        image.seek(0)  # a corrupt frame is reported when it is decoded
    return total


def load_raster(data: bytes, *, name: str, max_pixels: int) -> list[Page]:
    """Decode a raster image file into RGB pages (one per TIFF page / frame).

    Parameters
    ----------
    data : bytes
        The image file.
    name : str
        Input name used in error messages.
    max_pixels : int
        Largest image allowed (width x height), checked from the header before
        any pixel is decoded.

    Returns
    -------
    list of Page
        RGB uint8 pages; EXIF orientation applied, transparency composited on white,
        16-bit and float images scaled to 8 bits.

    Raises
    ------
    InputError
        Unreadable, truncated or corrupt image.
    ImageTooLargeError
        Image larger than `max_pixels`.
    """
    # Our own limit (`max_pixels`, checked on every frame header below) replaces
    # Pillow's global MAX_IMAGE_PIXELS warning; its hard error still applies.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(_bomb_message(name, max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{name}: not a readable image (damaged, or an image format that "
                         "cannot be read)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name}: not a readable image ({exc})") from exc

    pages: list[Page] = []
    with image:
        n_frames = int(getattr(image, "n_frames", 1))
        if image.format != "TIFF":
            n_frames = 1  # animated GIF/PNG/WebP: the first frame is the page
        if n_frames > MAX_FRAMES:
            raise InputError(f"{name}: {n_frames} pages; at most {MAX_FRAMES} are accepted")
        if n_frames > 1:
            check_total_pixels(_total_frame_pixels(image, n_frames), name,
                               what=f"{n_frames} pages")
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            if index >= n_frames:
                break
            check_pixel_count(frame.width, frame.height, max_pixels, name,
                              what=f"page {index + 1}" if n_frames > 1 else "image")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    frame.load()
                    rgb = to_rgb_array(ImageOps.exif_transpose(frame) or frame)
            except Image.DecompressionBombError as exc:
                raise ImageTooLargeError(_bomb_message(name, max_pixels)) from exc
            except (OSError, SyntaxError, ValueError) as exc:
                raise InputError(
                    f"{name}: the image data is corrupt or truncated ({exc})"
                ) from exc
            pages.append(Page(image=rgb, index=index))
    if not pages:
        raise InputError(f"{name}: the image has no pages")
    return pages


def _bomb_message(name: str, max_pixels: int) -> str:
    return (f"{name}: the image is larger than Pillow's safety limit (and the limit of "
            f"{max_pixels} pixels); refusing to decode it (decompression bomb guard)")


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a Pillow image of any mode to an RGB uint8 array ``(h, w, 3)``.

    Grey, palette and CMYK images are converted; alpha is composited on white;
    16-bit, 32-bit integer and float images are scaled from their own range.
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        return grey_to_rgb(_scale_to_uint8(values))
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    rgb = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """Stack a ``(h, w)`` uint8 array into ``(h, w, 3)``."""
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.full(values.shape, 255 if hi > 0 else 0, dtype=np.uint8)
    scaled = (values - lo) / (hi - lo) * 255.0
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)
