"""Per-lead quality: how far a digitized lead can be trusted, from evidence on the page.

The contract (README, "Per-lead quality"): **quality < 0.5 means "do not trust this
lead"**.
Quality is a logistic model of the evidence a reading leaves behind, none of which
needs the truth:

- how much of the lead's printed panel was traced (coverage) and how sure the lead's
  name is (its label read; a lead named from the layout, its label unread, is
  lowered by a fixed factor);
- how the page was calibrated (a pulse found, or the standard gain assumed) and read
  (classical or learned engine);
- whether the limb leads keep Einthoven's and Goldberger's laws, for the page and for
  the relation the lead takes part in;
- whether the trace looks like an ECG: its amplitude, jumps no pen draws, a baseline
  that steps (a trace that strayed into its neighbour's row for a while; a slow
  wander does not count), excursions far beyond its own range, and how well its
  beats repeat at the page's beat period;
- whether its beats fall when the other leads' beats do (one heart drives them all);
- whether a chest lead resembles the chest leads beside it (V2 is between V1 and V3);
- how finely the page was scanned, and how many leads could be read.

The weights were fitted on the training pages (``tools/fit_quality.py``: damaged
renders of records outside the evaluation sets) to tell leads whose aligned SNR is
under 5 dB from the others, and the bias set so that the 0.5 threshold catches 90 % of
those leads on training pages the model was not fitted on (five folds of pages). It
then flags 39.6 % of the other leads there: many good leads are flagged, the price of
catching nine bad leads in ten on damaged pages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from scipy.ndimage import median_filter

from ecgbridge.digitizer.beat_timing import beat_envelope
from ecgbridge.digitizer.consistency import limb_lead_residual, relation_residual
from ecgbridge.ecg import LEADS, Calibration, PanelInfo

#: Names of the evidence, in the order of :data:`WEIGHTS`.
FEATURES = (
    "prior", "coverage", "gain_assumed", "learned_engine", "page_residual", "lead_residual",
    "log_amplitude", "jumps", "beat_repeat", "baseline_step", "excursion", "neighbour_r",
    "log_px_per_mm", "leads_read", "beat_sync",
)
#: Logistic weights of the standardised evidence (fitted, see the module docstring).
WEIGHTS = (
    0.0119, 0.8052, 0.1108, 0.3958, -0.3497, -0.6513, -0.2022,
    -0.2535, 0.1675, -0.0741, -0.3305, 0.2405, 0.2269, 0.1759,
    0.5966,
)
#: Means and standard deviations that standardise the evidence.
FEATURE_MEAN = (
    0.6795, 0.9878, 0.2779, 0.6959, 0.3018, 0.3011, -0.0872,
    0.0017, 0.5812, 0.2493, 0.8883, 0.7640, 1.6910, 11.9075,
    0.8827,
)
FEATURE_STD = (
    0.2673, 0.0796, 0.4480, 0.4600, 0.4249, 0.4348, 0.2789,
    0.0049, 0.2894, 0.3569, 0.3320, 0.2364, 0.2414, 0.5523,
    0.1534,
)
#: Bias of the logistic model.
BIAS = -0.3994

#: Quality of a lead whose name is a guess (no label read), relative to a labelled
#: one: a lead named wrongly is a wrong lead however well it was traced.
INFERRED_LAYOUT_FACTOR = 0.8
#: The reading's own score of a lead is at most this when no label named it: half its
#: traced share for a lead named from the standard layout, 0.3 of it on a page whose
#: layout was inferred from its rows (a label read scores above one half).
GUESSED_NAME_PRIOR = 0.5
#: Standardised evidence is clipped to this many standard deviations.
_MAX_STANDARD_SCORE = 4.0
#: A residual that cannot be measured counts as this (unrelated traces give ~1.73).
_UNKNOWN_RESIDUAL = 1.0
#: Per-sample steps larger than this (mV, at any rate scaled to 500 Hz) are jumps.
_JUMP_MV_AT_500HZ = 0.3
#: Window (s) of the moving mean taken as a trace's own baseline (longer than a QRS).
_BASELINE_WINDOW_S = 0.6
#: Window (s) of the moving median that follows a trace's baseline under its QRS.
_MEDIAN_WINDOW_S = 0.4
#: A baseline step is the change of that median over this time (s).
_STEP_S = 0.5
#: Beat periods (s) searched for the page's heart rate: 37 to 180 beats per minute.
_BEAT_PERIOD_S = (0.33, 1.6)
#: A lead's own period may differ from the page's by this much (s).
_PERIOD_TOLERANCE_S = 0.01
#: A beat period is searched only over overlaps of at least this (s).
_MIN_OVERLAP_S = 0.5
#: The chest leads printed beside each chest lead.
_NEIGHBOURS = {"V1": ("V2",), "V2": ("V1", "V3"), "V3": ("V2", "V4"), "V4": ("V3", "V5"),
               "V5": ("V4", "V6"), "V6": ("V5",)}
#: Lag (s) allowed between a lead's beats and the other leads' (imprecise timing).
_SYNC_LAG_S = 0.02
#: Samples two leads must share for their resemblance to be measured.
_MIN_SHARED_SAMPLES = 200
#: The relation each limb lead takes part in: (plus, minus).
_RELATIONS = {
    **{lead: (("I", "III"), ("II",)) for lead in ("I", "II", "III")},
    **{lead: (("aVR", "aVL", "aVF"), ()) for lead in ("aVR", "aVL", "aVF")},
}


def lead_evidence(signals: np.ndarray, fs: float, prior: Sequence[float],
                  panels: Sequence[PanelInfo], calibration: Calibration) -> np.ndarray:
    """The evidence on each lead, as a (12, len(FEATURES)) array (rows in LEADS order).

    Parameters
    ----------
    signals : numpy.ndarray
        (12, n) samples in mV, NaN where not read.
    fs : float
        Sampling rate (Hz).
    prior : sequence of float
        The reading's own per-lead score: share of the panel traced, weighted by how
        sure its label is.
    panels : sequence of PanelInfo
        Where each lead was printed.
    calibration : Calibration
        How the page was read.
    """
    by_lead = {lead: signals[i] for i, lead in enumerate(LEADS) if np.isfinite(signals[i]).any()}
    page_residual = _residual_or_unknown(limb_lead_residual(by_lead))
    flat = {lead: _without_baseline(sig, fs) for lead, sig in by_lead.items()}
    repeat = beat_repeat(flat, fs)
    sync = beat_sync(by_lead, fs)
    px_per_mm = float(calibration.px_per_mm_x)
    log_px_per_mm = float(np.log(px_per_mm)) if px_per_mm > 0 else np.nan
    rows = []
    for i, lead in enumerate(LEADS):
        sig = signals[i]
        relation = _RELATIONS.get(lead)
        lead_residual = (_residual_or_unknown(relation_residual(by_lead, *relation))
                         if relation else page_residual)
        rows.append((
            float(prior[i]),
            _coverage(sig, fs, [p for p in panels if p.lead == lead]),
            float(calibration.gain_source == "default"),
            float(calibration.engine == "learned"),
            page_residual,
            lead_residual,
            *_shape(sig, fs),
            repeat.get(lead, np.nan),
            _baseline_step(sig, fs),
            _excursion(sig, flat.get(lead)),
            _neighbour_r(flat, lead),
            log_px_per_mm,
            float(len(by_lead)),
            sync.get(lead, np.nan),
        ))
    return np.asarray(rows, dtype=np.float64)


def lead_quality(evidence: np.ndarray) -> tuple[float, ...]:
    """Quality in [0, 1] of each lead from its evidence (:func:`lead_evidence`).

    A lead whose name is a guess (named from the layout the page's rows show, no
    label read for it: its ``prior`` is at most :data:`GUESSED_NAME_PRIOR`) is
    lowered by :data:`INFERRED_LAYOUT_FACTOR`.

    Parameters
    ----------
    evidence : numpy.ndarray
        (leads, len(FEATURES)) evidence; NaN where a feature could not be measured.

    Returns
    -------
    tuple of float
        One value per row of `evidence`; below 0.5: do not trust the lead.
    """
    # Evidence far outside what the fit saw counts as its edge (no extrapolation);
    # evidence that could not be measured (NaN) counts as the fit's average.
    z = np.clip((evidence - np.asarray(FEATURE_MEAN)) / np.asarray(FEATURE_STD),
                -_MAX_STANDARD_SCORE, _MAX_STANDARD_SCORE)
    z = np.where(np.isfinite(z), z, 0.0)
    logit = z @ np.asarray(WEIGHTS) + BIAS
    guessed = evidence[:, FEATURES.index("prior")] <= GUESSED_NAME_PRIOR
    factor = np.where(guessed, INFERRED_LAYOUT_FACTOR, 1.0)
    return tuple(float(v) for v in factor / (1.0 + np.exp(-logit)))


def reading_trust(signals: Mapping[str, np.ndarray], prior: Mapping[str, float],
                  panels: Sequence[PanelInfo], calibration: Calibration, fs: float) -> float:
    """How far one engine's reading of a page can be trusted, to compare two readings.

    The mean over the 12 leads of their quality (:func:`lead_quality`; 0 for a lead
    not read), judged as if the classical engine had read the page: the engine itself
    is evidence on a lead (the learned engine's leads are more often good), but not
    between two readings of the same page.

    Parameters
    ----------
    signals : mapping
        Lead -> samples (mV) of the reading.
    prior : mapping
        Lead -> the reading's own score of it (share traced, label certainty).
    panels : sequence of PanelInfo
        Where the reading found each lead.
    calibration : Calibration
        How the page was read.
    fs : float
        Sampling rate (Hz).

    Returns
    -------
    float
        In [0, 1]; 0 for a reading without leads.
    """
    if not signals:
        return 0.0
    n = max(sig.size for sig in signals.values())
    rows = np.full((len(LEADS), n), np.nan)
    for lead, sig in signals.items():
        rows[LEADS.index(lead), : sig.size] = sig
    neutral = replace(calibration, engine="classical")
    quality = lead_quality(lead_evidence(
        rows, fs, [prior.get(lead, 0.0) for lead in LEADS], panels, neutral))
    return float(sum(q for q, lead in zip(quality, LEADS, strict=True) if lead in signals)
                 / len(LEADS))


def _residual_or_unknown(residual: float | None) -> float:
    return _UNKNOWN_RESIDUAL if residual is None else min(float(residual), 2.0)


def _coverage(sig: np.ndarray, fs: float, panels: Sequence[PanelInfo]) -> float:
    """Share of the lead's printed panels that has samples (0 when nothing was read)."""
    if not panels:
        return float(np.isfinite(sig).mean()) if sig.size else 0.0
    shown = np.zeros(sig.size, dtype=bool)
    for p in panels:
        a = max(0, int(round(p.start_s * fs)))
        b = min(sig.size, int(round((p.start_s + p.duration_s) * fs)))
        shown[a:b] = True
    if not shown.any():
        return 0.0
    return float(np.isfinite(sig[shown]).mean())


def _shape(sig: np.ndarray, fs: float) -> tuple[float, float]:
    """(log10 amplitude in mV, share of jumps) of a trace; an empty trace's when empty."""
    x = sig[np.isfinite(sig)]
    if x.size < 10:
        return (-2.0, 0.0)
    lo, hi = np.percentile(x, [1, 99])
    step = np.abs(np.diff(x)) * (fs / 500.0)
    return (float(np.log10(hi - lo + 0.01)), float((step > _JUMP_MV_AT_500HZ).mean()))


def beat_repeat(flat: dict[str, np.ndarray], fs: float) -> dict[str, float]:
    """How well each lead's beats repeat at the page's beat period (correlation, <= 1).

    All leads of a recording share one heart rhythm: the period is the lag in
    :data:`_BEAT_PERIOD_S` at which the leads' autocorrelations agree best, and each
    lead's value is its own best autocorrelation within :data:`_PERIOD_TOLERANCE_S`
    of it. A trace that followed grid, text or another row for part of its length
    repeats worse.

    Parameters
    ----------
    flat : dict of str to numpy.ndarray
        Lead -> samples without their baseline (:func:`_without_baseline`), NaN where
        not read.
    fs : float
        Sampling rate (Hz).

    Returns
    -------
    dict of str to float
        Lead -> correlation, for the leads with a long enough stretch of samples.
    """
    lags = np.arange(int(_BEAT_PERIOD_S[0] * fs), int(_BEAT_PERIOD_S[1] * fs) + 1)
    curves = {}
    for lead, sig in flat.items():
        x = _longest_stretch(sig)
        if x.size - int(_MIN_OVERLAP_S * fs) > lags[0]:
            curves[lead] = _autocorrelation(x, lags, int(_MIN_OVERLAP_S * fs))
    if not curves:
        return {}
    stack = np.stack(list(curves.values()))
    seen = np.isfinite(stack)
    # Lags longer than every lead's stretch stay NaN (no warning for empty slices).
    mean = np.where(seen, stack, 0.0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)
    mean[~seen.any(axis=0)] = np.nan
    period = int(np.nanargmax(mean))
    tolerance = int(_PERIOD_TOLERANCE_S * fs)
    near = slice(max(0, period - tolerance), period + tolerance + 1)
    return {lead: float(np.nanmax(c[near])) for lead, c in curves.items()
            if np.isfinite(c[near]).any()}


def beat_sync(by_lead: dict[str, np.ndarray], fs: float) -> dict[str, float]:
    """How well each lead's beats fall at the other leads' beats (correlation, <= 1).

    Each lead's beat-energy envelope (:func:`beat_timing.beat_envelope`, scaled to unit
    RMS) is correlated with the mean envelope of the other leads over the samples it
    shares with at least two of them, at the best lag within :data:`_SYNC_LAG_S`. A
    trace that followed grid, text or noise has its slopes at other instants.

    Parameters
    ----------
    by_lead : dict of str to numpy.ndarray
        Lead -> samples (mV), NaN where not read.
    fs : float
        Sampling rate (Hz).

    Returns
    -------
    dict of str to float
        Lead -> correlation, for the leads sharing enough samples with the others.
    """
    n = min((sig.size for sig in by_lead.values()), default=0)
    envelopes = {}
    for lead, sig in by_lead.items():
        seen = np.isfinite(sig[:n])
        env = beat_envelope(sig[:n], fs)
        rms = float(np.sqrt(np.mean(env[seen] ** 2)))
        envelopes[lead] = (env / rms if rms > 0 else env, seen)
    total = sum((np.where(seen, env, 0.0) for env, seen in envelopes.values()), np.zeros(n))
    count = sum((seen.astype(float) for _env, seen in envelopes.values()), np.zeros(n))
    lag = int(_SYNC_LAG_S * fs)
    out = {}
    for lead, (env, seen) in envelopes.items():
        others = count - seen
        shared = seen & (others >= 2)
        if shared.sum() < _MIN_SHARED_SAMPLES:
            continue
        a = env[shared]
        b = (total - np.where(seen, env, 0.0))[shared] / others[shared]
        out[lead] = max(_correlation(a[max(0, k):a.size + min(0, k)],
                                     b[max(0, -k):b.size + min(0, -k)])
                        for k in range(-lag, lag + 1, 2))
    return out


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length arrays (0 when either is constant)."""
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b) / (float(np.sqrt((a @ a) * (b @ b))) + 1e-12)


def _autocorrelation(x: np.ndarray, lags: np.ndarray, min_overlap: int) -> np.ndarray:
    """Normalised correlation of `x` with itself shifted by each lag (NaN: too short)."""
    n = x.size
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(x, size)
    cross = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n]
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    out = np.full(lags.size, np.nan)
    ok = lags <= n - min_overlap
    lag = lags[ok]
    head = energy[n - lag]  # x[:n - lag]
    tail = energy[n] - energy[lag]  # x[lag:]
    out[ok] = cross[lag] / np.sqrt(head * tail + 1e-12)
    return out


def _without_baseline(sig: np.ndarray, fs: float) -> np.ndarray:
    """The trace minus its moving mean over :data:`_BASELINE_WINDOW_S` (NaN kept)."""
    out = np.full(sig.shape, np.nan)
    k = max(1, int(_BASELINE_WINDOW_S * fs))
    seen = np.isfinite(sig)
    values = np.where(seen, sig, 0.0)
    box = np.ones(k)
    total = np.convolve(values, box, mode="same")
    count = np.convolve(seen.astype(float), box, mode="same")
    out[seen] = values[seen] - total[seen] / np.maximum(count[seen], 1.0)
    return out


def _stretches(sig: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of every run of consecutive finite samples."""
    seen = np.concatenate([[0], np.isfinite(sig).astype(np.int8), [0]])
    edges = np.diff(seen)
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist(),
                    strict=True))


