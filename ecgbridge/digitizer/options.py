"""Options that steer the digitizer; every field has a safe default (auto-detect).

:class:`DigitizeOptions` is the one options type: the API, the CLI, the batch mode and
the daemon's ``digitize:`` settings all build one, so its ranges are checked in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecgbridge.errors import OptionError

#: Paper speed (mm/s) and gain (mm/mV) assumed when neither the user nor the page says.
DEFAULT_SPEED_MM_S: float = 25.0
DEFAULT_GAIN_MM_MV: float = 10.0
#: Gains a cart prints at (mm/mV): half, standard and double.
STANDARD_GAINS_MM_PER_MV: tuple[float, ...] = (5.0, 10.0, 20.0)
#: Paper speeds a cart prints at (mm/s).
STANDARD_SPEEDS_MM_PER_S: tuple[float, ...] = (12.5, 25.0, 50.0)
#: A measured gain within this fraction of a standard gain is that standard gain.
GAIN_SNAP_TOLERANCE: float = 0.12
#: No lead of a surface ECG goes beyond this many mV from its baseline.
MAX_PLAUSIBLE_MV: float = 5.0

#: Layout names accepted by ``layout=``; "auto" detects the layout from the page.
KNOWN_LAYOUTS: tuple[str, ...] = (
    "auto", "3x4", "3x4+II", "3x4+V1", "3x4+3", "6x2", "6x2+II", "12x1", "12x1+II", "6x1",
)
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
