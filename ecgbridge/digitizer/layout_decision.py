"""The layout of a page decided: its labels, or the layout its rows show.

:func:`decide_layout` weighs the panels named by the labels read against the
standard layout the rows show (:func:`ecgbridge.digitizer.layout_inference.infer_layout`):
labels naming a standard grid win (a contradiction is reported); otherwise the
inferred layout names the panels unless the labels read contradict it. The lead order
of the grid's rows is chosen by the labels read, else by Einthoven's law (I + III = II)
and Goldberger's (aVR + aVL + aVF = 0) at the same instants (:func:`choose_row_order`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgbridge.digitizer.labels import LabelWord
from ecgbridge.digitizer.layout import PanelSlot, layout_name
from ecgbridge.digitizer.layout_inference import (
    CANDIDATES,
    LayoutInference,
    RowShape,
    check_labels,
    infer_layout,
    inferred_panels,
)
from ecgbridge.digitizer.trace import TracePath
from ecgbridge.standards import ROW_ORDERS

#: An order is chosen by Einthoven's law when its I + III - II residual is below this
#: (relative to the traces' RMS) and below this fraction of every other order's.
_EINTHOVEN_MARGIN = 0.6
#: Lead identities checked for a row order: leads and their signs in a zero sum.
_LEAD_IDENTITIES: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...] = (
    (("I", "II", "III"), (1.0, -1.0, 1.0)),
    (("aVR", "aVL", "aVF"), (1.0, 1.0, 1.0)),
)


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
#: A page whose panels are named for fewer leads than this is refused.
MIN_NAMED_LEADS = 3
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
        if named:
            note = (f"layout {inference.candidate.name} inferred from the rows "
                    f"({inference.evidence}) but the labels read disagree "
                    f"({check.words()}); the labels were followed")
            return LayoutDecision(label_rows, origins, True, (note,))
        # Words read that name no panel at all are misread, not a contradiction.
        note = (f"lead labels read name no panel ({check.words()}): "
                f"layout {inference.candidate.name} inferred from {inference.evidence}; "
                f"{order_note or 'standard row order'}")
        return LayoutDecision(inferred, new_origins, False, (note,))
    order = order_note or "standard row order"
    note = (f"lead labels unreadable: layout {inference.candidate.name} inferred from "
            f"{inference.evidence}; {order} ({check.words()})")
    return LayoutDecision(inferred, new_origins, False, (note,))
