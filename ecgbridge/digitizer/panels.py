"""Panel signals of a raster page: every named panel's samples, merged per lead.

A panel's values are the followed trace's rows over the panel's columns, with the
lead-change markers at its inner edges (:func:`panel_values`) and, in the first
panel, the calibration pulse's falling edge (:func:`blank_pulse_fall`) blanked; the
row's 0-mV level is its most frequent trace level (:func:`row_baseline`) unless the
pulse's foot gives it. :func:`panel_signals` turns them into millivolts at their
true time, names unlabelled rhythm strips, checks the limb leads and aligns panels
to the rhythm strip (:mod:`ecgbridge.digitizer.postprocess`), and merges the
panels of each lead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecgbridge.digitizer import postprocess
from ecgbridge.digitizer.calibration_check import GainDecision
from ecgbridge.digitizer.layout import PanelSlot
from ecgbridge.digitizer.postprocess import Candidate
from ecgbridge.digitizer.pulse import CalibrationPulse
from ecgbridge.digitizer.rows import PageRow, TraceRow
from ecgbridge.digitizer.timebase import TimeBase
from ecgbridge.digitizer.trace import TracePath
from ecgbridge.ecg import PanelInfo
from ecgbridge.errors import DigitizationError
from ecgbridge.standards import STANDARD_DURATION_S

#: A pulse foot further than this (mm) from the row's most frequent level is distrusted.
_MAX_FOOT_TO_MODE_MM = 2.0
#: Lead of a rhythm strip whose label is unread and whose trace matches no panel.
_DEFAULT_STRIP_LEAD = "II"


@dataclass(frozen=True)
class PanelSignals:
    """The leads one page shows, each merged from its panels.

    Attributes
    ----------
    signals : dict of str to numpy.ndarray
        Lead -> samples (mV) at the output rate, NaN where not shown.
    quality : dict of str to float
        Lead -> quality of its best panel.
    panels : list of PanelInfo
        Every panel delivered.
    rows : tuple of PageRow
        The rows, unlabelled rhythm strips named as their trace was identified.
    notes : tuple of str
        What was said about rows and panels, for the page's warnings.
    """

    signals: dict[str, np.ndarray]
    quality: dict[str, float]
    panels: list[PanelInfo]
    rows: tuple[PageRow, ...]
    notes: tuple[str, ...]


def panel_signals(rows: tuple[PageRow, ...], time: TimeBase, gain: GainDecision,
                  labelled: bool, fs: float, page_index: int) -> PanelSignals:
    """Every named panel's samples at their true time, merged per lead (the signal stage).

    Parameters
    ----------
    rows : tuple of PageRow
        The rows with their named panels (:func:`ecgbridge.digitizer.page_layout.lay_out_page`).
    time : TimeBase
        Scale and paper speed.
    gain : GainDecision
        The page's gain (rows whose pulse disagreed are not used for the baseline).
    labelled : bool
        True when read labels named the panels (else the quality of an unlabelled page).
    fs : float
        Output sampling rate (Hz).
    page_index : int
        0-based page number.

    Raises
    ------
    DigitizationError
        No row has a named panel.
    """
    candidates = _candidates(rows, time, gain, labelled, fs, page_index)
    if not candidates:
        raise DigitizationError(f"page {page_index + 1}: no lead panels found")
    trace_rows = [r.row for r in rows]
    row_slots = [list(r.slots) for r in rows]
    notes = postprocess.unused_rows_warnings(
        [(float(r.x_start), float(r.top), float(r.x_end), float(r.bottom)) for r in trace_rows],
        page_index, [bool(slots) for slots in row_slots])
    if "" in candidates:
        candidates = postprocess.name_unlabelled_strips(candidates, fs, _DEFAULT_STRIP_LEAD,
                                                        notes)
    candidates = postprocess.check_einthoven(candidates)
    candidates = postprocess.relabel_rhythm_strips(candidates)
    row_slots = names_from_panels(row_slots, candidates, trace_rows)
    candidates = postprocess.align_panels_to_rhythm(candidates, fs, notes)
    n_total = int(round(STANDARD_DURATION_S * fs))
    signals: dict[str, np.ndarray] = {}
    quality: dict[str, float] = {}
    panels: list[PanelInfo] = []
    for lead, items in candidates.items():
        items.sort(key=lambda it: -it[1])
        merged = items[0][0].copy()
        for other, _q, _info in items[1:]:
            m = min(merged.size, other.size)
            fill = ~np.isfinite(merged[:m]) & np.isfinite(other[:m])
            merged[:m][fill] = other[:m][fill]
        last = max((info.start_s + info.duration_s for _s, _q, info in items), default=0.0)
        keep = n_total if last <= STANDARD_DURATION_S * 1.05 else merged.size
        signals[lead] = merged[:keep]
        quality[lead] = float(items[0][1])
        panels.extend(info for _s, _q, info in items)
    named = tuple(replace(r, slots=tuple(slots)) for r, slots in zip(rows, row_slots, strict=True))
    return PanelSignals(signals, quality, panels, named, tuple(notes))


def _candidates(rows: tuple[PageRow, ...], time: TimeBase, gain: GainDecision, labelled: bool,
                fs: float, page_index: int) -> dict[str, list[Candidate]]:
    """Every named panel's samples (mV, at their true time), by lead."""
    ppm_x, ppm_y = time.scale.px_per_mm_x, time.scale.px_per_mm_y
    heights = [r.pulse.height_px for i, r in enumerate(rows)
               if r.pulse is not None and i not in gain.outlier_rows]
    median_pulse_h = float(np.median(heights)) if heights else 1.0
    n_total = int(round(STANDARD_DURATION_S * fs))
    px_per_s = ppm_x * time.speed
    row_slots = [list(r.slots) for r in rows]
    candidates: dict[str, list[Candidate]] = {}
    for r in rows:
        row, path, pulse, x_origin = r.row, r.path, r.pulse, r.x_origin
        baseline = row_baseline(path, row)
        if pulse is not None and (
            abs(pulse.foot_y - baseline) <= _MAX_FOOT_TO_MODE_MM * ppm_y
            and abs(pulse.height_px / median_pulse_h - 1.0) <= 0.15
        ):
            baseline = pulse.foot_y
        for slot in r.slots:
            start_s = (slot.x0 - x_origin) / px_per_s
            duration_s = (slot.x1 - slot.x0) / px_per_s
            ys = panel_values(path, slot, ppm_x, first=slot.column == 0,
                              last=slot.column == slot.columns - 1)
            if pulse is not None and slot.column == 0:
                blank_pulse_fall(ys, path, slot, pulse)
            mv_per_px = 1.0 / (ppm_y * gain.mm_per_mv)
            mv = (baseline - ys) * mv_per_px
            at, fine_ys = slot_points(path, slot, ys)
            n_needed = max(n_total, int(np.ceil((start_s + duration_s) * fs)) + 1)
            samples = postprocess.place_samples(mv, slot.x0, x_origin, px_per_s, fs, n_needed,
                                                (at, (baseline - fine_ys) * mv_per_px))
            found = float(np.isfinite(ys).mean()) if ys.size else 0.0
            q = found * (0.5 + 0.5 * min(1.0, slot.label_score)) if labelled else 0.3 * found
            info = PanelInfo(
                lead=slot.lead, page=page_index,
                box=(float(slot.x0), float(row.top), float(slot.x1), float(row.bottom)),
                baseline_px=float(baseline), start_s=float(start_s), duration_s=float(duration_s),
                rhythm_strip=(slot.columns == 1 and len(rows) > 1
                              and is_rhythm(row_slots, slot)),
            )
            candidates.setdefault(slot.lead, []).append((samples, q, info))
    return candidates

