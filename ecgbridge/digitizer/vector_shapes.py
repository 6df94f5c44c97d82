"""What a vector (PDF) ECG page draws: its grid's scale, trace polylines and pulses.

PDF units are exact: the grid gives the page's scale to paper millimetres
(:func:`grid_scale`, :func:`to_paper_mm`); dark strokes joined end to end are trace
polylines when they run left to right, and calibration pulses when they are
rectangles of the right size next to a trace's level (:func:`find_traces_and_pulses`).
Used by :mod:`ecgbridge.digitizer.vector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from ecgbridge.inputs.page import Page, TextItem, VectorPath

#: Strokes lighter than this mean RGB are grid or decoration, not traces or pulses.
MAX_INK_LUMINANCE: float = 0.6
#: A trace polyline has at least this many points and spans at least this width.
MIN_TRACE_POINTS: int = 30
MIN_TRACE_WIDTH_MM: float = 15.0
#: Share of steps that must go left-to-right (traces are functions of time).
MIN_FORWARD_FRACTION: float = 0.9
#: Consecutive polylines whose ends meet within this distance are one stroke.
JOIN_TOLERANCE_MM: float = 0.05
#: Calibration pulse: height range (mm), width range (mm), edge mismatch (mm).
PULSE_HEIGHT_MM: tuple[float, float] = (2.0, 45.0)
PULSE_WIDTH_MM: tuple[float, float] = (1.5, 30.0)
PULSE_EDGE_TOLERANCE_MM: float = 0.3
#: A pulse's foot lies within this distance of the traces' levels (above or below).
PULSE_BAND_MM: float = 15.0
#: Grid lines are straight strokes at least this long; a pitch estimate needs
#: this many distinct lines; pitches within this tolerance of 1 / 5 mm are exact.
MIN_GRID_LINE_MM: float = 20.0
MIN_GRID_LINES: int = 10
GRID_SCALE_TOLERANCE: float = 0.005


@dataclass(frozen=True)
class VectorTrace:
    """A trace polyline on one page, points sorted left to right (mm, y down)."""

    page: int
    points: np.ndarray

    @property
    def x0(self) -> float:
        return float(self.points[0, 0])

    @property
    def x1(self) -> float:
        return float(self.points[-1, 0])

    @cached_property
    def level(self) -> float:
        """Isoelectric level: the most frequent height of the trace."""
        return _mode(self.points[:, 1])


@dataclass(frozen=True)
class VectorPulse:
    """A rectangular calibration pulse (mm, y down)."""

    page: int
    x_left: float
    x_right: float
    top: float
    foot: float

    @property
    def height(self) -> float:
        return abs(self.foot - self.top)


def grid_scale(page: Page) -> tuple[float, float]:
    """Page millimetres per paper millimetre, horizontally and vertically, from grid lines.

    PDF units are exact, so a cart export's grid is 1 mm / 5 mm to the micrometre;
    a page that was scaled on the way (printed "fit to page", re-distilled) shows
    it as a different pitch. Without a line grid (dots, font glyphs) or when the
    pitch is within :data:`GRID_SCALE_TOLERANCE` of 1 mm / 5 mm, ``(1, 1)``.
    """
    vertical, horizontal = [], []
    for path in page.paths:
        pts = path.points
        if pts.shape[0] != 2:
            continue
        dx, dy = abs(pts[1, 0] - pts[0, 0]), abs(pts[1, 1] - pts[0, 1])
        if dx < 1e-3 and dy >= MIN_GRID_LINE_MM:
            vertical.append(float(pts[0, 0]))
        elif dy < 1e-3 and dx >= MIN_GRID_LINE_MM:
            horizontal.append(float(pts[0, 1]))
    sx, sy = _lattice_scale(vertical), _lattice_scale(horizontal)
    if sx is None and sy is None:
        return (1.0, 1.0)
    sx = sx if sx is not None else sy
    sy = sy if sy is not None else sx
    assert sx is not None and sy is not None
    if abs(sx - 1.0) <= GRID_SCALE_TOLERANCE and abs(sy - 1.0) <= GRID_SCALE_TOLERANCE:
        return (1.0, 1.0)
    return (sx, sy)


def _lattice_scale(positions: Sequence[float]) -> float | None:
    """Pitch of evenly spaced line positions relative to 1 mm or 5 mm, or None."""
    unique = np.unique(np.round(np.asarray(positions), 3))
    if unique.size < MIN_GRID_LINES:
        return None
    steps = np.diff(unique)
    steps = steps[steps > 0.2]
    if steps.size == 0:
        return None
    typical = float(np.median(steps))
    for nominal in (1.0, 5.0):
        if 0.85 <= typical / nominal <= 1.15:
            close = steps[np.abs(steps - typical) <= 0.05 * typical]
            return float(np.mean(close)) / nominal
    return None


def to_paper_mm(page: Page, scale: tuple[float, float]) -> Page:
    """The page's paths and texts in paper millimetres (divided by `scale`)."""
    sx, sy = scale
    factor = np.array([1.0 / sx, 1.0 / sy])
    paths = tuple(replace(p, points=p.points * factor) for p in page.paths)
    texts = tuple(
        TextItem(text=t.text, box_mm=(t.box_mm[0] / sx, t.box_mm[1] / sy,
                                      t.box_mm[2] / sx, t.box_mm[3] / sy))
        for t in page.texts
    )
    return replace(page, paths=paths, texts=texts)


