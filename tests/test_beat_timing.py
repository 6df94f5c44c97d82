"""Panels placed in time by their beats against the rhythm strip."""

from __future__ import annotations

import numpy as np
import pytest

from ecgbridge.digitizer import beat_timing
from ecgbridge.digitizer.postprocess import align_panels_to_rhythm
from ecgbridge.ecg import PanelInfo

FS = 500.0
N = 5000
#: Leads of the two columns (cart order) and their QRS amplitudes.
COLUMN_LEADS = (("I", "II", "III", "aVR", "aVL", "aVF"), ("V1", "V2", "V3", "V4", "V5", "V6"))


def _record(rr: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """12 leads of narrow QRS spikes at shared beat times (irregular unless `rr` given)."""
    rng = np.random.default_rng(seed)
    if rr is None:
        rr = rng.uniform(0.65, 1.05, 20)
    beats = 0.3 + np.concatenate([[0.0], np.cumsum(rr)])
    t = np.arange(N) / FS
    qrs = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in beats if b < 10.0)
    t_wave = sum(0.25 * np.exp(-0.5 * ((t - b - 0.3) / 0.05) ** 2) for b in beats if b < 10.0)
    leads = [lead for column in COLUMN_LEADS for lead in column]
    return {lead: rng.uniform(0.5, 1.5) * rng.choice([-1, 1]) * qrs + t_wave
            + 0.01 * rng.standard_normal(N) for lead in leads}


def _candidates(rec: dict[str, np.ndarray], second_from_s: float, strip: bool = True,
                geometric_s: float = 5.0, duration_s: float = 5.0):
    """Panels of a 6x2 page: column 2 at `geometric_s` by position, showing `second_from_s`."""
    cands: dict[str, list] = {}
    for c, leads in enumerate(COLUMN_LEADS):
        shown_from = 0.0 if c == 0 else second_from_s
        start = 0.0 if c == 0 else geometric_s
        for r, lead in enumerate(leads):
            samples = np.full(N, np.nan)
            i0, j0 = int(round(start * FS)), int(round(shown_from * FS))
            n = int(round(duration_s * FS))
            samples[i0: i0 + n] = rec[lead][j0: j0 + n]
            box = (c * 100.0, r * 10.0, c * 100.0 + 99, r * 10.0 + 9)
            info = PanelInfo(lead=lead, page=0, box=box, baseline_px=0.0, start_s=start,
                             duration_s=duration_s)
            cands[lead] = [(samples, 1.0, info)]
    if strip:
        info = PanelInfo(lead="II", page=0, box=(0.0, 70.0, 199.0, 79.0), baseline_px=0.0,
                         start_s=0.0, duration_s=10.0, rhythm_strip=True)
        cands["II"].append((rec["II"].copy(), 1.0, info))
    return cands


def _start(cands: dict[str, list], lead: str) -> float:
    return next(info.start_s for _s, _q, info in cands[lead] if not info.rhythm_strip)


def test_second_column_repeating_the_first_five_seconds_moves_to_zero() -> None:
    rec = _record(seed=1)
    warnings: list[str] = []
    out = align_panels_to_rhythm(_candidates(rec, second_from_s=0.0), FS, warnings)
    for lead in COLUMN_LEADS[1]:
        assert _start(out, lead) == pytest.approx(0.0)
        samples = out[lead][0][0]
        np.testing.assert_allclose(samples[:2500], rec[lead][:2500])
        assert np.isnan(samples[2500:]).all()
    assert _start(out, "I") == 0.0
    assert len(warnings) == 1 and "placed at 0.00 s instead of 5.00 s" in warnings[0]


def test_real_cart_second_column_stays_at_five_seconds() -> None:
    rec = _record(seed=2)
    cands = _candidates(rec, second_from_s=5.0)
    warnings: list[str] = []
    out = align_panels_to_rhythm(cands, FS, warnings)
    for lead in COLUMN_LEADS[1]:
        assert _start(out, lead) == 5.0
        np.testing.assert_array_equal(out[lead][0][0], cands[lead][0][0])
    assert warnings == []


def test_without_a_strip_the_standard_placement_is_kept() -> None:
    rec = _record(seed=3)
    out = align_panels_to_rhythm(_candidates(rec, second_from_s=0.0, strip=False), FS, [])
    assert all(_start(out, lead) == 5.0 for lead in COLUMN_LEADS[1])


def test_a_strip_out_of_step_with_the_first_column_is_no_evidence() -> None:
    # The first column (which starts the recording) does not line up with the strip
    # (here its traces are noise): the strip is no timing evidence, nothing moves.
    rec = _record(seed=6)
    cands = _candidates(rec, second_from_s=0.0)
    rng = np.random.default_rng(0)
    for lead in COLUMN_LEADS[0]:
        cands[lead] = [(np.where(np.isfinite(s), rng.standard_normal(s.size), np.nan)
                        if not info.rhythm_strip else s, q, info)
                       for s, q, info in cands[lead]]
    out = align_panels_to_rhythm(cands, FS, [])
    assert all(_start(out, lead) == 5.0 for lead in COLUMN_LEADS[1])


def test_a_perfectly_regular_rhythm_is_no_evidence() -> None:
    # One beat a second: 0-5 s and 5-10 s look alike, the position decides.
    rec = _record(rr=np.full(20, 1.0), seed=4)
    out = align_panels_to_rhythm(_candidates(rec, second_from_s=0.0), FS, [])
    assert all(_start(out, lead) == 5.0 for lead in COLUMN_LEADS[1])


def test_non_standard_columns_are_moved_by_their_beats() -> None:
    # Columns read 4 s wide (not a standard width) whose second one is placed at 4.03 s
    # but shows 0-4 s: the beats' lag puts it at 0 s, not at 4.03 - 4 s.
    rec = _record(seed=5)
    cands = _candidates(rec, second_from_s=0.0, geometric_s=4.03, duration_s=4.0)
    out = align_panels_to_rhythm(cands, FS, [])
    for lead in COLUMN_LEADS[1]:
        assert _start(out, lead) == pytest.approx(0.0, abs=0.005)
        finite = np.nonzero(np.isfinite(out[lead][0][0]))[0]
        assert abs(finite[0]) <= 2


def test_candidate_starts_cover_the_standard_columns() -> None:
    assert beat_timing.candidate_starts(7.5, 2.5) == [7.5, 5.0, 2.5, 0.0]
    assert beat_timing.candidate_starts(5.01, 5.0) == pytest.approx([5.01, 0.01])
    assert beat_timing.standard_period(5.012) == 5.0
    assert beat_timing.standard_period(3.21) is None


def test_group_columns_by_start() -> None:
    assert beat_timing.group_columns([5.0, 0.0, 5.01, 0.02, 2.5]) == [[1, 3], [4], [0, 2]]