#: Half-width (mm) of the strip blanked around internal panel boundaries (lead markers).
_BOUNDARY_BLANK_MM = 0.6


def names_from_panels(
    row_slots: list[list[PanelSlot]], candidates: dict[str, list[tuple[np.ndarray, float,
                                                                   PanelInfo]]],
    rows: list[TraceRow],
) -> list[list[PanelSlot]]:
    """Give the slots the names their panels are delivered under (drop unread ones left out).

    An unread rhythm strip is named after the panel it repeats; a panel whose label was
    misread takes the name its trace was checked to be (Einthoven's law, the rhythm
    strip's match), so the layout's name and the overlays say what is delivered.
    """
    names = {(int(info.box[0]), int(info.box[1])): lead
             for lead, items in candidates.items() for _s, _q, info in items}
    out = []
    for row, slots in zip(rows, row_slots, strict=True):
        kept = []
        for s in slots:
            lead = names.get((s.x0, int(row.top)))
            if not s.lead and lead is None:
                continue
            if lead is not None and lead != s.lead:
                s = PanelSlot(lead, s.column, s.columns, s.x0, s.x1, s.label_score)
            kept.append(s)
        out.append(kept)
    return out


def is_rhythm(row_slots: list[list[PanelSlot]], slot: PanelSlot) -> bool:
    """A one-panel row is a rhythm strip when the page also has multi-panel rows."""
    return any(len(r) > 1 for r in row_slots)


