"""Accuracy of a digitized ECG against its reference: SNR, Pearson r, MAE, RMSE.

Pure numpy (no plotting). The definitions follow the project's independent scorer
(``shared/eval/score.py``) exactly:

* Every metric is computed per lead over that lead's *scored samples*: the visible
  window(s) of a set manifest, or else the samples where the prediction is defined.
* The prediction is first linearly interpolated onto the reference's time grid
  ``t = n / fs_ref`` (:func:`resample_to_grid`); NaN propagates to neighbouring
  interpolated samples and times beyond the prediction's extent are NaN.
* Strict metrics count NaN prediction samples as 0 mV. ``snr_db`` is
  ``10 log10(sum(ref^2) / sum((ref - pred)^2))`` capped at ``cap_db`` (60 dB).
* The aligned SNR allows one time shift ``k`` per record, in whole reference samples within
  ``±max_shift_s`` (reference sample n is compared with prediction sample n + k, pairs outside
  the record are dropped), and per lead removes the mean offset ``mean(ref - pred)`` over the
  compared samples where the prediction is finite. The k maximising the record's mean capped
  lead SNR is chosen (ties: smallest |k|, then the negative one) and reported as ``shift_s``
  (positive = the prediction lags the reference).
* A lead whose scored reference samples are empty, all zero or contain NaN is left out of the
  record's means. Record values are means over the scored leads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgbridge.ecg import LEADS

#: Upper limit of every SNR value, in dB (a perfect prediction scores this).
DEFAULT_SNR_CAP_DB: float = 60.0

#: Largest time shift the aligned SNR may apply, in seconds.
DEFAULT_MAX_SHIFT_S: float = 0.2

#: Metric names, in the order tables list them.
METRIC_NAMES: tuple[str, ...] = ("snr_db", "aligned_snr_db", "pearson", "mae_mv", "rmse_mv")

#: Tolerance (s) when deciding whether a reference time lies inside the prediction's extent.
_TIME_EPS = 1e-9

#: Shifts evaluated together in one vectorised block (bounds memory on long records).
_SHIFT_BLOCK = 64

#: Up to this many samples of shift every shift is scored exactly (no FFT pre-selection).
_EXACT_SHIFTS_UP_TO = 8

#: Shifts whose FFT-estimated mean SNR is this close to the best are re-scored exactly.
_CANDIDATE_MARGIN_DB = 1e-3

Window = Sequence[float] | Sequence[Sequence[float]] | None


# --------------------------------------------------------------------------- single metrics
def snr_db(reference: np.ndarray, prediction: np.ndarray, cap_db: float = DEFAULT_SNR_CAP_DB
           ) -> float:
    """Signal-to-noise ratio of a prediction in dB, capped at `cap_db`.

    Parameters
    ----------
    reference, prediction : numpy.ndarray
        Same-length 1-D arrays in mV; `prediction` must already be finite (NaN -> 0).
    cap_db : float
        Value returned when the error vanishes, and upper limit otherwise.

    Returns
    -------
    float
        ``min(cap_db, 10 log10(sum(ref^2) / sum((ref - pred)^2)))``; NaN when the reference
        has no power.
    """
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(prediction, dtype=np.float64)
    if ref.shape != pred.shape:
        raise ValueError(f"snr_db: reference shape {ref.shape} != prediction shape {pred.shape}")
    signal_power = float(np.sum(ref**2))
    noise_power = float(np.sum((ref - pred) ** 2))
    if signal_power == 0:
        return math.nan
    if noise_power == 0:
        return cap_db
    return min(cap_db, 10.0 * math.log10(signal_power / noise_power))


def pearson_r(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant or shorter than 2 samples."""
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(prediction, dtype=np.float64)
    if ref.size < 2 or np.std(ref) == 0 or np.std(pred) == 0:
        return 0.0
    return float(np.corrcoef(ref, pred)[0, 1])


