"""How well a page's leads agree with the laws that bind them, before anything enforces them.

The six limb leads are linear combinations of two: Einthoven's law (II = I + III) and
Goldberger's (aVR + aVL + aVF = 0) hold sample by sample wherever the leads were
printed at the same instants. A digitized page whose traces were misread (a jump into
the next row, grid taken for trace, a row placed at the wrong time) breaks them; a
faithful reading keeps the residual at the level of pen and quantisation noise. The
residual needs no truth, so it can compare two readings of one page.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

#: Limb leads as combinations of (I, II): Einthoven (III = II - I) and Goldberger.
LIMB_BASIS: dict[str, tuple[float, float]] = {
    "I": (1.0, 0.0),
    "II": (0.0, 1.0),
    "III": (-1.0, 1.0),
    "aVR": (-0.5, -0.5),
    "aVL": (1.0, -0.5),
    "aVF": (-0.5, 1.0),
}
#: Fewest common samples for a relation to be measured.
_MIN_COMMON_SAMPLES = 200
#: A reading whose limb-lead residual is below this is kept without a second opinion.
TRUSTED_RESIDUAL = 0.3
#: A reading no other engine confirms is delivered only below this residual: limb leads
#: unrelated to each other (traces read from the wrong places) give about sqrt(3) = 1.73.
MAX_UNCONFIRMED_RESIDUAL = 1.5
#: Floor (mV) of the RMS a residual is divided by: flat leads do not make noise look large.
_MIN_RMS_MV = 0.05


def relation_residual(signals: Mapping[str, np.ndarray], plus: tuple[str, ...],
                       minus: tuple[str, ...]) -> float | None:
    """RMS of ``sum(plus) - sum(minus)`` relative to the leads' RMS, where all are finite.

    Parameters
    ----------
    signals : mapping
        Lead name -> samples (mV, NaN where not shown), all on one time base.
    plus, minus : tuple of str
        The leads added and subtracted.

    Returns
    -------
    float or None
        None when a lead is missing or too few instants show them all.
    """
    leads = plus + minus
    if not all(lead in signals for lead in leads):
        return None
    n = min(signals[lead].size for lead in leads)
    arr = np.stack([np.asarray(signals[lead][:n], dtype=np.float64) for lead in leads])
    ok = np.isfinite(arr).all(axis=0)
    if ok.sum() < _MIN_COMMON_SAMPLES:
        return None
    arr = arr[:, ok] - arr[:, ok].mean(axis=1, keepdims=True)
    k = len(plus)
    residual = arr[:k].sum(axis=0) - arr[k:].sum(axis=0)
    scale = max(_MIN_RMS_MV, float(np.sqrt(np.mean(arr ** 2))))
    return float(np.sqrt(np.mean(residual ** 2))) / scale


def limb_lead_residual(signals: Mapping[str, np.ndarray]) -> float | None:
    """Mean relative residual of Einthoven's and Goldberger's laws (None: not measurable).

    Parameters
    ----------
    signals : mapping
        Lead name -> samples (mV, NaN where not shown), all on one time base.

    Returns
    -------
    float or None
        0 for leads that obey both laws exactly; about sqrt(3) = 1.73 for unrelated
        traces of equal size.
    """
    found = [r for r in (relation_residual(signals, ("I", "III"), ("II",)),
                         relation_residual(signals, ("aVR", "aVL", "aVF"), ()))
             if r is not None]
    return float(np.mean(found)) if found else None


def is_trusted(signals: Mapping[str, np.ndarray]) -> bool:
    """True when a reading keeps the limb-lead laws to within :data:`TRUSTED_RESIDUAL`."""
    residual = limb_lead_residual(signals)
    return residual is not None and residual < TRUSTED_RESIDUAL


def is_implausible(signals: Mapping[str, np.ndarray]) -> bool:
    """True when the limb leads break the laws as unrelated traces would."""
    residual = limb_lead_residual(signals)
    return residual is not None and residual > MAX_UNCONFIRMED_RESIDUAL


@dataclass(frozen=True)
class ReadingChoice:
    """Which engine's reading of a page to deliver, and the warning that says why."""

    engine: str
    warning: str


