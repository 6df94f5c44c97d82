"""Command-line values checked while parsing, and output names kept apart.

An option value out of range ends in argparse's usage message naming the option and
the accepted range (``argument --fs: output sampling rate must be 50-10000 Hz, got
-1.0``), never in a traceback from deep inside the digitizer. The digitizer's options
are checked by :class:`ecgbridge.digitizer.options.DigitizeOptions` itself.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.errors import OptionError


def option_value(field: str) -> Callable[[str], float]:
    """An argparse ``type``: a number that :class:`DigitizeOptions` accepts as `field`.

    The check is the options' own (one set of ranges for the command line, the API and
    the daemon's ``digitize:`` settings); its :class:`~ecgbridge.errors.OptionError`
    becomes argparse's message.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        given: dict[str, Any] = {field: value}
        try:
            DigitizeOptions(**given)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    parse.__name__ = "number"
    return parse


def positive_int(text: str) -> int:
    """An argparse ``type`` accepting a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type`` accepting a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def unique_stem(stem: str, used: set[str], suffix: str) -> str:
    """`stem`, or ``<stem>_<suffix>`` (then ``..._<suffix>2``...) if taken in this run."""
    if stem in used:
        base = f"{stem}_{suffix.lstrip('.').lower() or 'file'}"
        stem, n = base, 2
        while stem in used:
            stem, n = f"{base}{n}", n + 1
    used.add(stem)
    return stem


def input_stem(path: Path) -> str:
    """The output stem of an input file: its name without the last suffix."""
    return path.stem or path.name