def mean_absolute_error(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Mean absolute difference in mV (NaN for empty input)."""
    diff = np.asarray(reference, dtype=np.float64) - np.asarray(prediction, dtype=np.float64)
    return float(np.mean(np.abs(diff))) if diff.size else math.nan


def root_mean_square_error(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Root-mean-square difference in mV (NaN for empty input)."""
    diff = np.asarray(reference, dtype=np.float64) - np.asarray(prediction, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2))) if diff.size else math.nan


# --------------------------------------------------------------------------- windows & grids
def window_indices(window: Window, n_samples: int) -> np.ndarray:
    """Sample indices of a lead's visible window(s), clipped to ``[0, n_samples)``.

    Parameters
    ----------
    window : sequence or None
        ``[start, end)`` or a list of such pairs, in reference samples (as in a set
        manifest's ``windows``); None means the lead is not shown.
    n_samples : int
        Length of the reference record.

    Returns
    -------
    numpy.ndarray
        Sorted unique int indices.
    """
    if window is None:
        return np.zeros(0, dtype=np.int64)
    pairs: list[Sequence[float]]
    if len(window) == 2 and all(isinstance(x, int | float) for x in window):
        pairs = [window]  # type: ignore[list-item]
    else:
        pairs = list(window)  # type: ignore[arg-type]
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"a window must be [start, end) in samples, got {list(pair)!r}")
    parts = [np.arange(max(0, int(s)), min(n_samples, int(e))) for s, e in pairs]
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(parts)).astype(np.int64)


def windows_from_manifest(windows: dict[str, Window], n_samples: int) -> list[np.ndarray]:
    """Per-lead scored indices (order of :data:`~ecgbridge.ecg.LEADS`) from a manifest entry."""
    return [window_indices(windows.get(lead), n_samples) for lead in LEADS]


def windows_where_defined(prediction: np.ndarray) -> list[np.ndarray]:
    """Per-lead indices where the (grid-aligned) prediction is finite."""
    return [np.flatnonzero(np.isfinite(row)) for row in np.asarray(prediction)]


def resample_to_grid(
    values: np.ndarray,
    fs: float,
    n_samples: int,
    fs_reference: float,
    start_s: float = 0.0,
) -> np.ndarray:
    """Linearly interpolate a prediction onto the reference grid ``t = i / fs_reference``.

    Parameters
    ----------
    values : numpy.ndarray
        ``(leads, m)`` prediction in mV, NaN where undefined.
    fs : float
        Prediction sampling rate in Hz.
    n_samples : int
        Length of the reference grid.
    fs_reference : float
        Reference sampling rate in Hz.
    start_s : float
        Time of the prediction's first sample.

    Returns
    -------
    numpy.ndarray
        ``(leads, n_samples)``; NaN beyond the prediction's extent and next to NaN samples.
    """
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 2:
        raise ValueError(f"resample_to_grid: values must be (leads, samples), got {vals.shape}")
    if not (fs > 0 and fs_reference > 0):
        raise ValueError(
            f"resample_to_grid: sampling rates must be positive, got {fs} and {fs_reference}"
        )
    out = np.full((vals.shape[0], n_samples), np.nan)
    m = vals.shape[1]
    if m == 0:
        return out
    t = np.arange(n_samples) / fs_reference
    times = start_s + np.arange(m) / fs
    if m == n_samples and np.allclose(times, t, atol=_TIME_EPS):
        return vals.copy()
    inside = (t >= times[0] - _TIME_EPS) & (t <= times[-1] + _TIME_EPS)
    for j, row in enumerate(vals):
        if np.isnan(row).all():
            continue
        out[j, inside] = np.interp(t[inside], times, row)
    return out


