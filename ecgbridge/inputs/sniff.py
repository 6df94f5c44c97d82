"""Telling an input's format from its first bytes (never from its file name)."""

from __future__ import annotations

#: Media types load_input understands.
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
BMP = "image/bmp"
GIF = "image/gif"
WEBP = "image/webp"
PDF = "application/pdf"
DICOM = "application/dicom"

RASTER_TYPES: frozenset[str] = frozenset({PNG, JPEG, TIFF, BMP, GIF, WEBP})

#: A PDF header may be preceded by junk; readers accept it within the first KiB.
_PDF_HEADER_WINDOW = 1024
#: DICOM group numbers a Part 10 file without preamble can start with
#: (file meta 0002, identifying 0008), little endian, followed by a VR or a length.
_DICOM_NO_PREAMBLE_GROUPS = (b"\x02\x00", b"\x08\x00")


def sniff_media_type(data: bytes) -> str | None:
    """Return the media type of `data` judged by magic numbers, or None if unknown.

    Parameters
    ----------
    data : bytes
        At least the first few hundred bytes of the input.

    Returns
    -------
    str or None
        One of the module's media-type constants.
    """
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TIFF
    if head.startswith(b"BM") and len(data) >= 26:
        return BMP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    if len(data) >= 132 and data[128:132] == b"DICM":
        return DICOM
    if b"%PDF-" in data[:_PDF_HEADER_WINDOW]:
        return PDF
    if _looks_like_dicom_without_preamble(data):
        return DICOM
    return None


def _looks_like_dicom_without_preamble(data: bytes) -> bool:
    if len(data) < 12 or data[:2] not in _DICOM_NO_PREAMBLE_GROUPS:
        return False
    vr = data[4:6]
    explicit_vr = vr.isalpha() and vr.isupper()
    implicit_small_length = data[6:8] == b"\x00\x00"
    return explicit_vr or implicit_small_length
