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
from ecgbridge.standards import STANDARD_ROWS


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


#: Standard arrangements a page may be completed to, by name (rows top to bottom).
STANDARD_ARRANGEMENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "3x4": STANDARD_ROWS[3],
    "6x2": STANDARD_ROWS[6],
    "12x1": STANDARD_ROWS[12],
}
#: Lead names that look alike in print; a read label of the same family as the
#: arrangement's lead is a misread, not a contradiction.
LOOK_ALIKE_FAMILIES: tuple[frozenset[str], ...] = (
    frozenset({"I", "II", "III"}),
    frozenset({"aVR", "aVL", "aVF"}),
    frozenset({"V1", "V2", "V3", "V4", "V5", "V6"}),
)
#: A lone vertical stroke: what grid remnants and lead-change ticks look like.
_STROKE_LEAD = "I"
#: Lead names printed as vertical bars only.
_BAR_LEADS = frozenset({"I", "II", "III"})
#: Fewest read labels that must agree with an arrangement before it is used.
MIN_AGREEING_LABELS = 2
#: Read labels that must agree per tolerated look-alike misread.
_AGREEING_PER_MISREAD = 2
#: Most rhythm strips printed under the grid of a standard layout (3x4+3).
MAX_RHYTHM_STRIPS = 3
#: Rows of the grid must be at least this fraction of the page's typical row length.
_MIN_GRID_ROW_FRACTION = 0.5


@dataclass(frozen=True)
class LabelEvidence:
    """A lead name read on the page: in which row, starting at which column (px)."""

    row: int
    x: float
    lead: str
    score: float


@dataclass(frozen=True)
class LayoutCompletion:
    """A standard arrangement the page's read labels agree with.

    Attributes
    ----------
    arrangement : str
        Name in :data:`STANDARD_ARRANGEMENTS`.
    first_row : int
        Index of the trace row holding the arrangement's first row.
    rows : list of list of PanelSlot
        Panels of every trace row (rhythm strips after the grid keep what was read,
        unread ones get lead ""; rows above the grid get none).
    agreeing : int
        Read labels at the place the arrangement puts them.
    misreads : tuple of tuple of str
        ``(read, arrangement)`` pairs of look-alike names that disagreed.
    inferred : tuple of str
        Leads named from the arrangement, their labels unread.
    """

    arrangement: str
    first_row: int
    rows: list[list[PanelSlot]]
    agreeing: int
    misreads: tuple[tuple[str, str], ...]
    inferred: tuple[str, ...]


def _family(lead: str) -> frozenset[str] | None:
    return next((f for f in LOOK_ALIKE_FAMILIES if lead in f), None)


def _label_shift(
    evidence: list[LabelEvidence], first_row: int, last_row: int, origins: list[float],
    col_w: float,
) -> float:
    """Common offset of the labels from their column starts (px), at most 15 % of a column.

    Labels sit at one device-specific place relative to their panel start, and a
    row start taken at an undetected calibration pulse moves every column start
    alike; the median offset of the multi-character labels measures both.
    """
    offsets = []
    for ev in evidence:
        if first_row <= ev.row < last_row and ev.lead != _STROKE_LEAD:
            rel = ev.x - origins[ev.row]
            offsets.append(rel - round(rel / col_w) * col_w)
    if not offsets:
        return 0.0
    return float(np.clip(np.median(offsets), -0.15 * col_w, 0.15 * col_w))


def _judge_arrangement(
    table: tuple[tuple[str, ...], ...], first_row: int, evidence: list[LabelEvidence],
    origins: list[float], row_length: float, ppm: float,
) -> tuple[dict[tuple[int, int], float], list[tuple[str, str]]] | None:
    """Agreeing cells (with their scores) and misreads, or None on a contradiction."""
    n_cols = len(table[0])
    col_w = row_length / n_cols
    agree: dict[tuple[int, int], float] = {}
    misread: dict[tuple[int, int], tuple[str, str]] = {}
    bar_conflicts = 0
    last_row = first_row + len(table)
    shift = _label_shift(evidence, first_row, last_row, origins, col_w)
    for ev in evidence:
        if ev.row < first_row:
            # A label above the grid is unexplained by this arrangement.
            if ev.lead != _STROKE_LEAD:
                return None
            continue
        if ev.row >= last_row:
            continue  # rhythm strips may repeat any lead
        x_origin = origins[ev.row] + shift
        if not _near_column_start(ev.x, x_origin, col_w, ppm):
            continue
        col = round((ev.x - x_origin) / col_w)
        if col >= n_cols:
            continue
        expected = table[ev.row - first_row][col]
        if ev.lead == expected:
            cell = (ev.row, col)
            agree[cell] = max(agree.get(cell, 0.0), ev.score)
        elif ev.lead == _STROKE_LEAD:
            continue  # a grid remnant or tick, not a label
        elif ev.lead in _BAR_LEADS:
            bar_conflicts += 1  # "II" where "III" belongs: bars, not a read name
        elif _family(ev.lead) is not None and _family(ev.lead) == _family(expected):
            misread[(ev.row, col)] = (ev.lead, expected)
        else:
            return None
    if bar_conflicts:
        # Bars ("II", "III") are imitated by grid remnants and lead-change markers;
        # only name-shaped labels that agree (aVR, V1 ...) can outvote them.
        shaped = sum(1 for (r, c) in agree if table[r - first_row][c] not in _BAR_LEADS)
        if shaped < MIN_AGREEING_LABELS:
            return None
    misreads = [m for cell, m in misread.items() if cell not in agree]
    return agree, misreads


