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

The evidence that decided is returned in words, for the page's warnings. Whether
the inferred layout or the labels read name the panels is decided in
:mod:`ecgbridge.digitizer.layout_decision`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgbridge.digitizer.labels import LabelWord
from ecgbridge.digitizer.layout import LOOK_ALIKE_FAMILIES, PanelSlot
from ecgbridge.digitizer.trace import TracePath
from ecgbridge.standards import STANDARD_ROWS

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
#: A page's markers agree in height within this fraction (a QRS at a boundary does not).
_MARK_SAME_HEIGHT = 0.15
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
) -> tuple[tuple[bool, ...], tuple[float, ...]]:
    """Which panel boundaries of a full row show a lead-change marker, and how tall.

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
    tuple
        One flag per fraction of :data:`MARK_FRACTIONS`, and the tallest run (mm) there.
    """
    half = _MARK_WINDOW_MM * ppm_x
    controls = [_tallest_run_mm(path, x_origin + (k + 0.5) / 16 * row_length, half, ppm_y)
                for k in range(16)]
    typical = float(np.median(controls))
    heights = tuple(_tallest_run_mm(path, x_origin + f * row_length, half, ppm_y)
                    for f in MARK_FRACTIONS)
    marks = tuple(_MARK_MIN_MM <= h <= _MARK_MAX_MM and h >= _MARK_CONTRAST * typical
                  for h in heights)
    return marks, heights


def same_height_marks(marks: list[tuple[bool, ...]], heights: list[tuple[float, ...]]
                      ) -> list[tuple[bool, ...]]:
    """Markers of a page keep those as tall as the page's markers are.

    A printer draws every lead-change marker alike; a QRS complex at a boundary's time
    (the same instant in every row: rows share their time axis) is as tall as its
    lead's wave, which differs from row to row. The boundary whose marks agree best
    in height (relative spread under :data:`_MARK_SAME_HEIGHT`) gives the markers'
    height; marks more than that fraction off it are QRS complexes. Pages whose
    marks agree nowhere keep them all.
    """
    by_fraction = [[h[k] for m, h in zip(marks, heights, strict=True) if m[k]]
                   for k in range(len(MARK_FRACTIONS))]
    spreads = []
    for hs in by_fraction:
        if len(hs) >= 2:
            med = float(np.median(hs))
            spreads.append((float(np.median(np.abs(np.asarray(hs) - med))) / med, med))
    if not spreads:
        return marks
    spread, height = min(spreads)
    if spread > _MARK_SAME_HEIGHT:
        return marks
    return [tuple(m and abs(x - height) <= _MARK_SAME_HEIGHT * height
                  for m, x in zip(row_marks, row_heights, strict=True))
            for row_marks, row_heights in zip(marks, heights, strict=True)]


def row_shapes(
    paths: list[TracePath], baselines: list[float], spans: list[tuple[float, float]],
    row_length: float, ppm_x: float, ppm_y: float,
) -> list[RowShape]:
    """What every trace row shows: baseline, length and lead-change markers."""
    found = [boundary_marks(p, o, row_length, ppm_x, ppm_y) for p, (o, _e) in
             zip(paths, spans, strict=True)]
    marks = same_height_marks([m for m, _h in found], [h for _m, h in found])
    return [RowShape(float(b), float(e - o), m)
            for b, (o, e), m in zip(baselines, spans, marks, strict=True)]


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
    read_twice: tuple[str, ...] = ()

    def words(self) -> str:
        """Summary for a warning."""
        text = f"{self.agree} read label(s) agree, {self.look_alike} look-alike"
        if self.read_twice:
            text += ", " + ", ".join(f"{r} read in several panels" for r in self.read_twice)
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
    contradiction, and so is one lead read where two different leads belong.
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
    # One lead read in two panels is a misread at least once: no evidence either way.
    read = [r for r, _lead in contra]
    twice = tuple(sorted({r for r in read if read.count(r) > 1}))
    contra = [(r, lead) for r, lead in contra if r not in twice]
    return LabelCheck(agree, look, tuple(contra), twice)
