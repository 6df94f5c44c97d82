"""Options that steer the digitizer; every field has a safe default (auto-detect)."""

from __future__ import annotations

from dataclasses import dataclass

from ecgbridge.standards import KNOWN_LAYOUTS

#: Engines accepted by ``engine=``: "classical" (thresholds and grid-line removal),
#: "learned" (the packaged segmentation model finds trace ink), "auto" (classical, and
#: the learned reading where it keeps the limb-lead laws clearly better).
ENGINES: tuple[str, ...] = ("auto", "classical", "learned")


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
    """

    layout: str = "auto"
    paper_speed: float | None = None
    gain: float | None = None
    fs: float = 500.0
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(
                f"unknown engine {self.engine!r}; expected one of {', '.join(ENGINES)}"
            )
        if self.layout not in KNOWN_LAYOUTS:
            raise ValueError(
                f"unknown layout {self.layout!r}; expected one of {', '.join(KNOWN_LAYOUTS)}"
            )
        if self.paper_speed is not None and not 5.0 <= self.paper_speed <= 200.0:
            raise ValueError(f"paper speed must be 5-200 mm/s, got {self.paper_speed}")
        if self.gain is not None and not 1.0 <= self.gain <= 100.0:
            raise ValueError(f"gain must be 1-100 mm/mV, got {self.gain}")
        if not 50.0 <= self.fs <= 10000.0:
            raise ValueError(f"output sampling rate must be 50-10000 Hz, got {self.fs}")
