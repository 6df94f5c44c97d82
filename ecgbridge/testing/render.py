"""Render a 12-lead ECG record as a paper ECG page with exact ground truth.

The renderer draws a US-letter landscape page (279.4 x 215.9 mm) at a given
resolution: a millimetre grid, a 1 mV calibration pulse per row, the traces at
the requested paper speed and gain, printed lead labels and optional header
text; then applies distortions (crease, rotation, perspective, shading,
grey, blur, noise, JPEG).  Geometry is exact: sample ``i`` of a panel that starts at ``start_s``
is drawn at::

    x = x0 + (i / fs - start_s) * paper_speed * px_per_mm
    y = baseline - v_i * gain * px_per_mm

and then moved by the page's homography.  :class:`RenderedPage` keeps those
pixel traces, each panel's sample window and the truth signals (NaN outside
what the page shows), so a digitizer can be scored against it.

Examples
--------
>>> page = render_page(signals, 500.0, layout="3x4+II", dpi=150, seed=1)
>>> page.image.shape
(1275, 1650, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ecgbridge.ecg import ECG, LEADS
from ecgbridge.standards import (
    DEFAULT_GAIN_MM_MV,
    DEFAULT_SPEED_MM_S,
    PULSE_MV,
    PULSE_SECONDS,
    STANDARD_TRACE_MM,
)
from ecgbridge.testing import distort
from ecgbridge.testing.layouts import parse_layout

#: Paper size in mm (US letter, landscape).
PAGE_WIDTH_MM: float = 279.4
PAGE_HEIGHT_MM: float = 215.9
#: Left edge of the traces, in mm (they span STANDARD_TRACE_MM: 10 s at 25 mm/s).
TRACE_X0_MM: float = 20.0
#: Grid: 1 mm minor, 5 mm major lines.
GRID_MINOR_MM: int = 1
GRID_MAJOR_MM: int = 5
#: Default printed label cap height in mm.
PRINTED_LABEL_HEIGHT_MM: float = 3.0
#: Fonts for printed text: name -> OpenCV Hershey font.
FONTS: dict[str, int] = {
    "sans": cv2.FONT_HERSHEY_SIMPLEX,
    "sans-bold": cv2.FONT_HERSHEY_DUPLEX,
    "serif": cv2.FONT_HERSHEY_COMPLEX,
    "serif-bold": cv2.FONT_HERSHEY_TRIPLEX,
}

#: Named grid colours: (major line RGB, minor line RGB).
GRID_COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "red": ((230, 60, 60), (245, 180, 180)),
    "pink": ((240, 140, 160), (250, 212, 222)),
    "green": ((60, 160, 90), (185, 228, 195)),
    "blue": ((70, 110, 210), (192, 207, 240)),
    "grey": ((130, 130, 130), (205, 205, 205)),
    "black": ((40, 40, 40), (150, 150, 150)),
}
#: Grid colour name meaning "no grid at all".
NO_GRID = "none"

GridColor = str | tuple[int, int, int]


@dataclass(frozen=True)
class RenderedPanel:
    """One trace drawn on the page, with its ground truth.

    Attributes
    ----------
    lead : str
        Canonical lead name.
    start_sample, end_sample : int
        Record samples ``[start, end)`` drawn in this panel.
    visible_start_sample, visible_end_sample : int
        Part of that window that lies inside the final image (after distortion).
    rhythm_strip : bool
        True for a full-width strip.
    start_s, duration_s : float
        Time the panel's first column stands for, and the time it spans.
    x0_px, baseline_px : float
        Column of ``start_s`` and row of 0 mV in the undistorted page.
    box_px : tuple of float
        ``(x0, y0, x1, y1)`` of the panel's slot in the undistorted page.
    trace_xy : numpy.ndarray
        ``(end_sample - start_sample, 2)`` exact ``(x, y)`` pixel position of every
        sample in the final image.
    label_box_xy : numpy.ndarray
        ``(4, 2)`` corners of the printed label in the final image (empty if none).
    """

    lead: str
    start_sample: int
    end_sample: int
    visible_start_sample: int
    visible_end_sample: int
    rhythm_strip: bool
    start_s: float
    duration_s: float
    x0_px: float
    baseline_px: float
    box_px: tuple[float, float, float, float]
    trace_xy: np.ndarray
    label_box_xy: np.ndarray

    def trace_bbox_corners(self) -> np.ndarray:
        """``(4, 2)`` ``(x, y)`` corners of the axis-aligned box around the visible trace."""
        a = self.visible_start_sample - self.start_sample
        b = self.visible_end_sample - self.start_sample
        pts = self.trace_xy[a:b]
        pts = pts[np.isfinite(pts).all(axis=1)]
        if pts.size == 0:
            return np.zeros((0, 2))
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


@dataclass(frozen=True, eq=False)
class RenderedPage:
    """A rendered ECG page and everything needed to score a digitizer on it.

    Attributes
    ----------
    image : numpy.ndarray
        uint8 RGB ``(height, width, 3)``.
    fs : float
        Sampling rate of the record drawn.
    n_samples : int
        Length of the record.
    layout : str
        Layout name, e.g. ``"3x4+II"``.
    columns : int
        Columns of the main grid.
    rhythm_leads : tuple of str
        Leads of the rhythm strips, top to bottom.
    dpi, px_per_mm : float
        Resolution (``px_per_mm = dpi / 25.4``, before distortion).
    paper_speed, gain : float
        mm/s and mm/mV used.
    panels : tuple of RenderedPanel
        Every trace drawn.
    truth_signals : numpy.ndarray
        ``(12, n_samples)`` mV in :data:`ecgbridge.ecg.LEADS` order, NaN where the
        final image shows no trace of that lead.
    page_to_image : numpy.ndarray
        3x3 homography from undistorted page pixels to the final image.
    distortions : dict
        Parameters used (grid colour, rotation, perspective, blur, noise, JPEG, crease).
    """

    image: np.ndarray
    fs: float
    n_samples: int
    layout: str
    columns: int
    rhythm_leads: tuple[str, ...]
    dpi: float
    px_per_mm: float
    paper_speed: float
    gain: float
    panels: tuple[RenderedPanel, ...]
    truth_signals: np.ndarray
    page_to_image: np.ndarray
    distortions: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])

    def windows(self) -> dict[str, list[tuple[int, int]]]:
        """Visible ``[start, end)`` sample intervals per lead (merged; absent leads omitted)."""
        spans: dict[str, list[tuple[int, int]]] = {}
        for p in self.panels:
            if p.visible_end_sample > p.visible_start_sample:
                spans.setdefault(p.lead, []).append((p.visible_start_sample, p.visible_end_sample))
        return {lead: _merge_intervals(spans[lead]) for lead in LEADS if lead in spans}

    def truth_ecg(self) -> ECG:
        """The ground truth as an :class:`ECG` (NaN where the page shows nothing)."""
        return ECG(signals=self.truth_signals, fs=self.fs)

    def manifest_entry(self, image_name: str, record: str) -> dict[str, Any]:
        """Describe the page in the format of the shared scorer's ``manifest.json``.

        Parameters
        ----------
        image_name : str
            File name the image is saved under (relative to the manifest).
        record : str
            WFDB record name of the truth.

        Returns
        -------
        dict
            JSON-serialisable entry with ``image``, ``record``, ``fs``, ``n_samples``,
            ``layout``, ``windows``, geometry, ``distortions`` and ``panels``.
        """
        windows: dict[str, Any] = {}
        for lead, spans in self.windows().items():
            windows[lead] = list(spans[0]) if len(spans) == 1 else [list(s) for s in spans]
        panels = []
        for p in self.panels:
            entry: dict[str, Any] = {
                "lead": p.lead,
                "start_sample": p.start_sample,
                "end_sample": p.end_sample,
                "rhythm_strip": p.rhythm_strip,
                "lead_bbox_rc": _corners_rc(p.trace_bbox_corners()),
                "panel_box_rc": _corners_rc(
                    distort.transform_points(_box_corners(p.box_px), self.page_to_image)
                ),
            }
            if (p.visible_start_sample, p.visible_end_sample) != (p.start_sample, p.end_sample):
                entry["visible_start_sample"] = p.visible_start_sample
                entry["visible_end_sample"] = p.visible_end_sample
            panels.append(entry)
        return {
            "image": image_name,
            "record": record,
            "fs": self.fs,
            "n_samples": self.n_samples,
            "layout": self.layout,
            "columns": self.columns,
            "rhythm_leads": list(self.rhythm_leads),
            "windows": windows,
            "dpi": self.dpi,
            "width": self.width,
            "height": self.height,
            "px_per_mm": round(self.px_per_mm, 6),
            "grid_major_px": round(self.px_per_mm * GRID_MAJOR_MM, 6),
            "grid_major_mm": GRID_MAJOR_MM,
            "grid_minor_mm": GRID_MINOR_MM,
            "gain_mm_per_mv": self.gain,
            "paper_speed_mm_per_s": self.paper_speed,
            "distortions": _jsonable(self.distortions),
            "panels": panels,
        }


def render_page(
    signals: np.ndarray,
    fs: float,
    *,
    layout: str = "3x4+II",
    lead_order: Sequence[str] | None = None,
    rhythm_leads: Sequence[str] | None = None,
    dpi: float = 200.0,
    paper_speed: float = DEFAULT_SPEED_MM_S,
    gain: float = DEFAULT_GAIN_MM_MV,
    grid_color: GridColor = "red",
    dotted_minor: bool = False,
    line_width_mm: float = 0.25,
    trace_color: tuple[int, int, int] = (0, 0, 0),
    calibration_pulse: bool = True,
    pulse_gap_mm: float = 1.5,
    labels: bool = True,
    label_position: str = "above",
    label_font: str = "sans",
    label_height_mm: float = PRINTED_LABEL_HEIGHT_MM,
    separators: bool = True,
    print_scale: bool = True,
    header_text: str | None = None,
    rotation_deg: float = 0.0,
    perspective: float = 0.0,
    shading: float = 0.0,
    grayscale: bool = False,
    blur_sigma: float = 0.0,
    noise_sigma: float = 0.0,
    jpeg_quality: int | None = None,
    crease: bool = False,
    seed: int = 0,
) -> RenderedPage:
    """Draw a 12-lead record as a paper ECG page.

    Parameters
    ----------
    signals : numpy.ndarray
        ``(12, n)`` mV in :data:`ecgbridge.ecg.LEADS` order (NaN = not recorded).
    fs : float
        Sampling rate in Hz.
    layout : str
        ``"3x4+II"``, ``"3x4"``, ``"3x4+3"`` (V1, II, V5 strips), ``"6x2"``, ``"6x2+II"``,
        ``"12x1"``, or any base with a ``+LEAD`` strip (see :mod:`ecgbridge.testing.layouts`).
    lead_order : sequence of str, optional
        The 12 leads in slot order, column by column, top to bottom (default standard).
    rhythm_leads : sequence of str, optional
        Rhythm strip leads, overriding the layout suffix.
    dpi : float
        Resolution, 50-600.
    paper_speed, gain : float
        mm/s and mm/mV.  The page shows ``250 mm / paper_speed`` seconds.
    grid_color : str or tuple of int
        A name from :data:`GRID_COLORS`, ``"none"``, or an RGB major-line colour (the
        minor lines get a lighter tint).
    dotted_minor : bool
        Draw minor lines as dots at their crossings.
    line_width_mm : float
        Trace stroke width.
    trace_color : tuple of int
        Trace RGB.
    calibration_pulse : bool
        Draw a 1 mV x 0.2 s pulse at the start of every row.
    pulse_gap_mm : float
        Gap between the pulse's falling edge and the row's first trace sample, 0-5 mm
        (0: the trace continues from the pulse).
    labels : bool
        Print lead names at the start of every panel.
    label_position : str
        ``"above"`` or ``"below"`` the trace's start.
    label_font : str
        A name from :data:`FONTS` (labels, header and scale text).
    label_height_mm : float
        Cap height of the labels, 1.5-6 mm.
    separators : bool
        Draw short vertical ticks where the lead changes within a row.
    print_scale : bool
        Print ``"25 mm/s  10 mm/mV"`` under the grid.
    header_text : str, optional
        Text printed above the grid (newlines split lines).
    rotation_deg : float
        Rotation about the page centre, counter-clockwise positive, -45..45.
    perspective : float
        Random perspective strength, fraction of the page size (0-0.3).
    shading : float
        Uneven lighting: brightness falls by up to this fraction across the page (0-0.8).
    grayscale : bool
        Convert the page to grey (3 equal channels), like a monochrome scan.
    blur_sigma : float
        Gaussian blur sigma in pixels.
    noise_sigma : float
        Additive Gaussian noise sigma on the 0-255 scale.
    jpeg_quality : int, optional
        JPEG round trip at this quality.
    crease : bool
        Add a fold line with a slight brightness step.
    seed : int
        Seed of every random choice (crease, perspective, noise).

    Returns
    -------
    RenderedPage

    Raises
    ------
    ValueError
        If an argument is out of range or the signals are not ``(12, n)``.
    """
    sig = np.asarray(signals, dtype=np.float64)
    _check_arguments(sig, fs, dpi, paper_speed, gain, rotation_deg, label_position, line_width_mm)
    if label_font not in FONTS:
        raise ValueError(f"unknown label font {label_font!r}; choose from {', '.join(FONTS)}")
    if not 1.5 <= label_height_mm <= 6.0:
        raise ValueError(f"label height must be 1.5-6 mm, got {label_height_mm}")
    if not 0.0 <= pulse_gap_mm <= 5.0:
        raise ValueError(f"pulse gap must be 0-5 mm, got {pulse_gap_mm}")
    font = FONTS[label_font]
    spec = parse_layout(layout, lead_order, rhythm_leads)
    major_rgb, minor_rgb = _grid_colors(grid_color)
    ppm = float(dpi) / 25.4
    width = int(round(PAGE_WIDTH_MM * ppm))
    height = int(round(PAGE_HEIGHT_MM * ppm))
    header_lines = header_text.splitlines() if header_text else []
    top_mm = 10.0 + (5.0 * len(header_lines) + 3.0 if header_lines else 0.0)
    bottom_mm = 12.0
    pitch_mm = (PAGE_HEIGHT_MM - top_mm - bottom_mm) / spec.rows
    page_seconds = STANDARD_TRACE_MM / paper_speed

    image = np.full((height, width, 3), 255, dtype=np.uint8)
    if major_rgb is not None and minor_rgb is not None:
        _draw_grid(image, ppm, top_mm - 5.0, PAGE_HEIGHT_MM - bottom_mm + 2.0, major_rgb,
                   minor_rgb, dotted_minor)

    thickness = max(1, int(round(line_width_mm * ppm)))
    n = sig.shape[1]
    drawn: list[dict[str, Any]] = []
    label_boxes: list[np.ndarray] = []
    for slot in spec.slots:
        baseline_mm = float(round(top_mm + pitch_mm * (slot.row + 0.6)))
        x0_mm = TRACE_X0_MM + slot.start_fraction * STANDARD_TRACE_MM
        x1_mm = TRACE_X0_MM + slot.end_fraction * STANDARD_TRACE_MM
        start_s = slot.start_fraction * page_seconds
        end_s = slot.end_fraction * page_seconds
        s0 = min(n, int(round(start_s * fs)))
        s1 = min(n, int(round(end_s * fs)))
        values = sig[LEADS.index(slot.lead), s0:s1]
        t = np.arange(s0, s1) / fs - start_s
        xy = np.column_stack([
            x0_mm * ppm + t * paper_speed * ppm,
            baseline_mm * ppm - values * gain * ppm,
        ])
        _draw_polyline(image, xy, trace_color, thickness)
        if separators and slot.column > 0:
            _draw_polyline(
                image,
                np.array([[x0_mm, baseline_mm - 2.5], [x0_mm, baseline_mm + 2.5]]) * ppm,
                trace_color, thickness,
            )
        if calibration_pulse and slot.column == 0:
            _draw_pulse(image, ppm, baseline_mm, paper_speed, gain, pulse_gap_mm, trace_color,
                        thickness)
        label_box = np.zeros((0, 2))
        if labels:
            label_box = _draw_label(image, slot.lead, ppm, x0_mm, baseline_mm, pitch_mm,
                                    label_position, trace_color, font, label_height_mm)
        label_boxes.append(label_box)
        drawn.append({
            "slot": slot, "s0": s0, "s1": s1, "xy": xy, "start_s": start_s,
            "duration_s": end_s - start_s, "x0_px": x0_mm * ppm, "baseline_px": baseline_mm * ppm,
            "box_px": (x0_mm * ppm, (baseline_mm - 0.6 * pitch_mm) * ppm, x1_mm * ppm,
                       (baseline_mm + 0.4 * pitch_mm) * ppm),
        })
    for i, line in enumerate(header_lines):
        _put_text(image, line, 10.0 * ppm, (8.0 + 5.0 * i) * ppm, 3.0 * ppm, trace_color, font)
    if print_scale:
        _put_text(image, f"{paper_speed:g} mm/s   {gain:g} mm/mV", 10.0 * ppm,
                  (PAGE_HEIGHT_MM - 4.0) * ppm, 2.5 * ppm, trace_color, font)

    rng = np.random.default_rng(seed)
    distortions: dict[str, Any] = {
        "grid_color": grid_color if isinstance(grid_color, str) else list(grid_color),
        "grid_color_major_rgb": list(major_rgb) if major_rgb else None,
        "grid_color_minor_rgb": list(minor_rgb) if minor_rgb else None,
        "gridlines": major_rgb is not None,
        "dotted_minor": dotted_minor,
        "calibration_pulse": calibration_pulse,
        "labels": labels,
        "printed_header": bool(header_lines),
        "line_width_mm": line_width_mm,
        "seed": seed,
    }
    if crease:
        image, crease_info = distort.add_crease(image, ppm, rng)
        distortions["crease"] = crease_info
    homography = np.eye(3)
    if rotation_deg:
        homography = distort.tilt_homography(rotation_deg, width, height) @ homography
    if perspective:
        homography = distort.perspective_homography(perspective, width, height, rng) @ homography
    if rotation_deg or perspective:
        image = distort.warp_page(image, homography)
    distortions["rotation_deg"] = float(rotation_deg)
    distortions["perspective_strength"] = float(perspective)
    distortions["perspective_homography_xy"] = homography.tolist() if perspective else None
    if shading:
        image, distortions["shading"] = distort.add_shading(image, shading, rng)
    if grayscale:
        image = distort.to_grayscale(image)
    distortions["grayscale"] = bool(grayscale)
    image = distort.gaussian_blur(image, blur_sigma)
    distortions["gaussian_blur_sigma_px"] = float(blur_sigma)
    image = distort.add_noise(image, noise_sigma, rng)
    distortions["gaussian_noise_sigma"] = float(noise_sigma)
    if jpeg_quality is not None:
        image = distort.jpeg_round_trip(image, jpeg_quality)
        distortions["jpeg_quality"] = int(jpeg_quality)

    truth = np.full((len(LEADS), n), np.nan)
    panels = []
    for d, label_box in zip(drawn, label_boxes, strict=True):
        xy_img = distort.transform_points(d["xy"], homography) if d["xy"].size else d["xy"]
        v0, v1 = _visible_range(xy_img, d["s0"], width, height)
        row = LEADS.index(d["slot"].lead)
        truth[row, v0:v1] = sig[row, v0:v1]
        panels.append(RenderedPanel(
            lead=d["slot"].lead,
            start_sample=d["s0"],
            end_sample=d["s1"],
            visible_start_sample=v0,
            visible_end_sample=v1,
            rhythm_strip=d["slot"].rhythm_strip,
            start_s=d["start_s"],
            duration_s=d["duration_s"],
            x0_px=d["x0_px"],
            baseline_px=d["baseline_px"],
            box_px=d["box_px"],
            trace_xy=xy_img,
            label_box_xy=(distort.transform_points(label_box, homography)
                          if label_box.size else label_box),
        ))
    truth.setflags(write=False)
    image.setflags(write=False)
    return RenderedPage(
        image=image, fs=float(fs), n_samples=n, layout=layout, columns=spec.columns,
        rhythm_leads=spec.rhythm_leads, dpi=float(dpi), px_per_mm=ppm,
        paper_speed=float(paper_speed), gain=float(gain), panels=tuple(panels),
        truth_signals=truth, page_to_image=homography, distortions=distortions,
    )


# ----------------------------------------------------------------------------- helpers
def _check_arguments(
    sig: np.ndarray, fs: float, dpi: float, speed: float, gain: float, rotation: float,
    label_position: str, line_width_mm: float,
) -> None:
    if sig.ndim != 2 or sig.shape[0] != len(LEADS):
        raise ValueError(f"signals must have shape (12, n_samples), got {tuple(sig.shape)}")
    if not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"sampling rate must be a positive number, got {fs!r}")
    if not 50 <= dpi <= 600:
        raise ValueError(f"dpi must be 50-600, got {dpi}")
    if not 5 <= speed <= 200:
        raise ValueError(f"paper speed must be 5-200 mm/s, got {speed}")
    if not 1 <= gain <= 100:
        raise ValueError(f"gain must be 1-100 mm/mV, got {gain}")
    if not -45 <= rotation <= 45:
        raise ValueError(f"rotation must be -45..45 degrees, got {rotation}")
    if label_position not in ("above", "below"):
        raise ValueError(f"label_position must be 'above' or 'below', got {label_position!r}")
    if not 0.05 <= line_width_mm <= 2.0:
        raise ValueError(f"line width must be 0.05-2 mm, got {line_width_mm}")


def _grid_colors(
    grid_color: GridColor,
) -> tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]:
    if isinstance(grid_color, str):
        name = grid_color.lower()
        if name == NO_GRID:
            return None, None
        if name not in GRID_COLORS:
            raise ValueError(
                f"unknown grid colour {grid_color!r}; use an RGB tuple or one of "
                f"{', '.join([*GRID_COLORS, NO_GRID])}"
            )
        return GRID_COLORS[name]
    rgb = tuple(int(c) for c in grid_color)
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"grid colour must be 3 integers 0-255, got {grid_color!r}")
    major = (rgb[0], rgb[1], rgb[2])
    minor = tuple(int(round(0.4 * c + 0.6 * 255)) for c in major)
    return major, (minor[0], minor[1], minor[2])


def _draw_grid(
    image: np.ndarray, ppm: float, y0_mm: float, y1_mm: float,
    major: tuple[int, int, int], minor: tuple[int, int, int], dotted_minor: bool,
) -> None:
    """Lines at every whole millimetre of the page (major every 5 mm)."""
    x_mm = np.arange(int(np.ceil(TRACE_X0_MM - 15)), int(TRACE_X0_MM + STANDARD_TRACE_MM + 5) + 1)
    y_mm = np.arange(int(np.ceil(y0_mm)), int(np.floor(y1_mm)) + 1)
    xa, xb = x_mm[0] * ppm, x_mm[-1] * ppm
    ya, yb = y_mm[0] * ppm, y_mm[-1] * ppm
    minor_px = max(1, int(round(0.1 * ppm)))
    major_px = max(1, int(round(0.2 * ppm)))
    if dotted_minor:
        cols = np.round(x_mm[x_mm % GRID_MAJOR_MM != 0] * ppm).astype(int)
        rows = np.round(y_mm[y_mm % GRID_MAJOR_MM != 0] * ppm).astype(int)
        dot = max(1, int(round(0.15 * ppm)))
        for dr in range(dot):
            for dc in range(dot):
                r = np.clip(rows + dr, 0, image.shape[0] - 1)
                c = np.clip(cols + dc, 0, image.shape[1] - 1)
                image[np.ix_(r, c)] = minor
    else:
        for x in x_mm[x_mm % GRID_MAJOR_MM != 0]:
            _line(image, (x * ppm, ya), (x * ppm, yb), minor, minor_px)
        for y in y_mm[y_mm % GRID_MAJOR_MM != 0]:
            _line(image, (xa, y * ppm), (xb, y * ppm), minor, minor_px)
    for x in x_mm[x_mm % GRID_MAJOR_MM == 0]:
        _line(image, (x * ppm, ya), (x * ppm, yb), major, major_px)
    for y in y_mm[y_mm % GRID_MAJOR_MM == 0]:
        _line(image, (xa, y * ppm), (xb, y * ppm), major, major_px)


_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_SCALE = float(1 << _SHIFT)


def _line(
    image: np.ndarray, p: tuple[float, float], q: tuple[float, float],
    color: tuple[int, int, int], thickness: int,
) -> None:
    cv2.line(image, (int(round(p[0] * _SCALE)), int(round(p[1] * _SCALE))),
             (int(round(q[0] * _SCALE)), int(round(q[1] * _SCALE))),
             color, thickness, cv2.LINE_AA, _SHIFT)


def _draw_polyline(
    image: np.ndarray, xy: np.ndarray, color: tuple[int, int, int], thickness: int
) -> None:
    """Anti-aliased polyline with sub-pixel vertices; NaN samples break the line."""
    if xy.shape[0] < 2:
        return
    finite = np.isfinite(xy).all(axis=1)
    breaks = np.flatnonzero(np.diff(finite.astype(np.int8)) != 0) + 1
    pieces = []
    for seg_xy, seg_ok in zip(np.split(xy, breaks), np.split(finite, breaks), strict=True):
        if seg_ok.size and seg_ok[0] and seg_xy.shape[0] >= 2:
            limit = 1 << 30 >> _SHIFT  # keep fixed-point coordinates inside int32
            pts = np.clip(seg_xy, -limit, limit)
            pieces.append(np.round(pts * _SCALE).astype(np.int32).reshape(-1, 1, 2))
    if pieces:
        cv2.polylines(image, pieces, False, color, thickness, cv2.LINE_AA, _SHIFT)


def _draw_pulse(
    image: np.ndarray, ppm: float, baseline_mm: float, speed: float, gain: float,
    gap_mm: float, color: tuple[int, int, int], thickness: int,
) -> None:
    """1 mV x 0.2 s pulse whose falling edge is `gap_mm` before the row's first trace."""
    width_mm = PULSE_SECONDS * speed
    fall = TRACE_X0_MM - gap_mm
    rise = fall - width_mm
    top = baseline_mm - PULSE_MV * gain
    pts = np.array([
        [rise - 2.0, baseline_mm], [rise, baseline_mm], [rise, top], [fall, top],
        [fall, baseline_mm],
    ]) * ppm
    _draw_polyline(image, pts, color, thickness)


