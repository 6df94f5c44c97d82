"""``load_input``: any supported input (file, bytes, array) -> pages + provenance."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ecgbridge.ecg import SourceInfo
from ecgbridge.errors import InputError, UnsupportedInputError
from ecgbridge.inputs import sniff
from ecgbridge.inputs.dicom import load_dicom
from ecgbridge.inputs.page import LoadedInput, Page
from ecgbridge.inputs.pdf import load_pdf
from ecgbridge.inputs.printed import (
    PRINTED_EVIDENCE,
    page_texts,
    printed_acquisition_time,
    printed_filters,
    printed_identity,
)
from ecgbridge.inputs.raster import check_pixel_count, grey_to_rgb, load_raster
from ecgbridge.inputs.sidecar import SIDECAR_EVIDENCE, read_sidecar

#: Default limit on decoded pixels per page (width x height).
DEFAULT_MAX_PIXELS: int = 100_000_000
#: Input files larger than this are refused before being read.
MAX_INPUT_BYTES: int = 512 * 1024 * 1024

_ARRAY_NAME = "<array>"
_BYTES_NAME = "<bytes>"


def load_input(
    source: Path | str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LoadedInput:
    """Load an ECG document into pages.

    The format is recognised from the content (magic numbers), never from the
    file name: PNG, JPEG, TIFF (every page), BMP, GIF/WebP (first frame), PDF
    (every page rendered, plus vector paths and text), DICOM (Secondary
    Capture single/multi-frame, VL Photographic Image, Encapsulated PDF).

    Parameters
    ----------
    source : pathlib.Path, str, bytes or numpy.ndarray
        A file path, the file's bytes, or an image array (grey ``(h, w)``, RGB
        ``(h, w, 3)`` or RGBA ``(h, w, 4)``).
    name : str, optional
        Label for messages and provenance; defaults to the file name.
    max_pixels : int
        Largest page accepted (width x height), checked before decoding
        (decompression-bomb guard); PDF pages are rendered to fit.

    Returns
    -------
    LoadedInput
        The pages (RGB uint8) and a :class:`~ecgbridge.ecg.SourceInfo` with name,
        sha256 of the input bytes, media type, page count, for DICOM the identity
        attributes, for a path the sidecar file's identity (``X.json`` beside ``X.png``,
        see :mod:`ecgbridge.inputs.sidecar`), and for vector PDFs the acquisition time
        and filter settings printed in the text layer (:mod:`ecgbridge.inputs.printed`).
        An image's own scan/study time is never taken as the acquisition time.

    Raises
    ------
    InputError
        Missing, empty, truncated or corrupt input.
    UnsupportedInputError
        Unknown format, unsupported DICOM SOP class / transfer syntax, encrypted PDF.
    ImageTooLargeError
        A page larger than `max_pixels`.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if isinstance(source, np.ndarray):
        label = name or _ARRAY_NAME
        page = Page(image=array_to_rgb(source, label, max_pixels))
        return LoadedInput(pages=(page,), source=SourceInfo(name=label, pages=1))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or _BYTES_NAME
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or path.name
        data = _read_file(path, label)
        return with_sidecar(load_bytes(data, name=label, max_pixels=max_pixels), path)
    else:
        raise TypeError(
            f"load_input expects a path, bytes or a numpy array, got {type(source).__name__}"
        )
    return load_bytes(data, name=label, max_pixels=max_pixels)


def with_sidecar(loaded: LoadedInput, path: Path) -> LoadedInput:
    """Add the identity and acquisition time of the sidecar file beside `path`, if any.

    Sidecar values override those of a DICOM source and the printed time.

    Raises
    ------
    InputError
        A sidecar that is present but wrong (see :mod:`ecgbridge.inputs.sidecar`).
    """
    values = read_sidecar(path)
    if not values:
        return loaded
    acquired = values.pop("AcquisitionDateTime", "")
    source = loaded.source.replace(dicom={**loaded.source.dicom, **values})
    if acquired:
        source = source.replace(acquisition_datetime=acquired,
                                acquisition_evidence=SIDECAR_EVIDENCE)
    return LoadedInput(pages=loaded.pages, source=source)


def load_bytes(data: bytes, *, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedInput:
    """Load an input given as the bytes of a file (see :func:`load_input`)."""
    if not data:
        raise InputError(f"{name}: the input is empty (0 bytes)")
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(
            f"{name}: the input is {len(data)} bytes, more than the limit of {MAX_INPUT_BYTES}"
        )
    media_type = sniff.sniff_media_type(data)
    identity: dict[str, str] = {}
    if media_type in sniff.RASTER_TYPES:
        pages = load_raster(data, name=name, max_pixels=max_pixels)
    elif media_type == sniff.PDF:
        pages = load_pdf(data, name=name, max_pixels=max_pixels)
    elif media_type == sniff.DICOM:
        content = load_dicom(data, name=name, max_pixels=max_pixels)
        pages, identity = content.pages, content.identity
    else:
        raise UnsupportedInputError(
            f"{name}: unknown file format (it starts with the bytes {data[:8].hex(' ')}); "
            "expected PNG, JPEG, "
            "TIFF, BMP, PDF or DICOM"
        )
    texts = page_texts(pages)
    printed = printed_acquisition_time(texts)
    source = SourceInfo(
        name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        media_type=media_type,
        pages=len(pages),
        dicom=identity,
        acquisition_datetime=printed,
        acquisition_evidence=PRINTED_EVIDENCE if printed else "",
        filters=printed_filters(texts),
        printed_identity=printed_identity(texts),
    )
    return LoadedInput(pages=tuple(pages), source=source)


def _read_file(path: Path, name: str) -> bytes:
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise InputError(f"{name}: is a directory, not a file")
        if size > MAX_INPUT_BYTES:
            raise InputError(
                f"{name}: the file is {size} bytes, more than the limit of {MAX_INPUT_BYTES}"
            )
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{name}: no such file") from exc
    except PermissionError as exc:
        raise InputError(f"{name}: permission denied") from exc
    except OSError as exc:
        raise InputError(f"{name}: cannot be read ({exc.strerror or exc})") from exc


def array_to_rgb(array: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    """Convert an image array (grey, RGB or RGBA; uint8, uint16 or float) to RGB uint8.

    Float arrays are taken as 0-1 when their maximum is at most 1, else 0-255.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(
            f"{name}: an image array must be (h, w), (h, w, 3) or (h, w, 4), got {arr.shape}"
        )
    check_pixel_count(arr.shape[1], arr.shape[0], max_pixels, name)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError(f"{name}: the image array contains NaN or infinite values")
        scale = 255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.min(initial=0) >= 0 and \
                arr.max(initial=0) <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise InputError(f"{name}: unsupported image array dtype {arr.dtype}")
    if arr.ndim == 2:
        return grey_to_rgb(arr)
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float64) / 255.0
        rgb = arr[:, :, :3].astype(np.float64) * alpha + 255.0 * (1.0 - alpha)
        return np.ascontiguousarray(rgb.round().astype(np.uint8))
    return np.ascontiguousarray(arr)
