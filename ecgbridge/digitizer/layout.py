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


#: Column counts of known layouts (3x4: 4, 6x2: 2, 12x1 / rhythm strips: 1; 3 for 4x3 carts).
COLUMN_COUNTS: tuple[int, ...] = (1, 2, 3, 4)


def _near_column_start(x: float, x_origin: float, col_w: float, ppm: float) -> bool:
    """True if column `x` is within a few mm of a panel start."""
    k = round((x - x_origin) / col_w)
    return k >= 0 and abs((x - x_origin) - k * col_w) <= max(6.0 * ppm, 0.12 * col_w)


def choose_columns(
    all_labels: list[list[LabelWord]], origins: list[float], row_length: float, ppm: float
) -> int:
    """Number of panels per multi-panel row that best explains where labels sit.

    Each candidate count is scored by how many labels (in rows with two or more
    labels) sit at a column start; ties go to the smaller count.
    """
    best_n, best_score = 1, -1
    for n in COLUMN_COUNTS:
        col_w = row_length / n
        score = 0
        for labels, x0 in zip(all_labels, origins, strict=True):
            if len(labels) < 2:
                continue
            near = sum(_near_column_start(lw.box[0], x0, col_w, ppm) for lw in labels)
            score += 2 * near - len(labels)
        if score > best_score:
            best_n, best_score = n, score
    return best_n


def assign_panels(
    labels: list[LabelWord], x_origin: float, row_length: float, n_columns: int,
    px_per_mm_x: float,
) -> list[PanelSlot]:
    """Turn the labels read in one row into panels.

    Parameters
    ----------
    labels : list of LabelWord
        Labels found in the row band, left to right.
    x_origin : float
        Column where the row's signal starts (after the pulse).
    row_length : float
        Length of the row's signal area in pixels.
    n_columns : int
        Panels per multi-panel row on this page (:func:`choose_columns`).
    px_per_mm_x : float
        Horizontal scale (labels may sit a few mm left of their panel start).

    Returns
    -------
    list of PanelSlot
        One per column of the row; columns without a readable label get lead "".
        Labels that do not sit at a column start are ignored.
    """
    slack = 6.0 * px_per_mm_x
    x_end = x_origin + row_length
    inside = [lw for lw in labels if x_origin - slack <= lw.box[0] < x_end - slack]
    if not inside:
        return []
    if n_columns > 1:
        aligned = [lw for lw in inside
                   if _near_column_start(lw.box[0], x_origin, row_length / n_columns,
                                         px_per_mm_x)]
        inside = aligned or inside
    # A single label at the row start: a rhythm strip (or a 12x1 row).
    single = len(inside) == 1 and inside[0].box[0] < x_origin + 0.1 * row_length
    n = 1 if single else n_columns
    col_w = row_length / n
    by_col: dict[int, LabelWord] = {}
    for lw in inside:
        if n > 1 and not _near_column_start(lw.box[0], x_origin, col_w, px_per_mm_x):
            continue
        k = int(np.clip(round((lw.box[0] - x_origin) / col_w), 0, n - 1))
        if k not in by_col or lw.score > by_col[k].score:
            by_col[k] = lw
    if not by_col:
        return []
    slots: list[PanelSlot] = []
    for k in range(n):
        found = by_col.get(k)
        x0 = int(round(x_origin + k * col_w))
        x1 = int(round(x_origin + (k + 1) * col_w))
        slots.append(PanelSlot(found.lead if found else "", k, n, x0, x1,
                               found.score if found else 0.0))
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
        PanelSlot(lead, k, n, int(round(x_origin + k * col_w)),
                  int(round(x_origin + (k + 1) * col_w)), 0.0)
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
            name += f"+{single[0][0].lead}" if len(single) == 1 else f"+{len(single)}"
        return name
    if single:
        return f"{len(single)}x1"
    return "unknown"
