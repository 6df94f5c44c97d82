"""Sanity checks of a raster page's calibration: gain, amplitudes and column widths.

A calibration pulse is 1 mV high at one of the standard gains
(:data:`~ecgbridge.standards.STANDARD_GAINS_MM_PER_MV`); rows of one page
share it. A pulse that implies another gain was misread (a pulse cut by a crease,
a QRS taken for its edge), and a gain that makes leads reach beyond
:data:`~ecgbridge.standards.MAX_PLAUSIBLE_MV` is not the page's. These
checks decide the gain from the rows' pulses, disregard pulses that disagree, and
make sure that no implausible lead is delivered without a word.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ecgbridge.digitizer.pulse import GAIN_SNAP_TOLERANCE
from ecgbridge.ecg import PanelInfo
from ecgbridge.errors import DigitizationError
from ecgbridge.standards import DEFAULT_GAIN_MM_MV, MAX_PLAUSIBLE_MV, STANDARD_GAINS_MM_PER_MV

#: Percentile of |value| taken as a lead's peak (robust to a few stray samples).
_PEAK_PERCENTILE = 99.5
#: More than this fraction of the leads implausible: the page is refused.
_MAX_IMPLAUSIBLE_FRACTION = 0.5

_GAINS_TEXT = ", ".join(f"{g:g}" for g in STANDARD_GAINS_MM_PER_MV)
NO_PULSE_WARNING = f"no calibration pulse found: gain {DEFAULT_GAIN_MM_MV:g} mm/mV assumed"


@dataclass(frozen=True)
class GainDecision:
    """The gain used for a page, where it came from and what was said about it.

    Attributes
    ----------
    mm_per_mv : float
        Gain in mm/mV.
    source : str
        ``"user"``, ``"pulse"`` or ``"default"``.
    warnings : tuple of str
        Notes for the reviewer (pulses disregarded, defaults assumed).
    outlier_rows : tuple of int
        0-based rows whose pulse disagreed with the page's gain.
    """

    mm_per_mv: float
    source: str
    warnings: tuple[str, ...] = ()
    outlier_rows: tuple[int, ...] = ()


@dataclass(frozen=True)
class AmplitudeCheck:
    """Signals after the amplitude check, with the gain they were finally read at.

    Attributes
    ----------
    signals : dict
        Lead -> samples (mV); implausible leads removed, stray samples blanked.
    gain : GainDecision
        The gain decision, replaced when the pulse's gain was rejected.
    dropped : tuple of str
        Leads left out because they reach beyond the plausible amplitude.
    """

    signals: dict[str, np.ndarray]
    gain: GainDecision
    dropped: tuple[str, ...] = ()


def snap_gain(mm_per_mv: float, tolerance: float = GAIN_SNAP_TOLERANCE) -> float | None:
    """Return the standard gain within `tolerance` (relative) of `mm_per_mv`, else None.

    Parameters
    ----------
    mm_per_mv : float
        Measured gain.
    tolerance : float
        Largest relative difference to a standard gain.
    """
    if not np.isfinite(mm_per_mv) or mm_per_mv <= 0:
        return None
    nearest = min(STANDARD_GAINS_MM_PER_MV, key=lambda g: abs(np.log(mm_per_mv / g)))
    return float(nearest) if abs(mm_per_mv / nearest - 1.0) <= tolerance else None


def _rows_text(rows: Sequence[int]) -> str:
    return ", ".join(str(r + 1) for r in rows)


def decide_gain(row_gains: Sequence[float | None], user_gain: float | None = None
                ) -> GainDecision:
    """Decide a page's gain from its rows' calibration pulses.

    Every pulse is snapped to the nearest standard gain when within
    :data:`~ecgbridge.digitizer.pulse.GAIN_SNAP_TOLERANCE` of it. The gain most
    rows agree on is the page's; rows that disagree are outliers (named in a
    warning). When the majority's pulses match no standard gain, or no gain has
    more pulses than any other, the pulses are disregarded and the default gain is
    assumed, with a warning.

    Parameters
    ----------
    row_gains : sequence of float or None
        Gain (mm/mV) implied by each row's pulse; None for a row without a pulse.
    user_gain : float, optional
        Gain given by the user; it wins.

    Returns
    -------
    GainDecision
    """
    if user_gain:
        return GainDecision(float(user_gain), "user")
    found = [(i, float(g)) for i, g in enumerate(row_gains) if g is not None]
    if not found:
        return GainDecision(DEFAULT_GAIN_MM_MV, "default", (NO_PULSE_WARNING,))
    snapped = {i: snap_gain(g) for i, g in found}
    votes = Counter(snapped.values())
    ranked = votes.most_common()
    top_count = ranked[0][1]
    tied = [g for g, c in ranked if c == top_count]
    # The default wins a tie; a tie between other gains says nothing.
    winner = DEFAULT_GAIN_MM_MV if DEFAULT_GAIN_MM_MV in tied else (
        tied[0] if len(tied) == 1 else None)
    if winner is None:
        measured = float(np.median([g for _i, g in found]))
        return GainDecision(DEFAULT_GAIN_MM_MV, "default", (
            f"calibration pulses read {measured:.2f} mm/mV (median of the rows), no standard gain "
            f"({_GAINS_TEXT} mm/mV) shared by most rows: pulses disregarded, "
            f"{DEFAULT_GAIN_MM_MV:g} mm/mV assumed",
        ), tuple(i for i, _g in found))
    outliers = tuple(i for i, g in found if snapped[i] != winner)
    warnings: list[str] = []
    if outliers:
        read = ", ".join(f"{row_gains[i]:.2f}" for i in outliers)
        warnings.append(
            f"calibration pulse of row(s) {_rows_text(outliers)} reads {read} mm/mV, "
            f"unlike the other rows' {winner:g} mm/mV: disregarded as outlier(s)"
        )
    return GainDecision(float(winner), "pulse", tuple(warnings), outliers)


def lead_peak_mv(samples: np.ndarray) -> float:
    """Robust peak |value| of a lead (:data:`_PEAK_PERCENTILE` percentile), 0 if empty."""
    finite = np.abs(samples[np.isfinite(samples)])
    return float(np.percentile(finite, _PEAK_PERCENTILE)) if finite.size else 0.0


def check_amplitudes(signals: dict[str, np.ndarray], gain: GainDecision) -> AmplitudeCheck:
    """Make sure no lead beyond ±:data:`MAX_PLAUSIBLE_MV` is delivered.

    1. A pulse's gain below the default that puts a lead beyond the limit, while the
       default gain would keep every lead within it, is rejected: the signals are
       rescaled to the default gain (a warning says so).
    2. A lead whose peak is still beyond the limit is left out, with a warning.
    3. Stray samples beyond the limit in an otherwise plausible lead are blanked.

    Parameters
    ----------
    signals : dict
        Lead -> samples in mV read at ``gain.mm_per_mv``.
    gain : GainDecision
        How the gain was decided.

    Returns
    -------
    AmplitudeCheck

    Raises
    ------
    ecgbridge.errors.DigitizationError
        When more than half of the leads are implausible at any gain considered.
    """
    peaks = {lead: lead_peak_mv(sig) for lead, sig in signals.items()}
    too_big = [lead for lead, p in peaks.items() if p > MAX_PLAUSIBLE_MV]
    if too_big and gain.source == "pulse" and gain.mm_per_mv < DEFAULT_GAIN_MM_MV:
        scale = gain.mm_per_mv / DEFAULT_GAIN_MM_MV
        if max(peaks.values()) * scale <= MAX_PLAUSIBLE_MV:
            signals = {lead: sig * scale for lead, sig in signals.items()}
            peaks = {lead: p * scale for lead, p in peaks.items()}
            gain = GainDecision(DEFAULT_GAIN_MM_MV, "default", gain.warnings + (
                f"the calibration pulse's {gain.mm_per_mv:g} mm/mV would put lead(s) "
                f"{', '.join(too_big)} beyond ±{MAX_PLAUSIBLE_MV:g} mV: pulse disregarded, "
                f"{DEFAULT_GAIN_MM_MV:g} mm/mV assumed",), gain.outlier_rows)
            too_big = []
    if signals and len(too_big) > _MAX_IMPLAUSIBLE_FRACTION * len(signals):
        raise DigitizationError(
            f"{len(too_big)} of {len(signals)} leads would reach beyond ±{MAX_PLAUSIBLE_MV:g} mV "
            f"at {gain.mm_per_mv:g} mm/mV ({gain.source}); the scale of the page cannot be "
            "trusted"
        )
    out, dropped, notes = limit_leads(signals)
    if notes:
        gain = GainDecision(gain.mm_per_mv, gain.source, gain.warnings + tuple(notes),
                            gain.outlier_rows)
    return AmplitudeCheck(out, gain, dropped)


def limit_leads(signals: dict[str, np.ndarray], why: str = "trace or baseline misread"
                ) -> tuple[dict[str, np.ndarray], tuple[str, ...], list[str]]:
    """Leave out leads beyond ±:data:`MAX_PLAUSIBLE_MV`; blank stray samples beyond it.

    Parameters
    ----------
    signals : dict
        Lead -> samples (mV).
    why : str
        The likely cause, quoted in the warnings.

    Returns
    -------
    tuple
        ``(signals, dropped leads, warnings)``.
    """
    notes: list[str] = []
    out: dict[str, np.ndarray] = {}
    dropped: list[str] = []
    for lead, sig in signals.items():
        peak = lead_peak_mv(sig)
        if peak > MAX_PLAUSIBLE_MV:
            dropped.append(lead)
            notes.append(
                f"lead {lead} left out: it reads {peak:.1f} mV, beyond the "
                f"±{MAX_PLAUSIBLE_MV:g} mV of a surface ECG ({why})"
            )
            continue
        stray = np.isfinite(sig) & (np.abs(sig) > MAX_PLAUSIBLE_MV)
        if stray.any():
            sig = np.where(stray, np.nan, sig)
            notes.append(
                f"lead {lead}: {int(stray.sum())} sample(s) beyond ±{MAX_PLAUSIBLE_MV:g} mV "
                f"blanked ({why})"
            )
        out[lead] = sig
    return out, tuple(dropped), notes


#: Grid panels agreeing within this fraction of their median width are one column width.
_COLUMN_AGREEMENT = 0.05
#: Columns wider than the standard by more than this fraction (and at most
#: :data:`_MAX_COLUMN_MISFIT`) re-scale the time axis.
_MIN_COLUMN_MISFIT, _MAX_COLUMN_MISFIT = 0.05, 0.25
#: Fewest grid panels needed to judge the column width.
_MIN_COLUMN_PANELS = 4


def column_time_factor(durations_s: Sequence[float], columns: int,
                       record_s: float) -> float | None:
    """How much longer the grid's columns read than the standard column.

    A page of ``columns`` columns shows ``record_s / columns`` seconds per column
    (2.5 s for a 3x4 page of 10 s at 25 mm/s). When the grid panels all read the
    same width, wider than that by more than a few per cent, the page would yield
    a record longer than it shows: the horizontal scale (or the speed) was misread
    by that factor. Narrower columns are not corrected: they come as often from
    rows cut short or columns mis-split as from the scale.

    Parameters
    ----------
    durations_s : sequence of float
        Durations of the grid panels (not rhythm strips).
    columns : int
        Number of columns of the layout.
    record_s : float
        Duration a full row shows (10 s).

    Returns
    -------
    float or None
        ``measured / standard`` column width (> 1), or None when it is within
        tolerance, implausibly far off, narrower, or the panels disagree.
    """
    if columns < 2 or len(durations_s) < _MIN_COLUMN_PANELS:
        return None
    d = np.asarray(durations_s, dtype=float)
    median = float(np.median(d))
    if median <= 0 or np.abs(d / median - 1.0).max() > _COLUMN_AGREEMENT:
        return None
    factor = median / (record_s / columns)
    if not _MIN_COLUMN_MISFIT < factor - 1.0 <= _MAX_COLUMN_MISFIT:
        return None
    return factor


def stretch_time(samples: np.ndarray, factor: float, n: int) -> np.ndarray:
    """Resample `samples` so that what was read at time ``t * factor`` lies at ``t``.

    Parameters
    ----------
    samples : numpy.ndarray
        Samples on a uniform time grid (NaN = not shown).
    factor : float
        Ratio of the misread to the true time scale.
    n : int
        Output length.
    """
    pos = np.arange(n) * factor
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    out = np.full(n, np.nan)
    ok = lo + 1 < samples.size
    a, b = samples[lo[ok]], samples[lo[ok] + 1]
    out[ok] = a + (b - a) * frac[ok]
    return out


@dataclass(frozen=True)
class TimeScaleCheck:
    """Signals and panels after the column-width check.

    Attributes
    ----------
    signals : dict
        Lead -> samples, on the corrected time axis.
    panels : list of PanelInfo
        Panels with corrected start times and durations.
    factor : float
        Misread / true time scale (1.0: unchanged); the page's horizontal scale
        (px/mm) is multiplied by it.
    warning : str or None
        What was corrected.
    """

    signals: dict[str, np.ndarray]
    panels: list[PanelInfo]
    factor: float = 1.0
    warning: str | None = None


def columns_to_standard_width(signals: dict[str, np.ndarray], panels: list[PanelInfo],
                              columns: int, n: int, record_s: float) -> TimeScaleCheck:
    """Re-scale a page's time axis so that its grid columns have the standard width.

    See :func:`column_time_factor`; when it finds no misfit, nothing changes.

    Parameters
    ----------
    signals : dict
        Lead -> samples at `fs`.
    panels : list of PanelInfo
        The page's panels.
    columns : int
        Columns of the page's layout.
    n : int
        Length of the corrected signals (at least).
    record_s : float
        Duration a full row shows.
    """
    grid = [p.duration_s for p in panels if not p.rhythm_strip]
    factor = column_time_factor(grid, columns, record_s)
    if factor is None:
        return TimeScaleCheck(signals, panels)
    # A record longer than a full row (12x1 rows running on) keeps its extra length.
    stretched = {lead: stretch_time(sig, factor, max(n, int(round(sig.size / factor))))
                 for lead, sig in signals.items()}
    moved = [dataclasses.replace(p, start_s=p.start_s / factor, duration_s=p.duration_s / factor)
             for p in panels]
    return TimeScaleCheck(stretched, moved, factor, (
        f"grid columns read {float(np.median(grid)):.2f} s wide, not the "
        f"{record_s / columns:.2f} s of a {columns}-column page: horizontal scale corrected "
        f"by a factor {factor:.3f}"
    ))
