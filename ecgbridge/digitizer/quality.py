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
- whether the trace looks like an ECG: its amplitude, and jumps no pen draws.

The weights were fitted on the training pages (``tools/fit_quality.py``: damaged
renders of records outside the evaluation sets) to tell leads whose aligned SNR is
under 5 dB from the others, and the bias set so that the 0.5 threshold catches 90 % of
those leads on the training pages (it then flags 44 % of the others there; refitted
after the trace-following and model changes of 2026-12-04, session 6).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecgbridge.digitizer.consistency import limb_lead_residual, relation_residual
from ecgbridge.ecg import LEADS, Calibration, PanelInfo

#: Names of the evidence, in the order of :data:`WEIGHTS`.
FEATURES = (
    "prior", "coverage", "gain_assumed", "learned_engine", "page_residual", "lead_residual",
    "log_amplitude", "jumps",
)
#: Logistic weights of the standardised evidence (fitted, see the module docstring).
WEIGHTS = (-0.2259, 0.6638, -0.2158, 0.1453, -0.9408, -0.5875, 0.0246, -0.4443)
#: Means and standard deviations that standardise the evidence.
FEATURE_MEAN = (0.6330, 0.9841, 0.3090, 0.7672, 0.4046, 0.4053, -0.1240, 0.0013)
FEATURE_STD = (0.2741, 0.0929, 0.4621, 0.4226, 0.4584, 0.4927, 0.2922, 0.0040)
#: Bias of the logistic model.
BIAS = -0.5800

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
        (leads, len(FEATURES)) evidence.

    Returns
    -------
    tuple of float
        One value per row of `evidence`; below 0.5: do not trust the lead.
    """
    # Evidence far outside what the fit saw counts as its edge (no extrapolation).
    z = np.clip((evidence - np.asarray(FEATURE_MEAN)) / np.asarray(FEATURE_STD),
                -_MAX_STANDARD_SCORE, _MAX_STANDARD_SCORE)
    logit = z @ np.asarray(WEIGHTS) + BIAS
    guessed = evidence[:, FEATURES.index("prior")] <= GUESSED_NAME_PRIOR
    factor = np.where(guessed, INFERRED_LAYOUT_FACTOR, 1.0)
    return tuple(float(v) for v in factor / (1.0 + np.exp(-logit)))


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
