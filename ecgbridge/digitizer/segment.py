"""Learned page segmentation: per-pixel probabilities of trace ink and printed text.

A small U-Net (``ecgbridge/data/models/segmenter.onnx``, model card beside it) maps a
page, scaled so that its long side is :data:`MODEL_LONG_SIDE_PX` pixels (about 4 px/mm
on a letter or A4 page), to two probability maps: ECG trace ink (calibration pulses
included) and printed text. Grid lines, paper texture, creases, shadows and specks are
background. Inference runs through OpenCV's DNN module on the CPU; nothing is
downloaded at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from ecgbridge.digitizer.inkmask import (
    join_cut_strokes,
    remove_ruled_lines,
    ruled_lines,
    trace_mask,
)

#: The page is resized so that its long side has this many pixels before inference.
MODEL_LONG_SIDE_PX = 1100
#: Input and output sides must be multiples of this (three 2x poolings).
_SIDE_MULTIPLE = 8
#: Package-data name of the model.
MODEL_FILE = "segmenter.onnx"
#: Output channels, in order.
CLASSES = ("trace", "text")


@dataclass(frozen=True)
class Segmentation:
    """Class probabilities of one page at the page's own resolution.

    Attributes
    ----------
    trace : numpy.ndarray
        float32 probability in [0, 1] that a pixel is trace ink.
    text : numpy.ndarray
        float32 probability in [0, 1] that a pixel is printed text.
    scale : float
        Model pixels per page pixel.
    """

    trace: np.ndarray
    text: np.ndarray
    scale: float


class ModelUnavailableError(RuntimeError):
    """The segmentation model is not installed with the package."""


def model_available() -> bool:
    """True when the packaged model file exists."""
    return resources.files("ecgbridge").joinpath("data", "models", MODEL_FILE).is_file()


@lru_cache(maxsize=1)
def _model_bytes() -> bytes:
    path = resources.files("ecgbridge").joinpath("data", "models", MODEL_FILE)
    if not path.is_file():
        raise ModelUnavailableError(f"segmentation model {MODEL_FILE} is not installed")
    return path.read_bytes()


def _network() -> cv2.dnn.Net:
    """A fresh network (OpenCV networks are not safe to share between threads)."""
    data = np.frombuffer(_model_bytes(), dtype=np.uint8)
    return cv2.dnn.readNetFromONNX(data)


def model_input(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The page as the model sees it: resized RGB, float32 in [0, 1], padded; and the scale.

    Parameters
    ----------
    rgb : numpy.ndarray
        HxWx3 uint8 page.

    Returns
    -------
    tuple
        (1x3xH'xW' float32 blob, model pixels per page pixel).
    """
    h, w = rgb.shape[:2]
    scale = MODEL_LONG_SIDE_PX / float(max(h, w))
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    small = cv2.resize(rgb, size, interpolation=interp).astype(np.float32) / 255.0
    ph = -size[1] % _SIDE_MULTIPLE
    pw = -size[0] % _SIDE_MULTIPLE
    padded = np.asarray(cv2.copyMakeBorder(small, 0, ph, 0, pw, cv2.BORDER_REPLICATE))
    return padded.transpose(2, 0, 1)[None].copy(), scale


def segment_page(rgb: np.ndarray) -> Segmentation:
    """Trace and text probabilities of a page, at the page's resolution.

    Parameters
    ----------
    rgb : numpy.ndarray
        HxWx3 uint8 page.

    Returns
    -------
    Segmentation

    Raises
    ------
    ModelUnavailableError
        When the model is not installed.
    """
    blob, scale = model_input(rgb)
    logits = _forward_in_bands(_network(), blob)
    h, w = rgb.shape[:2]
    sh, sw = int(round(h * scale)), int(round(w * scale))
    probs = 1.0 / (1.0 + np.exp(-logits[:, :sh, :sw]))
    up = [cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in probs]
    return Segmentation(trace=up[0], text=up[1], scale=scale)


