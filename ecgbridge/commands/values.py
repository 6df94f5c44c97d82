"""Command-line values checked while parsing, and output names kept apart.

An option value out of range ends in argparse's usage message naming the option and
the accepted range (``argument --fs: must be 50-10000 Hz, got -1``), never in a
traceback from deep inside the digitizer. The ranges are those the digitizer
accepts (:class:`ecgbridge.digitizer.options.DigitizeOptions`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

#: Accepted ranges of the digitizer's options: (low, high, unit).
PAPER_SPEED_RANGE = (5.0, 200.0, "mm/s")
GAIN_RANGE = (1.0, 100.0, "mm/mV")
SAMPLING_RATE_RANGE = (50.0, 10000.0, "Hz")


def ranged_float(low: float, high: float, unit: str) -> Callable[[str], float]:
    """An argparse ``type`` accepting a finite number within ``[low, high]``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low:g}-{high:g} {unit}, got {text}")
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


paper_speed = ranged_float(*PAPER_SPEED_RANGE)
gain = ranged_float(*GAIN_RANGE)
sampling_rate = ranged_float(*SAMPLING_RATE_RANGE)


def add_signal_options(p: argparse.ArgumentParser) -> None:
    """``--paper-speed``, ``--gain`` and ``--fs`` with their checked ranges."""
    p.add_argument("--paper-speed", type=paper_speed, default=None, metavar="MM_S",
                   help="paper speed in mm/s, 5-200 (default: read from the page, else 25)")
    p.add_argument("--gain", type=gain, default=None, metavar="MM_MV",
                   help="gain in mm/mV, 1-100 (default: from the calibration pulse, else 10)")
    p.add_argument("--fs", type=sampling_rate, default=500.0, metavar="HZ",
                   help="output sampling rate in Hz, 50-10000 (default 500; the DICOM "
                   "waveform resamples to 200-1000 Hz as documented)")


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