def _is_ink(path: VectorPath) -> bool:
    return float(np.mean(path.stroke_rgb)) < MAX_INK_LUMINANCE


def _join_strokes(paths: Sequence[VectorPath]) -> list[np.ndarray]:
    """Concatenate consecutive polylines whose ends meet (traces drawn in pieces)."""
    strokes: list[list[np.ndarray]] = []
    for path in paths:
        pts = np.asarray(path.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[0] < 2:
            continue
        if strokes:
            last = strokes[-1][-1][-1]
            if np.hypot(*(pts[0] - last)) <= JOIN_TOLERANCE_MM and pts.shape[0] > 1:
                strokes[-1].append(pts[1:])
                continue
        strokes.append([pts])
    return [np.concatenate(parts) for parts in strokes]


def _looks_like_trace(pts: np.ndarray) -> bool:
    if pts.shape[0] < MIN_TRACE_POINTS:
        return False
    dx = np.diff(pts[:, 0])
    if abs(pts[-1, 0] - pts[0, 0]) < MIN_TRACE_WIDTH_MM:
        return False
    direction = np.sign(pts[-1, 0] - pts[0, 0])
    forward = np.mean(dx * direction >= -0.05)
    return bool(forward >= MIN_FORWARD_FRACTION)


def find_traces_and_pulses(page: Page) -> tuple[list[VectorTrace], list[VectorPulse]]:
    strokes = _join_strokes([p for p in page.paths if _is_ink(p)])
    traces: list[VectorTrace] = []
    others: list[np.ndarray] = []
    for pts in strokes:
        if _looks_like_trace(pts):
            if pts[-1, 0] < pts[0, 0]:
                pts = pts[::-1]
            traces.append(VectorTrace(page=page.index, points=pts))
        else:
            others.append(pts)
    # Only pulses level with the traces calibrate them (not boxes in a header).
    if traces:
        levels = [t.level for t in traces]
        low, high = min(levels) - PULSE_BAND_MM, max(levels) + PULSE_BAND_MM
        pulses = [p for p in _find_pulses(page.index, others) if low <= p.foot <= high]
    else:
        pulses = []
    # A pulse drawn as the first part of a trace polyline: cut it off the trace.
    cleaned = []
    for trace in traces:
        head = trace.points[trace.points[:, 0] <= trace.x0 + PULSE_WIDTH_MM[1]]
        head_pulses = [p for p in _find_pulses(page.index, [head]) if p.x_left <= trace.x0 + 3.0]
        if head_pulses:
            cut = max(p.x_right for p in head_pulses)
            pulses.extend(head_pulses)
            rest = trace.points[trace.points[:, 0] > cut + 1e-6]
            if rest.shape[0] >= MIN_TRACE_POINTS:
                cleaned.append(VectorTrace(page=page.index, points=rest))
            continue
        cleaned.append(trace)
    return cleaned, pulses


def _steep_edges(pts: np.ndarray) -> list[tuple[float, float, float]]:
    """Runs of steep steps in one direction as ``(x, y_top, y_bottom)``."""
    if pts.shape[0] < 2:
        return []
    d = np.diff(pts, axis=0)
    steep = (np.abs(d[:, 1]) > 2.0 * np.abs(d[:, 0])) & (np.abs(d[:, 1]) > 1e-3)
    sign = np.sign(d[:, 1]) * steep
    edges = []
    i, n = 0, d.shape[0]
    while i < n:
        if sign[i] == 0:
            i += 1
            continue
        j = i
        while j + 1 < n and sign[j + 1] == sign[i]:
            j += 1
        a, b = pts[i], pts[j + 1]
        rise = abs(b[1] - a[1])
        if rise >= PULSE_HEIGHT_MM[0] and abs(b[0] - a[0]) <= 0.3 * rise:
            edges.append((float((a[0] + b[0]) / 2), float(min(a[1], b[1])), float(max(a[1], b[1]))))
        i = j + 1
    return edges


def _find_pulses(page: int, strokes: Sequence[np.ndarray]) -> list[VectorPulse]:
    """Pairs of equal steep edges 1.5-30 mm apart: the 1 mV calibration rectangle."""
    edges = [e for pts in strokes for e in _steep_edges(pts)]
    edges.sort()
    if len(edges) < 2:
        return []
    flats = _flat_segments(strokes)
    pulses: list[VectorPulse] = []
    for i, (xa, top_a, bot_a) in enumerate(edges):
        height = bot_a - top_a
        if not PULSE_HEIGHT_MM[0] <= height <= PULSE_HEIGHT_MM[1]:
            continue
        for xb, top_b, bot_b in edges[i + 1:]:
            width = xb - xa
            if width > PULSE_WIDTH_MM[1]:
                break
            if (
                width >= PULSE_WIDTH_MM[0]
                and abs(top_a - top_b) <= PULSE_EDGE_TOLERANCE_MM
                and abs(bot_a - bot_b) <= PULSE_EDGE_TOLERANCE_MM
                and _flat_cover(flats, xa, xb, (top_a + top_b) / 2) >= 0.8
                # a closed box (table cell, frame) is not a pulse: its foot is open
                and _flat_cover(flats, xa, xb, (bot_a + bot_b) / 2) < 0.5
            ):
                pulse = VectorPulse(page, xa, xb, (top_a + top_b) / 2, (bot_a + bot_b) / 2)
                if not any(abs(p.x_left - xa) < 0.5 and abs(p.foot - pulse.foot) < 0.5
                           for p in pulses):
                    pulses.append(pulse)
                break
    return pulses


def _flat_segments(strokes: Sequence[np.ndarray]) -> np.ndarray:
    """Horizontal steps of all strokes as rows ``(x_left, x_right, y)``."""
    rows = []
    for pts in strokes:
        if pts.shape[0] < 2:
            continue
        a, b = pts[:-1], pts[1:]
        flat = np.abs(b[:, 1] - a[:, 1]) <= 0.05
        if flat.any():
            rows.append(np.column_stack([
                np.minimum(a[flat, 0], b[flat, 0]),
                np.maximum(a[flat, 0], b[flat, 0]),
                (a[flat, 1] + b[flat, 1]) / 2,
            ]))
    return np.concatenate(rows) if rows else np.empty((0, 3))


def _flat_cover(flats: np.ndarray, x_left: float, x_right: float, y: float) -> float:
    """Share of ``[x_left, x_right]`` covered by horizontal steps at height `y`."""
    if flats.shape[0] == 0 or x_right <= x_left:
        return 0.0
    near = flats[np.abs(flats[:, 2] - y) <= PULSE_EDGE_TOLERANCE_MM]
    grid = np.linspace(x_left, x_right, 50)[1:-1]
    covered = np.zeros(grid.size, dtype=bool)
    for lo, hi, _ in near:
        covered |= (grid >= lo - 0.05) & (grid <= hi + 0.05)
    return float(covered.mean())


def _mode(values: np.ndarray, bin_mm: float = 0.1) -> float:
    """Most frequent value (histogram peak, lightly smoothed), refined by the median near it."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < bin_mm:
        return float(np.median(v))
    n_bins = int(np.ceil((hi - lo) / bin_mm)) + 1
    hist, edges = np.histogram(v, bins=n_bins, range=(lo, lo + n_bins * bin_mm))
    smooth = np.convolve(hist, np.ones(3), mode="same")
    peak = (edges[int(np.argmax(smooth))] + edges[int(np.argmax(smooth)) + 1]) / 2
    near = v[np.abs(v - peak) <= 1.5 * bin_mm]
    return float(np.median(near)) if near.size else float(peak)
