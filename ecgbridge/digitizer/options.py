"""Options that steer the digitizer; every field has a safe default (auto-detect).

:class:`DigitizeOptions` is the one options type: the API, the CLI, the batch mode and
the daemon's ``digitize:`` settings all build one, so its ranges are checked in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecgbridge.errors import OptionError
from ecgbridge.standards import KNOWN_LAYOUTS

#: Engines accepted by ``engine=``: "classical" (thresholds and grid-line removal),
#: "learned" (the packaged segmentation model finds trace ink), "auto" (classical, and
#: the learned reading where it keeps the limb-lead laws clearly better).
ENGINES: tuple[str, ...] = ("auto", "classical", "learned")
#: Accepted ranges (inclusive): paper speed in mm/s, gain in mm/mV, output rate in Hz.
PAPER_SPEED_RANGE_MM_S: tuple[float, float] = (5.0, 200.0)
GAIN_RANGE_MM_MV: tuple[float, float] = (1.0, 100.0)
FS_RANGE_HZ: tuple[float, float] = (50.0, 10000.0)


@dataclass(frozen=True)
class DigitizeOptions:
    """How to digitize.

    Attributes
    ----------
    layout : str
        "auto" or a hint from :data:`KNOWN_LAYOUTS`.
    paper_speed : float or None
        mm/s if known (overrides detection), else detected / 25.
    gain : float or None
        mm/mV if known (overrides the calibration pulse), else detected / 10.
    fs : float
        Output sampling rate in Hz.
    engine : str
        How trace ink is told from grid, text and damage: one of :data:`ENGINES`.

    Raises
    ------
    ecgbridge.errors.OptionError
        On construction, for an unknown layout or engine, or a value outside
        :data:`PAPER_SPEED_RANGE_MM_S`, :data:`GAIN_RANGE_MM_MV` or :data:`FS_RANGE_HZ`.
    """

    layout: str = "auto"
    paper_speed: float | None = None
    gain: float | None = None
    fs: float = 500.0
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise OptionError(
                f"unknown engine {self.engine!r}; expected one of {', '.join(ENGINES)}"
            )
        if self.layout not in KNOWN_LAYOUTS:
            raise OptionError(
                f"unknown layout {self.layout!r}; expected one of {', '.join(KNOWN_LAYOUTS)}"
            )
        _check_range("paper speed", self.paper_speed, PAPER_SPEED_RANGE_MM_S, "mm/s")
        _check_range("gain", self.gain, GAIN_RANGE_MM_MV, "mm/mV")
        _check_range("output sampling rate", self.fs, FS_RANGE_HZ, "Hz")


def _check_range(name: str, value: float | None, bounds: tuple[float, float], unit: str) -> None:
    low, high = bounds
    if value is not None and not low <= value <= high:
        raise OptionError(f"{name} must be {low:g}-{high:g} {unit}, got {value}")