def _forward_in_bands(net: cv2.dnn.Net, blob: np.ndarray) -> np.ndarray:
    """The network's logits for `blob` (1x3xHxW), computed in horizontal bands.

    OpenCV keeps every layer's output of a forward pass: a whole page took over 500 MB.
    Bands of at most :data:`_BAND_PIXELS` model pixels, each with
    :data:`_BAND_CONTEXT_PX` rows of context above and below (more than the network's
    receptive field) and starting on its pooling grid, give the same logits.
    """
    _n, _c, h, w = blob.shape
    bands = max(1, int(np.ceil(h * w / _BAND_PIXELS)))
    step = int(np.ceil(h / bands / _SIDE_MULTIPLE)) * _SIDE_MULTIPLE
    parts = []
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        a, b = max(0, y0 - _BAND_CONTEXT_PX), min(h, y1 + _BAND_CONTEXT_PX)
        net.setInput(np.ascontiguousarray(blob[:, :, a:b]))
        out = np.asarray(net.forward(), dtype=np.float32)[0]
        parts.append(out[:, y0 - a: y1 - a].copy())
    return np.concatenate(parts, axis=1)


#: Model pixels per forward pass (a band of the page; see :func:`_forward_in_bands`):
#: three bands of a page, with their context, peak under 300 MB.
_BAND_PIXELS = 350_000
#: Rows of context around a band (model pixels; a multiple of the pooling factor 8).
_BAND_CONTEXT_PX = 64

#: Probability above which a pixel may be trace ink or text.
_PROBABILITY_THRESHOLD = 0.5
#: Within the model's regions, ink is what is at least this fraction as dark as the
#: darkest ink nearby (the stroke's full width at half its darkness) ...
_HALF_DARKNESS = 0.5
#: ... nearby meaning within this distance (mm).
_NEARBY_MM = 0.5
#: On pages scanned this finely (px/mm, about 180 dpi) or finer, traces are followed
#: in their pixels at least :data:`_CORE_DARKNESS` as dark as the darkest nearby: a
#: pen's core spans whole pixels there and is fully dark, and the half-dark pixels
#: around it are blur, JPEG ringing and grid-line remnants, which widen strokes
#: unevenly and join the two strokes of narrow waves. (At coarser scales a pen is a
#: pixel or two wide and anti-aliasing splits its darkness between them: its half-dark
#: pixels are its ink.) Rows, labels and pulses are still found in the half-dark mask.
_FINE_PX_PER_MM = 7.0
_CORE_DARKNESS = 0.7
#: A stroke's core is looked for this far (mm) above and below its pixels.
_CORE_SEARCH_MM = 0.5


