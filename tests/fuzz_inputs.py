"""Seeded generator of malformed inputs for the fuzz test (files and DICOM datasets).

Every input starts from a small valid seed (PNG, JPEG, TIFF, BMP, PDF, DICOM, text)
built at run time and is then damaged: truncated, bit-flipped, spliced with noise,
its header overwritten, a forged huge PNG size, a magic number on random bytes...
The same seed value always yields the same inputs.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import pypdfium2 as pdfium
from PIL import Image
from pydicom import dcmread
from pynetdicom.dsutils import encode

_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"%PDF-1.7\n", b"II*\x00", b"MM\x00*",
           b"BM", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP")


def _image(rng: np.random.Generator) -> Image.Image:
    arr = np.full((40, 60, 3), 255, np.uint8)
    arr[rng.integers(0, 40, 6), :] = 0
    arr[:, rng.integers(0, 60, 6)] = 120
    return Image.fromarray(arr)


def seeds(rng: np.random.Generator, dicom_bytes: bytes) -> dict[str, bytes]:
    """Valid small files by extension."""
    out: dict[str, bytes] = {}
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif"), ("BMP", "bmp")):
        buf = io.BytesIO()
        _image(rng).save(buf, format=fmt)
        out[ext] = buf.getvalue()
    doc = pdfium.PdfDocument.new()
    doc.new_page(200, 100)
    buf = io.BytesIO()
    doc.save(buf)
    out["pdf"] = buf.getvalue()
    out["dcm"] = dicom_bytes
    out["txt"] = b"Patient ECG export\n" * 20
    return out


def _png_with_size(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + struct.pack(">I", len(idat)) + b"IDAT"
            + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat)) + b"\x00\x00\x00\x00IEND"
            + struct.pack(">I", zlib.crc32(b"IEND")))


def mutate(data: bytes, rng: np.random.Generator, kind: int) -> bytes:
    """One damaged copy of `data` (`kind` picks the damage)."""
    n = len(data)
    if kind == 0:  # truncated
        return data[: int(rng.integers(1, max(2, n)))]
    if kind == 1:  # bytes flipped
        arr = bytearray(data)
        for pos in rng.integers(0, n, int(rng.integers(1, 32))):
            arr[pos] ^= int(rng.integers(1, 256))
        return bytes(arr)
    if kind == 2:  # noise spliced in
        pos = int(rng.integers(0, n))
        return data[:pos] + rng.bytes(int(rng.integers(1, 4096))) + data[pos:]
    if kind == 3:  # header overwritten
        cut = int(rng.integers(8, 200))
        return rng.bytes(cut) + data[cut:]
    if kind == 4:  # a magic number on random bytes
        magic = _MAGICS[int(rng.integers(0, len(_MAGICS)))]
        return magic + rng.bytes(int(rng.integers(0, 3000)))
    if kind == 5:  # a slice repeated
        a = int(rng.integers(0, n))
        b = min(n, a + int(rng.integers(1, 64)))
        return data[:a] + data[a:b] * int(rng.integers(2, 200)) + data[b:]
    if kind == 6:  # a PNG announcing a huge or empty image
        sizes = (0, 1, 65535, 100_000, 2**31 - 1)
        return _png_with_size(sizes[int(rng.integers(0, 5))], sizes[int(rng.integers(0, 5))])
    return rng.bytes(int(rng.integers(0, 2048)))  # plain noise


def files(count: int, seed: int, dicom_bytes: bytes) -> Iterator[tuple[str, bytes]]:
    """`count` damaged files: (name, bytes); names unique."""
    rng = np.random.default_rng(seed)
    base = seeds(rng, dicom_bytes)
    exts = sorted(base)
    for i in range(count):
        ext = exts[int(rng.integers(0, len(exts)))]
        data = mutate(base[ext], rng, int(rng.integers(0, 8)))
        # a unique tail keeps two equal damages from being one input (deduplicated)
        yield f"fuzz_{i:04d}.{ext}", data + f"#{i}".encode()


def datasets(count: int, seed: int, dicom_path: str) -> Iterator[bytes]:
    """`count` damaged encoded datasets (implicit VR little endian) for C-STOREs."""
    rng = np.random.default_rng(seed)
    raw = encode(dcmread(dicom_path), True, True)
    assert raw is not None
    for _ in range(count):
        yield mutate(raw, rng, int(rng.choice([0, 1, 2, 3, 5, 7])))
