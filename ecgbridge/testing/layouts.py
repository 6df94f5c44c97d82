"""Page layouts of printed 12-lead ECGs: which lead sits where and which seconds it shows.

A layout is a grid of *panels* (rows x columns of short traces) plus optional
full-width *rhythm strips* under it.  Every panel shows a contiguous time
window; the standard convention is followed:

* ``3x4``: 3 rows, 4 columns; column ``c`` shows ``c/4 .. (c+1)/4`` of the page
  time (2.5 s columns at 25 mm/s).  Standard order, column by column:
  I, II, III | aVR, aVL, aVF | V1, V2, V3 | V4, V5, V6.
* ``6x2``: 6 rows, 2 columns; the left column shows the first half (0-5 s),
  the right one the second half (5-10 s).  I..aVF left, V1..V6 right.
* ``12x1``: 12 rows, each the whole page time (0-10 s).
* ``+LEAD`` adds one rhythm strip of that lead (``3x4+II``, ``3x4+V1``,
  ``6x2+II``, ``12x1+II``); ``+3`` adds the three strips V1, II, V5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ecgbridge.ecg import LEADS, normalise_lead_name
from ecgbridge.standards import GRID_SHAPES, THREE_RHYTHM_LEADS

#: Layout names the renderer accepts without a custom rhythm lead.
STANDARD_LAYOUTS: tuple[str, ...] = ("3x4", "3x4+II", "3x4+3", "6x2", "6x2+II", "12x1")


@dataclass(frozen=True)
class RenderSlot:
    """One trace position on the page.

    Attributes
    ----------
    lead : str
        Canonical lead name.
    row : int
        0-based row from the top (rhythm strips come after the main grid).
    column : int
        0-based column (always 0 for rhythm strips).
    n_columns : int
        Columns in this row (1 for rhythm strips and 12x1).
    start_fraction, end_fraction : float
        Part of the page time the panel shows (0..1), e.g. 0.25..0.5 for
        the second column of a 3x4 page.
    rhythm_strip : bool
        True for a full-width strip under the main grid.
    """

    lead: str
    row: int
    column: int
    n_columns: int
    start_fraction: float
    end_fraction: float
    rhythm_strip: bool = False


@dataclass(frozen=True)
class LayoutSpec:
    """A parsed layout: its panels and the number of rows they occupy."""

    name: str
    rows: int
    columns: int
    slots: tuple[RenderSlot, ...]
    rhythm_leads: tuple[str, ...]


def parse_layout(
    layout: str,
    lead_order: Sequence[str] | None = None,
    rhythm_leads: Sequence[str] | None = None,
) -> LayoutSpec:
    """Resolve a layout name into panel slots.

    Parameters
    ----------
    layout : str
        ``"3x4"``, ``"6x2"`` or ``"12x1"``, optionally followed by ``"+3"`` or
        ``"+LEAD"`` (e.g. ``"3x4+II"``, ``"3x4+V1"``, ``"6x2+II"``).
    lead_order : sequence of str, optional
        The 12 leads in slot order: column by column, top to bottom (the
        default, :data:`ecgbridge.ecg.LEADS`, gives the standard arrangement).
    rhythm_leads : sequence of str, optional
        Overrides the rhythm strips named by the suffix.

    Returns
    -------
    LayoutSpec

    Raises
    ------
    ValueError
        If the layout name, a lead name or the lead order is invalid.
    """
    base, _, suffix = layout.partition("+")
    if base not in GRID_SHAPES:
        raise ValueError(
            f"unknown layout {layout!r}; expected 3x4, 6x2 or 12x1 with an optional "
            f"'+II', '+V1' or '+3' rhythm suffix"
        )
    rows, columns = GRID_SHAPES[base]
    order = _check_lead_order(lead_order)
    if rhythm_leads is not None:
        strips = tuple(normalise_lead_name(name) for name in rhythm_leads)
    elif suffix == "":
        strips = ()
    elif suffix == "3":
        strips = THREE_RHYTHM_LEADS
    else:
        try:
            strips = (normalise_lead_name(suffix),)
        except ValueError as exc:
            raise ValueError(f"layout {layout!r}: rhythm suffix {suffix!r} is not a lead") from exc
    slots: list[RenderSlot] = []
    for k, lead in enumerate(order):
        column, row = divmod(k, rows)
        slots.append(
            RenderSlot(
                lead=lead,
                row=row,
                column=column,
                n_columns=columns,
                start_fraction=column / columns,
                end_fraction=(column + 1) / columns,
            )
        )
    for i, lead in enumerate(strips):
        slots.append(RenderSlot(lead, rows + i, 0, 1, 0.0, 1.0, rhythm_strip=True))
    return LayoutSpec(
        name=layout, rows=rows + len(strips), columns=columns, slots=tuple(slots),
        rhythm_leads=strips,
    )


def _check_lead_order(lead_order: Sequence[str] | None) -> tuple[str, ...]:
    if lead_order is None:
        return LEADS
    order = tuple(normalise_lead_name(name) for name in lead_order)
    if sorted(order) != sorted(LEADS):
        raise ValueError(
            f"lead_order must name each of the 12 leads exactly once, got {list(lead_order)}"
        )
    return order
