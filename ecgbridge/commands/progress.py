"""A progress bar over the inputs of a command, on a terminal only."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def with_progress(items: Sequence[T], unit: str, disabled: bool
                  ) -> tuple[Iterable[T], Callable[..., Any] | None]:
    """`items`, under a progress bar when stderr is a terminal and there are several.

    Parameters
    ----------
    items : sequence
        What the command works through.
    unit : str
        What one item is ("page", "file").
    disabled : bool
        The user's ``--no-progress``.

    Returns
    -------
    tuple
        (the items to iterate, the bar's ``write`` for lines printed while it runs, or
        None when no bar is shown).
    """
    if disabled or len(items) < 2 or not sys.stderr.isatty():
        return items, None
    from tqdm import tqdm

    return tqdm(items, unit=unit, file=sys.stderr), tqdm.write