# --------------------------------------------------------------------------- record scores
@dataclass(frozen=True)
class LeadScore:
    """Metrics of one lead of one record (NaN when the lead is not scored).

    Attributes
    ----------
    lead : str
        Lead name.
    snr_db, aligned_snr_db, pearson, mae_mv, rmse_mv : float
        See the module docstring.
    offset_mv : float
        Offset added to the prediction for the aligned SNR, at the chosen shift.
    n_samples : int
        Number of scored reference samples.
    predicted : bool
        True when the prediction has at least one finite sample there.
    """

    lead: str
    snr_db: float = math.nan
    aligned_snr_db: float = math.nan
    pearson: float = math.nan
    mae_mv: float = math.nan
    rmse_mv: float = math.nan
    offset_mv: float = math.nan
    n_samples: int = 0
    predicted: bool = False

    @property
    def scored(self) -> bool:
        """True when the lead counts in the record's means."""
        return math.isfinite(self.snr_db)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN as None)."""
        return {
            "lead": self.lead,
            **{name: _none_if_nan(getattr(self, name)) for name in METRIC_NAMES},
            "offset_mv": _none_if_nan(self.offset_mv),
            "n_samples": self.n_samples,
            "predicted": self.predicted,
        }


@dataclass(frozen=True)
class RecordScore:
    """Metrics of one record: per lead, and the means over the scored leads.

    Attributes
    ----------
    leads : tuple of LeadScore
        One per lead, in :data:`~ecgbridge.ecg.LEADS` order.
    shift_s : float
        Time shift chosen by the aligned SNR (positive = prediction lags the reference).
    """

    leads: tuple[LeadScore, ...]
    shift_s: float = 0.0
    means: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        means = {}
        for name in METRIC_NAMES:
            values = [getattr(s, name) for s in self.leads if s.scored]
            finite = [v for v in values if math.isfinite(v)]
            means[name] = float(np.mean(finite)) if finite else math.nan
        object.__setattr__(self, "means", means)

    @property
    def snr_db(self) -> float:
        """Mean strict SNR over the scored leads."""
        return self.means["snr_db"]

    @property
    def aligned_snr_db(self) -> float:
        """Mean aligned SNR over the scored leads."""
        return self.means["aligned_snr_db"]

    @property
    def leads_scored(self) -> int:
        """Number of leads that count in the means."""
        return sum(1 for s in self.leads if s.scored)

    @property
    def leads_predicted(self) -> int:
        """Number of scored leads with at least one finite predicted sample."""
        return sum(1 for s in self.leads if s.scored and s.predicted)

    def lead(self, name: str) -> LeadScore:
        """Score of one lead by name."""
        for s in self.leads:
            if s.lead == name:
                return s
        raise KeyError(f"no lead {name!r} in this record score")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN as None)."""
        return {
            **{name: _none_if_nan(v) for name, v in self.means.items()},
            "shift_s": self.shift_s,
            "leads_scored": self.leads_scored,
            "leads_predicted": self.leads_predicted,
            "leads": {s.lead: s.to_dict() for s in self.leads},
        }


