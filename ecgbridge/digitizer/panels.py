"""Panel signals of a raster page: a panel's trace values, baseline and blanked edges.

A panel's values are the followed trace's rows over the panel's columns, with the
lead-change markers at its inner edges (:func:`panel_values`) and, in the first
panel, the calibration pulse's falling edge (:func:`blank_pulse_fall`) blanked; the
row's 0-mV level is its most frequent trace level (:func:`row_baseline`) unless the
pulse's foot gives it.
"""

from __future__ import annotations

import numpy as np

from ecgbridge.digitizer.layout import PanelSlot
from ecgbridge.digitizer.pulse import CalibrationPulse
from ecgbridge.digitizer.rows import TraceRow
from ecgbridge.digitizer.trace import TracePath
from ecgbridge.ecg import PanelInfo

#: Half-width (mm) of the strip blanked around internal panel boundaries (lead markers).
_BOUNDARY_BLANK_MM = 0.6


def strip_names_from_panels(
    row_slots: list[list[PanelSlot]], candidates: dict[str, list[tuple[np.ndarray, float,
                                                                   PanelInfo]]],
    rows: list[TraceRow],
) -> list[list[PanelSlot]]:
    """Give unread rhythm-strip slots the name their trace was identified as (or drop them)."""
    names = {(int(info.box[0]), int(info.box[1])): lead
             for lead, items in candidates.items() for _s, _q, info in items}
    out = []
    for row, slots in zip(rows, row_slots, strict=True):
        kept = []
        for s in slots:
            if not s.lead:
                lead = names.get((s.x0, int(row.top)))
                if lead is None:
                    continue
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
