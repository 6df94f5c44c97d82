"""Layout stage of a raster page: the lead labels read, and every row's named panels.

Label words are read in every row once its trace is erased; rows are cut into
panels named by those labels (:func:`ecgbridge.digitizer.layout.assign_panels`),
doubtful or missing names are repaired (:mod:`ecgbridge.digitizer.layout_repair`,
:mod:`ecgbridge.digitizer.row_labels`), and the labels are weighed against the
layout the rows themselves show (:func:`ecgbridge.digitizer.layout_decision.decide_layout`).
A page naming fewer than three leads is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecgbridge.digitizer import layout_repair, row_labels, timebase
from ecgbridge.digitizer.labels import LabelWord, find_label_words
from ecgbridge.digitizer.layout import (
    PanelSlot,
    assign_panels,
    choose_columns,
    fill_missing_leads,
)
from ecgbridge.digitizer.layout_decision import MIN_NAMED_LEADS, decide_layout
from ecgbridge.digitizer.layout_inference import row_shapes
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.row_reading import RowReadings
from ecgbridge.digitizer.rows import PageRow, TraceRow
from ecgbridge.digitizer.scale import PageScale
from ecgbridge.errors import DigitizationError

#: A page must yield at least this many distinct, labelled leads.
_MIN_LEADS_PER_PAGE = MIN_NAMED_LEADS
#: Label words are looked for from this many mm before a row's first ink.
_LABEL_LEAD_IN_MM = 15


@dataclass(frozen=True)
class PageLayout:
    """The page's rows with their labels and named panels.

    Attributes
    ----------
    rows : tuple of PageRow
        Every row with its `labels` and `slots` set, and `x_origin` where the layout
        puts it (a row that lost its start gets the layout's common origin).
    from_labels : bool
        True when read labels named the panels; False when they were named from a
        standard layout (the leads' quality is that of an unlabelled page).
    notes : tuple of str
        How the layout was decided, for the page's warnings.
    """

    rows: tuple[PageRow, ...]
    from_labels: bool
    notes: tuple[str, ...]


def lay_out_page(rows: tuple[PageRow, ...], readings: RowReadings, mask: np.ndarray,
                 scale: PageScale, options: DigitizeOptions, page_index: int) -> PageLayout:
    """Read the rows' labels and name their panels (the layout stage).

    Parameters
    ----------
    rows : tuple of PageRow
        The rows placed in time (:func:`ecgbridge.digitizer.timebase.place_rows`).
    readings : RowReadings
        The masks with traces erased, where labels are read.
    mask : numpy.ndarray
        The page's trace-ink mask.
    scale : PageScale
        The page's scale.
    options : DigitizeOptions
        The user's layout hint.
    page_index : int
        0-based page number (for messages).

    Raises
    ------
    NotAnEcgError
        No label readable and the page does not look like an ECG printout.
    DigitizationError
        Fewer than three leads named.
    """
    ppm_x, ppm_y = scale.px_per_mm_x, scale.px_per_mm_y
    trace_rows = [r.row for r in rows]
    spans = [(r.x_origin, r.x_end) for r in rows]
    all_labels = _read_labels(rows, readings.erased, ppm_x, ppm_y)
    any_label = any(all_labels)
    row_length = timebase.typical_row_length([e - o for o, e in spans])
    notes: list[str] = []
    if any_label:
        row_slots, completed = _labelled_panels(all_labels, trace_rows, spans, row_length,
                                                readings, mask, ppm_x)
        notes.extend(completed)
    else:
        row_slots = [[] for _ in rows]
        layout_repair.check_unlabelled_page(scale.has_grid, row_length, ppm_x, page_index,
                                            hint_vouches=options.layout != "auto")
    paths = [r.path for r in rows]
    decision = decide_layout(
        row_slots, all_labels,
        row_shapes(paths, [r.baseline for r in trace_rows], spans, row_length, ppm_x, ppm_y),
        [o for o, _e in spans], row_length, ppm_x, options.layout, paths,
    )
    row_slots = decision.rows
    spans = [(o, e) for o, (_o, e) in zip(decision.origins, spans, strict=True)]
    notes.extend(decision.warnings)
    from_labels = any_label and decision.from_labels
    if decision.from_labels and not any_label:
        row_slots = layout_repair.standard_layout_rows(trace_rows, spans, options,
                                                       scale.has_grid, row_length, ppm_x,
                                                       page_index)
        notes.append("no lead labels readable: standard lead order assumed")
    elif from_labels and len({s.lead for r in row_slots for s in r if s.lead}) \
            < _MIN_LEADS_PER_PAGE:
        row_slots, standard = layout_repair.few_labels_standard_rows(
            row_slots, all_labels, trace_rows, spans, options, scale.has_grid, row_length,
            ppm_x, page_index)
        if standard is not None:
            # Named from the layout, not from labels: the quality of an unlabelled page.
            notes.append(standard)
            from_labels = False
    named = {s.lead for r in row_slots for s in r if s.lead}
    if len(named) < _MIN_LEADS_PER_PAGE:
        raise DigitizationError(
            f"page {page_index + 1}: lead labels could be read for only {len(named)} lead(s) "
            f"({', '.join(sorted(named)) or 'none'}); the layout cannot be trusted"
        )
    laid_out = tuple(
        replace(r, x_origin=o, labels=tuple(words), slots=tuple(slots))
        for r, (o, _e), words, slots in zip(rows, spans, all_labels, row_slots, strict=True))
    return PageLayout(laid_out, from_labels, tuple(notes))


def _read_labels(rows: tuple[PageRow, ...], erased: np.ndarray, ppm_x: float, ppm_y: float
                 ) -> list[list[LabelWord]]:
    """Label words of every row (kept when they look like the page's labels)."""
    all_labels: list[list[LabelWord]] = []
    for r in rows:
        row = r.row
        region = (int(row.x_start - _LABEL_LEAD_IN_MM * ppm_x), row.top, int(r.x_end),
                  row.bottom)
        all_labels.append(find_label_words(erased, region, ppm_y, baseline=row.baseline))
    return row_labels.consistent_labels(all_labels, [r.row.baseline for r in rows], ppm_y)


def _labelled_panels(
    all_labels: list[list[LabelWord]], trace_rows: list[TraceRow],
    spans: list[tuple[float, float]], row_length: float, readings: RowReadings,
    mask: np.ndarray, ppm_x: float,
) -> tuple[list[list[PanelSlot]], tuple[str, ...]]:
    """Panels named by the labels read, doubtful names dropped and missing ones repaired.

    Returns the rows' panels and the notes of a completion from a standard layout.
    """
    n_columns = choose_columns(all_labels, [o for o, _e in spans], row_length, ppm_x)
    row_slots = [assign_panels(labels, x_origin, row_length, n_columns, ppm_x)
                 for labels, (x_origin, _x_end) in zip(all_labels, spans, strict=True)]
    row_slots = layout_repair.unique_leads(row_slots)
    row_slots = layout_repair.unlabelled_rows(row_slots, spans, row_length)
    thin_erased = readings.thin_erased
    row_slots = row_labels.reread_missing_labels(row_slots, trace_rows, all_labels, thin_erased,
                                                 mask & (1 - thin_erased), ppm_x)
    # A standard layout the read labels fit names the unread (and misread) panels; the
    # look-alike guesses of fill_missing_leads only where none fits (guessed names are
    # no evidence: completing again after them would judge the same labels).
    completed, notes = layout_repair.complete_to_standard_layout(row_slots, all_labels, spans,
                                                                 row_length, ppm_x)
    if notes:
        return completed, notes
    return fill_missing_leads(row_slots), ()
