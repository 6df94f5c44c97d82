"""Calibration sanity: standard gains, outlier pulses, plausible amplitudes, column widths."""

from __future__ import annotations

import numpy as np
import pytest

from ecgbridge.digitizer.calibration_check import (
    NO_PULSE_WARNING,
    check_amplitudes,
    decide_gain,
    snap_gain,
)
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.pipeline import digitize_pages
from ecgbridge.ecg import LEADS
from ecgbridge.errors import DigitizationError
from ecgbridge.inputs.page import Page
from ecgbridge.testing import render as synth_render
from ecgbridge.testing.render import render_page


def test_snap_gain_accepts_only_near_standard_gains() -> None:
    assert snap_gain(9.2) == 10.0
    assert snap_gain(5.4) == 5.0
    assert snap_gain(21.0) == 20.0
    assert snap_gain(2.96) is None
    assert snap_gain(7.3) is None


def test_rows_agreeing_on_a_standard_gain_win_and_outliers_are_named() -> None:
    decision = decide_gain([10.0, 9.7, None, 2.5])
    assert (decision.mm_per_mv, decision.source) == (10.0, "pulse")
    assert decision.outlier_rows == (3,)
    assert any("row(s) 4" in w and "outlier" in w for w in decision.warnings)


def test_a_pulse_of_impossible_height_is_disregarded_with_a_warning() -> None:
    decision = decide_gain([2.96, 2.9, 3.0])
    assert (decision.mm_per_mv, decision.source) == (10.0, "default")
    assert any("2.96 mm/mV" in w and "disregarded" in w for w in decision.warnings)


def test_half_gain_pulses_are_kept_and_user_gain_wins() -> None:
    assert decide_gain([5.2, 4.9, 5.0]).mm_per_mv == 5.0
    assert decide_gain([5.2, 4.9], user_gain=20.0).source == "user"
    assert decide_gain([None, None]).warnings == (NO_PULSE_WARNING,)


def test_a_gain_that_puts_leads_beyond_5_mv_is_rejected_for_the_default() -> None:
    t = np.linspace(0, 10, 5000)
    signals = {"I": 6.0 * np.sin(t), "II": 2.0 * np.sin(t)}
    checked = check_amplitudes(signals, decide_gain([5.0, 5.0]))
    assert checked.gain.mm_per_mv == 10.0 and checked.gain.source == "default"
    np.testing.assert_allclose(checked.signals["I"], 3.0 * np.sin(t))
    assert any("5 mm/mV" in w and "disregarded" in w for w in checked.gain.warnings)


def test_an_implausible_lead_is_left_out_and_stray_samples_blanked() -> None:
    t = np.linspace(0, 10, 5000)
    spiky = np.sin(t)
    spiky[100:105] = 9.0
    signals = {"I": np.sin(t), "II": np.sin(t), "III": spiky, "V1": 8.0 + np.sin(t)}
    checked = check_amplitudes(signals, decide_gain([10.0]))
    assert checked.dropped == ("V1",) and "V1" not in checked.signals
    assert np.isnan(checked.signals["III"][100:105]).all()
    assert np.nanmax(np.abs(np.concatenate(list(checked.signals.values())))) <= 5.0
    notes = " ".join(checked.gain.warnings)
    assert "lead V1 left out" in notes and "lead III: 5 sample(s)" in notes


def test_a_page_mostly_beyond_5_mv_is_refused() -> None:
    signals = {lead: np.full(100, 7.0) for lead in ("I", "II", "III")}
    with pytest.raises(DigitizationError, match="beyond"):
        check_amplitudes(signals, decide_gain([10.0]))


def test_rendered_page_with_a_pulse_of_impossible_height_is_read_at_10_mm_per_mv(
    monkeypatch: pytest.MonkeyPatch, sample_record: tuple[np.ndarray, float],
) -> None:
    record, fs = sample_record
    # The pulse is drawn 3 mm high (a "3 mm/mV" pulse); the traces at 10 mm/mV.
    monkeypatch.setattr(synth_render, "PULSE_MV", 0.3)
    page = render_page(record, fs, layout="3x4+II", dpi=150, seed=11)
    ecg = digitize_pages([Page(image=page.image)], DigitizeOptions())
    cal = ecg.calibration
    assert cal.mm_per_mv == 10.0 and cal.gain_source == "default"
    assert any("no standard gain" in w and "disregarded" in w for w in cal.warnings)
    ii = ecg.signals[LEADS.index("II")]
    ok = np.isfinite(ii)
    assert np.corrcoef(ii[ok], record[1][ok])[0, 1] > 0.9
    assert np.nanmax(np.abs(ii[ok])) == pytest.approx(np.max(np.abs(record[1][ok])), rel=0.25)


def test_columns_wider_than_the_standard_rescale_time() -> None:
    from ecgbridge.digitizer.calibration_check import column_time_factor, stretch_time

    # A 3x4 page read at a too small horizontal scale: 2.9 s columns, 11.6 s record.
    assert column_time_factor([2.9, 2.91, 2.89, 2.9], 4, 10.0) == pytest.approx(1.16)
    assert column_time_factor([2.5, 2.52, 2.49, 2.5], 4, 10.0) is None  # standard
    assert column_time_factor([2.9, 2.0, 2.5, 2.5], 4, 10.0) is None  # columns disagree
    assert column_time_factor([2.2, 2.2, 2.21, 2.2], 4, 10.0) is None  # narrower: rows cut
    fs, factor = 500.0, 1.16
    t_true = np.arange(5000) / fs
    read = np.sin(2 * np.pi * np.arange(int(5000 * factor)) / fs / factor)
    fixed = stretch_time(read, factor, 5000)
    assert fixed.size == 5000
    np.testing.assert_allclose(fixed[:-10], np.sin(2 * np.pi * t_true)[:-10], atol=1e-3)
