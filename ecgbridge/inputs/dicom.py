"""DICOM inputs: Secondary Capture (single/multi-frame), VL Photographic Image, Encapsulated PDF."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ecgbridge import codes
from ecgbridge.errors import ImageTooLargeError, InputError, UnsupportedInputError
from ecgbridge.inputs.page import Page
from ecgbridge.inputs.pdf import load_pdf
from ecgbridge.inputs.raster import (
    MAX_FRAMES,
    check_pixel_count,
    check_total_pixels,
    grey_to_rgb,
)

#: Identity attributes copied into ``SourceInfo.dicom`` (as plain strings).
IDENTITY_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyID", "AccessionNumber", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID",
    "Modality", "InstitutionName", "Manufacturer",
)

_PDF_MIME = "application/pdf"


@dataclass
class DicomContent:
    """What a DICOM input holds: its pages and identity."""

    pages: list[Page]
    identity: dict[str, str] = field(default_factory=dict)
    sop_class_uid: str = ""


def load_dicom(data: bytes, *, name: str, max_pixels: int) -> DicomContent:
    """Read a DICOM object's pages and identity attributes.

    Parameters
    ----------
    data : bytes
        The DICOM file (Part 10, with or without preamble).
    name : str
        Input name used in error messages.
    max_pixels : int
        Largest frame allowed (rows x columns), checked before decoding.

    Returns
    -------
    DicomContent
        One page per frame (or per page of an encapsulated PDF), and the identity.

    Raises
    ------
    InputError
        Not DICOM, truncated or corrupt.
    UnsupportedInputError
        SOP class, transfer syntax or photometric interpretation not supported,
        or no pixel data / document.
    ImageTooLargeError
        Frames larger than `max_pixels`.
    """
    ds = _read(data, name)
    sop_class = str(ds.get("SOPClassUID", ""))
    identity = identity_attributes(ds)
    if sop_class == codes.ENCAPSULATED_PDF or (not sop_class and "EncapsulatedDocument" in ds):
        pages = _encapsulated_pdf_pages(ds, name, max_pixels)
    elif sop_class in codes.IMAGE_SOP_CLASSES or (not sop_class and "PixelData" in ds):
        pages = _image_pages(ds, name, max_pixels)
    else:
        raise UnsupportedInputError(
            f"{name}: DICOM SOP class {_uid_label(sop_class)} is not supported; expected "
            "Secondary Capture, VL Photographic Image or Encapsulated PDF"
        )
    return DicomContent(pages=pages, identity=identity, sop_class_uid=sop_class)


def identity_attributes(ds: Dataset) -> dict[str, str]:
    """Return the identity attributes present in `ds` as plain strings."""
    identity = {}
    for keyword in IDENTITY_KEYWORDS:
        if keyword in ds:
            value = ds.get(keyword)
            identity[keyword] = "" if value is None else str(value)
    return identity


def _uid_label(uid: str) -> str:
    if not uid:
        return "(missing SOPClassUID)"
    if not re.fullmatch(r"[0-9.]{1,64}", uid):  # bytes, text or garbage: not a UID at all
        return "(not a valid UID)"
    readable = UID(uid).name
    return f"{uid} ({readable})" if readable and readable != uid else uid


def _read(data: bytes, name: str) -> Dataset:
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
        # pydicom decodes elements when first used: decode them all here, so that an
        # element no reader can decode (an unknown VR, a bad length) is reported now.
        ds.walk(lambda _ds, _elem: None)
    except InvalidDicomError as exc:
        raise InputError(f"{name}: not a DICOM file ({_first_line(exc)})") from exc
    except Exception as exc:  # pydicom raises many types on truncated/corrupt data
        raise InputError(
            f"{name}: the DICOM file is truncated or corrupt ({_first_line(exc)})") from exc
    if len(ds) == 0:
        raise InputError(f"{name}: the DICOM file is truncated or holds no data elements")
    return ds


def _first_line(exc: Exception) -> str:
    """An exception's message without the traceback pydicom appends to some."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else UID(codes.EXPLICIT_VR_LITTLE_ENDIAN)


