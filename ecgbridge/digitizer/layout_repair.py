"""Panels the labels leave unnamed or doubtful, named from the standard layouts.

Labels read on a page rarely name every panel: a lead read twice loses its name
(:func:`unique_leads`), rows without any label get the page's usual panels
(:func:`unlabelled_rows`), panels are named from the standard arrangement the read
labels fit (:func:`complete_to_standard_layout`), and a page with too few labels, or
none, gets the standard layout its rows imply unless the labels contradict it
(:func:`few_labels_standard_rows`, :func:`standard_layout_rows`). A page without
labels that does not look like an ECG printout is refused
(:func:`check_unlabelled_page`).
"""

from __future__ import annotations

import logging

from ecgbridge.digitizer.labels import LabelWord
from ecgbridge.digitizer.layout import (
    LOOK_ALIKE_FAMILIES,
    LabelEvidence,
    PanelSlot,
    complete_standard_layout,
    standard_panels,
)
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.rows import TraceRow
from ecgbridge.ecg import LEADS
from ecgbridge.errors import DigitizationError, NotAnEcgError

log = logging.getLogger(__name__)

#: Without readable labels, rows must be at least this long (mm) to assume a standard layout.
_MIN_UNLABELLED_ROW_MM = 120.0
#: Rows of the standard layouts a layout hint names (used only when no label is readable).
_HINT_ROWS: dict[str, int] = {"3x4": 3, "3x4+II": 4, "6x2": 6, "6x2+II": 7, "12x1": 12}


def unique_leads(row_slots: list[list[PanelSlot]]) -> list[list[PanelSlot]]:
    """A lead is printed once in the multi-panel grid: a name read twice is doubtful.

    Every copy loses its name; the labels are then read again where they stand
    (:func:`reread_missing_labels`) or inferred from their column group. (Rhythm
    strips, rows of one panel, may repeat a lead of the grid.)
    """
    seen: dict[str, int] = {}
    for r in row_slots:
        for s in r:
            if s.lead and s.columns > 1:
                seen[s.lead] = seen.get(s.lead, 0) + 1
    out = []
    for r in row_slots:
        row = []
        for s in r:
            if s.lead and s.columns > 1 and seen[s.lead] > 1:
                s = PanelSlot("", s.column, s.columns, s.x0, s.x1, 0.0)
            row.append(s)
        out.append(row)
    return out


def complete_to_standard_layout(
    row_slots: list[list[PanelSlot]], all_labels: list[list[LabelWord]],
    spans: list[tuple[float, float]], row_length: float, ppm_x: float,
) -> tuple[list[list[PanelSlot]], tuple[str, ...]]:
    """Name the panels whose labels were unreadable from the standard layout the read ones fit.

    Only used when the labels leave leads unnamed; the read labels (words found in
    the rows and labels re-read at panel starts) must all agree with one standard
    arrangement (:func:`ecgbridge.digitizer.layout.complete_standard_layout`).
    Named-from-layout panels keep a label score of 0 (lower quality).

    Returns
    -------
    tuple
        The rows' panels, and notes for the page's warnings (leads named from the
        layout, labels taken as misread).
    """
    named = {s.lead for r in row_slots for s in r if s.lead}
    if len(named) >= len(LEADS):
        return row_slots, ()
    evidence = [LabelEvidence(i, float(w.box[0]), w.lead, w.score)
                for i, words in enumerate(all_labels) for w in words]
    # Labels re-read at a panel start (not among the words found in the row).
    evidence += [LabelEvidence(i, float(s.x0), s.lead, s.label_score)
                 for i, r in enumerate(row_slots) for s in r
                 if s.lead and s.label_score > 0 and all(w.lead != s.lead for w in all_labels[i])]
    completion = complete_standard_layout(evidence, spans, row_slots, row_length, ppm_x)
    if completion is None:
        return row_slots, ()
    notes = []
    if completion.inferred:
        notes.append(
            f"leads {', '.join(completion.inferred)} named from the standard "
            f"{completion.arrangement} layout; their labels were unreadable"
        )
    for read, expected in completion.misreads:
        notes.append(
            f"a label read as {read} was taken as {expected} (standard "
            f"{completion.arrangement} layout)"
        )
    log.debug("layout completed to %s from %d agreeing labels", completion.arrangement,
              completion.agreeing)
    return completion.rows, tuple(notes)


def standard_layout_rows(
    rows: list[TraceRow], spans: list[tuple[float, float]], options: DigitizeOptions,
    has_grid: bool, row_length: float, ppm_x: float, page_index: int,
) -> list[list[PanelSlot]]:
    """Panels of the standard layout for the page's number of full rows (labels unread).

    Raises
    ------
    NotAnEcgError
        No grid, or rows too short for an ECG printout.
    DigitizationError
        The number of rows matches no standard layout.
    """
    check_unlabelled_page(has_grid, row_length, ppm_x, page_index, hint_vouches=False)
    row_slots: list[list[PanelSlot]] = [[] for _ in rows]
    std_rows = [i for i, row in enumerate(rows) if row.coverage > 0.5]
    hinted_rows = _HINT_ROWS.get(options.layout)
    if hinted_rows is not None and len(std_rows) > hinted_rows:
        # The user's layout hint: keep the longest-covered rows, top to bottom.
        best = sorted(std_rows, key=lambda i: -rows[i].coverage)[:hinted_rows]
        std_rows = sorted(best)
    for k, i in enumerate(std_rows):
        x_origin, x_end = spans[i]
        row_slots[i] = standard_panels(k, len(std_rows), x_origin, x_end)
    if not any(row_slots):
        raise DigitizationError(
            f"page {page_index + 1}: no lead labels could be read and the {len(rows)} trace "
            "rows match no standard layout"
        )
    return row_slots


