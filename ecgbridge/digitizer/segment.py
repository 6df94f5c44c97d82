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

from ecgbridge.digitizer.inkmask import trace_mask

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
    small = cv2.copyMakeBorder(small, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
    return small.transpose(2, 0, 1)[None].copy(), scale


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
    net = _network()
    net.setInput(blob)
    logits = np.asarray(net.forward(), dtype=np.float32)[0]
    h, w = rgb.shape[:2]
    sh, sw = int(round(h * scale)), int(round(w * scale))
    probs = 1.0 / (1.0 + np.exp(-logits[:, :sh, :sw]))
    up = [cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in probs]
    return Segmentation(trace=up[0], text=up[1], scale=scale)


#: Probability above which a pixel is taken as trace ink or text.
_PROBABILITY_THRESHOLD = 0.5
#: Text pixels must also be at least this dark (relative darkness) at full resolution.
_MIN_TEXT_DARKNESS = 0.3


def learned_trace_mask(seg: Segmentation, dark_ink: np.ndarray, px_per_mm: float
                       ) -> np.ndarray:
    """Binary ink mask (uint8 0/1) of traces and printed text from model probabilities.

    Trace pixels are those the model rates over 0.5; text pixels must also be dark at
    the page's own resolution (the model's text map is coarse), so label glyphs keep
    their shapes for label reading. Specks are removed as in the classical mask.

    Parameters
    ----------
    seg : Segmentation
        Probabilities on the same pixel grid as `dark_ink`.
    dark_ink : numpy.ndarray
        Relative darkness of the page (0 paper, 1 darkest ink).
    px_per_mm : float
        Scale, sizing the speck filter.
    """
    text = (seg.text > _PROBABILITY_THRESHOLD) & (dark_ink > _MIN_TEXT_DARKNESS)
    level = np.where(text, 1.0, seg.trace).astype(np.float32)
    return trace_mask(level, _PROBABILITY_THRESHOLD, px_per_mm)