def score_record(
    reference: np.ndarray,
    prediction: np.ndarray,
    fs: float,
    windows: Sequence[np.ndarray] | None = None,
    *,
    cap_db: float = DEFAULT_SNR_CAP_DB,
    max_shift_s: float = DEFAULT_MAX_SHIFT_S,
    lead_names: Sequence[str] = LEADS,
) -> RecordScore:
    """Score a prediction that is already on the reference's time grid.

    Parameters
    ----------
    reference : numpy.ndarray
        ``(leads, n)`` reference in mV (NaN for leads the reference lacks).
    prediction : numpy.ndarray
        ``(leads, n)`` prediction in mV on the same grid (see :func:`resample_to_grid`),
        NaN where undefined.
    fs : float
        Sampling rate of both, Hz (converts `max_shift_s` to samples and the shift back).
    windows : sequence of numpy.ndarray, optional
        Scored sample indices per lead; default: where the prediction is finite.
    cap_db : float
        SNR cap in dB.
    max_shift_s : float
        Largest shift of the aligned SNR in seconds (0 disables shifting).
    lead_names : sequence of str
        Names of the rows.

    Returns
    -------
    RecordScore
    """
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(prediction, dtype=np.float64)
    if ref.shape != pred.shape or ref.ndim != 2:
        raise ValueError(
            f"score_record: reference {ref.shape} and prediction {pred.shape} must be the "
            "same (leads, samples) shape; resample the prediction first"
        )
    if len(lead_names) != ref.shape[0]:
        raise ValueError(f"score_record: {len(lead_names)} lead names for {ref.shape[0]} rows")
    if windows is None:
        windows = windows_where_defined(pred)
    if len(windows) != ref.shape[0]:
        raise ValueError(f"score_record: {len(windows)} windows for {ref.shape[0]} leads")
    idxs = [np.asarray(w, dtype=np.int64) for w in windows]
    usable = [_lead_is_scorable(ref[j], idxs[j]) for j in range(ref.shape[0])]
    max_shift = int(round(max_shift_s * fs))
    aligned, offsets, k = _best_aligned_shift(ref, pred, idxs, usable, max_shift, cap_db)

    pred0 = np.where(np.isfinite(pred), pred, 0.0)
    scores = []
    for j, name in enumerate(lead_names):
        if not usable[j]:
            scores.append(LeadScore(lead=name, n_samples=int(idxs[j].size)))
            continue
        g, p = ref[j, idxs[j]], pred0[j, idxs[j]]
        scores.append(
            LeadScore(
                lead=name,
                snr_db=snr_db(g, p, cap_db),
                aligned_snr_db=float(aligned[j]),
                pearson=pearson_r(g, p),
                mae_mv=mean_absolute_error(g, p),
                rmse_mv=root_mean_square_error(g, p),
                offset_mv=float(offsets[j]),
                n_samples=int(idxs[j].size),
                predicted=bool(np.isfinite(pred[j, idxs[j]]).any()),
            )
        )
    return RecordScore(leads=tuple(scores), shift_s=k / fs)


def _lead_is_scorable(ref_row: np.ndarray, idx: np.ndarray) -> bool:
    if idx.size == 0:
        return False
    g = ref_row[idx]
    return bool(np.isfinite(g).all() and np.any(g != 0))


def _shift_order(max_shift: int) -> list[int]:
    return sorted(range(-max_shift, max_shift + 1), key=lambda v: (abs(v), v))