def row_baseline(path: TracePath, row: TraceRow) -> float:
    """0-mV row of a row without pulse: the most frequent trace level."""
    y = path.y[np.isfinite(path.y)]
    if y.size < 10:
        return row.baseline
    hist = np.bincount(np.round(y - y.min()).astype(np.int64))
    k = int(np.argmax(np.convolve(hist, np.ones(3), mode="same")))
    return float(y.min() + k)


def panel_values(path: TracePath, slot: PanelSlot, ppm_x: float, first: bool,
                 last: bool) -> np.ndarray:
    """Trace rows of a panel's columns, with lead-change markers at inner edges blanked.

    A marker drawn across the trace makes the columns next to the panel edge tall
    vertical runs; those (up to ``_BOUNDARY_BLANK_MM`` from the edge) carry no signal.
    """
    a = slot.x0 - path.x0
    b = slot.x1 - path.x0
    ys = np.full(slot.x1 - slot.x0, np.nan)
    lo, hi = max(a, 0), min(b, path.y.size)
    if hi > lo:
        ys[lo - a: hi - a] = path.y[lo:hi]
    blank = int(round(_BOUNDARY_BLANK_MM * ppm_x))
    if blank:
        # Only the marker's columns are blanked: tall vertical strokes next to the edge.
        tall = np.zeros(ys.size, dtype=bool)
        if hi > lo:
            heights = path.bottom[lo:hi] - path.top[lo:hi]
            tall[lo - a: hi - a] = heights > 2.5 * path.line_width + 1
        if not first:
            hits = np.nonzero(tall[:blank])[0]
            if hits.size:
                ys[: hits[-1] + 2] = np.nan
        if not last:
            hits = np.nonzero(tall[ys.size - blank:])[0]
            if hits.size:
                ys[ys.size - blank + hits[0] - 1:] = np.nan
    return ys


def slot_points(path: TracePath, slot: PanelSlot, ys: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The panel's trace as positions (columns from ``slot.x0``) and rows.

    The path's sub-pixel points where it has them, else one per column; points whose
    column `ys` leaves blank (markers, the pulse's fall, no ink) are left out.
    """
    if path.points is None:
        seen = np.nonzero(np.isfinite(ys))[0]
        return seen.astype(float), ys[seen]
    at = path.points.x + (path.x0 - slot.x0)
    col = np.rint(at).astype(np.int64)
    inside = (col >= 0) & (col < ys.size)
    keep = np.zeros(at.size, dtype=bool)
    keep[inside] = np.isfinite(ys[col[inside]])
    return at[keep], path.points.y[keep]


def blank_pulse_fall(ys: np.ndarray, path: TracePath, slot: PanelSlot,
                     pulse: CalibrationPulse) -> None:
    """Blank the calibration pulse's falling edge where it reaches into the first panel.

    The pen has a width, so the vertical stroke of the pulse's fall covers a few
    columns after ``x_fall``; read as signal it would give a 1 mV spike at the start
    of the row. Columns up to half a pen width (plus one) past the fall, and
    following columns whose ink still spans the pulse from top to foot (a fall
    blurred wider than the pen), are not signal; a QRS right after the fall is.
    """
    pen = max(pulse.edge_px, path.line_width, 1.0)
    end = int(np.ceil(pulse.x_fall + 0.5 * pen)) + 1 - slot.x0
    limit = min(ys.size, end + int(np.ceil(2 * pen)))
    top = pulse.foot_y - pulse.height_px
    slack = max(2.0, pen)
    k = max(0, end)
    while k < limit:
        c = slot.x0 + k - path.x0
        if not 0 <= c < path.y.size:
            break
        # Still the fall (blurred wider than the pen) only while the ink spans the
        # pulse from top to foot; a QRS right after it is signal.
        if abs(path.top[c] - top) > slack or abs(path.bottom[c] - pulse.foot_y) > slack:
            break
        k += 1
    ys[: max(0, min(k, ys.size))] = np.nan
