"""Layout: split trace rows into panels and name them from the printed labels.

A row shows ``N`` panels of equal duration side by side (``N`` = 4 for 3x4 pages, 2
for 6x2, 1 for rhythm strips and 12x1). ``N`` and the lead of every panel come from
the label words read in the row; the panel's time window comes from its position.
When no label can be read anywhere, standard layouts are assumed from the number of
rows, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgbridge.digitizer.labels import LabelWord
from ecgbridge.ecg import LEADS

#: Standard lead order per row when no label can be read (rows top to bottom).
STANDARD_ROWS: dict[int, tuple[tuple[str, ...], ...]] = {
    3: (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6")),
    4: (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"), ("II",)),
    6: (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6")),
    7: (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6"),
        ("II",)),
    12: tuple((lead,) for lead in ("I", "II", "III", "aVR", "aVL", "aVF",
                                    "V1", "V2", "V3", "V4", "V5", "V6")),
}


@dataclass(frozen=True)
class PanelSlot:
    """One panel of a row: which lead, which columns."""

    lead: str
    column: int
    columns: int
    x0: int
    x1: int
    label_score: float


def label_spacing(all_labels: list[list[LabelWord]], px_per_mm_x: float) -> float | None:
    """Typical horizontal distance between consecutive labels of a row (the column width).

    Returns None when no row has two labels at least 15 mm apart.
    """
    gaps: list[float] = []
    for row in all_labels:
        xs = sorted(lw.box[0] for lw in row)
        for a, b in zip(xs, xs[1:], strict=False):
            if b - a >= 15.0 * px_per_mm_x:
                gaps.append(b - a)
    if not gaps:
        return None
    g = np.asarray(gaps)
    smallest = g.min()
    # Gaps may span two columns when a label was missed: keep the ones near the smallest.
    return float(np.median(g[g < 1.5 * smallest]))


def assign_panels(
    labels: list[LabelWord], x_origin: float, row_length: float, column_width: float | None,
    px_per_mm_x: float,
) -> list[PanelSlot]:
    """Turn the labels read in one row into panels.

    Parameters
    ----------
    labels : list of LabelWord
        Labels found in the row band, left to right.
    x_origin : int
        Column where the row's signal starts (after the pulse).
    row_length : float
        Length of the row's signal area in pixels.
    column_width : float or None
        Page-wide label spacing (:func:`label_spacing`); None = one panel per label.
    px_per_mm_x : float
        Horizontal scale (labels may sit a few mm left of their panel start).

    Returns
    -------
    list of PanelSlot
        One per column of the row; columns without a readable label get lead "".
    """
    slack = 6.0 * px_per_mm_x
    x_end = x_origin + row_length
    inside = [lw for lw in labels if x_origin - slack <= lw.box[0] < x_end - slack]
    if not inside:
        return []
    if len(inside) == 1 and inside[0].box[0] < x_origin + 0.1 * row_length:
        n = 1  # a single label at the row start: a rhythm strip (or a 12x1 row)
    elif column_width is not None and column_width > 0:
        n = max(1, int(round(row_length / column_width)))
    else:
        n = len(inside)
    if len(inside) > n:
        n = len(inside)
    col_w = row_length / n
    by_col: dict[int, LabelWord] = {}
    for lw in inside:
        centre = 0.5 * (lw.box[0] + lw.box[2])
        k = int(np.clip(np.floor((centre - x_origin + 0.2 * col_w) / col_w), 0, n - 1))
        if k not in by_col or lw.score > by_col[k].score:
            by_col[k] = lw
    slots: list[PanelSlot] = []
    for k in range(n):
        lw = by_col.get(k)
        x0 = int(round(x_origin + k * col_w))
        x1 = int(round(x_origin + (k + 1) * col_w))
        slots.append(PanelSlot(lw.lead if lw else "", k, n, x0, x1, lw.score if lw else 0.0))
    return slots


#: Leads printed in the same column of standard layouts (3x4: 3 per group).
LEAD_GROUPS: tuple[tuple[str, ...], ...] = (
    ("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"),
)


def fill_missing_leads(rows: list[list[PanelSlot]]) -> list[list[PanelSlot]]:
    """Name unlabelled panels when the page leaves no doubt; drop the others.

    An unnamed panel takes a lead missing from the page that belongs to the same
    group (I-III, aVR-aVF, V1-V3, V4-V6) as the labels read in the same column
    position; several candidates are ordered top to bottom in group order. When
    exactly one lead is missing and one panel is unnamed, that lead is used.
    """
    out = [list(r) for r in rows]
    named = {s.lead for r in out for s in r if s.lead}
    unnamed = [(i, j) for i, r in enumerate(out) for j, s in enumerate(r) if not s.lead]
    missing = [lead for lead in LEADS if lead not in named]
    if len(unnamed) == 1 and len(missing) == 1:
        i, j = unnamed[0]
        s = out[i][j]
        out[i][j] = PanelSlot(missing[0], s.column, s.columns, s.x0, s.x1, 0.0)
        return [[s for s in r if s.lead] for r in out]
    # Column-group inference: same (columns, column) position in other rows.
    by_position: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in unnamed:
        s = out[i][j]
        by_position.setdefault((s.columns, s.column), []).append((i, j))
    for (cols, col), cells in by_position.items():
        peers = [s.lead for r in out for s in r if s.lead and s.columns == cols and s.column == col]
        groups = {g for g in LEAD_GROUPS for lead in peers if lead in g}
        if len(groups) != 1:
            continue
        group = groups.pop()
        cands = [lead for lead in group if lead in missing]
        if len(cands) != len(cells):
            continue
        for (i, j), lead in zip(sorted(cells), cands, strict=True):
            s = out[i][j]
            out[i][j] = PanelSlot(lead, s.column, s.columns, s.x0, s.x1, 0.0)
            missing.remove(lead)
    return [[s for s in r if s.lead] for r in out]


def standard_panels(
    row_index: int, n_rows: int, x_origin: float, x_end: float
) -> list[PanelSlot]:
    """Panels of a standard layout for a page of `n_rows` rows (no labels readable)."""
    table = STANDARD_ROWS.get(n_rows)
    if table is None or row_index >= len(table):
        return []
    leads = table[row_index]
    n = len(leads)
    col_w = (x_end - x_origin) / n
    return [
        PanelSlot(lead, k, n, int(round(x_origin + k * col_w)), int(round(x_origin + (k + 1) * col_w)),
                  0.0)
        for k, lead in enumerate(leads)
    ]


def layout_name(rows: list[list[PanelSlot]]) -> str:
    """Describe the found layout, e.g. ``"3x4+II"``, ``"6x2+II"``, ``"12x1"``."""
    multi = [r for r in rows if len(r) > 1 or (r and r[0].columns > 1)]
    single = [r for r in rows if r and r[0].columns == 1]
    if multi:
        cols = max(r[0].columns for r in multi)
        name = f"{len(multi)}x{cols}"
        if single:
            name += "+" + ",".join(r[0].lead for r in single) if len(single) == 1 else f"+{len(single)}"
        return name
    if single:
        return f"{len(single)}x1"
    return "unknown"