def check_unlabelled_page(has_grid: bool, row_length: float, ppm_x: float,
                          page_index: int, hint_vouches: bool) -> None:
    """Refuse a page without any readable label that does not look like an ECG printout.

    With `hint_vouches` (a user's layout hint was given), a page without grid is not
    refused for that.

    Raises
    ------
    NotAnEcgError
        No grid (and no hint), or rows too short for an ECG printout.
    """
    if not has_grid and not hint_vouches:
        raise NotAnEcgError(
            f"page {page_index + 1}: no ECG grid and no lead labels found; "
            "this does not look like an ECG printout"
        )
    if row_length / ppm_x < _MIN_UNLABELLED_ROW_MM:
        raise NotAnEcgError(
            f"page {page_index + 1}: no lead labels found and the longest trace row is only "
            f"{row_length / ppm_x:.0f} mm long; this does not look like an ECG printout"
        )


def few_labels_standard_rows(
    row_slots: list[list[PanelSlot]], all_labels: list[list[LabelWord]], rows: list[TraceRow],
    spans: list[tuple[float, float]], options: DigitizeOptions, has_grid: bool,
    row_length: float, ppm_x: float, page_index: int,
) -> tuple[list[list[PanelSlot]], str | None]:
    """Too few labels to name the page: the standard layout its rows imply, unless contradicted.

    Each label read (other than a lone "I" stroke, which grid remnants imitate) that
    sits at the start of a standard panel is compared with that panel's lead: the same
    lead agrees, a look-alike of the same family ("II" for "III", "V2" for "V3") is a
    misread, any other lead contradicts. Words away from every panel start are not
    labels. The standard layout is used unless contradictions outnumber agreements;
    otherwise, or when no standard layout fits the rows, the labelled panels are
    returned unchanged (and the page is refused for too few leads).

    Returns
    -------
    tuple
        The rows' panels, and the note saying which standard layout was assumed and
        why (None when the labelled panels are returned unchanged).
    """
    try:
        standard = standard_layout_rows(rows, spans, options, has_grid, row_length, ppm_x,
                                         page_index)
    except (NotAnEcgError, DigitizationError):
        return row_slots, None
    agree = misread = contra = 0
    for words, slots in zip(all_labels, standard, strict=True):
        for w in words:
            if w.lead == "I":
                continue
            near = [s for s in slots if abs(w.box[0] - s.x0) <= max(
                6.0 * ppm_x, 0.12 * (s.x1 - s.x0))]
            if not near or not near[0].lead:
                continue
            if near[0].lead == w.lead:
                agree += 1
            elif w.lead in _look_alikes(near[0].lead):
                misread += 1
            else:
                contra += 1
    if contra > agree:
        return row_slots, None
    read = sorted({w.lead for words in all_labels for w in words if w.lead != "I"})
    evidence = (f"{len(read)} lead label(s) readable ({', '.join(read)}; {agree} agree, "
                f"{misread} look-alike, {contra} contradict)" if read
                else "no lead label readable")
    note = f"{evidence}: standard lead order of a {_rows_description(standard)} page assumed"
    return standard, note


def _look_alikes(lead: str) -> frozenset[str]:
    """Lead names printed much like `lead` (its family in :data:`LOOK_ALIKE_FAMILIES`)."""
    return next((f for f in LOOK_ALIKE_FAMILIES if lead in f), frozenset())


def _rows_description(row_slots: list[list[PanelSlot]]) -> str:
    """How many rows of how many panels, e.g. ``"3 rows of 4 panels + 1 strip"``."""
    multi = [r for r in row_slots if len(r) > 1]
    strips = [r for r in row_slots if len(r) == 1]
    if not multi:
        return f"{len(strips)}-row"
    text = f"{len(multi)}x{len(multi[0])}"
    return text + (f" + {len(strips)} strip(s)" if strips else "")


def unlabelled_rows(
    row_slots: list[list[PanelSlot]], spans: list[tuple[float, float]], row_length: float
) -> list[list[PanelSlot]]:
    """Give rows where no label was read the page's usual number of (unnamed) panels.

    Only rows between labelled multi-panel rows (or above them) get panels: a last
    unlabelled row under a 3x4 grid is more likely a rhythm strip, whose lead cannot
    be inferred.
    """
    counts = [len(r) for r in row_slots if len(r) > 1]
    if not counts:
        return row_slots
    n = max(set(counts), key=counts.count)
    last_multi = max(i for i, r in enumerate(row_slots) if len(r) > 1)
    out = [list(r) for r in row_slots]
    for i, r in enumerate(out):
        if r or i > last_multi:
            continue
        x_origin, x_end = spans[i]
        if x_end - x_origin < 0.5 * row_length:
            continue
        col_w = row_length / n
        out[i] = [
            PanelSlot("", k, n, int(round(x_origin + k * col_w)),
                      int(round(x_origin + (k + 1) * col_w)), 0.0)
            for k in range(n)
        ]
    return out
