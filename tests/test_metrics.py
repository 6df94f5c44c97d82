"""Metric definitions checked against values computed by hand on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ecgbridge.ecg import LEADS
from ecgbridge.report.metrics import (
    ErrorHistogram,
    mean_absolute_error,
    pearson_r,
    per_lead_means,
    resample_to_grid,
    root_mean_square_error,
    score_record,
    snr_db,
    summarise,
    window_indices,
    windows_from_manifest,
)


def _one_lead(ref: list[float], pred: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """12-lead arrays whose lead I is `ref` / `pred` and whose other leads are absent (NaN)."""
    r = np.full((12, len(ref)), np.nan)
    p = np.full((12, len(pred)), np.nan)
    r[0], p[0] = ref, pred
    return r, p


def test_snr_by_hand() -> None:
    # signal 1+1+4+0 = 6, noise (2-1)^2 = 1 -> 10 log10(6)
    assert snr_db(np.array([1.0, -1, 2, 0]), np.array([1.0, -1, 1, 0])) == pytest.approx(
        7.781512503836436, abs=1e-12
    )
    # signal 30, noise 1 (last sample off by 1) -> 10 log10(30)
    assert snr_db(np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 5])) == pytest.approx(
        14.771212547196624, abs=1e-12
    )
    # all-zero prediction: noise == signal -> 0 dB
    assert snr_db(np.array([3.0, -4]), np.zeros(2)) == 0.0


def test_snr_cap_and_empty_signal() -> None:
    x = np.array([0.5, -0.25, 1.0])
    assert snr_db(x, x) == 60.0
    assert snr_db(x, x, cap_db=30.0) == 30.0
    assert snr_db(x, x + 1e-9) == 60.0  # tiny error: capped
    assert math.isnan(snr_db(np.zeros(3), np.ones(3)))
    with pytest.raises(ValueError, match="shape"):
        snr_db(np.zeros(3), np.zeros(4))


def test_pearson_mae_rmse_by_hand() -> None:
    # deviations (-1, 0, 1) and (-7/3, -1/3, 8/3): r = 5 / sqrt(2 * 114/9)
    assert pearson_r(np.array([1.0, 2, 3]), np.array([2.0, 4, 7])) == pytest.approx(
        5 / math.sqrt(2 * 114 / 9), abs=1e-12
    )
    assert pearson_r(np.array([1.0, 2, 3]), np.array([5.0, 5, 5])) == 0.0
    assert pearson_r(np.array([1.0]), np.array([1.0])) == 0.0
    ref, pred = np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 5])
    assert mean_absolute_error(ref, pred) == 0.25
    assert root_mean_square_error(ref, pred) == 0.5


def test_record_strict_metrics_count_nan_as_zero() -> None:
    ref, pred = _one_lead([1.0, 1, 1, 1], [1.0, np.nan, 1, 1])
    windows = [np.arange(4)] + [np.zeros(0, dtype=int)] * 11
    score = score_record(ref, pred, fs=10.0, windows=windows, max_shift_s=0.0)
    lead = score.lead("I")
    # pred becomes [1, 0, 1, 1]: signal 4, noise 1 -> 10 log10(4)
    assert lead.snr_db == pytest.approx(6.020599913279624, abs=1e-12)
    assert lead.mae_mv == 0.25
    assert lead.rmse_mv == 0.5
    assert lead.predicted
    assert score.leads_scored == 1
    assert score.snr_db == lead.snr_db  # mean over the one scored lead


def test_aligned_offset_removal_by_hand() -> None:
    # no shift allowed; offset mean(ref - pred) = -0.25 -> errors .25 .25 .25 -.75
    # noise 3 * 0.0625 + 0.5625 = 0.75, signal 30 -> 10 log10(40)
    ref, pred = _one_lead([1.0, 2, 3, 4], [1.0, 2, 3, 5])
    score = score_record(ref, pred, fs=10.0, max_shift_s=0.0)
    lead = score.lead("I")
    assert lead.snr_db == pytest.approx(10 * math.log10(30), abs=1e-12)
    assert lead.aligned_snr_db == pytest.approx(10 * math.log10(40), abs=1e-12)
    assert lead.offset_mv == pytest.approx(-0.25)
    assert score.shift_s == 0.0


def test_aligned_shift_finds_lag_and_offset() -> None:
    truth = [0.0, 1, 0, -1, 0, 1, 0, -1]
    # prediction lags the truth by one sample and is 0.5 mV too high
    lagged = [np.nan] + [v + 0.5 for v in truth[:-1]]
    ref, pred = _one_lead(truth, lagged)
    windows = [np.arange(8)] + [np.zeros(0, dtype=int)] * 11
    score = score_record(ref, pred, fs=10.0, windows=windows, max_shift_s=0.1)
    lead = score.lead("I")
    assert score.shift_s == pytest.approx(0.1)  # positive = prediction lags
    assert lead.aligned_snr_db == 60.0  # exact after shift + offset
    assert lead.offset_mv == pytest.approx(-0.5)
    # strict: pred NaN->0 gives [0, .5, 1.5, .5, -.5, .5, 1.5, .5]; errors squared:
    # 0, .25, 2.25, 2.25, .25, .25, 2.25, 2.25 -> 9.75; signal 4 -> 10 log10(4 / 9.75)
    assert lead.snr_db == pytest.approx(-3.8694462437057444, abs=1e-12)


def test_shift_uses_only_pairs_inside_the_record() -> None:
    # at k = +1 the last truth sample has no partner and is dropped from both sums
    ref, pred = _one_lead([1.0, 2, 3], [9.0, 1, 2])
    score = score_record(ref, pred, fs=1.0, windows=[np.arange(3)] + [np.zeros(0, int)] * 11,
                         max_shift_s=1.0)
    assert score.shift_s == 1.0
    assert score.lead("I").aligned_snr_db == 60.0


def test_unscorable_leads_are_left_out() -> None:
    ref = np.zeros((12, 4))
    ref[0] = [1.0, 2, 3, 4]
    ref[2] = [1.0, np.nan, 1, 1]  # NaN in the reference
    pred = ref.copy()
    pred[2] = 1.0
    windows = windows_from_manifest({"I": [0, 4], "II": [0, 4], "III": [0, 4]}, 4)
    score = score_record(ref, pred, fs=10.0, windows=windows)
    assert [s.lead for s in score.leads if s.scored] == ["I"]  # II all zero, III NaN, rest empty
    assert score.snr_db == 60.0
    assert score.leads_scored == 1
    assert math.isnan(score.lead("aVR").snr_db)


def test_default_windows_are_where_prediction_is_defined() -> None:
    ref, pred = _one_lead([1.0, 1, 2, 2], [np.nan, np.nan, 2, 2])
    score = score_record(ref, pred, fs=10.0, max_shift_s=0.0)
    assert score.lead("I").n_samples == 2
    assert score.lead("I").snr_db == 60.0
    assert not score.lead("II").scored


def test_window_indices() -> None:
    assert window_indices([2, 5], 10).tolist() == [2, 3, 4]
    assert window_indices([[0, 2], [4, 6]], 10).tolist() == [0, 1, 4, 5]
    assert window_indices([[3, 6], [4, 8]], 7).tolist() == [3, 4, 5, 6]  # merged and clipped
    assert window_indices(None, 10).size == 0
    with pytest.raises(ValueError, match="start, end"):
        window_indices([[1, 2, 3]], 10)


def test_resample_to_grid_interpolates_linearly() -> None:
    ramp = np.arange(5, dtype=float)[None, :]  # 0..4 at 2 Hz: times 0, .5, 1, 1.5, 2
    out = resample_to_grid(ramp, fs=2.0, n_samples=6, fs_reference=4.0)
    # reference times 0, .25, ..., 1.25 -> values 0, .5, 1, 1.5, 2, 2.5
    assert out[0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    beyond = resample_to_grid(ramp, fs=2.0, n_samples=12, fs_reference=4.0)
    assert np.isnan(beyond[0, 9:]).all() and beyond[0, 8] == 4.0  # past t = 2 s: NaN
    gap = np.array([[0.0, np.nan, 2.0]])
    out = resample_to_grid(gap, fs=1.0, n_samples=5, fs_reference=2.0)
    assert out[0, 0] == 0.0 and np.isnan(out[0, 1:4]).all() and out[0, 4] == 2.0
    same = np.array([[1.0, 2.0]])
    assert resample_to_grid(same, 5.0, 2, 5.0).tolist() == [[1.0, 2.0]]


def test_error_histogram_counts_and_moments() -> None:
    h = ErrorHistogram(limit_mv=1.0, n_bins=4)
    h.add(np.array([-0.75, -0.25, 0.25, 0.75, 5.0, np.nan]))
    assert h.counts.tolist() == [1, 1, 1, 2]  # 5.0 goes to the last bin, NaN ignored
    assert h.total == 5
    assert h.mean_mv == pytest.approx(1.0)
    assert h.std_mv == pytest.approx(math.sqrt((0.5625 * 2 + 0.0625 * 2 + 25) / 5 - 1.0))


def test_summary_and_per_lead_means() -> None:
    ref, pred = _one_lead([1.0, 2, 3, 4], [1.0, 2, 3, 5])
    a = score_record(ref, pred, fs=10.0, max_shift_s=0.0)
    b = score_record(ref, ref, fs=10.0, max_shift_s=0.0)
    s = summarise([a, b])
    assert s["snr_db"] == pytest.approx((10 * math.log10(30) + 60.0) / 2)
    assert s["records"] == 2
    mae = per_lead_means([a, b], "mae_mv")
    assert mae["I"] == pytest.approx(0.125)
    assert set(mae) == set(LEADS) and math.isnan(mae["II"])
    with pytest.raises(ValueError, match="unknown metric"):
        per_lead_means([a], "accuracy")


def _brute_force_aligned(ref: np.ndarray, pred: np.ndarray, windows: list[np.ndarray],
                         max_shift: int, cap: float = 60.0) -> tuple[list[float], int]:
    """The aligned SNR written out literally, one shift and one lead at a time."""
    n = ref.shape[1]
    best: tuple[float, list[float], int] = (-math.inf, [], 0)
    for k in sorted(range(-max_shift, max_shift + 1), key=lambda v: (abs(v), v)):
        values = []
        for j in range(ref.shape[0]):
            idx = windows[j]
            if idx.size == 0 or np.all(ref[j, idx] == 0):
                values.append(math.nan)
                continue
            pairs = [(i, i + k) for i in idx if 0 <= i + k < n]
            g = np.array([ref[j, i] for i, _ in pairs])
            p = np.array([pred[j, m] for _, m in pairs])
            fin = np.isfinite(p)
            q = np.where(fin, p, 0.0)
            if fin.any():
                q = np.where(fin, q + np.mean(g[fin] - p[fin]), 0.0)
            values.append(snr_db(g, q, cap) if g.size else math.nan)
        finite = [v for v in values if math.isfinite(v)]
        score = float(np.mean(finite)) if finite else -math.inf
        if score > best[0] + 1e-12:
            best = (score, values, k)
    return best[1], best[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_shift_search_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, lag = 300, int(rng.integers(-15, 16))
    t = np.arange(n)
    ref = np.stack([np.sin(t / (5 + j)) + 0.3 * np.sin(t / (1.7 + 0.1 * j)) for j in range(12)])
    pred = np.roll(ref, lag, axis=1) + rng.normal(0, 0.2, ref.shape) + rng.normal(0, 0.5, (12, 1))
    pred[rng.random(pred.shape) < 0.05] = np.nan  # scattered undefined samples
    pred[3] = np.nan  # one lead not predicted
    windows = [np.arange(25 * (j % 4), 25 * (j % 4) + 150) for j in range(12)]
    windows[5] = np.zeros(0, dtype=int)  # one lead not shown
    score = score_record(ref, pred, fs=100.0, windows=windows, max_shift_s=0.2)
    expected, k = _brute_force_aligned(ref, pred, windows, max_shift=20)
    assert score.shift_s == pytest.approx(k / 100.0)
    got = [s.aligned_snr_db for s in score.leads]
    assert got == pytest.approx(expected, abs=1e-9, nan_ok=True)
