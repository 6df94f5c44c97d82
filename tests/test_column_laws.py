"""Columns placed in time by the limb-lead laws where a regular rhythm hides the answer."""

from __future__ import annotations

import numpy as np
import pytest

from ecgbridge.digitizer import column_laws
from ecgbridge.digitizer.postprocess import align_panels_to_rhythm
from ecgbridge.ecg import PanelInfo

FS = 500.0
N = 5000
#: The benchmark generator's 6x2 page: limb and chest leads in both columns.
COLUMNS = (("V1", "I", "V2", "II", "V3", "III"), ("V4", "aVR", "V5", "aVL", "V6", "aVF"))


def _regular_record(seed: int) -> dict[str, np.ndarray]:
    """12 leads beating exactly once a second, limb leads bound by the laws.

    The beats repeat, but each differs a little in size and the baseline wanders, as on
    a real recording: only the signal itself tells 0-5 s from 5-10 s.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(N) / FS
    beats = np.arange(0.4, 10.0, 1.0)
    qrs = sum(rng.uniform(0.8, 1.2) * np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in beats)
    t_wave = sum(rng.uniform(0.15, 0.35) * np.exp(-0.5 * ((t - b - 0.3) / 0.05) ** 2)
                 for b in beats)

    def wander() -> np.ndarray:
        return 0.08 * np.sin(2 * np.pi * t / rng.uniform(3.0, 7.0) + rng.uniform(0, 6))

    lead_i = 0.7 * qrs + t_wave + wander()
    lead_ii = 1.2 * qrs + 0.8 * t_wave + wander()
    out = {"I": lead_i, "II": lead_ii, "III": lead_ii - lead_i,
           "aVR": -(lead_i + lead_ii) / 2, "aVL": lead_i - lead_ii / 2,
           "aVF": lead_ii - lead_i / 2}
    for k in range(1, 7):
        out[f"V{k}"] = rng.uniform(0.5, 1.5) * rng.choice([-1, 1]) * qrs + t_wave + wander()
    return out


def _page(rec: dict[str, np.ndarray], second_from_s: float, seed: int = 0):
    """Panels of a 6x2+II page whose second column (at 5 s by position) shows
    `second_from_s` onwards; every trace read with 0.02 mV of noise."""
    rng = np.random.default_rng(seed)
    cands: dict[str, list] = {}
    for c, leads in enumerate(COLUMNS):
        start, shown = (0.0, 0.0) if c == 0 else (5.0, second_from_s)
        for r, lead in enumerate(leads):
            samples = np.full(N, np.nan)
            i0, j0 = int(start * FS), int(shown * FS)
            samples[i0: i0 + 2500] = rec[lead][j0: j0 + 2500] + 0.02 * rng.standard_normal(2500)
            info = PanelInfo(lead=lead, page=0, box=(c * 100.0, r * 10.0, c * 100.0 + 99,
                                                    r * 10.0 + 9),
                             baseline_px=0.0, start_s=start, duration_s=5.0)
            cands[lead] = [(samples, 1.0, info)]
    strip = PanelInfo(lead="II", page=0, box=(0.0, 70.0, 199.0, 79.0), baseline_px=0.0,
                      start_s=0.0, duration_s=10.0, rhythm_strip=True)
    cands["II"].append((rec["II"] + 0.02 * rng.standard_normal(N), 1.0, strip))
    return cands


def _start(cands: dict[str, list], lead: str) -> float:
    return next(info.start_s for _s, _q, info in cands[lead] if not info.rhythm_strip)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_regular_rhythm_column_showing_the_first_seconds_moves_by_the_laws(seed: int) -> None:
    rec = _regular_record(seed)
    warnings: list[str] = []
    out = align_panels_to_rhythm(_page(rec, second_from_s=0.0, seed=seed), FS, warnings)
    for lead in COLUMNS[1]:
        assert _start(out, lead) == pytest.approx(0.0)
        samples = out[lead][0][0]
        assert np.abs(samples[:2500] - rec[lead][:2500]).max() < 0.2
        assert np.isnan(samples[2500:]).all()
    assert all(_start(out, lead) == 0.0 for lead in COLUMNS[0])
    assert len(warnings) == 1
    assert "placed at 0.00 s instead of 5.00 s" in warnings[0]
    assert "limb leads they show agree with the rhythm strip" in warnings[0]


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_regular_rhythm_column_showing_the_next_seconds_stays(seed: int) -> None:
    rec = _regular_record(seed)
    cands = _page(rec, second_from_s=5.0, seed=seed)
    warnings: list[str] = []
    out = align_panels_to_rhythm(cands, FS, warnings)
    for lead in COLUMNS[1]:
        assert _start(out, lead) == 5.0
        np.testing.assert_array_equal(out[lead][0][0], cands[lead][0][0])
    assert warnings == []


def test_derived_lead_follows_einthoven_and_goldberger() -> None:
    rec = _regular_record(4)
    column = {lead: rec[lead] for lead in ("V4", "aVR", "aVL", "aVF")}
    np.testing.assert_allclose(column_laws.derived_lead(column, "II"), rec["II"], atol=1e-9)
    np.testing.assert_allclose(column_laws.derived_lead(column, "I"), rec["I"], atol=1e-9)
    # One limb lead spans only its own direction; chest leads none.
    assert column_laws.derived_lead({"aVR": rec["aVR"]}, "II") is None
    np.testing.assert_allclose(column_laws.derived_lead({"aVR": rec["aVR"]}, "aVR"),
                               rec["aVR"], atol=1e-9)
    assert column_laws.derived_lead({"V1": rec["V1"], "V2": rec["V2"]}, "II") is None
    assert column_laws.derived_lead(column, "V1") is None


def test_laws_undecided_when_the_column_contradicts_the_strip() -> None:
    # Limb leads read from the wrong places agree with the strip at no start.
    rng = np.random.default_rng(5)
    column = {lead: rng.standard_normal(2500) for lead in ("aVR", "aVL", "aVF")}
    strip = _regular_record(5)["II"]
    start, residuals = column_laws.start_by_laws(column, [("II", strip)], [5.0, 0.0], FS, 0.06)
    assert start is None
    assert set(residuals) == {5.0, 0.0} and min(residuals.values()) > column_laws.MAX_RESIDUAL


def _limb_leads(seed: int, n: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lead_i = np.cumsum(rng.standard_normal(n)) * 0.02
    lead_ii = np.cumsum(rng.standard_normal(n)) * 0.02
    exact = {"I": lead_i, "II": lead_ii, "III": lead_ii - lead_i, "aVR": -(lead_i + lead_ii) / 2,
             "aVL": lead_i - lead_ii / 2, "aVF": lead_ii - lead_i / 2}
    return {lead: sig + 0.01 * rng.standard_normal(n) for lead, sig in exact.items()}


def test_a_limb_lead_alone_off_the_laws_is_mended_from_the_others() -> None:
    """A neighbour's QRS wave followed into aVL for 40 ms on a 12x1 page: the other
    five limb leads agree there, so aVL takes the value they give; nothing else moves."""
    from ecgbridge.digitizer.consistency import replace_limb_outliers

    read = _limb_leads(7)
    truth_avl = read["aVL"].copy()
    read["aVL"] = truth_avl.copy()
    read["aVL"][400:420] -= 1.0
    out, counts = replace_limb_outliers(read)
    assert counts == {"aVL": 20}
    assert np.abs(out["aVL"] - truth_avl).max() < 0.1
    assert all(out[lead] is read[lead] for lead in ("I", "II", "III", "aVR", "aVF"))


def test_limb_leads_that_cannot_tell_the_wrong_one_are_left_as_read() -> None:
    from ecgbridge.digitizer.consistency import replace_limb_outliers

    # Three leads (one column of a 3x4 page) cannot say which of them is wrong ...
    read = {lead: sig for lead, sig in _limb_leads(8).items() if lead in ("I", "II", "III")}
    read["III"] = read["III"].copy()
    read["III"][100:120] += 1.0
    out, counts = replace_limb_outliers(read)
    assert counts == {} and out["III"] is read["III"]
    # ... nor can six when two of them are off at the same samples.
    read = _limb_leads(9)
    for lead in ("aVL", "III"):
        read[lead] = read[lead].copy()
        read[lead][500:510] += 0.8
    out, counts = replace_limb_outliers(read)
    assert counts == {}