def complete_standard_layout(
    evidence: list[LabelEvidence],
    spans: list[tuple[float, float]],
    current: list[list[PanelSlot]],
    row_length: float,
    px_per_mm_x: float,
) -> LayoutCompletion | None:
    """Name unread panels from the one standard arrangement the read labels agree with.

    Every arrangement of :data:`STANDARD_ARRANGEMENTS` is placed on every run of
    consecutive full-length trace rows with at most :data:`MAX_RHYTHM_STRIPS` full
    rows below it. It is accepted when at least
    :data:`MIN_AGREEING_LABELS` read labels sit where it puts them, no read label
    contradicts it (a lone "I" stroke contradicting it is taken for a grid remnant,
    and so are "II"/"III" bars when two name-shaped labels such as aVR or V2 agree;
    a look-alike name such as aVF for aVL is tolerated once per two agreeing
    labels) and no other placement explains the labels equally well.

    Parameters
    ----------
    evidence : list of LabelEvidence
        Labels read on the page (rows indexed as `spans`).
    spans : list of tuple of float
        ``(x_origin, x_end)`` of every trace row, top to bottom.
    current : list of list of PanelSlot
        Panels found from the labels alone; rhythm strips below the grid keep them.
    row_length : float
        Typical length of a full row in pixels.
    px_per_mm_x : float
        Horizontal scale.

    Returns
    -------
    LayoutCompletion or None
        None when no arrangement fits, or two fit equally well.
    """
    origins = [o for o, _e in spans]
    full = [(e - o) >= _MIN_GRID_ROW_FRACTION * row_length for o, e in spans]
    fits: list[tuple[int, int, str, int, dict[tuple[int, int], float],
                     list[tuple[str, str]]]] = []
    for name, table in STANDARD_ARRANGEMENTS.items():
        for first in range(len(spans) - len(table) + 1):
            if not all(full[first: first + len(table)]):
                continue
            if sum(full[first + len(table):]) > MAX_RHYTHM_STRIPS:
                continue  # more full rows below than any layout has rhythm strips
            judged = _judge_arrangement(table, first, evidence, origins, row_length,
                                        px_per_mm_x)
            if judged is None:
                continue
            agree, misreads = judged
            if len(agree) < MIN_AGREEING_LABELS:
                continue
            if len(misreads) * _AGREEING_PER_MISREAD > len(agree):
                continue
            fits.append((len(agree), -len(misreads), name, first, agree, misreads))
    if not fits:
        return None
    fits.sort(key=lambda f: (f[0], f[1]), reverse=True)
    if len(fits) > 1 and fits[1][:2] == fits[0][:2]:
        return None  # two placements explain the labels equally well
    _n, _m, name, first, agree, misreads = fits[0]
    table = STANDARD_ARRANGEMENTS[name]
    rows: list[list[PanelSlot]] = []
    inferred: list[str] = []
    for i, (x_origin, _x_end) in enumerate(spans):
        if i < first:
            rows.append([])
        elif i < first + len(table):
            leads = table[i - first]
            col_w = row_length / len(leads)
            slots = []
            for k, lead in enumerate(leads):
                score = agree.get((i, k), 0.0)
                if (i, k) not in agree:
                    inferred.append(lead)
                slots.append(PanelSlot(lead, k, len(leads), int(round(x_origin + k * col_w)),
                                       int(round(x_origin + (k + 1) * col_w)), score))
            rows.append(slots)
        else:
            # A rhythm strip named after a lone stroke ("I") is more likely unread.
            strips = [s for s in current[i]
                      if s.lead and s.columns == 1 and s.lead != _STROKE_LEAD]
            if not strips and spans[i][1] - x_origin >= _MIN_GRID_ROW_FRACTION * row_length:
                # An unread rhythm strip: named later from the grid panel it repeats.
                strips = [PanelSlot("", 0, 1, int(round(x_origin)),
                                    int(round(x_origin + row_length)), 0.0)]
            rows.append(strips)
    return LayoutCompletion(name, first, rows, len(agree), tuple(misreads), tuple(inferred))