def _put_text(
    image: np.ndarray, text: str, x: float, y_bottom: float, cap_px: float,
    color: tuple[int, int, int], font: int = cv2.FONT_HERSHEY_SIMPLEX,
) -> np.ndarray:
    """Print `text` with its baseline at ``y_bottom``; return the text box corners."""
    (_, h_unit), _ = cv2.getTextSize("I", font, 1.0, 1)
    scale = cap_px / h_unit
    thick = max(1, int(round(cap_px / 10)))
    (w, h), below = cv2.getTextSize(text, font, scale, thick)
    cv2.putText(image, text, (int(round(x)), int(round(y_bottom))), font, scale, color, thick,
                cv2.LINE_AA)
    x0, y0, x1, y1 = x, y_bottom - h, x + w, y_bottom + below
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _draw_label(
    image: np.ndarray, lead: str, ppm: float, x0_mm: float, baseline_mm: float,
    pitch_mm: float, position: str, color: tuple[int, int, int], font: int, height_mm: float,
) -> np.ndarray:
    gap_mm = min(8.0, 0.3 * pitch_mm)
    if position == "above":
        y_mm = baseline_mm - gap_mm
    else:
        y_mm = baseline_mm + min(4.0, 0.2 * pitch_mm) + height_mm
    return _put_text(image, lead, (x0_mm + 1.0) * ppm, y_mm * ppm, height_mm * ppm, color, font)


def _visible_range(xy: np.ndarray, s0: int, width: int, height: int) -> tuple[int, int]:
    """First..last sample (``[start, end)``) whose point lies inside the image."""
    if xy.shape[0] == 0:
        return s0, s0
    inside = (
        (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)
    )
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return s0, s0
    return s0 + int(idx[0]), s0 + int(idx[-1]) + 1


def _merge_intervals(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _box_corners(box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _corners_rc(corners_xy: np.ndarray) -> list[list[int]]:
    return [[int(round(y)), int(round(x))] for x, y in corners_xy]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