def choose_reading(readings: Mapping[str, Mapping[str, np.ndarray]],
                   errors: Mapping[str, str],
                   trust: Mapping[str, float] | None = None) -> ReadingChoice:
    """Pick the reading the evidence trusts more, else the one keeping the limb-lead laws.

    Parameters
    ----------
    readings : mapping
        Engine name -> that engine's signals (lead -> samples); at least one.
    errors : mapping
        Engine name -> why that engine could not read the page.
    trust : mapping, optional
        Engine name -> how far its reading can be trusted, judged alike for both
        engines (:func:`ecgbridge.digitizer.quality.reading_trust`).

    Returns
    -------
    ReadingChoice
        With `trust` for every reading, the more trusted one (the classical engine
        on a tie). Otherwise the reading whose limb leads keep Einthoven's and
        Goldberger's laws better (the smaller residual); a reading whose residual
        cannot be measured counts as worst; more leads, then the classical engine,
        break ties.
    """
    if len(readings) == 1:
        (engine,) = readings
        failed = ", ".join(f"the {e} engine could not read the page ({why})"
                           for e, why in errors.items())
        return ReadingChoice(engine, f"{failed}; {engine} engine used")
    residuals = ", ".join(f"{e} {_or_inf(limb_lead_residual(readings[e])):.2f}"
                          for e in sorted(readings))
    if trust is not None and set(readings) <= set(trust):
        best = max(readings, key=lambda e: (trust[e], e == "classical"))
        trusts = ", ".join(f"{e} {trust[e]:.2f}" for e in sorted(readings))
        return ReadingChoice(best, f"{best} engine's reading used: the evidence on its "
                                   f"leads trusts it more (mean lead quality {trusts}; "
                                   f"limb-lead relative residual {residuals})")
    scored = {}
    for engine, signals in readings.items():
        scored[engine] = (_or_inf(limb_lead_residual(signals)), -len(signals),
                          engine == "learned")
    best = min(scored, key=lambda e: scored[e])
    return ReadingChoice(best, f"{best} engine's reading used: its limb leads keep "
                               f"Einthoven's and Goldberger's laws best (relative residual "
                               f"{residuals})")


def _or_inf(residual: float | None) -> float:
    """A residual, or infinity when it cannot be measured."""
    return np.inf if residual is None else residual


def replace_limb_outliers(signals: Mapping[str, np.ndarray], max_residual_mv: float = 0.3
                          ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Limb-lead samples that alone break the laws, replaced by what the others give.

    Where four or more limb leads were read at the same sample (a 12x1 page, a 6x2
    column, the augmented leads beside a lead-II strip), they hold two leads' worth of
    signal twice over, so one wrong lead stands out: a neighbouring row's QRS wave
    followed into this row, a stroke's tip lost. A sample is mended when the leads
    disagree by more than `max_residual_mv`, all but one of them agree within it, and
    that one is off by more; its value becomes the one the others give.

    Parameters
    ----------
    signals : mapping
        Lead name -> samples (mV, NaN where not shown), all on one time base.
    max_residual_mv : float
        Largest disagreement (mV) taken for reading noise.

    Returns
    -------
    tuple of (dict, dict)
        The signals (limb leads mended, arrays copied only where changed) and the number
        of samples replaced per lead (leads with none left out).
    """
    names = [lead for lead in LIMB_BASIS if lead in signals]
    out = dict(signals)
    if len(names) < 4:
        return out, {}
    n = min(signals[lead].size for lead in names)
    values = np.stack([np.asarray(signals[lead][:n], dtype=np.float64) for lead in names])
    basis = np.array([LIMB_BASIS[lead] for lead in names])
    replaced = np.zeros(values.shape, dtype=bool)
    for rows, cols in read_together(values, min_leads=4):
        _mend_group(values, replaced, rows, cols, basis[rows], max_residual_mv)
    counts = {}
    for k, lead in enumerate(names):
        if replaced[k].any():
            sig = np.array(signals[lead], dtype=np.float64)
            sig[:n] = values[k]
            out[lead] = sig
            counts[lead] = int(replaced[k].sum())
    return out, counts


def read_together(values: np.ndarray, min_leads: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Groups of samples at which the same leads were read.

    Parameters
    ----------
    values : numpy.ndarray
        (leads, samples), NaN where a lead was not read.
    min_leads : int
        Groups of fewer leads are skipped.

    Yields
    ------
    tuple of numpy.ndarray
        The leads (row indices) read, and the samples (column indices) at which
        exactly those leads were read.
    """
    codes = (np.isfinite(values) * (1 << np.arange(values.shape[0]))[:, None]).sum(axis=0)
    for code in np.unique(codes):
        rows = np.nonzero((int(code) >> np.arange(values.shape[0])) & 1)[0]
        if rows.size >= min_leads:
            yield rows, np.nonzero(codes == code)[0]


def _mend_group(values: np.ndarray, replaced: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                basis: np.ndarray, max_residual: float) -> None:
    """Mend, in place, the samples `cols` of the leads `rows` (see replace_limb_outliers)."""
    v = values[np.ix_(rows, cols)]
    off = np.abs(basis @ np.linalg.pinv(basis) @ v - v).max(axis=0) > max_residual
    if not off.any():
        return
    v = v[:, off]
    best_res = np.full(v.shape[1], np.inf)
    best_lead = np.zeros(v.shape[1], dtype=int)
    best_value = np.zeros(v.shape[1])
    for j in range(rows.size):
        keep = np.arange(rows.size) != j
        both = np.linalg.pinv(basis[keep]) @ v[keep]  # leads I and II, from the others
        res = np.abs(basis[keep] @ both - v[keep]).max(axis=0)
        better = res < best_res
        best_res[better], best_lead[better] = res[better], j
        best_value[better] = (basis[j] @ both)[better]
    lone = (best_res <= max_residual) & (
        np.abs(best_value - v[best_lead, np.arange(v.shape[1])]) > max_residual)
    at = cols[off][lone]
    values[rows[best_lead[lone]], at] = best_value[lone]
    replaced[rows[best_lead[lone]], at] = True
