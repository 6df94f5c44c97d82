"""PDF pages: rendered to pixels with pdfium, plus their vector paths and text."""

from __future__ import annotations

import math
import threading

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ecgbridge.errors import ImageTooLargeError, InputError, UnsupportedInputError
from ecgbridge.inputs.page import Page
from ecgbridge.inputs.pdf_vector import extract_vector_content, page_frame
from ecgbridge.inputs.raster import check_total_pixels

#: Resolution pages are rendered at, unless that would exceed the pixel cap.
DEFAULT_RENDER_DPI: float = 200.0
#: Highest resolution a scanned (image-only) page is rendered at to keep its detail.
MAX_SCAN_RENDER_DPI: float = 600.0
#: Lowest resolution accepted when a huge page is scaled down to fit the pixel cap.
MIN_RENDER_DPI: float = 50.0
#: Upper bound on pixels of one rendered page, whatever ``max_pixels`` says.
MAX_RENDER_PIXELS: int = 50_000_000
#: pdfium is not thread-safe: every call into it from this module holds this lock.
PDFIUM_LOCK = threading.RLock()
#: Documents with more pages than this are refused (nobody prints an ECG on 100 pages).
MAX_PDF_PAGES: int = 64


def load_pdf(
    data: bytes,
    *,
    name: str,
    max_pixels: int,
    dpi: float = DEFAULT_RENDER_DPI,
) -> list[Page]:
    """Render every page of a PDF and extract its vector content.

    Parameters
    ----------
    data : bytes
        The PDF file.
    name : str
        Input name used in error messages.
    max_pixels : int
        Largest rendered page allowed (width x height); the render resolution is
        lowered (down to :data:`MIN_RENDER_DPI`) to fit.
    dpi : float
        Preferred render resolution.

    Returns
    -------
    list of Page
        One page per PDF page with ``image`` (RGB uint8, honouring ``/Rotate``),
        ``dpi``, ``paths``, ``texts`` and the page size in millimetres.

    Raises
    ------
    InputError
        Corrupt, truncated or empty PDF.
    UnsupportedInputError
        Password-protected PDF.
    ImageTooLargeError
        A page too large to render even at the lowest resolution.
    """
    with PDFIUM_LOCK:
        return _load_document(data, name, max_pixels, dpi)


def _load_document(data: bytes, name: str, max_pixels: int, dpi: float) -> list[Page]:
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        # pdfium's "last error" can be stale (left over from an earlier document),
        # so encryption is judged from the file itself.
        if b"/Encrypt" in data:
            raise UnsupportedInputError(
                f"{name}: the PDF is encrypted (password protected); export it without a password"
            ) from exc
        raise InputError(
            f"{name}: not a readable PDF (truncated or corrupt, no pages or no document "
            "structure found)"
        ) from exc
    try:
        n_pages = len(document)
        if n_pages == 0:
            raise InputError(f"{name}: the PDF has no pages")
        if n_pages > MAX_PDF_PAGES:
            raise UnsupportedInputError(
                f"{name}: the PDF has {n_pages} pages; at most {MAX_PDF_PAGES} are digitized"
            )
        # memory guard: page count x area at the render resolution, before rendering
        check_total_pixels(_planned_pixels(document, name, max_pixels, dpi), name,
                           what=f"{n_pages} pages (rendered at up to {dpi:.0f} dpi)")
        pages = []
        rendered = 0
        for index in range(n_pages):
            pdf_page = _open_page(document, index, name)
            try:
                pages.append(_load_page(pdf_page, index, name, max_pixels, dpi))
            finally:
                pdf_page.close()
            rendered += pages[-1].image.shape[0] * pages[-1].image.shape[1]
            check_total_pixels(rendered, name, what=f"first {index + 1} rendered pages")
        return pages
    finally:
        document.close()


def _open_page(document: pdfium.PdfDocument, index: int, name: str) -> pdfium.PdfPage:
    try:
        return document[index]
    except pdfium.PdfiumError as exc:
        raise InputError(
            f"{name}: page {index + 1} cannot be read (the PDF is damaged or truncated)"
        ) from exc


def _planned_pixels(document: pdfium.PdfDocument, name: str, max_pixels: int,
                    dpi: float) -> int:
    """Pixels of all pages rendered at `dpi` (each fitted under the pixel cap)."""
    total = 0
    for index in range(len(document)):
        pdf_page = _open_page(document, index, name)
        try:
            width_mm, height_mm = page_frame(pdf_page).size_mm
        finally:
            pdf_page.close()
        if width_mm <= 0 or height_mm <= 0:
            continue  # reported when the page is loaded
        page_dpi = _render_dpi(width_mm, height_mm, max_pixels, dpi, name, index)
        total += int((width_mm / 25.4 * page_dpi) * (height_mm / 25.4 * page_dpi))
    return total


def _render_dpi(width_mm: float, height_mm: float, max_pixels: int, dpi: float, name: str,
                index: int) -> float:
    if width_mm <= 0 or height_mm <= 0:
        raise InputError(f"{name}: page {index + 1} has an empty page box")
    cap = min(max_pixels, MAX_RENDER_PIXELS)
    area_in2 = (width_mm / 25.4) * (height_mm / 25.4)
    # pdfium rounds the bitmap size up: keep a little margin under the cap.
    fitted = min(dpi, 0.995 * math.sqrt(cap / area_in2))
    if fitted < MIN_RENDER_DPI:
        raise ImageTooLargeError(
            f"{name}: page {index + 1} is {width_mm:.0f} x {height_mm:.0f} mm; rendering it at "
            f"{MIN_RENDER_DPI:.0f} dpi would exceed the limit of {cap} pixels"
        )
    return fitted


def _load_page(pdf_page: pdfium.PdfPage, index: int, name: str, max_pixels: int,
               dpi: float) -> Page:
    frame = page_frame(pdf_page)
    width_mm, height_mm = frame.size_mm
    try:
        paths, texts = extract_vector_content(pdf_page)
        if not paths:
            # A scan wrapped in a PDF: keep the scan's own resolution (within limits).
            dpi = min(max(dpi, _scan_dpi(pdf_page, width_mm * height_mm)), MAX_SCAN_RENDER_DPI)
        render_dpi = _render_dpi(width_mm, height_mm, max_pixels, dpi, name, index)
        bitmap = pdf_page.render(scale=render_dpi / 72.0, fill_color=(255, 255, 255, 255))
        pil = bitmap.to_pil().convert("RGB")
        bitmap.close()
    except pdfium.PdfiumError as exc:
        raise InputError(f"{name}: page {index + 1} cannot be rendered ({exc})") from exc
    image = np.ascontiguousarray(np.asarray(pil, dtype=np.uint8))
    return Page(
        image=image,
        index=index,
        dpi=float(render_dpi),
        paths=paths,
        texts=texts,
        width_mm=float(width_mm),
        height_mm=float(height_mm),
    )


def _scan_dpi(pdf_page: pdfium.PdfPage, page_area_mm2: float) -> float:
    """Resolution of the largest image covering at least a quarter of the page, else 0."""
    best = 0.0
    for image in pdf_page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=4):
        try:
            left, bottom, right, top = image.get_bounds()
            metadata = image.get_metadata()
        except pdfium.PdfiumError:
            continue
        area_mm2 = abs(right - left) * abs(top - bottom) * (25.4 / 72.0) ** 2
        if area_mm2 >= 0.25 * page_area_mm2:
            best = max(best, float(metadata.horizontal_dpi), float(metadata.vertical_dpi))
    return best
