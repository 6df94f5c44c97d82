"""Placing panel columns in time by their beats.

All leads of one recording share the beat times, so a column of short panels lines up
with the rhythm strip (a full-length lead) only at the time it truly shows. A page's
geometry says where a column *should* start (2.5 s, 5 s, ... on a cart's printout);
some printers (the benchmark generator among them: both 6x2 columns show 0-5 s) draw
a column at another time. Each column's beat-energy envelope (absolute slope summed
over its panels) is compared with the strip's at the geometric start and at whole
column periods before it; a column moves only when another start fits clearly better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Beat-energy smoothing window (s): about a QRS width.
_SMOOTH_S = 0.02
#: Lag (s) searched around each candidate start for imprecise geometry.
MAX_LAG_S = 0.06
#: A non-geometric start must reach this correlation with the strip's envelope ...
MIN_FIT = 0.5
#: ... and beat the geometric start's correlation by this margin ...
MARGIN = 0.2
#: ... and beat every other candidate by this margin (else the rhythm is too regular).
RUNNER_UP_MARGIN = 0.1
#: Panels whose geometric start differs by less than this (s) are one column.
_COLUMN_TOLERANCE_S = 0.3
#: Standard column periods (s) of a 10 s recording (4 and 2 columns) ...
STANDARD_PERIODS_S: tuple[float, ...] = (2.5, 5.0)
#: ... and the relative difference within which a panel's duration is taken for one.
_STANDARD_TOLERANCE = 0.03
#: A column needs at least this much traced signal (s) to be compared.
_MIN_SIGNAL_S = 1.0


@dataclass(frozen=True)
class ColumnFit:
    """The start time chosen for one column of panels.

    Attributes
    ----------
    start_s : float
        Start time chosen (the geometric one unless another fits clearly better).
    geometric_s : float
        Start time from the panel's position on the page.
    scores : dict
        Candidate start (s) -> correlation of the column's envelope with the strip's.
    moved : bool
        True when `start_s` is not the geometric start.
    lag_s : float
        Shift (s) from `start_s` at which the beats line up best.
    by_laws : dict or None
        Candidate start (s) -> limb-lead residual against the strip, when the start
        was chosen by the limb-lead laws (:mod:`ecgbridge.digitizer.column_laws`).
    """

    start_s: float
    geometric_s: float
    scores: dict[float, float]
    moved: bool
    lag_s: float = 0.0
    by_laws: dict[float, float] | None = None


def beat_envelope(sig: np.ndarray, fs: float) -> np.ndarray:
    """Beat-energy envelope: smoothed absolute slope, NaN-safe.

    Parameters
    ----------
    sig : numpy.ndarray
        Signal in mV; NaN where nothing was traced.
    fs : float
        Sampling rate (Hz).

    Returns
    -------
    numpy.ndarray
        Same length as `sig`; 0 around untraced samples.
    """
    s = np.nan_to_num(sig, nan=0.0)
    d = np.abs(np.diff(s, prepend=s[:1]))
    bad = ~np.isfinite(sig)
    d[bad] = 0.0
    d[1:][bad[:-1]] = 0.0  # the jump out of a gap is no slope either
    k = max(3, int(_SMOOTH_S * fs) | 1)
    return np.convolve(d, np.ones(k) / k, mode="same")


def column_envelope(panels: list[np.ndarray], fs: float) -> np.ndarray:
    """Sum of the panels' beat envelopes, each scaled to unit RMS.

    Parameters
    ----------
    panels : list of numpy.ndarray
        Equal-length panel signals, aligned on the column's own time (sample 0 = the
        column's first sample).
    fs : float
        Sampling rate (Hz).

    Returns
    -------
    numpy.ndarray
        The column's envelope (0 where no panel was traced).
    """
    total = np.zeros(max(p.size for p in panels))
    for p in panels:
        env = beat_envelope(p, fs)
        rms = float(np.sqrt(np.mean(env[np.isfinite(p)] ** 2))) if np.isfinite(p).any() else 0.0
        if rms > 0:
            total[: env.size] += env / rms
    return total


def fit_at(env: np.ndarray, ref: np.ndarray, i0: int, max_lag: int) -> tuple[float, int]:
    """Best correlation of `env` with `ref` starting near sample `i0`.

    Parameters
    ----------
    env : numpy.ndarray
        Column envelope (sample 0 = the column's first sample).
    ref : numpy.ndarray
        Strip envelope on the recording's time axis.
    i0 : int
        Candidate start sample in `ref`.
    max_lag : int
        Lags ``-max_lag..max_lag`` samples around `i0` are tried.

    Returns
    -------
    tuple of (float, int)
        Pearson correlation and the lag (samples) reaching it; ``(-1, 0)`` when the
        strip does not cover most of the column there.
    """
    best, best_lag = -1.0, 0
    for lag in range(-max_lag, max_lag + 1):
        a = i0 + lag
        lo = max(0, -a)
        hi = min(env.size, ref.size - a)
        if hi - lo < 0.8 * env.size:
            continue
        e, r = env[lo:hi], ref[a + lo: a + hi]
        e, r = e - e.mean(), r - r.mean()
        den = float(np.linalg.norm(e) * np.linalg.norm(r))
        c = float(np.dot(e, r)) / den if den > 0 else -1.0
        if c > best:
            best, best_lag = c, lag
    return best, best_lag


def candidate_starts(geometric_s: float, period_s: float) -> list[float]:
    """The geometric start and whole column periods before it, down to about 0 s.

    Parameters
    ----------
    geometric_s : float
        Start time from the page position.
    period_s : float
        Time between the starts of neighbouring columns (a panel's duration).

    Returns
    -------
    list of float
        Candidate start times, the geometric one first.
    """
    out = [geometric_s]
    k = 1
    while period_s > 0.5 and geometric_s - k * period_s > -0.5 * period_s:
        out.append(geometric_s - k * period_s)
        k += 1
    return out


def place_column(env: np.ndarray, ref: np.ndarray, geometric_s: float, period_s: float,
                 fs: float) -> ColumnFit:
    """Choose a column's start time by how its beats line up with the strip's.

    Parameters
    ----------
    env : numpy.ndarray
        The column's envelope (:func:`column_envelope`).
    ref : numpy.ndarray
        The rhythm strip's envelope on the recording's time axis.
    geometric_s : float
        Start time from the page position.
    period_s : float
        Time between neighbouring columns' starts.
    fs : float
        Sampling rate (Hz).

    Returns
    -------
    ColumnFit
        The geometric start unless another candidate fits the strip by at least
        :data:`MIN_FIT`, beats the geometric start by :data:`MARGIN` and every other
        candidate by :data:`RUNNER_UP_MARGIN`.
    """
    max_lag = int(round(MAX_LAG_S * fs))
    fits = {s: fit_at(env, ref, int(round(s * fs)), max_lag)
            for s in candidate_starts(geometric_s, period_s)}
    scores = {s: r for s, (r, _lag) in fits.items()}
    geo = scores[geometric_s]
    ranked = sorted(scores, key=lambda s: -scores[s])
    best = ranked[0]
    runner_up = scores[ranked[1]] if len(ranked) > 1 else -1.0
    if (best != geometric_s and scores[best] >= MIN_FIT and scores[best] >= geo + MARGIN
            and scores[best] >= runner_up + RUNNER_UP_MARGIN):
        return ColumnFit(best, geometric_s, scores, True, fits[best][1] / fs)
    return ColumnFit(geometric_s, geometric_s, scores, False, fits[geometric_s][1] / fs)


def standard_period(duration_s: float) -> float | None:
    """The standard column period a panel duration stands for, if any.

    Parameters
    ----------
    duration_s : float
        A column's panel duration (s) as measured on the page.

    Returns
    -------
    float or None
        The standard period (:data:`STANDARD_PERIODS_S`) within
        :data:`_STANDARD_TOLERANCE` of `duration_s`; None when the duration is none
        of them (the time scale was misread).
    """
    for period in STANDARD_PERIODS_S:
        if abs(duration_s / period - 1.0) <= _STANDARD_TOLERANCE:
            return period
    return None


def group_columns(starts: list[float]) -> list[list[int]]:
    """Indices of panels grouped into columns by their geometric start times.

    Parameters
    ----------
    starts : list of float
        Each panel's geometric start (s).

    Returns
    -------
    list of list of int
        Groups of indices into `starts`, earliest column first.
    """
    groups: list[list[int]] = []
    for i in sorted(range(len(starts)), key=lambda i: starts[i]):
        if groups and starts[i] - starts[groups[-1][0]] < _COLUMN_TOLERANCE_S:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def enough_signal(panels: list[np.ndarray], fs: float) -> bool:
    """True when the panels together hold at least :data:`_MIN_SIGNAL_S` of trace."""
    return sum(int(np.isfinite(p).sum()) for p in panels) >= _MIN_SIGNAL_S * fs
