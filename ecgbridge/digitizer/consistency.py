"""How well a page's leads agree with the laws that bind them, before anything enforces them.

The six limb leads are linear combinations of two: Einthoven's law (II = I + III) and
Goldberger's (aVR + aVL + aVF = 0) hold sample by sample wherever the leads were
printed at the same instants. A digitized page whose traces were misread (a jump into
the next row, grid taken for trace, a row placed at the wrong time) breaks them; a
faithful reading keeps the residual at the level of pen and quantisation noise. The
residual needs no truth, so it can compare two readings of one page.
"""

from __future__ import annotations

from collections.abc import Mapping
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
