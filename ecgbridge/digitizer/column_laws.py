"""Placing a column of panels in time by the limb-lead laws, where beats cannot tell.

A column of short panels shows some stretch of the recording: the page's geometry says
which (the second 6x2 column from 5 s on a cart's printout), but some printers draw
every column from time 0. :mod:`beat_timing` decides by the beats; a regular rhythm
repeats them, so the beats line up at several starts. The limb leads do not repeat
exactly: six of them are combinations of two (I and II), so a column holding two of
them gives any other, sample by sample, at the instants it shows. The rhythm strip's
lead derived from the column matches the strip closely only at the column's true start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ecgbridge.digitizer.consistency import LIMB_BASIS

#: A start is taken from the laws only when its residual (relative RMS) is below this ...
MAX_RESIDUAL = 0.5
#: ... and below this fraction of every other candidate start's residual.
RESIDUAL_MARGIN = 0.7
#: Fewest common samples (s) for a residual to count.
_MIN_COMMON_S = 1.0
#: Floor (mV) of the strip's RMS a residual is divided by.
_MIN_RMS_MV = 0.05


def derived_lead(column: Mapping[str, np.ndarray], target: str) -> np.ndarray | None:
    """The limb lead `target` derived from a column's limb-lead panels.

    Parameters
    ----------
    column : mapping
        Lead name -> samples on the column's own time (sample 0 = its first sample),
        NaN where nothing was traced.
    target : str
        The limb lead wanted.

    Returns
    -------
    numpy.ndarray or None
        The smallest combination of the column's limb leads that equals `target` by
        Einthoven's and Goldberger's laws; None when the column's limb leads do not
        span it (or `target` is not a limb lead).
    """
    leads = [lead for lead in column if lead in LIMB_BASIS]
    if target not in LIMB_BASIS or not leads:
        return None
    basis = np.array([LIMB_BASIS[lead] for lead in leads]).T
    goal = np.array(LIMB_BASIS[target])
    weights = np.linalg.lstsq(basis, goal, rcond=None)[0]
    if np.linalg.norm(basis @ weights - goal) > 1e-6:
        return None
    n = min(column[lead].size for lead in leads)
    out = np.zeros(n)
    for lead, w in zip(leads, weights, strict=True):
        if abs(w) > 1e-9:
            out += w * column[lead][:n]
    return out


def strip_residual(derived: np.ndarray, strip: np.ndarray, start: int, max_lag: int,
                   min_common: int) -> float | None:
    """Smallest relative RMS difference of `derived` and the strip near `start`.

    Parameters
    ----------
    derived : numpy.ndarray
        A lead derived from a column (sample 0 = the column's first sample).
    strip : numpy.ndarray
        The rhythm strip of the same lead on the recording's time axis.
    start : int
        Candidate start sample of the column in the strip.
    max_lag : int
        Lags ``-max_lag..max_lag`` samples around `start` are tried.
    min_common : int
        Fewest samples both show for a lag to count.

    Returns
    -------
    float or None
        RMS of the difference (each side's mean removed) over the strip's RMS; None
        when fewer than `min_common` samples can be compared at any lag.
    """
    best: float | None = None
    for lag in range(-max_lag, max_lag + 1):
        a = start + lag
        lo, hi = max(0, -a), min(derived.size, strip.size - a)
        if hi - lo < min_common:
            continue
        d, s = derived[lo:hi], strip[a + lo: a + hi]
        ok = np.isfinite(d) & np.isfinite(s)
        if ok.sum() < min_common:
            continue
        d, s = d[ok] - d[ok].mean(), s[ok] - s[ok].mean()
        scale = max(_MIN_RMS_MV, float(np.sqrt(np.mean(s ** 2))))
        r = float(np.sqrt(np.mean((d - s) ** 2))) / scale
        best = r if best is None else min(best, r)
    return best


def start_by_laws(column: Mapping[str, np.ndarray], strips: Sequence[tuple[str, np.ndarray]],
                  starts_s: Sequence[float], fs: float, max_lag_s: float
                  ) -> tuple[float | None, dict[float, float]]:
    """The column's start at which its limb leads agree with a rhythm strip.

    Parameters
    ----------
    column : mapping
        Lead name -> samples on the column's own time (sample 0 = its first sample).
    strips : sequence of (str, numpy.ndarray)
        Rhythm strips (lead, samples on the recording's time axis).
    starts_s : sequence of float
        Candidate start times (s).
    fs : float
        Sampling rate (Hz).
    max_lag_s : float
        Imprecision (s) of the candidate starts.

    Returns
    -------
    tuple
        The start whose residual is below :data:`MAX_RESIDUAL` and below
        :data:`RESIDUAL_MARGIN` times every other candidate's (None when no start
        stands out, or no strip can be derived from the column), and the residual
        of every candidate measured.
    """
    residuals: dict[float, float] = {}
    max_lag = int(round(max_lag_s * fs))
    for lead, strip in strips:
        derived = derived_lead(column, lead)
        if derived is None:
            continue
        for s in starts_s:
            r = strip_residual(derived, strip, int(round(s * fs)), max_lag,
                               int(_MIN_COMMON_S * fs))
            if r is not None:
                residuals[s] = min(r, residuals.get(s, np.inf))
    if len(residuals) < 2:
        return None, residuals
    ranked = sorted(residuals, key=lambda s: residuals[s])
    best, runner_up = ranked[0], residuals[ranked[1]]
    if residuals[best] < MAX_RESIDUAL and residuals[best] < RESIDUAL_MARGIN * runner_up:
        return best, residuals
    return None, residuals
