"""Layout of a page whose lead labels cannot be read: inferred from what the page shows.

Standard printouts are ``N`` multi-panel rows (3x4, 6x2 or 12x1) followed by ``K``
full-width rhythm strips. Without readable labels, the layout is chosen among
:data:`CANDIDATES` by

* the number of trace rows, counted on the page's row pitch (a missing or extra
  row does not shift the others): the main prior;
* lead-change markers, the short vertical bars printed where a multi-panel row
  changes lead (every 2.5 s on a 3x4 page, at 5 s on a 6x2 page, never in a
  rhythm strip or a 12x1 row): confirmation, and what tells a 3x4 page with three
  strips from a 6x2 page (both six rows).

The evidence that decided is returned in words, for the page's warnings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgbridge.digitizer.labels import LabelWord
from ecgbridge.digitizer.layout import (
    LOOK_ALIKE_FAMILIES,
    STANDARD_ROWS,
    PanelSlot,
    layout_name,
)
from ecgbridge.digitizer.trace import TracePath

#: Fractions of a full row where the lead changes in a 3x4 (all) or 6x2 (the middle) row.
MARK_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75)
#: Half-width (mm) of the window searched for a lead-change marker around a boundary.
_MARK_WINDOW_MM = 1.0
#: A lead-change marker is a vertical run at least this tall (mm) ...
_MARK_MIN_MM = 2.0
#: ... and at most this tall (mm): longer vertical lines are creases or page edges.
_MARK_MAX_MM = 12.0
#: ... and this many times taller than the row's typical tallest run between boundaries.
_MARK_CONTRAST = 1.8
#: Score of a marker found where the candidate layout changes lead, or found where it
#: does not; and of a marker missing where the layout changes lead (markers are optional).
_MARK_HIT, _MARK_FALSE, _MARK_MISSED = 1.5, -1.5, -0.3
#: Score lost per trace row more or fewer than the candidate layout has.
_ROW_COUNT_PENALTY = 3.0
#: Rows shorter than this fraction of the page's typical row are not counted.
_MIN_ROW_FRACTION = 0.4
#: A row whose baseline is off the page's row pitch by more than this fraction of the
#: pitch is not a trace row of the layout (a header line, a fragment).
_PITCH_TOLERANCE = 0.3
#: Most trace rows a page may show more or fewer than the layout chosen for it.
_MAX_ROW_MISCOUNT = 1
#: Labels that name fewer leads than this cannot overrule an inferred layout.
MIN_NAMED_LEADS = 3
#: Score margin below which two candidates are too close to call (the prior decides).
_CLOSE_CALL = 1.0


@dataclass(frozen=True)
class Candidate:
    """A standard layout: `grid_rows` rows of `columns` panels, then `strips` rhythm strips."""

    grid: str
    grid_rows: int
    columns: int
    strips: int
    strip_lead: str = ""

    @property
    def n_rows(self) -> int:
        """Trace rows printed on the page."""
        return self.grid_rows + self.strips

    @property
    def name(self) -> str:
        """Layout name as :func:`ecgbridge.digitizer.layout.layout_name` writes it."""
        if not self.strips:
            return self.grid
        return f"{self.grid}+{self.strip_lead or self.strips}"


#: Row orders of the benchmark generator (ecg-image-kit) where they differ from carts'.
KIT_ROWS_6X2: tuple[tuple[str, ...], ...] = (
    ("V1", "V4"), ("I", "aVR"), ("V2", "V5"), ("II", "aVL"), ("V3", "V6"), ("III", "aVF"))
KIT_ROWS_12X1: tuple[tuple[str, ...], ...] = tuple(
    (lead,) for lead in ("V4", "V1", "aVR", "I", "V5", "V2", "aVL", "II", "V6", "V3", "aVF",
                         "III"))
#: Lead orders of the rows of each grid, the carts' standard first.
ROW_ORDERS: dict[str, tuple[tuple[tuple[str, ...], ...], ...]] = {
    "3x4": (STANDARD_ROWS[3],),
    "6x2": (STANDARD_ROWS[6], KIT_ROWS_6X2),
    "12x1": (STANDARD_ROWS[12], KIT_ROWS_12X1),
}
#: An order is chosen by Einthoven's law when its I + III - II residual is below this
#: (relative to the traces' RMS) and below this fraction of every other order's.
_EINTHOVEN_MARGIN = 0.6
#: Lead identities checked for a row order: leads and their signs in a zero sum.
_LEAD_IDENTITIES: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...] = (
    (("I", "II", "III"), (1.0, -1.0, 1.0)),
    (("aVR", "aVL", "aVF"), (1.0, 1.0, 1.0)),
)

#: The standard layouts a page is chosen among.
CANDIDATES: tuple[Candidate, ...] = (
    *(Candidate("3x4", 3, 4, k) for k in range(4)),
    Candidate("6x2", 6, 2, 0), Candidate("6x2", 6, 2, 1),
    Candidate("12x1", 12, 1, 0), Candidate("12x1", 12, 1, 1),
)

#: Layout hints (``--layout``) as candidates; the strip's lead is given by the hint.
HINTS: dict[str, Candidate] = {
    "3x4": Candidate("3x4", 3, 4, 0),
    "3x4+II": Candidate("3x4", 3, 4, 1, "II"),
    "3x4+V1": Candidate("3x4", 3, 4, 1, "V1"),
    "3x4+3": Candidate("3x4", 3, 4, 3),
    "6x2": Candidate("6x2", 6, 2, 0),
    "6x2+II": Candidate("6x2", 6, 2, 1, "II"),
    "12x1": Candidate("12x1", 12, 1, 0),
    "12x1+II": Candidate("12x1", 12, 1, 1, "II"),
}


@dataclass(frozen=True)
class RowShape:
    """What one trace row shows, labels aside.

    Attributes
    ----------
    baseline : float
        Row (px) of the trace's resting level.
    length : float
        Length (px) of the row's signal.
    marks : tuple of bool
        Lead-change marker found at each of :data:`MARK_FRACTIONS` of a full row.
    """

    baseline: float
    length: float
    marks: tuple[bool, ...]


@dataclass(frozen=True)
class LayoutInference:
    """The standard layout that best explains the page's rows.

    Attributes
    ----------
    candidate : Candidate
        The chosen layout.
    layout_rows : dict of int to int
        Trace row index -> row of the layout (0-based, strips after the grid).
    evidence : str
        What decided, in words.
    score : float
        Evidence score of the chosen layout.
    """

    candidate: Candidate
    layout_rows: dict[int, int]
    evidence: str
    score: float


def _tallest_run_mm(path: TracePath, x: float, half_px: float, ppm_y: float) -> float:
    """Tallest vertical ink run (mm) of the followed trace within `half_px` of column `x`."""
    i0 = max(int(round(x - half_px)) - path.x0, 0)
    i1 = min(int(round(x + half_px)) - path.x0 + 1, path.y.size)
    if i1 <= i0:
        return 0.0
    heights = path.bottom[i0:i1] - path.top[i0:i1]
    heights = heights[np.isfinite(heights)]
    return float(heights.max()) / ppm_y if heights.size else 0.0


def boundary_marks(
    path: TracePath, x_origin: float, row_length: float, ppm_x: float, ppm_y: float
) -> tuple[bool, ...]:
    """Which panel boundaries of a full row show a lead-change marker.

    A marker is a short vertical bar across the trace: a run between
    :data:`_MARK_MIN_MM` and :data:`_MARK_MAX_MM` tall within
    :data:`_MARK_WINDOW_MM` of the boundary, clearly taller than the row's typical
    tallest run in windows away from every boundary (QRS complexes are tall too).

    Parameters
    ----------
    path : TracePath
        The row's followed trace (with per-column run extents).
    x_origin : float
        Column of the row's time origin.
    row_length : float
        Length (px) of a full row of the page.
    ppm_x, ppm_y : float
        Scale (px/mm).

    Returns
    -------
    tuple of bool
        One per fraction of :data:`MARK_FRACTIONS`.
    """
    half = _MARK_WINDOW_MM * ppm_x
    controls = [_tallest_run_mm(path, x_origin + (k + 0.5) / 16 * row_length, half, ppm_y)
                for k in range(16)]
    typical = float(np.median(controls))
    marks = []
    for f in MARK_FRACTIONS:
        h = _tallest_run_mm(path, x_origin + f * row_length, half, ppm_y)
        marks.append(_MARK_MIN_MM <= h <= _MARK_MAX_MM and h >= _MARK_CONTRAST * typical)
    return tuple(marks)


def row_shapes(
    paths: list[TracePath], baselines: list[float], spans: list[tuple[float, float]],
    row_length: float, ppm_x: float, ppm_y: float,
) -> list[RowShape]:
    """What every trace row shows: baseline, length and lead-change markers."""
    return [RowShape(float(b), float(e - o), boundary_marks(p, o, row_length, ppm_x, ppm_y))
            for p, b, (o, e) in zip(paths, baselines, spans, strict=True)]


def _place_on_pitch(ys: np.ndarray, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    """Slot of every row for a pitch (refined by a least-squares line fit of the
    baselines on their slots) and its distance from the fitted slot, in pitches."""
    origin = float(ys[0])
    for _ in range(3):
        k = np.round((ys - origin) / pitch)
        if np.ptp(k) > 0:
            pitch, intercept = (float(v) for v in np.polyfit(k, ys, 1))
            origin = intercept
    pos = (ys - origin) / pitch
    k = np.round(pos)
    k0 = int(k.min())
    return (k - k0).astype(int), np.abs(pos - k)


def row_slots_on_pitch(baselines: list[float], counted: list[bool]) -> dict[int, int]:
    """Place counted rows on the page's row pitch: row index -> slot (0 = top row).

    The pitch starts as the median distance between consecutive counted rows and is
    refined by a line fit of the baselines on their slots (a trace's resting level
    varies by a few mm around its row's). A row off the pitch by more than
    :data:`_PITCH_TOLERANCE` is left out; two rows on one slot keep the one nearer
    the slot. The top row may be a header line off the pitch: the placement from
    one of the three top rows that keeps the most rows is used.
    """
    idx = [i for i, ok in enumerate(counted) if ok]
    if len(idx) < 2:
        return {i: k for k, i in enumerate(idx)}
    ys = np.array([baselines[i] for i in idx])
    order = np.argsort(ys)
    ys, idx = ys[order], [idx[k] for k in order]
    steps = np.diff(ys)
    steps = steps[steps > 0]
    if not steps.size:
        return {idx[0]: 0}
    pitch = float(np.median(steps))
    best: dict[int, tuple[int, float]] = {}
    for start in range(min(3, len(idx) - 1)):
        slots_k, offs = _place_on_pitch(ys[start:], pitch)
        slots: dict[int, tuple[int, float]] = {}
        for i, k, off in zip(idx[start:], slots_k, offs, strict=True):
            if off <= _PITCH_TOLERANCE and (k not in slots or off < slots[k][1]):
                slots[int(k)] = (i, float(off))
        if len(slots) > len(best):
            best = slots
    return {i: k for k, (i, _off) in best.items()}


def _marks_score(marks: tuple[bool, ...], columns: int) -> float:
    """Evidence score of a row's markers for a row of `columns` panels."""
    score = 0.0
    for f, found in zip(MARK_FRACTIONS, marks, strict=True):
        expected = columns > 1 and abs(f * columns - round(f * columns)) < 1e-6
        if found:
            score += _MARK_HIT if expected else _MARK_FALSE
        elif expected:
            score += _MARK_MISSED
    return score


def _score(candidate: Candidate, slots: dict[int, int], shapes: list[RowShape],
           offset: int) -> tuple[float, dict[int, int]]:
    """Score of `candidate` placed from slot `offset`, and its row assignment."""
    n_slots = max(slots.values()) + 1
    score = -_ROW_COUNT_PENALTY * abs(n_slots - candidate.n_rows)
    assigned: dict[int, int] = {}
    for i, k in slots.items():
        r = k - offset
        if not 0 <= r < candidate.n_rows:
            continue
        assigned[i] = r
        columns = candidate.columns if r < candidate.grid_rows else 1
        score += _marks_score(shapes[i].marks, columns)
    return score, assigned


def _consistent(cand: Candidate, assigned: dict[int, int], n_slots: int) -> bool:
    """True when the page's rows can be this layout's.

    Every grid row must be found (one may be missing from a 6- or 12-row grid), and
    the page may show at most :data:`_MAX_ROW_MISCOUNT` rows more or fewer than the
    layout prints.
    """
    grid_rows = sum(1 for r in assigned.values() if r < cand.grid_rows)
    missing_ok = 1 if cand.grid_rows >= 6 else 0
    return (grid_rows >= cand.grid_rows - missing_ok
            and abs(n_slots - cand.n_rows) <= _MAX_ROW_MISCOUNT)


def infer_layout(
    shapes: list[RowShape], row_length: float, hint: str = "auto"
) -> LayoutInference | None:
    """The standard layout that best explains the page's rows (labels aside).

    Parameters
    ----------
    shapes : list of RowShape
        Every trace row of the page, top to bottom.
    row_length : float
        Length (px) of a full row of the page.
    hint : str
        The user's layout hint (a key of :data:`HINTS`), or "auto".

    Returns
    -------
    LayoutInference or None
        None when no layout is consistent with the rows (:func:`_consistent`).
    """
    counted = [s.length >= _MIN_ROW_FRACTION * row_length for s in shapes]
    slots = row_slots_on_pitch([s.baseline for s in shapes], counted)
    if not slots:
        return None
    n_slots = max(slots.values()) + 1
    pool = (HINTS[hint],) if hint in HINTS else CANDIDATES
    scored: list[tuple[float, Candidate, dict[int, int]]] = []
    for cand in pool:
        for offset in range(max(1, n_slots - cand.n_rows + 1)):
            score, assigned = _score(cand, slots, shapes, offset)
            if _consistent(cand, assigned, n_slots):
                scored.append((score, cand, assigned))
    if not scored:
        return None
    # Ties: fewer rhythm strips (a lone extra row is more often noise than a strip).
    scored.sort(key=lambda t: (-t[0], t[1].strips))
    score, cand, assigned = scored[0]
    evidence = _describe(cand, shapes, assigned, n_slots, hint, scored)
    return LayoutInference(cand, assigned, evidence, score)


def _describe(cand: Candidate, shapes: list[RowShape], assigned: dict[int, int],
              n_slots: int, hint: str,
              scored: list[tuple[float, Candidate, dict[int, int]]]) -> str:
    """The evidence for `cand`, in words."""
    if hint in HINTS:
        head = f"layout {hint} as given"
    else:
        head = f"{n_slots} trace row(s) on a regular pitch"
    grid = [i for i, r in assigned.items() if r < cand.grid_rows]
    strips = [i for i, r in assigned.items() if r >= cand.grid_rows]
    with_marks = sum(1 for i in grid if any(shapes[i].marks))
    strip_marks = sum(1 for i in strips if any(shapes[i].marks))
    parts = [head]
    if cand.columns > 1:
        parts.append(f"lead-change markers in {with_marks} of {len(grid)} grid row(s)")
    if strips:
        parts.append(f"{len(strips) - strip_marks} of {len(strips)} full-width row(s) "
                     "without markers taken for rhythm strips")
    others = [s for s, c, _a in scored if c != cand]
    if others and hint not in HINTS and scored[0][0] - max(others) < _CLOSE_CALL:
        parts.append("a close call")
    return "; ".join(parts)


def inferred_panels(
    inference: LayoutInference, origins: list[float], row_length: float,
    table: tuple[tuple[str, ...], ...] | None = None,
) -> list[list[PanelSlot]]:
    """Panels of every trace row under the inferred layout (label scores 0).

    Parameters
    ----------
    inference : LayoutInference
        The chosen layout and its rows.
    origins : list of float
        Time origin (px) of every trace row.
    row_length : float
        Length (px) of a full row.
    table : tuple of tuple of str, optional
        Lead order of the grid's rows (default: the carts' standard order).

    Returns
    -------
    list of list of PanelSlot
        Rows outside the layout get none. Rhythm strips are named after the hint's
        strip lead, else left unnamed (lead ""), to be named from the grid panel
        they repeat.
    """
    cand = inference.candidate
    table = table or STANDARD_ROWS[cand.grid_rows]
    out: list[list[PanelSlot]] = [[] for _ in origins]
    for i, r in inference.layout_rows.items():
        leads = table[r] if r < cand.grid_rows else (cand.strip_lead,)
        col_w = row_length / len(leads)
        out[i] = [PanelSlot(lead, k, len(leads), int(round(origins[i] + k * col_w)),
                            int(round(origins[i] + (k + 1) * col_w)), 0.0)
                  for k, lead in enumerate(leads)]
    return out


@dataclass(frozen=True)
class LabelCheck:
    """Read labels compared with the panels of an inferred layout."""

    agree: int
    look_alike: int
    contradict: tuple[tuple[str, str], ...]

    def words(self) -> str:
        """Summary for a warning."""
        text = f"{self.agree} read label(s) agree, {self.look_alike} look-alike"
        if self.contradict:
            text += ", contradicted by " + ", ".join(
                f"{read} read where {lead} belongs" for read, lead in self.contradict)
        return text


def check_labels(
    slots: list[list[PanelSlot]], all_labels: list[list[LabelWord]], ppm_x: float
) -> LabelCheck:
    """Compare the labels read in each row with the leads the inferred panels give.

    A label counts where it sits within a few mm of a panel start. Lone "I"
    strokes are ignored (grid remnants and markers imitate them); a look-alike of
    the same family ("II" for "III", "V2" for "V3") is a misread, not a
    contradiction.
    """
    agree = look = 0
    contra: list[tuple[str, str]] = []
    for words, row in zip(all_labels, slots, strict=True):
        for w in words:
            if w.lead == "I":
                continue
            near = [s for s in row if s.lead and abs(w.box[0] - s.x0) <= max(
                6.0 * ppm_x, 0.12 * (s.x1 - s.x0))]
            if not near:
                continue
            lead = near[0].lead
            family = next((f for f in LOOK_ALIKE_FAMILIES if lead in f), frozenset())
            if w.lead == lead:
                agree += 1
            elif w.lead in family:
                look += 1
            else:
                contra.append((w.lead, lead))
    return LabelCheck(agree, look, tuple(contra))


def einthoven_residual(
    paths: list[TracePath], rows: tuple[int, int, int], x0: float, x1: float
) -> float:
    """Relative residual of I + III = II between three rows' traces over columns [x0, x1).

    Each trace is taken relative to its median level over the window; the residual
    is ``rms(I + III - II) / rms(all three)``, NaN when the rows share too few columns.
    """
    return lead_sum_residual(paths, rows, (1.0, -1.0, 1.0), x0, x1)


def lead_sum_residual(
    paths: list[TracePath], rows: tuple[int, ...], signs: tuple[float, ...], x0: float,
    x1: float,
) -> float:
    """Relative residual of a lead identity ``sum(sign * lead) = 0`` over columns [x0, x1).

    Parameters
    ----------
    paths : list of TracePath
        Every trace row's path.
    rows : tuple of int
        Trace rows showing the identity's leads.
    signs : tuple of float
        Sign of each lead in the sum (Einthoven: I - II + III; Goldberger:
        aVR + aVL + aVF).
    x0, x1 : float
        Pixel columns compared (one column of the grid).

    Returns
    -------
    float
        ``rms(sum) / rms(all traces)``, each trace relative to its median level; NaN
        when the rows share too few columns.
    """
    values = []
    for i in rows:
        p = paths[i]
        a = max(int(round(x0)) - p.x0, 0)
        b = min(int(round(x1)) - p.x0, p.y.size)
        col = np.full(int(round(x1)) - int(round(x0)), np.nan)
        if b > a:
            col[a + p.x0 - int(round(x0)): b + p.x0 - int(round(x0))] = p.y[a:b]
        values.append(-(col - np.nanmedian(col)) if np.isfinite(col).any() else col)
    ok = np.logical_and.reduce([np.isfinite(v) for v in values])
    if ok.sum() < 20:
        return float("nan")
    resid = sum(sign * v[ok] for sign, v in zip(signs, values, strict=True))
    scale = np.sqrt(np.mean(np.concatenate([v[ok] for v in values]) ** 2))
    return float(np.sqrt(np.mean(resid ** 2)) / max(scale, 1e-9))


def _lead_rows(inference: LayoutInference, table: tuple[tuple[str, ...], ...],
               leads: tuple[str, ...]) -> tuple[tuple[int, ...], int] | None:
    """Trace rows showing `leads` under `table`, and their column (None unless one)."""
    by_layout_row = {r: i for i, r in inference.layout_rows.items()}
    found, columns = [], set()
    for lead in leads:
        hit = next(((k, c) for k, names in enumerate(table) for c, name in enumerate(names)
                    if name == lead), None)
        if hit is None or hit[0] not in by_layout_row:
            return None
        found.append(by_layout_row[hit[0]])
        columns.add(hit[1])
    return (tuple(found), columns.pop()) if len(columns) == 1 else None


def _identity_residuals(
    inference: LayoutInference, table: tuple[tuple[str, ...], ...], origins: list[float],
    row_length: float, paths: list[TracePath],
) -> tuple[float, float]:
    """Einthoven's and Goldberger's residuals of the traces named by `table` (NaN: n/a)."""
    col_w = row_length / inference.candidate.columns
    out = []
    for leads, signs in _LEAD_IDENTITIES:
        found = _lead_rows(inference, table, leads)
        if found is None:
            out.append(float("nan"))
            continue
        rows, column = found
        x0 = float(np.median([origins[i] for i in rows])) + column * col_w
        out.append(lead_sum_residual(paths, rows, signs, x0, x0 + col_w))
    return out[0], out[1]


def choose_row_order(
    inference: LayoutInference, origins: list[float], row_length: float,
    all_labels: list[list[LabelWord]], paths: list[TracePath] | None, ppm_x: float,
) -> tuple[tuple[tuple[str, ...], ...], str]:
    """Lead order of the grid's rows: by the labels read, else by Einthoven's law.

    Returns
    -------
    tuple
        The order (rows of lead names) and what decided it, in words ("" for the
        standard order by default).
    """
    orders = ROW_ORDERS[inference.candidate.grid]
    if len(orders) == 1:
        return orders[0], ""
    votes = []
    for table in orders:
        check = check_labels(inferred_panels(inference, origins, row_length, table),
                             all_labels, ppm_x)
        votes.append(check.agree - 2 * len(check.contradict))
    best = int(np.argmax(votes))
    if votes.count(votes[best]) == 1 and votes[best] > 0:
        return orders[best], "row order from the labels read"
    if paths is None:
        return orders[0], ""
    residuals = [_identity_residuals(inference, table, origins, row_length, paths)
                 for table in orders]
    k = _clear_minimum([r[0] for r in residuals])
    if k is not None:
        return orders[k], (f"row order from Einthoven's law (I + III - II residual "
                           f"{residuals[k][0]:.2f} vs {max(r[0] for r in residuals):.2f})")
    # Einthoven's alone undecided: with Goldberger's (aVR + aVL + aVF = 0) as well.
    both = [float(np.mean(r)) for r in residuals]
    k = _clear_minimum(both)
    if k is not None:
        return orders[k], (f"row order from Einthoven's and Goldberger's laws (mean residual "
                           f"{both[k]:.2f} vs {max(both):.2f})")
    return orders[0], ""


def _clear_minimum(resid: list[float]) -> int | None:
    """Index of a residual below :data:`_EINTHOVEN_MARGIN` and that fraction of all others."""
    if not resid or not all(np.isfinite(resid)):
        return None
    k = int(np.argmin(resid))
    if resid[k] < _EINTHOVEN_MARGIN and all(
            resid[k] < _EINTHOVEN_MARGIN * r for j, r in enumerate(resid) if j != k):
        return k
    return None


#: Grids of the standard layouts (the part of a layout name before "+").
STANDARD_GRIDS: frozenset[str] = frozenset(c.grid for c in CANDIDATES)
#: Distinct leads the labels must name for their layout to stand on its own.
MIN_LABELLED_LEADS = 9
#: A row starting this many mm after the layout's common origin lost its start.
_LATE_START_MM = 4.0


@dataclass(frozen=True)
class LayoutDecision:
    """Panels of the page and how they were named.

    Attributes
    ----------
    rows : list of list of PanelSlot
        Panels of every trace row.
    origins : list of float
        Time origin (px) of every trace row (rows that lost their start get the
        layout's common origin).
    from_labels : bool
        True when read labels named the panels (else the layout was inferred and the
        leads' quality is lowered).
    warnings : tuple of str
        What decided, and any contradiction.
    """

    rows: list[list[PanelSlot]]
    origins: list[float]
    from_labels: bool
    warnings: tuple[str, ...]


def labels_name_layout(rows: list[list[PanelSlot]]) -> bool:
    """True when the labels alone give a standard grid with most leads named."""
    name = layout_name([r for r in rows if r])
    named = {s.lead for r in rows for s in r if s.lead}
    return name.split("+")[0] in STANDARD_GRIDS and len(named) >= MIN_LABELLED_LEADS


def _common_origins(inference: LayoutInference, origins: list[float],
                    ppm_x: float) -> list[float]:
    """Origins with the layout rows that start late moved to the rows' common origin."""
    inside = [origins[i] for i in inference.layout_rows]
    common = float(np.median(inside))
    late = _LATE_START_MM * ppm_x
    return [common if i in inference.layout_rows and o - common > late else o
            for i, o in enumerate(origins)]


def _add_strips(label_rows: list[list[PanelSlot]],
                inferred: list[list[PanelSlot]]) -> list[list[PanelSlot]]:
    """Label panels, plus the inferred rhythm strips of rows where nothing was named."""
    out = []
    for own, guess in zip(label_rows, inferred, strict=True):
        named = [s for s in own if s.lead]
        if not named and len(guess) == 1:
            out.append(guess)
        else:
            out.append(own)
    return out


def decide_layout(
    label_rows: list[list[PanelSlot]], all_labels: list[list[LabelWord]],
    shapes: list[RowShape], origins: list[float], row_length: float, ppm_x: float,
    hint: str = "auto", paths: list[TracePath] | None = None,
) -> LayoutDecision:
    """Labels where they name a standard layout, else the layout the page's rows show.

    Parameters
    ----------
    label_rows : list of list of PanelSlot
        Panels named from the labels read (empty rows where none).
    all_labels : list of list of LabelWord
        Label words read in every row.
    shapes : list of RowShape
        What every row shows (:func:`boundary_marks`).
    origins : list of float
        Time origin (px) of every row.
    row_length : float
        Length (px) of a full row.
    ppm_x : float
        Horizontal scale.
    hint : str
        The user's layout hint or "auto".
    paths : list of TracePath, optional
        Followed traces of every row (to choose the row order by Einthoven's law).

    Returns
    -------
    LayoutDecision
        With ``from_labels`` True and `label_rows` unchanged when no layout can be
        inferred, or when read labels contradict the inferred one more than they agree.
    """
    inference = infer_layout(shapes, row_length, hint)
    if inference is None:
        return LayoutDecision(label_rows, origins, True, ())
    new_origins = _common_origins(inference, origins, ppm_x)
    table, order_note = choose_row_order(inference, new_origins, row_length, all_labels,
                                         paths, ppm_x)
    inferred = inferred_panels(inference, new_origins, row_length, table)
    if labels_name_layout(label_rows):
        rows = _add_strips(label_rows, inferred)
        notes: list[str] = []
        grid = inference.candidate.grid
        read_grid = layout_name([r for r in label_rows if r]).split("+")[0]
        if read_grid != grid:
            notes.append(f"the lead labels read give a {read_grid} layout, but the rows "
                         f"look like {inference.candidate.name} ({inference.evidence}); "
                         "the labels were followed")
        if rows != label_rows:
            notes.append("unlabelled full-width row(s) under the grid taken for rhythm "
                         "strips")
        return LayoutDecision(rows, origins, True, tuple(notes))
    check = check_labels(inferred, all_labels, ppm_x)
    named = {s.lead for r in label_rows for s in r if s.lead}
    if len(check.contradict) > check.agree + check.look_alike:
        if len(named) >= MIN_NAMED_LEADS:
            note = (f"layout {inference.candidate.name} inferred from the rows "
                    f"({inference.evidence}) but the labels read disagree "
                    f"({check.words()}); the labels were followed")
            return LayoutDecision(label_rows, origins, True, (note,))
        # Too few leads named to follow: the words read are more likely misread.
        note = (f"lead labels read name too few leads to follow ({check.words()}): "
                f"layout {inference.candidate.name} inferred from {inference.evidence}; "
                f"{order_note or 'standard row order'}")
        return LayoutDecision(inferred, new_origins, False, (note,))
    order = order_note or "standard row order"
    note = (f"lead labels unreadable: layout {inference.candidate.name} inferred from "
            f"{inference.evidence}; {order} ({check.words()})")
    return LayoutDecision(inferred, new_origins, False, (note,))
