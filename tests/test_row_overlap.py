"""A neighbour's wave crossing a row's trace is not read into that row (row_overlap)."""

from __future__ import annotations

import cv2
import numpy as np

from ecgbridge.digitizer.row_overlap import crossed_columns, without_crossed_columns
from ecgbridge.digitizer.rows import PageRow, TraceRow
from ecgbridge.digitizer.trace import follow_trace

_PEN = 2


def _page(r_top: int) -> np.ndarray:
    """Row A level at row 100; row B at row 170 with an R wave up to `r_top` at x 100."""
    mask = np.zeros((220, 200), np.uint8)
    cv2.line(mask, (0, 100), (199, 100), 1, _PEN)
    pts = np.array([[0, 170], [90, 170], [100, r_top], [110, 185], [116, 170], [199, 170]])
    cv2.polylines(mask, [pts.astype(np.int32).reshape(-1, 1, 2)], False, 1, _PEN)
    return mask


def _paths(mask: np.ndarray):
    a = follow_trace(mask, 0, 200, 40, 140, 100.0, 5.0)
    b = follow_trace(mask, 0, 200, 40, 215, 170.0, 5.0)
    return a, b


def test_a_wave_crossing_a_level_trace_is_left_out_of_that_trace_only() -> None:
    a, b = _paths(_page(40))
    assert np.nanmin(a.y[88:112]) < 90  # read as is, row A takes a spike from B's wave
    crossed = crossed_columns(a, b)
    assert crossed.any() and np.all(np.abs(np.nonzero(crossed)[0] - 100) <= 8)
    assert not crossed_columns(b, a).any()  # B's wave is its own
    rows = [PageRow(TraceRow(100.0, 60, 135, 0, 200, 1.0), a, None, None, None, 0.0, 200.0),
            PageRow(TraceRow(170.0, 135, 215, 0, 200, 1.0), b, None, None, None, 0.0, 200.0)]
    fixed = without_crossed_columns(rows)
    ys = fixed[0].path.y
    assert np.all(np.isnan(ys[crossed])) and np.nanmin(ys) > 95
    assert np.array_equal(fixed[1].path.y, b.y, equal_nan=True)


def test_a_wave_whose_tip_touches_a_trace_keeps_its_tip() -> None:
    """The R wave reaching just up to row A's trace: both rows read as they are."""
    a, b = _paths(_page(100))
    assert not crossed_columns(a, b).any()
    assert not crossed_columns(b, a).any()
