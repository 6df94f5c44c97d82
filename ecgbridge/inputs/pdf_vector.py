"""Vector content of a PDF page: stroked paths and text, in millimetres on the displayed page.

PDF user space is exact: one unit is 1/72 inch, so a path point converts to
millimetres with no measurement at all. This module walks a page's objects with
pdfium's raw API (descending into form XObjects), applies every object's matrix
and the enclosing forms' matrices, then the page's crop box and ``/Rotate``, so
the coordinates match the rendered image: origin at the top-left, y growing
downwards, after rotation.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ecgbridge.inputs.page import TextItem, VectorPath

#: Millimetres per PDF point (1 pt = 1/72 inch).
MM_PER_PT: float = 25.4 / 72.0

_OBJ_TEXT = pdfium_c.FPDF_PAGEOBJ_TEXT
_OBJ_PATH = pdfium_c.FPDF_PAGEOBJ_PATH
_OBJ_FORM = pdfium_c.FPDF_PAGEOBJ_FORM
_SEG_MOVETO = pdfium_c.FPDF_SEGMENT_MOVETO
_SEG_BEZIERTO = pdfium_c.FPDF_SEGMENT_BEZIERTO

#: Forms nested deeper than this are not followed (guards against hostile files).
_MAX_FORM_DEPTH = 8
#: Points each cubic Bézier segment is flattened into.
_BEZIER_STEPS = 8
#: A text object made of one glyph repeated this often is a drawing (e.g. a
#: dotted grid set in a "grid font"), not words.
_GLYPH_RUN_MIN = 8

_Matrix = tuple[float, float, float, float, float, float]
_IDENTITY: _Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


@dataclass(frozen=True)
class PageFrame:
    """How PDF user-space points map to the displayed page in millimetres.

    Attributes
    ----------
    crop : tuple of float
        ``(x0, y0, x1, y1)`` crop box in points.
    rotation : int
        Page ``/Rotate`` in degrees clockwise (0, 90, 180, 270).
    """

    crop: tuple[float, float, float, float]
    rotation: int

    @property
    def size_mm(self) -> tuple[float, float]:
        """``(width_mm, height_mm)`` of the displayed (rotated) page."""
        w = (self.crop[2] - self.crop[0]) * MM_PER_PT
        h = (self.crop[3] - self.crop[1]) * MM_PER_PT
        return (h, w) if self.rotation in (90, 270) else (w, h)

    def to_mm(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(n, 2)`` user-space points to displayed-page millimetres (y down)."""
        x0, y0, x1, y1 = self.crop
        width, height = x1 - x0, y1 - y0
        u = xy[:, 0] - x0
        v = y1 - xy[:, 1]
        if self.rotation == 90:
            u, v = height - v, u
        elif self.rotation == 180:
            u, v = width - u, height - v
        elif self.rotation == 270:
            u, v = v, width - u
        return np.column_stack([u, v]) * MM_PER_PT


def page_frame(page: pdfium.PdfPage) -> PageFrame:
    """Return the crop box and rotation of `page`."""
    crop = tuple(float(v) for v in page.get_cropbox())
    rotation = int(page.get_rotation()) % 360
    return PageFrame(crop=crop, rotation=rotation)  # type: ignore[arg-type]


def extract_vector_content(
    page: pdfium.PdfPage,
) -> tuple[tuple[VectorPath, ...], tuple[TextItem, ...]]:
    """Return the stroked paths and text items of a PDF page.

    Parameters
    ----------
    page : pypdfium2.PdfPage
        An open page.

    Returns
    -------
    paths : tuple of VectorPath
        One polyline per sub-path of every stroked path object (Bézier curves
        flattened into short lines), in displayed-page millimetres.
    texts : tuple of TextItem
        Text objects with their bounding boxes in displayed-page millimetres.
        Runs of one repeated glyph (grids drawn with a font) are left out.
    """
    frame = page_frame(page)
    textpage = page.get_textpage()
    paths: list[VectorPath] = []
    texts: list[TextItem] = []
    try:
        count = pdfium_c.FPDFPage_CountObjects(page)
        handles = [pdfium_c.FPDFPage_GetObject(page, i) for i in range(count)]
        _walk(handles, _IDENTITY, 0, frame, textpage, paths, texts)
    finally:
        textpage.close()
    return tuple(paths), tuple(texts)


def _walk(
    handles: list,  # type: ignore[type-arg]
    parent: _Matrix,
    depth: int,
    frame: PageFrame,
    textpage: pdfium.PdfTextPage,
    paths: list[VectorPath],
    texts: list[TextItem],
) -> None:
    for obj in handles:
        kind = pdfium_c.FPDFPageObj_GetType(obj)
        if kind == _OBJ_PATH:
            paths.extend(_path_polylines(obj, parent, frame))
        elif kind == _OBJ_TEXT:
            item = _text_item(obj, parent, frame, textpage)
            if item is not None:
                texts.append(item)
        elif kind == _OBJ_FORM and depth < _MAX_FORM_DEPTH:
            matrix = _compose(_object_matrix(obj), parent)
            n = pdfium_c.FPDFFormObj_CountObjects(obj)
            children = [pdfium_c.FPDFFormObj_GetObject(obj, i) for i in range(max(n, 0))]
            _walk(children, matrix, depth + 1, frame, textpage, paths, texts)


def _object_matrix(obj: object) -> _Matrix:
    m = pdfium_c.FS_MATRIX()
    if not pdfium_c.FPDFPageObj_GetMatrix(obj, m):
        return _IDENTITY
    return (m.a, m.b, m.c, m.d, m.e, m.f)