def _image_pages(ds: Dataset, name: str, max_pixels: int) -> list[Page]:
    if "PixelData" not in ds:
        raise UnsupportedInputError(f"{name}: the DICOM image has no pixel data")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_pixel_count(cols, rows, max_pixels, name, what="DICOM frame")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames > MAX_FRAMES:
        raise UnsupportedInputError(
            f"{name}: {n_frames} frames; at most {MAX_FRAMES} pages are digitized"
        )
    check_total_pixels(rows * cols * n_frames, name, what=f"{n_frames} frames")
    syntax = _transfer_syntax(ds)
    _check_decodable(syntax, name)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    try:
        from pydicom.pixels import pixel_array

        arr = pixel_array(ds, as_rgb=True)
    except (ImageTooLargeError, UnsupportedInputError):
        raise
    except Exception as exc:
        raise InputError(
            f"{name}: the DICOM pixel data cannot be decoded (transfer syntax {syntax}, "
            f"{syntax.name}): {exc}"
        ) from exc
    frames = _split_frames(np.asarray(arr), n_frames, ds)
    return [
        Page(image=_frame_to_rgb(frame, photometric, ds, name), index=i)
        for i, frame in enumerate(frames)
    ]


def _check_decodable(syntax: UID, name: str) -> None:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise UnsupportedInputError(
            f"{name}: DICOM transfer syntax {syntax} ({syntax.name}) is not supported"
        ) from exc
    if not decoder.is_available:
        raise UnsupportedInputError(
            f"{name}: DICOM transfer syntax {syntax} ({syntax.name}) needs a decoder that is "
            f"not installed ({'; '.join(decoder.missing_dependencies)})"
        )


def _split_frames(arr: np.ndarray, n_frames: int, ds: Dataset) -> list[np.ndarray]:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frame_ndim = 3 if samples > 1 else 2
    if arr.ndim == frame_ndim + 1:
        return [arr[i] for i in range(arr.shape[0])]
    return [arr]


def _frame_to_rgb(frame: np.ndarray, photometric: str, ds: Dataset, name: str) -> np.ndarray:
    if frame.ndim == 3 and frame.shape[2] == 3:
        if frame.dtype != np.uint8:
            frame = _to_uint8(frame, int(ds.get("BitsStored", 8) or 8))
        return np.ascontiguousarray(frame)
    if frame.ndim != 2:
        raise UnsupportedInputError(
            f"{name}: unsupported DICOM pixel layout {frame.shape} ({photometric})"
        )
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = np.asarray(apply_color_lut(frame, ds)).astype(np.float64)
        if rgb.max() > 255:  # 16-bit palette entries
            rgb = rgb / 257.0
        return np.ascontiguousarray(np.clip(rgb.round(), 0, 255).astype(np.uint8))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedInputError(
            f"{name}: DICOM photometric interpretation {photometric!r} is not supported"
        )
    grey = _to_uint8(frame, int(ds.get("BitsStored", 8) or 8))
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return grey_to_rgb(grey)


def _to_uint8(values: np.ndarray, bits_stored: int) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    v = values.astype(np.float64)
    if bits_stored <= 8 and v.min() >= 0:
        return np.clip(v, 0, 255).astype(np.uint8)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((v - lo) / (hi - lo) * 255.0).round().astype(np.uint8)


def _encapsulated_pdf_pages(ds: Dataset, name: str, max_pixels: int) -> list[Page]:
    mime = str(ds.get("MIMETypeOfEncapsulatedDocument", _PDF_MIME)).strip().lower()
    if mime and mime != _PDF_MIME:
        raise UnsupportedInputError(
            f"{name}: the encapsulated document is {mime!r}; only {_PDF_MIME} is supported"
        )
    document: Any = ds.get("EncapsulatedDocument")
    if not document:
        raise UnsupportedInputError(f"{name}: the Encapsulated PDF has no EncapsulatedDocument")
    return load_pdf(bytes(document), name=f"{name} (encapsulated PDF)", max_pixels=max_pixels)