def _longest_stretch(sig: np.ndarray) -> np.ndarray:
    """The longest run of consecutive finite samples."""
    runs = _stretches(sig)
    if not runs:
        return sig[:0]
    a, b = max(runs, key=lambda r: r[1] - r[0])
    return sig[a:b]


def _baseline_step(sig: np.ndarray, fs: float) -> float:
    """Largest change (mV) of the trace's moving median within :data:`_STEP_S`.

    A QRS is too short to move a :data:`_MEDIAN_WINDOW_S` median, and a wandering
    baseline moves it slowly; a trace that jumps to another row for a while moves it
    by the rows' distance at once. NaN when no stretch of samples is long enough.
    """
    k = int(_MEDIAN_WINDOW_S * fs) | 1
    lag = int(_STEP_S * fs)
    steps = []
    for a, b in _stretches(sig):
        if b - a > k + lag:
            level = median_filter(sig[a:b], size=k, mode="nearest")
            steps.append(float(np.max(np.abs(level[lag:] - level[:-lag]))))
    return max(steps) if steps else np.nan


def _excursion(sig: np.ndarray, flat: np.ndarray | None) -> float:
    """Largest departure from the trace's baseline over its 1-99 % range; NaN if not read."""
    if flat is None or not np.isfinite(flat).any():
        return np.nan
    lo, hi = np.nanpercentile(sig, [1, 99])
    return float(np.nanmax(np.abs(flat)) / (hi - lo + 0.05))


def _neighbour_r(flat: dict[str, np.ndarray], lead: str) -> float:
    """Largest |correlation| of a chest lead with a neighbour over shared samples.

    NaN for a limb lead, or when no neighbour shares enough samples with it.
    """
    best = np.nan
    x = flat.get(lead)
    for other in _NEIGHBOURS.get(lead, ()):
        y = flat.get(other)
        if x is None or y is None:
            continue
        n = min(x.size, y.size)
        shared = np.isfinite(x[:n]) & np.isfinite(y[:n])
        if shared.sum() < _MIN_SHARED_SAMPLES:
            continue
        r = abs(_correlation(x[:n][shared], y[:n][shared]))
        best = r if not np.isfinite(best) else max(best, r)
    return best
