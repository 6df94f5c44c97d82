"""The pages of one document merged into one 12-lead ECG.

Each raster page yields a :class:`PageResult`; the best reading of every lead wins,
gaps filled from the others (:func:`merge_pages`). Limb leads are reconciled, and a
limb lead no page shows is derived from the others (and said so).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecgbridge.digitizer import calibration_check, postprocess
from ecgbridge.digitizer import quality as quality_model
from ecgbridge.digitizer.consistency import replace_limb_outliers
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.ecg import ECG, LEADS, Calibration, PanelInfo, SourceInfo
from ecgbridge.errors import DigitizationError
from ecgbridge.standards import STANDARD_DURATION_S

#: Quality given to a lead computed from other leads instead of read from the page.
_DERIVED_QUALITY = 0.3
#: Below this quality a lead is not to be trusted (the documented contract).
TRUST_THRESHOLD = 0.5


@dataclass(frozen=True)
class PageResult:
    """What one raster page yielded.

    Attributes
    ----------
    signals : dict of str to numpy.ndarray
        Lead -> samples (mV) at the output rate, NaN where not shown.
    quality : dict of str to float
        Lead -> quality in [0, 1].
    panels : list of PanelInfo
        Every panel the leads were read from.
    calibration : Calibration
        The page's scale, gain, speed, layout and warnings.
    left_out : tuple of str
        Leads the page shows but that are not delivered (the warnings say why).
    """

    signals: dict[str, np.ndarray] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    panels: list[PanelInfo] = field(default_factory=list)
    calibration: Calibration = field(default_factory=Calibration)
    left_out: tuple[str, ...] = ()


def merge_pages(
    results: list[PageResult], options: DigitizeOptions, source: SourceInfo, errors: list[str]
) -> ECG:
    n = int(round(STANDARD_DURATION_S * options.fs))
    for r in results:
        for sig in r.signals.values():
            n = max(n, sig.size)
    signals = np.full((len(LEADS), n), np.nan)
    quality = [0.0] * len(LEADS)
    panels: list[PanelInfo] = []
    for r in results:
        panels.extend(r.panels)
        for lead, sig in r.signals.items():
            i = LEADS.index(lead)
            if r.quality[lead] > quality[i]:
                row = np.full(n, np.nan)
                row[: sig.size] = sig
                # Keep what the worse version showed where the better one has nothing.
                old = signals[i]
                signals[i] = np.where(np.isfinite(row), row, old)
                quality[i] = r.quality[lead]
            else:
                row = signals[i]
                fill = np.isfinite(sig) & ~np.isfinite(row[: sig.size])
                row[: sig.size][fill] = sig[fill]
    present = {lead: signals[i] for i, lead in enumerate(LEADS) if np.isfinite(signals[i]).any()}
    present = postprocess.reconcile_limb_leads(present)
    as_read = dict(present)
    present, mended = replace_limb_outliers(present)
    for lead, sig in present.items():
        signals[LEADS.index(lead)] = sig
    # A lead the pages show is never computed from others: it is read, or named.
    shown = {p.lead for p in panels}
    derived = {lead: sig for lead, sig in postprocess.derive_missing_limb_leads(present).items()
               if lead not in shown}
    derived, _implausible, limit_notes = calibration_check.limit_leads(
        derived, why="derived from misread limb leads")
    explained = {lead for r in results for lead in r.left_out}
    derived_warnings = [
        f"lead {lead} is printed on the page but its trace could not be read; left out"
        for lead in LEADS if lead in shown and lead not in present and lead not in explained
    ]
    for lead, sig in derived.items():
        signals[LEADS.index(lead)] = sig
        quality[LEADS.index(lead)] = _DERIVED_QUALITY
        derived_warnings.append(
            f"lead {lead} not read from the page; derived from the other limb leads"
        )
    calib = results[0].calibration
    derived_warnings += limit_notes
    if mended:
        spans = ", ".join(f"{lead} {1000.0 * k / options.fs:.0f} ms" for lead, k in mended.items())
        derived_warnings.append(
            "limb-lead samples that alone broke Einthoven's and Goldberger's laws, where the "
            f"other limb leads agreed, replaced by the value those leads give: {spans}")
    # The reading's evidence decides how far each lead can be trusted (< 0.5: not): a
    # mended lead is judged as it was read, its breaks of the laws counting against it.
    evidence = signals.copy()
    for lead in mended:
        evidence[LEADS.index(lead)] = as_read[lead]
    judged = quality_model.lead_quality(
        quality_model.lead_evidence(evidence, options.fs, quality, panels, calib))
    quality = [0.0 if not np.isfinite(signals[i]).any()
               else min(q, _DERIVED_QUALITY) if lead in derived else q
               for i, (lead, q) in enumerate(zip(LEADS, judged, strict=True))]
    if max(quality) < TRUST_THRESHOLD:
        derived_warnings.append(
            f"no lead reaches quality {TRUST_THRESHOLD} (best {max(quality):.2f}): the "
            "evidence says none of this reading's leads is to be trusted")
    if derived_warnings:
        calib = Calibration(**{**calib.__dict__,
                               "warnings": tuple(calib.warnings) + tuple(derived_warnings)})
    if len(results) > 1 or errors:
        warnings = list(calib.warnings) + [f"skipped {e}" for e in errors]
        layouts = "/".join(r.calibration.layout for r in results)
        calib = Calibration(**{**calib.__dict__, "warnings": tuple(warnings), "layout": layouts})
    if not np.isfinite(signals).any():
        raise DigitizationError("no lead could be digitized from any page")
    return ECG(signals=signals, fs=options.fs, quality=tuple(quality), calibration=calib,
               panels=tuple(panels), source=source)

