"""Per-lead quality: the evidence it weighs, and its contract on readings with known
bad leads (quality < 0.5 means "do not trust this lead").

The readings are real fixture records laid out as a 3x4+II page would show them (each
lead only in its 2.5 s column, lead II also as a 10 s strip), with damage a digitizer
does: a trace that strayed into the row below for part of its panel.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ecgbridge.digitizer import quality
from ecgbridge.ecg import LEADS, Calibration, CalibrationSource, PanelInfo

#: Column of each lead in a 3x4 page (I, II, III first; V4-V6 last).
_COLUMN = {lead: i // 3 for i, lead in enumerate(LEADS)}
_COLUMN_S = 2.5


def _as_3x4(signals: np.ndarray, fs: float) -> tuple[np.ndarray, list[PanelInfo]]:
    """The record as a 3x4+II reading: NaN outside each lead's column."""
    out = np.full(signals.shape, np.nan)
    panels = []
    for i, lead in enumerate(LEADS):
        c = _COLUMN[lead]
        a, b = int(c * _COLUMN_S * fs), int((c + 1) * _COLUMN_S * fs)
        out[i, a:b] = signals[i, a:b]
        panels.append(PanelInfo(lead, 0, (0.0, 0.0, 1.0, 1.0), 0.0, c * _COLUMN_S, _COLUMN_S))
    ii = LEADS.index("II")
    out[ii] = signals[ii]
    panels.append(PanelInfo("II", 0, (0.0, 0.0, 1.0, 1.0), 0.0, 0.0, 10.0, rhythm_strip=True))
    return out, panels


def _strayed(signals: np.ndarray, lead: str, into: str, fs: float) -> np.ndarray:
    """`lead`'s trace following `into`'s row (1.5 mV lower) for 1 s of its panel."""
    out = signals.copy()
    i, j = LEADS.index(lead), LEADS.index(into)
    a = int((_COLUMN[lead] * _COLUMN_S + 0.8) * fs)
    out[i, a : a + int(fs)] = signals[j, a : a + int(fs)] - 1.5
    return out


def _judge(signals: np.ndarray, fs: float, panels: list[PanelInfo]) -> dict[str, float]:
    calibration = Calibration(
        px_per_mm_x=7.9, px_per_mm_y=7.9, gain_source=CalibrationSource.PULSE, engine="classical"
    )
    evidence = quality.lead_evidence(signals, fs, [0.95] * len(LEADS), panels, calibration)
    return dict(zip(LEADS, quality.lead_quality(evidence), strict=True))


@pytest.mark.parametrize("record", ["HR06004", "E07506", "JS20005", "A1983", "00001_lr"])
def test_a_strayed_lead_is_not_trusted(record_signals, record):
    signals, fs = record_signals(record)
    reading, panels = _as_3x4(np.asarray(signals), fs)
    clean = _judge(reading, fs, panels)
    for lead, into in (("V2", "V3"), ("V5", "V6"), ("I", "II"), ("aVL", "aVF")):
        judged = _judge(_strayed(reading, lead, into, fs), fs, panels)
        assert judged[lead] < 0.5, (lead, judged)
        assert judged[lead] < clean[lead] - 0.1, (lead, judged)


@pytest.mark.parametrize("record", ["HR06004", "E07506", "A1983", "00001_lr"])
def test_most_leads_of_a_faultless_reading_are_trusted(record_signals, record):
    # The model flags many good leads (the price of catching nine bad ones in ten):
    # of a faultless reading, most leads are trusted, not all. Quality judges how a
    # trace looks, not only how faithful it is: the faultless reading of JS20005, a
    # recording with a noisy baseline, has most of its leads flagged.
    signals, fs = record_signals(record)
    reading, panels = _as_3x4(np.asarray(signals), fs)
    clean = _judge(reading, fs, panels)
    assert np.median(list(clean.values())) >= 0.5, clean
    assert sum(q >= 0.5 for q in clean.values()) >= 9, clean


def test_beats_repeat_in_a_clean_trace_and_less_in_a_strayed_one(record_signals):
    # A regular sinus rhythm: every lead's beats repeat at the one period. (In an
    # irregular one, a 2.5 s panel's two or three beats need not repeat at it.)
    signals, fs = record_signals("A1983")
    reading, _panels = _as_3x4(np.asarray(signals), fs)
    flat = {lead: quality._without_baseline(reading[i], fs) for i, lead in enumerate(LEADS)}
    clean = quality.beat_repeat(flat, fs)
    assert np.median(list(clean.values())) > 0.6
    strayed = _strayed(reading, "V5", "V6", fs)
    v5 = LEADS.index("V5")
    flat["V5"] = quality._without_baseline(strayed[v5], fs)
    assert quality.beat_repeat(flat, fs)["V5"] < clean["V5"] - 0.2


def test_evidence_not_measured_is_nan_and_counts_as_average(record_signals):
    signals, fs = record_signals("HR06004")
    reading, panels = _as_3x4(np.asarray(signals), fs)
    calibration = Calibration(px_per_mm_x=float("nan"), engine="classical")
    evidence = quality.lead_evidence(reading, fs, [0.95] * 12, panels, calibration)
    neighbour = quality.FEATURES.index("neighbour_r")
    # Limb leads have no chest neighbours; a vector page has no pixel scale.
    assert np.isnan(evidence[:6, neighbour]).all()
    assert np.isfinite(evidence[6:, neighbour]).all()
    assert np.isnan(evidence[:, quality.FEATURES.index("log_px_per_mm")]).all()
    judged = quality.lead_quality(evidence)
    assert all(0.0 <= q <= 1.0 for q in judged)


def test_beats_of_a_misplaced_trace_fall_out_of_sync(record_signals):
    signals, fs = record_signals("A1983")
    reading, _panels = _as_3x4(np.asarray(signals), fs)
    by_lead = {lead: reading[i] for i, lead in enumerate(LEADS)}
    clean = quality.beat_sync(by_lead, fs)
    assert min(clean.values()) > 0.5, clean
    # V5's panel drawn 0.3 s late: its beats no longer fall with V4's and V6's.
    v5 = LEADS.index("V5")
    late = np.full(reading.shape[1], np.nan)
    shift = int(0.3 * fs)
    late[shift:] = reading[v5, :-shift]
    late[np.isnan(reading[v5])] = np.nan
    by_lead["V5"] = late
    assert quality.beat_sync(by_lead, fs)["V5"] < clean["V5"] - 0.3


def test_short_panels_give_evidence_without_numpy_warnings(record_signals):
    # Panels of 1.5 s: the longest beat periods cannot be measured on any lead.
    signals, fs = record_signals("HR06004")
    reading = np.full(np.asarray(signals).shape, np.nan)
    reading[:, : int(1.5 * fs)] = np.asarray(signals)[:, : int(1.5 * fs)]
    flat = {lead: quality._without_baseline(reading[i], fs) for i, lead in enumerate(LEADS)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repeat = quality.beat_repeat(flat, fs)
    assert set(repeat) == set(LEADS)
    assert all(np.isfinite(v) and v <= 1.0 + 1e-9 for v in repeat.values())
