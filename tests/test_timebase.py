"""Time origin of trace rows: where the digitizer puts time 0 on a page."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.pipeline import digitize_pages
from ecgbridge.digitizer.timebase import consensus_start, first_sample_origin, origins_from_row_ends
from ecgbridge.digitizer.trace import TracePath
from ecgbridge.inputs.page import Page
from ecgbridge.testing.render import render_page
from tests.test_digitizer_pipeline import FS, synthetic_record


def _origin_errors_ms(page, ecg) -> list[float]:
    """Per first-column panel: (digitized time of its first drawn sample - true time) in ms."""
    cal = ecg.calibration
    px_per_s = cal.px_per_mm_x * cal.mm_per_s
    errors = []
    for truth in page.panels:
        if truth.start_sample != 0 or truth.trace_xy.size == 0:
            continue
        x_true, y_true = truth.trace_xy[0]
        found = [p for p in ecg.panels if p.lead == truth.lead and p.box[1] <= y_true <= p.box[3]
                 and p.box[0] - 10 <= x_true <= p.box[2]]
        assert found, f"{truth.lead}: no digitized panel at the true start"
        p = found[0]
        origin = p.box[0] - p.start_s * px_per_s
        errors.append(1000.0 * (x_true - origin) / px_per_s)
    return errors


def test_stray_ink_before_one_row_does_not_move_the_time_origin() -> None:
    page = render_page(synthetic_record(5), FS, layout="3x4+II", dpi=200, calibration_pulse=False,
                       seed=2)
    image = page.image.copy()
    first = min((p for p in page.panels if p.start_sample == 0), key=lambda p: p.baseline_px)
    x0, y0 = first.trace_xy[0]
    # A dark grid-line fragment at the baseline, 3 mm before the first row's trace.
    ppm = page.px_per_mm
    cv2.line(image, (int(x0 - 3 * ppm), int(round(y0))), (int(x0) - 2, int(round(y0))),
             (0, 0, 0), max(1, int(round(0.25 * ppm))))
    ecg = digitize_pages([Page(image=image)], DigitizeOptions(engine="classical"))
    errors = _origin_errors_ms(page, ecg)
    assert len(errors) >= 3
    # 3 mm of stray ink is 120 ms; the first sample is found within a few ms.
    assert max(abs(e) for e in errors) < 8.0, errors


def test_first_sample_lies_half_a_pen_after_the_first_ink() -> None:
    page = render_page(synthetic_record(6), FS, layout="3x4+II", dpi=200, calibration_pulse=False,
                       seed=3)
    ecg = digitize_pages([Page(image=page.image)], DigitizeOptions(engine="classical"))
    errors = _origin_errors_ms(page, ecg)
    assert len(errors) >= 3
    # The first ink is the pen's edge, 1.5 px (7 ms) before the first sample's centre.
    assert abs(float(np.median(errors))) < 5.0, errors


def test_consensus_start_prefers_the_largest_group() -> None:
    # Stray ink makes one row start 15 px early; two rows agree, one is late.
    assert consensus_start(np.array([23.0, 48.0, 38.0, 39.0]), 4.0) == 38.0
    assert consensus_start(np.array([23.0, 48.0]), 4.0) is None
    # Half a 4-px pen after the agreed first ink.
    assert first_sample_origin(np.array([38.0, 38.0, 40.0]), 4.0, 4.0) == pytest.approx(39.5)


def _full_row(x0: int, n: int) -> TracePath:
    y = np.zeros(n)
    return TracePath(x0, y, y - 1.0, y + 1.0, 3.0)


def test_row_ends_give_the_origin_behind_an_unrecognised_pulse() -> None:
    ppm, px_per_s = 6.0, 150.0
    # Rows start at an unrecognised pulse's rise: 10.2 s from first ink to row end.
    start, end = 60.0, 60.0 + 10.2 * px_per_s
    spans = [(start, end), (start, end), (start, end - 200.0)]
    paths = [_full_row(int(start), int(end - start))] * 3
    pulse_px = 0.2 * px_per_s
    out = origins_from_row_ends(spans, paths, px_per_s, ppm, pen_px=3.0,
                                 max_shift_px=pulse_px + ppm)
    assert out is not None
    assert out[0][0] == pytest.approx(start + pulse_px, abs=2.0)
    # One full row alone (the other ends 0.2 s earlier) is not trusted with that shift.
    spans = [(start, end), (start, end - pulse_px)]
    assert origins_from_row_ends(spans, paths[:2], px_per_s, ppm, pen_px=3.0,
                                  max_shift_px=pulse_px + ppm) is None


@pytest.mark.parametrize("dpi", [100, 150, 200])
def test_origin_after_a_pulse_gap_is_found_within_a_sample_or_two(dpi: int) -> None:
    """The first ink after the pulse's gap and the rows' last ink are both off by the
    pen's cap and the pixel grid, in opposite ways: their mean finds the first sample
    (measured: median -2.3, 1.1 and 0.2 ms at 100, 150 and 200 dpi; 1 sample is 2 ms).
    """
    page = render_page(synthetic_record(2), FS, layout="3x4+II", dpi=dpi, seed=1)
    ecg = digitize_pages([Page(image=page.image)], DigitizeOptions(engine="classical"))
    errors = _origin_errors_ms(page, ecg)
    assert len(errors) >= 3
    assert abs(float(np.median(errors))) < 4.0, errors


@pytest.mark.parametrize("dpi", [100, 200, 300])
def test_origin_at_a_pulse_without_gap_is_found_within_two_samples(dpi: int) -> None:
    """A pulse's fall edge lies on whole pixels; the full rows' ends refine it.

    Measured: 2.8, 0.3 and 1.2 ms at 100, 200 and 300 dpi (7.5, 2.4 and 0.8 ms from the
    fall alone); 1 sample is 2 ms.
    """
    page = render_page(synthetic_record(2), FS, layout="3x4+II", dpi=dpi, seed=1,
                       pulse_gap_mm=0.0)
    ecg = digitize_pages([Page(image=page.image)], DigitizeOptions(engine="classical"))
    errors = _origin_errors_ms(page, ecg)
    assert len(errors) >= 3
    assert abs(float(np.median(errors))) < 4.0, errors
