"""Build vector ECG PDFs with a known signal, for the vector-PDF tests.

Each page is drawn with matplotlib's PDF backend in millimetres (one axis unit =
1 mm, y down), traces as single polylines of the record's samples, optional 1 mV
calibration pulses and printed speed/gain text, optionally stored rotated with a
``/Rotate`` entry (as ECG carts do) so the displayed page is upright.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Strip:
    """One trace on a page: the printed label and where the samples go."""

    label: str
    samples: np.ndarray  # mV
    x0_mm: float
    baseline_mm: float
    label_offset_mm: tuple[float, float] = (1.0, 5.0)  # label centre relative to trace start


@dataclass(frozen=True)
class PageSpec:
    """One page: strips, texts, pulse style."""

    strips: Sequence[Strip]
    texts: Sequence[tuple[str, float, float]] = ()  # (text, x_mm, y_mm)
    pulse: str = "separate"  # "separate", "in_trace" or "none"
    grid: bool = True
    size_mm: tuple[float, float] = (297.0, 210.0)
    extra_lines: Sequence[np.ndarray] = field(default_factory=tuple)


def make_pdf(
    pages: Sequence[PageSpec],
    *,
    fs: float,
    speed: float = 25.0,
    gain: float = 10.0,
    rotate: int = 0,
) -> bytes:
    """Return the bytes of a vector PDF drawing `pages`.

    Parameters
    ----------
    pages : sequence of PageSpec
        Page contents in displayed-page millimetres.
    fs : float
        Sampling rate of the strips' samples.
    speed, gain : float
        Paper speed (mm/s) and gain (mm/mV) used to draw.
    rotate : int
        ``/Rotate`` to store the pages with (0, 90, 180 or 270); the content is
        drawn counter-rotated so the displayed page looks the same.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    buffer = io.BytesIO()
    with matplotlib.rc_context({"path.simplify": False, "pdf.fonttype": 42}), \
            PdfPages(buffer) as pdf:
        for spec in pages:
            fig = _draw(plt, spec, fs, speed, gain, rotate)
            pdf.savefig(fig)
            plt.close(fig)
    data = buffer.getvalue()
    return _set_rotation(data, rotate) if rotate else data


def _draw(plt, spec: PageSpec, fs: float, speed: float, gain: float, rotate: int):  # type: ignore[no-untyped-def]
    width, height = spec.size_mm
    # Stored (unrotated) page size.
    stored_w, stored_h = (height, width) if rotate in (90, 270) else (width, height)
    fig = plt.figure(figsize=(stored_w / 25.4, stored_h / 25.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, stored_w)
    ax.set_ylim(stored_h, 0)
    ax.axis("off")

    def to_stored(xy: np.ndarray) -> np.ndarray:
        u, v = xy[:, 0], xy[:, 1]
        if rotate == 90:
            return np.column_stack([v, stored_h - u])
        if rotate == 180:
            return np.column_stack([stored_w - u, stored_h - v])
        if rotate == 270:
            return np.column_stack([stored_w - v, u])
        return np.column_stack([u, v])

    def line(xy: np.ndarray, **kw: object) -> None:
        p = to_stored(np.asarray(xy, dtype=float))
        ax.plot(p[:, 0], p[:, 1], solid_capstyle="butt", **kw)

    if spec.grid:
        for x in np.arange(10.0, width - 9.0, 5.0):
            line(np.array([[x, 10.0], [x, height - 10.0]]), color=(1.0, 0.75, 0.75), lw=0.4)
        for y in np.arange(10.0, height - 9.0, 5.0):
            line(np.array([[10.0, y], [width - 10.0, y]]), color=(1.0, 0.75, 0.75), lw=0.4)
    pulse_w = 0.2 * speed
    for strip in spec.strips:
        t = np.arange(strip.samples.size) / fs
        trace = np.column_stack([strip.x0_mm + t * speed, strip.baseline_mm - strip.samples * gain])
        foot, top = strip.baseline_mm, strip.baseline_mm - gain
        if spec.pulse == "in_trace":
            x = strip.x0_mm - pulse_w - 2.0
            pulse = np.array([[x - 1.0, foot], [x, foot], [x, top], [x + pulse_w, top],
                              [x + pulse_w, foot], [strip.x0_mm, foot]])
            trace = np.vstack([pulse, trace])
        elif spec.pulse == "separate":
            x = strip.x0_mm - pulse_w - 3.0
            pulse = np.array([[x - 1.0, foot], [x, foot], [x, top], [x + pulse_w, top],
                              [x + pulse_w, foot], [x + pulse_w + 1.0, foot]])
            line(pulse, color="k", lw=0.6)
        line(trace, color="k", lw=0.6)
        lx = strip.x0_mm + strip.label_offset_mm[0]
        ly = strip.baseline_mm + strip.label_offset_mm[1]
        p = to_stored(np.array([[lx, ly]]))[0]
        ax.text(p[0], p[1], strip.label, fontsize=7, ha="center", va="center",
                rotation={0: 0, 90: -90, 180: 180, 270: 90}[rotate])
    for text, x, y in spec.texts:
        p = to_stored(np.array([[x, y]]))[0]
        ax.text(p[0], p[1], text, fontsize=7, ha="left", va="center",
                rotation={0: 0, 90: -90, 180: 180, 270: 90}[rotate])
    for xy in spec.extra_lines:
        line(xy, color="k", lw=0.6)
    return fig


def _set_rotation(data: bytes, rotate: int) -> bytes:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(data)
    for index in range(len(document)):
        document[index].set_rotation(rotate)
    out = io.BytesIO()
    document.save(out)
    document.close()
    return out.getvalue()


def layout_3x4_plus_ii(signals: np.ndarray, fs: float, *, order: Sequence[Sequence[str]] = (
        ("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6")),
        rhythm: str = "II", speed: float = 25.0) -> PageSpec:
    """A MUSE-like 3x4 page (column c shows 2.5c-2.5(c+1) s) plus a 10 s rhythm strip."""
    from ecgbridge.ecg import LEADS

    n_col = int(round(2.5 * fs))
    strips = []
    for c, column in enumerate(order):
        for r, lead in enumerate(column):
            samples = signals[LEADS.index(lead), c * n_col:(c + 1) * n_col]
            strips.append(Strip(lead, samples, 25.0 + c * 2.5 * speed, 50.0 + 35.0 * r))
    strips.append(Strip(rhythm, signals[LEADS.index(rhythm)], 25.0, 155.0))
    return PageSpec(strips=strips, texts=((f"{speed:g} mm/s   10 mm/mV", 20.0, 195.0),))
