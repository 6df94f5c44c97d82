"""Sub-pixel crossings of steep strokes (trace_fine) and how samples are placed from them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ecgbridge.digitizer.layout import PanelSlot
from ecgbridge.digitizer.panels import slot_points
from ecgbridge.digitizer.postprocess import place_samples
from ecgbridge.digitizer.pulse import find_pulse
from ecgbridge.digitizer.trace import TracePoints, follow_trace
from ecgbridge.digitizer.trace_fine import with_stroke_crossings

_SUPER = 8


def _qrs(x: np.ndarray) -> np.ndarray:
    """Rows of a trace at columns `x`: flat at 80, a narrow R wave (up to row 20) and an
    S wave (down to row 110) whose strokes lie between pixel columns."""
    r = np.interp(x, [0, 60.3, 64.1, 69.6, 72.4, 75.0, 200], [80, 80, 20, 110, 80, 80, 80])
    return r + 1.5 * np.sin(x / 9.0)


def _render(pen_px: float, width: int = 200, height: int = 140) -> np.ndarray:
    """Anti-aliased darkness (0..1) of the trace drawn with a round pen."""
    xs = np.arange(0, width, 0.05)
    pts = np.stack([xs * _SUPER + (_SUPER - 1) / 2, _qrs(xs) * _SUPER + (_SUPER - 1) / 2], 1)
    big = np.zeros((height * _SUPER, width * _SUPER), np.uint8)
    cv2.polylines(big, [pts.round().astype(np.int32).reshape(-1, 1, 2)], False, 255,
                  thickness=int(round(pen_px * _SUPER)), lineType=cv2.LINE_AA)
    return cv2.resize(big.astype(np.float32) / 255.0, (width, height),
                      interpolation=cv2.INTER_AREA)


def _read(pen_px: float):
    dark = _render(pen_px)
    mask = (dark >= 0.5).astype(np.uint8)
    path = follow_trace(mask, 0, mask.shape[1], 0, mask.shape[0], 80.0, 5.9)
    return path, with_stroke_crossings(path, mask, dark)


def test_steep_strokes_are_placed_between_columns() -> None:
    """Column values put each stroke's sweep at a column centre; the crossings put it
    where the stroke is drawn (sampled five times per column, as at 500 Hz)."""
    for pen in (2.0, 2.6, 3.5):
        path, fine = _read(pen)
        assert fine.points is not None
        at = np.arange(56.0, 80.0, 0.2)
        truth = _qrs(at)
        ok = np.isfinite(path.y)
        err_columns = np.abs(np.interp(at, np.nonzero(ok)[0], path.y[ok]) - truth).mean()
        err_points = np.abs(np.interp(at, fine.points.x, fine.points.y) - truth).mean()
        assert err_points < 0.85 * err_columns, (pen, err_points, err_columns)


def test_flat_stretches_keep_their_column_values() -> None:
    path, fine = _read(2.0)
    assert fine.points is not None
    flat = (fine.points.x < 50) | (fine.points.x > 80)
    cols = fine.points.x[flat]
    assert np.array_equal(cols, np.round(cols))  # one point per column, at its centre
    assert np.allclose(fine.points.y[flat], path.y[cols.astype(int)])
    assert np.all(np.diff(fine.points.x) >= 0)


def test_samples_follow_the_fine_points_but_not_across_blanked_columns() -> None:
    values = np.full(100, 5.0)
    values[40:70] = np.nan  # a gap too long to bridge at 100 px/s
    fine = (np.array([0.0, 10.5, 11.0, 39.0, 70.0, 99.0]),
            np.array([5.0, 5.0, 9.0, 5.0, 5.0, 5.0]))
    out = place_samples(values, 0, 0.0, 100.0, 100.0, 100, fine)
    assert out[11] == 9.0  # the fine point at column 11
    assert np.isnan(out[55])  # the gap stays a gap
    plain = place_samples(values, 0, 0.0, 100.0, 100.0, 100)
    assert plain[11] == 5.0


def test_points_in_blanked_columns_are_left_out() -> None:
    path, fine = _read(2.0)
    slot = PanelSlot(lead="I", x0=10, x1=150, column=0, columns=1, label_score=1.0)
    ys = fine.y[10:150].copy()
    ys[:5] = np.nan
    at, rows = slot_points(fine, slot, ys)
    assert at.min() >= 4.5 and at.max() < 140
    assert at.size == rows.size and np.all(np.isfinite(rows))
    bare = slot_points(path, slot, ys)[0]
    assert np.array_equal(bare, np.nonzero(np.isfinite(ys))[0].astype(float))
    assert isinstance(fine.points, TracePoints)


def _pulse_page(fall: float, ppm: float = 7.874, pen: float = 2.5):
    """Anti-aliased darkness of a 1-mV pulse whose falling edge is at column `fall`
    (between pixels), then a flat trace."""
    base, top, rise = 250.0, 250.0 - 10 * ppm, 40.3
    xs = np.array([10.0, rise, rise, fall, fall, 400.0])
    ys = np.array([base, base, top, top, base, base])
    pts = np.stack([xs * _SUPER + (_SUPER - 1) / 2, ys * _SUPER + (_SUPER - 1) / 2], 1)
    big = np.zeros((400 * _SUPER, 420 * _SUPER), np.uint8)
    cv2.polylines(big, [pts.round().astype(np.int32).reshape(-1, 1, 2)], False, 255,
                  thickness=int(round(pen * _SUPER)), lineType=cv2.LINE_AA)
    dark = cv2.resize(big.astype(np.float32) / 255.0, (420, 400), interpolation=cv2.INTER_AREA)
    return dark, base, ppm


def test_a_pulse_fall_is_placed_between_columns() -> None:
    for fall in (79.3, 79.5, 79.8):
        dark, base, ppm = _pulse_page(fall)
        mask = (dark >= 0.5).astype(np.uint8)
        path = follow_trace(mask, 5, mask.shape[1], 0, mask.shape[0], base, ppm)
        plain = find_pulse(path, ppm, ppm)
        fine = find_pulse(with_stroke_crossings(path, mask, dark), ppm, ppm)
        assert plain is not None and fine is not None
        assert abs(fine.x_fall - fall) <= 0.15, (fall, fine.x_fall)
        assert fine.x_fall == pytest.approx(plain.x_fall, abs=1.0)