def _best_aligned_shift(
    ref: np.ndarray,
    pred: np.ndarray,
    idxs: Sequence[np.ndarray],
    usable: Sequence[bool],
    max_shift: int,
    cap_db: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Return (per-lead aligned SNR, per-lead offset, k) at the best shift k.

    Every shift is first scored quickly with FFT cross-correlations (:func:`_approx_lead`);
    the shifts within :data:`_CANDIDATE_MARGIN_DB` of the best are then scored exactly
    (:func:`_aligned_lead`) and the tie rule is applied to those exact values, so the result
    is the exhaustive search's.
    """
    n_leads, n = ref.shape
    shifts = np.arange(-max_shift, max_shift + 1)
    leads = [j for j in range(n_leads) if usable[j]]
    if max_shift > _EXACT_SHIFTS_UP_TO and leads:
        approx = np.full((shifts.size, n_leads), np.nan)
        for j in leads:
            approx[:, j] = _approx_lead(ref[j], pred[j], idxs[j], max_shift, n, cap_db)
        means = _nanmean_rows(approx)
        best = np.max(means)
        candidates = shifts[means >= best - _CANDIDATE_MARGIN_DB] if np.isfinite(best) else \
            shifts[:1] * 0
    else:
        candidates = shifts
    snr = np.full((candidates.size, n_leads), np.nan)
    off = np.full((candidates.size, n_leads), np.nan)
    for j in leads:
        snr[:, j], off[:, j] = _aligned_lead(ref[j], pred[j], idxs[j], candidates, n, cap_db)
    position = {int(k): i for i, k in enumerate(candidates)}
    best_score, best_k = -math.inf, 0
    for k in _shift_order(max_shift):
        if k not in position:
            continue
        row = snr[position[k]]
        finite = row[np.isfinite(row)]
        score = float(np.mean(finite)) if finite.size else -math.inf
        if score > best_score + 1e-12:
            best_score, best_k = score, k
    if best_k not in position:  # nothing scorable: report k = 0 like the exhaustive search
        return np.full(n_leads, np.nan), np.full(n_leads, np.nan), 0
    return snr[position[best_k]], off[position[best_k]], best_k


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    sums = np.where(finite, values, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)


def _approx_lead(
    ref_row: np.ndarray,
    pred_row: np.ndarray,
    idx: np.ndarray,
    max_shift: int,
    n: int,
    cap_db: float,
) -> np.ndarray:
    """Aligned SNR of one lead for every shift -K..K via FFT cross-correlations.

    With window mask w, reference g, finite-mask f and prediction p (0 where not finite),
    each sum over the compared pairs ``(i, i + k)`` is a cross-correlation; the offset-removed
    noise is ``D2 - F off^2 + (S - G)`` with ``F = sum w f``, ``D1 = sum w f (g - p)``,
    ``off = D1 / F``, ``D2 = sum w f (g - p)^2``, ``S = sum w g^2`` over the pairs inside the
    record and ``G = sum w g^2 f``.
    """
    from scipy.signal import correlate

    lo, hi = int(idx[0]), int(idx[-1]) + 1
    w = np.zeros(hi - lo)
    w[idx - lo] = 1.0
    g = np.where(w > 0, np.nan_to_num(ref_row[lo:hi]), 0.0)
    finite = np.isfinite(pred_row)
    inside = np.zeros(n + 2 * max_shift)
    inside[max_shift : max_shift + n] = 1.0
    f = np.zeros(n + 2 * max_shift)
    f[max_shift : max_shift + n] = finite
    p = np.zeros(n + 2 * max_shift)
    p[max_shift : max_shift + n] = np.where(finite, pred_row, 0.0)

    def corr(b: np.ndarray, a: np.ndarray) -> np.ndarray:
        # out[k + K] = sum_i a[i] * b[i + k] over the window span, k = -K..K
        return np.asarray(correlate(b[lo : hi + 2 * max_shift], a, mode="valid", method="fft"))

    g2 = g * g
    count = corr(inside, w)
    signal = corr(inside, g2)
    n_fin = np.rint(corr(f, w))
    g2_fin = corr(f, g2)
    d1 = corr(f, g) - corr(p, w)
    d2 = g2_fin - 2.0 * corr(p, g) + corr(p * p, w)
    off = np.where(n_fin > 0, d1 / np.maximum(n_fin, 1.0), 0.0)
    noise = np.maximum(d2 - n_fin * off * off, 0.0) + np.maximum(signal - g2_fin, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.minimum(cap_db, 10.0 * np.log10(signal / noise))
    value = np.where(noise <= 0, cap_db, value)
    return np.where((signal <= 0) | (np.rint(count) == 0), np.nan, value)


def _aligned_lead(
    ref_row: np.ndarray,
    pred_row: np.ndarray,
    idx: np.ndarray,
    shifts: np.ndarray,
    n: int,
    cap_db: float,
) -> tuple[np.ndarray, np.ndarray]:
    """SNR and offset of one lead for every shift (vectorised in blocks of shifts)."""
    snr = np.empty(shifts.size)
    offset = np.empty(shifts.size)
    g = ref_row[idx][None, :]
    for start in range(0, shifts.size, _SHIFT_BLOCK):
        ks = shifts[start : start + _SHIFT_BLOCK]
        m = idx[None, :] + ks[:, None]
        inside = (m >= 0) & (m < n)
        p = pred_row[np.clip(m, 0, n - 1)]
        finite = inside & np.isfinite(p)
        p = np.where(finite, p, 0.0)
        n_finite = finite.sum(axis=1)
        off = np.where(
            n_finite > 0, np.sum(np.where(finite, g - p, 0.0), axis=1) / np.maximum(n_finite, 1),
            0.0,
        )
        p = np.where(finite, p + off[:, None], 0.0)
        signal = np.sum(np.where(inside, g**2, 0.0), axis=1)
        noise = np.sum(np.where(inside, (g - p) ** 2, 0.0), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.minimum(cap_db, 10.0 * np.log10(signal / noise))
        value = np.where(noise == 0, cap_db, value)
        value = np.where((signal == 0) | (inside.sum(axis=1) == 0), np.nan, value)
        snr[start : start + ks.size] = value
        offset[start : start + ks.size] = off
    return snr, offset


# --------------------------------------------------------------------------- set level
@dataclass
class ErrorHistogram:
    """Streaming histogram of prediction − reference errors (mV), for thousands of records.

    Errors beyond ``±limit_mv`` are counted in the outermost bins.
    """

    limit_mv: float = 2.0
    n_bins: int = 200
    counts: np.ndarray = field(init=False)
    total: int = field(init=False, default=0)
    sum_mv: float = field(init=False, default=0.0)
    sum_sq_mv: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not (self.limit_mv > 0 and self.n_bins > 0):
            raise ValueError(f"ErrorHistogram needs limit_mv > 0 and n_bins > 0, got "
                             f"{self.limit_mv}, {self.n_bins}")
        self.counts = np.zeros(self.n_bins, dtype=np.int64)

    @property
    def edges(self) -> np.ndarray:
        """Bin edges in mV."""
        return np.linspace(-self.limit_mv, self.limit_mv, self.n_bins + 1)

    def add(self, errors: np.ndarray) -> None:
        """Count finite error values."""
        e = np.asarray(errors, dtype=np.float64).ravel()
        e = e[np.isfinite(e)]
        if e.size == 0:
            return
        clipped = np.clip(e, -self.limit_mv, self.limit_mv)
        self.counts += np.histogram(clipped, bins=self.edges)[0]
        self.total += int(e.size)
        self.sum_mv += float(e.sum())
        self.sum_sq_mv += float((e**2).sum())

    def add_record(self, reference: np.ndarray, prediction: np.ndarray,
                   windows: Sequence[np.ndarray]) -> None:
        """Count the errors of one record's scored samples where the prediction is finite."""
        for j, idx in enumerate(windows):
            if idx.size:
                diff = prediction[j, idx] - reference[j, idx]
                self.add(diff)

    @property
    def mean_mv(self) -> float:
        """Mean error (bias) in mV."""
        return self.sum_mv / self.total if self.total else math.nan

    @property
    def std_mv(self) -> float:
        """Standard deviation of the error in mV."""
        if not self.total:
            return math.nan
        return math.sqrt(max(0.0, self.sum_sq_mv / self.total - self.mean_mv**2))


def summarise(scores: Iterable[RecordScore]) -> dict[str, float]:
    """Set-level values: mean over records of each record mean (records without any scored lead
    are left out), plus ``records`` and ``leads_scored``."""
    scores = list(scores)
    out: dict[str, float] = {}
    for name in METRIC_NAMES:
        values = [s.means[name] for s in scores if math.isfinite(s.means[name])]
        out[name] = float(np.mean(values)) if values else math.nan
    out["records"] = float(len(scores))
    out["leads_scored"] = float(sum(s.leads_scored for s in scores))
    return out


def per_lead_means(scores: Iterable[RecordScore], metric: str) -> dict[str, float]:
    """Mean of one metric per lead over the records where that lead was scored."""
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRIC_NAMES)}")
    values: dict[str, list[float]] = {}
    for s in scores:
        for ls in s.leads:
            v = getattr(ls, metric)
            if ls.scored and math.isfinite(v):
                values.setdefault(ls.lead, []).append(v)
    return {lead: float(np.mean(values[lead])) if lead in values else math.nan for lead in LEADS}


def _none_if_nan(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)