def _compose(inner: _Matrix, outer: _Matrix) -> _Matrix:
    """Matrix applying `inner` first, then `outer` (PDF row-vector convention)."""
    a1, b1, c1, d1, e1, f1 = inner
    a2, b2, c2, d2, e2, f2 = outer
    return (
        a1 * a2 + b1 * c2,
        a1 * b2 + b1 * d2,
        c1 * a2 + d1 * c2,
        c1 * b2 + d1 * d2,
        e1 * a2 + f1 * c2 + e2,
        e1 * b2 + f1 * d2 + f2,
    )


def _apply(matrix: _Matrix, xy: np.ndarray) -> np.ndarray:
    a, b, c, d, e, f = matrix
    x, y = xy[:, 0], xy[:, 1]
    return np.column_stack([a * x + c * y + e, b * x + d * y + f])


def _rgb(getter: object, obj: object) -> tuple[float, float, float]:
    r, g, b, a = (ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint())
    if not getter(obj, r, g, b, a):  # type: ignore[operator]
        return (0.0, 0.0, 0.0)
    return (r.value / 255.0, g.value / 255.0, b.value / 255.0)


def _path_polylines(obj: object, parent: _Matrix, frame: PageFrame) -> list[VectorPath]:
    fill_mode, stroke = ctypes.c_int(), ctypes.c_int()
    if not pdfium_c.FPDFPath_GetDrawMode(obj, fill_mode, stroke) or not stroke.value:
        return []
    matrix = _compose(_object_matrix(obj), parent)
    width = ctypes.c_float()
    pdfium_c.FPDFPageObj_GetStrokeWidth(obj, width)
    scale = abs(matrix[0] * matrix[3] - matrix[1] * matrix[2]) ** 0.5
    width_mm = float(width.value) * scale * MM_PER_PT
    colour = _rgb(pdfium_c.FPDFPageObj_GetStrokeColor, obj)

    n = pdfium_c.FPDFPath_CountSegments(obj)
    x, y = ctypes.c_float(), ctypes.c_float()
    subpaths: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    controls: list[tuple[float, float]] = []
    for i in range(max(n, 0)):
        seg = pdfium_c.FPDFPath_GetPathSegment(obj, i)
        kind = pdfium_c.FPDFPathSegment_GetType(seg)
        pdfium_c.FPDFPathSegment_GetPoint(seg, x, y)
        point = (float(x.value), float(y.value))
        if kind == _SEG_MOVETO:
            if len(current) > 1:
                subpaths.append(current)
            current = [point]
            controls = []
            continue
        if kind == _SEG_BEZIERTO:
            controls.append(point)
            if len(controls) < 3:  # control points come first, the end point last
                continue
            if current:
                current.extend(_flatten_cubic(current[-1], controls[0], controls[1], point))
            controls = []
            continue
        current.append(point)
        if pdfium_c.FPDFPathSegment_GetClose(seg) and current:
            current.append(current[0])
    if len(current) > 1:
        subpaths.append(current)

    result = []
    for pts in subpaths:
        user = _apply(matrix, np.asarray(pts, dtype=np.float64))
        result.append(
            VectorPath(points=frame.to_mm(user), stroke_rgb=colour, line_width_mm=width_mm)
        )
    return result


def _flatten_cubic(
    p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float],
    p3: tuple[float, float], steps: int = _BEZIER_STEPS,
) -> list[tuple[float, float]]:
    """Points of a cubic Bézier curve after `p0` (end point included)."""
    t = np.linspace(0.0, 1.0, steps + 1)[1:, None]
    pts = ((1 - t) ** 3 * np.asarray(p0) + 3 * (1 - t) ** 2 * t * np.asarray(p1)
           + 3 * (1 - t) * t ** 2 * np.asarray(p2) + t ** 3 * np.asarray(p3))
    return [(float(a), float(b)) for a, b in pts]


def _text_item(
    obj: object, parent: _Matrix, frame: PageFrame, textpage: pdfium.PdfTextPage
) -> TextItem | None:
    n_bytes = pdfium_c.FPDFTextObj_GetText(obj, textpage, None, 0)
    if n_bytes <= 2:
        return None
    buffer = ctypes.create_string_buffer(n_bytes)
    pdfium_c.FPDFTextObj_GetText(
        obj, textpage, ctypes.cast(buffer, ctypes.POINTER(ctypes.c_ushort)), n_bytes
    )
    text = buffer.raw[: n_bytes - 2].decode("utf-16-le", errors="replace")
    text = re.sub(r"\s+", " ", text.replace("\x00", "").replace("\xa0", " ")).strip()
    if not text or _is_glyph_run(text):
        return None
    left, bottom, right, top = (ctypes.c_float(), ctypes.c_float(), ctypes.c_float(),
                                ctypes.c_float())
    if not pdfium_c.FPDFPageObj_GetBounds(obj, left, bottom, right, top):
        return None
    corners = np.array(
        [[left.value, bottom.value], [right.value, bottom.value],
         [right.value, top.value], [left.value, top.value]],
        dtype=np.float64,
    )
    mm = frame.to_mm(_apply(parent, corners))
    box = (
        float(mm[:, 0].min()), float(mm[:, 1].min()),
        float(mm[:, 0].max()), float(mm[:, 1].max()),
    )
    return TextItem(text=text, box_mm=box)


def _is_glyph_run(text: str) -> bool:
    compact = text.replace(" ", "")
    return len(compact) >= _GLYPH_RUN_MIN and len(set(compact)) == 1