def learned_trace_mask(seg: Segmentation, dark_ink: np.ndarray, px_per_mm: float,
                       threshold: float = _PROBABILITY_THRESHOLD,
                       share: float = _HALF_DARKNESS, cut: np.ndarray | None = None
                       ) -> np.ndarray:
    """Binary ink mask (uint8 0/1) of traces and printed text from model probabilities.

    The model runs at about 4 px/mm, so its regions are coarser than the page. Inside
    them, a pixel is ink when it is at least half as dark as the darkest ink within
    0.5 mm: strokes keep the page's own resolution (steep QRS edges, label glyphs)
    and a grid line next to a trace stays out. Specks are removed as in the classical
    mask.

    Parameters
    ----------
    seg : Segmentation
        Probabilities on the same pixel grid as `dark_ink`.
    dark_ink : numpy.ndarray
        Relative darkness of the page (0 paper, 1 darkest ink).
    px_per_mm : float
        Scale, sizing the neighbourhood and the speck filter.
    threshold : float
        Probability above which a pixel is in the model's regions.
    share : float
        How dark, relative to the darkest ink nearby, a pixel must be to be ink.
    cut : numpy.ndarray, optional
        Where horizontal ruled lines were taken out of `dark_ink`: steep strokes cut
        there are joined again (:func:`~ecgbridge.digitizer.inkmask.join_cut_strokes`)
        before specks are removed (the pieces of a narrow stroke cut every millimetre
        are specks).
    """
    region = np.maximum(seg.trace, seg.text) > threshold
    side = max(3, 2 * int(round(_NEARBY_MM * px_per_mm)) + 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    inked = np.where(region, dark_ink, 0.0).astype(np.float32)
    nearby = cv2.dilate(inked, kernel)
    keep = (region & (inked >= share * nearby)).astype(np.uint8)
    if cut is not None:
        keep = join_cut_strokes(keep, cut & region, px_per_mm)
    return trace_mask(keep.astype(np.float32), 0.5, px_per_mm)


#: Ink darker than the grid by at least this much (relative darkness) is told from it.
_INK_GRID_CONTRAST = 0.2
#: Below this scale (px/mm, about 90 dpi) 1-mm grid lines leave no room between them:
#: taking them out would take the traces with them.
_MIN_PX_PER_MM_LINES_OUT = 3.5
#: Ink on a horizontal ruled line (the line explains this share of its darkness) ...
_LINE_SHARE = 0.5
#: ... is kept as trace where the model's trace probability is at least this and no
#: other trace ink lies within this many mm in its column.
_SURE_TRACE = 0.8
_LINE_GAP_MM = 1.0
#: How far from the model's regions (mm) a stroke it missed may be.
_MISSED_STROKE_MM = 3.0


@dataclass(frozen=True)
class LearnedMasks:
    """Binary masks (uint8 0/1) made from the model's regions.

    Attributes
    ----------
    trace : numpy.ndarray
        Trace and text ink, for finding rows and reading labels.
    pulse_search : numpy.ndarray
        A superset of the model's raw mask, for finding calibration pulses.
    grid_told_apart : bool
        True when the ink is clearly darker than the grid lines (missed strokes were
        added back for the pulse search).
    follow : numpy.ndarray
        `trace` without the ink the model takes for printed text, for following
        traces: a lead's label under a faint stretch of trace would otherwise be
        followed as signal.
    """

    trace: np.ndarray
    pulse_search: np.ndarray
    grid_told_apart: bool
    follow: np.ndarray


def learned_masks(seg: Segmentation, dark_ink: np.ndarray, px_per_mm_x: float,
                  px_per_mm_y: float, has_grid: bool) -> LearnedMasks:
    """The trace mask and the pulse-search mask of a page from the model's regions.

    - Grid lines (ink running straight for several centimetres) are taken out of the
      darkness before the half-darkness rule of :func:`learned_trace_mask`: the lines
      beside a stroke, as dark as its edge, would widen it (steep QRS strokes and
      label glyphs keep their shape without them). Where a trace is no darker than a
      line it crosses, a line-wide gap is left, which trace following bridges along
      a flat trace; the gaps cut into steep strokes are joined again for following
      (:func:`~ecgbridge.digitizer.inkmask.join_cut_strokes`).
    - Traces are followed without text and, on pages of :data:`_FINE_PX_PER_MM` or
      finer, in their strokes' dark cores only (:func:`_cores_of`).
    - For the pulse search, ink near the model's regions that is clearly darker than
      the grid is added back to the model's raw mask: calibration pulses are thin,
      straight and drawn where no signal is, and the model is least sure of them
      (gaps in their edges and top). Where the grid is about as dark as the ink
      (black or grey grids, copies), added ink would be grid: nothing is added.

    Parameters
    ----------
    seg : Segmentation
        Model probabilities on the page's pixel grid.
    dark_ink : numpy.ndarray
        Relative darkness of the page (0 paper, 1 darkest ink).
    px_per_mm_x, px_per_mm_y : float
        Scale.
    has_grid : bool
        Whether a grid was measured (its lines are taken out only then, and only
        at :data:`_MIN_PX_PER_MM_LINES_OUT` or more).

    Returns
    -------
    LearnedMasks
    """
    raw = learned_trace_mask(seg, dark_ink, px_per_mm_x)
    trace, darkness, on_lines = raw, dark_ink, np.zeros_like(raw)
    cut: np.ndarray | None = None
    if has_grid and min(px_per_mm_x, px_per_mm_y) >= _MIN_PX_PER_MM_LINES_OUT:
        along_x, along_y = ruled_lines(dark_ink, px_per_mm_x, px_per_mm_y)
        darkness = remove_ruled_lines(dark_ink, np.maximum(along_x, along_y))
        on_line = along_x > _LINE_SHARE * dark_ink
        off_lines = learned_trace_mask(seg, darkness, px_per_mm_x)
        trace = _with_trace_along_lines(off_lines, raw, seg, on_line, px_per_mm_y)
        on_lines = trace - off_lines
        cut = on_line & (raw > 0)  # ink taken out with the lines
    follow = _follow_mask(seg, raw, trace, darkness, on_lines, cut,
                          min(px_per_mm_x, px_per_mm_y))
    near = _near(raw, px_per_mm_x)
    levels = _ink_and_grid_levels(dark_ink, raw, near)
    if levels is None or levels[0] - levels[1] < _INK_GRID_CONTRAST:
        return LearnedMasks(trace, raw, False, follow)
    ink_level, grid_level = levels
    added = near & (dark_ink > 0.5 * (ink_level + grid_level))
    pulse = np.maximum(raw, trace_mask(added.astype(np.float32), 0.5, px_per_mm_x))
    return LearnedMasks(trace, pulse, True, follow)


def _follow_mask(seg: Segmentation, raw: np.ndarray, trace: np.ndarray, darkness: np.ndarray,
                 on_lines: np.ndarray, cut: np.ndarray | None, px_per_mm: float
                 ) -> np.ndarray:
    """The mask traces are followed in: `trace` without text, on fine pages in its
    strokes' cores, with steep strokes joined across the lines taken out (`cut`).

    Rows, labels and pulses are still found in `trace`, whose glyphs and rows are
    left as they are.
    """
    follow = trace
    if cut is not None:
        joined = learned_trace_mask(seg, darkness, px_per_mm, cut=cut)
        follow = _with_trace_along_lines(joined, raw, seg, cut, px_per_mm)
        on_lines = follow - joined
    if px_per_mm >= _FINE_PX_PER_MM:
        follow = _cores_of(follow, seg, darkness, on_lines, px_per_mm, cut)
    text = (seg.text > _PROBABILITY_THRESHOLD) & (seg.text > seg.trace)
    return np.where(text, 0, follow).astype(trace.dtype)


def _cores_of(trace: np.ndarray, seg: Segmentation, darkness: np.ndarray,
              kept: np.ndarray, px_per_mm: float, cut: np.ndarray | None = None
              ) -> np.ndarray:
    """`trace` less its strokes' half-dark fringe (see :data:`_FINE_PX_PER_MM`).

    Where a stroke has no core within :data:`_CORE_SEARCH_MM` above or below (a faint
    or unevenly lit trace), its half-dark pixels stay; so does ink in `kept`. Cores
    cut by ruled lines are joined across `cut` (see :func:`learned_trace_mask`).
    """
    cores = learned_trace_mask(seg, darkness, px_per_mm, share=_CORE_DARKNESS, cut=cut)
    cores = cores & trace
    side = 2 * int(round(_CORE_SEARCH_MM * px_per_mm)) + 1
    covered = cv2.dilate(cores, np.ones((side, 1), np.uint8)) > 0
    return np.maximum(np.maximum(cores, kept), np.where(covered, 0, trace))


def _with_trace_along_lines(trace: np.ndarray, raw: np.ndarray, seg: Segmentation,
                            on_line: np.ndarray, px_per_mm: float) -> np.ndarray:
    """`trace` with the stretches of trace that ran along a horizontal ruled line.

    A baseline drawn on a major grid line is as dark as the line and goes out with
    it. Ink of `raw` on a line (`on_line`) is put back where the model is sure of a
    trace and the column holds no other trace ink within a millimetre (grid lines
    merely passing next to a stroke, inside the model's coarse region, stay out).
    """
    side = 2 * int(round(_LINE_GAP_MM * px_per_mm)) + 1
    covered = cv2.dilate(trace, np.ones((side, 1), np.uint8)) > 0
    lost = (raw > 0) & on_line & (seg.trace > _SURE_TRACE) & ~covered
    return np.maximum(trace, lost.astype(trace.dtype))


def _near(mask: np.ndarray, px_per_mm: float) -> np.ndarray:
    """Pixels within :data:`_MISSED_STROKE_MM` of the mask."""
    side = 2 * int(round(_MISSED_STROKE_MM * px_per_mm)) + 1
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))) > 0


def _ink_and_grid_levels(dark_ink: np.ndarray, mask: np.ndarray, near: np.ndarray
                         ) -> tuple[float, float] | None:
    """(typical darkness of the masked ink, darkness of the lines `near` it), or None."""
    if not mask.any():
        return None
    around = dark_ink[near & (mask == 0)]
    if around.size == 0:
        return None
    return float(np.median(dark_ink[mask > 0])), float(np.percentile(around, 95))
