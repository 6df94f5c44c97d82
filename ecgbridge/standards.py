"""How 12-lead ECGs are printed: the standards every part of ecgbridge shares.

Paper speeds, gains, the calibration pulse, the length of a recording and the
layouts carts print (which lead sits in which row) are defined here once, for the
raster digitizer (:mod:`ecgbridge.digitizer.pipeline`), the vector digitizer
(:mod:`ecgbridge.digitizer.vector`), the page renderer (:mod:`ecgbridge.synth`) and
the defaults of :class:`ecgbridge.ecg.Calibration`.
This module imports nothing from ecgbridge: every layer may use it.
"""

from __future__ import annotations

#: Paper speed (mm/s) assumed when neither the user nor the page says.
DEFAULT_SPEED_MM_S: float = 25.0
#: Gain (mm/mV) assumed when neither the user, a calibration pulse nor the page says.
DEFAULT_GAIN_MM_MV: float = 10.0
#: Gains a cart prints at (mm/mV): half, standard and double.
STANDARD_GAINS_MM_PER_MV: tuple[float, ...] = (5.0, 10.0, 20.0)
#: Every gain carts offer (mm/mV), quarter to quadruple. A vector page's pulse, drawn
#: exactly, is snapped to these; a raster page's measured one only to the standard three.
CART_GAINS_MM_PER_MV: tuple[float, ...] = (2.5, 5.0, 10.0, 20.0, 40.0)
#: Paper speeds a cart prints at (mm/s).
STANDARD_SPEEDS_MM_PER_S: tuple[float, ...] = (12.5, 25.0, 50.0)
#: No lead of a surface ECG goes beyond this many mV from its baseline.
MAX_PLAUSIBLE_MV: float = 5.0

#: Standard recording length in seconds.
STANDARD_DURATION_S: float = 10.0
#: Length (mm) of a full trace row on standard printouts (10 s at 25 mm/s).
STANDARD_TRACE_MM: float = 250.0
#: Calibration pulse (IEC 60601-2-25 style printouts): 1 mV high, 0.2 s wide.
PULSE_MV: float = 1.0
PULSE_SECONDS: float = 0.2

#: Layout names accepted as a hint (``layout=``); "auto" detects the layout from the page.
KNOWN_LAYOUTS: tuple[str, ...] = (
    "auto", "3x4", "3x4+II", "3x4+V1", "3x4+3", "6x2", "6x2+II", "12x1", "12x1+II", "6x1",
)
#: Main-grid shapes: layout base name -> (rows, columns).
GRID_SHAPES: dict[str, tuple[int, int]] = {"3x4": (3, 4), "6x2": (6, 2), "12x1": (12, 1)}
#: Rhythm strips of the ``+3`` suffix, top to bottom.
THREE_RHYTHM_LEADS: tuple[str, ...] = ("V1", "II", "V5")
#: Carts' lead order per row, by number of trace rows (rows top to bottom; a 4th or
#: 7th row is a lead II rhythm strip).
STANDARD_ROWS: dict[int, tuple[tuple[str, ...], ...]] = {
    3: (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6")),
    4: (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"), ("II",)),
    6: (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6")),
    7: (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6"),
        ("II",)),
    12: tuple((lead,) for lead in ("I", "II", "III", "aVR", "aVL", "aVF",
                                    "V1", "V2", "V3", "V4", "V5", "V6")),
}
#: Row orders of the benchmark generator (ecg-image-kit) where they differ from carts'.
KIT_ROWS_6X2: tuple[tuple[str, ...], ...] = (
    ("V1", "V4"), ("I", "aVR"), ("V2", "V5"), ("II", "aVL"), ("V3", "V6"), ("III", "aVF"))
KIT_ROWS_12X1: tuple[tuple[str, ...], ...] = tuple(
    (lead,) for lead in ("V4", "V1", "aVR", "I", "V5", "V2", "aVL", "II", "V6", "V3", "aVF",
                         "III"))
#: Lead orders of the rows of each grid, the carts' standard first.
ROW_ORDERS: dict[str, tuple[tuple[tuple[str, ...], ...], ...]] = {
    "3x4": (STANDARD_ROWS[3],),
    "6x2": (STANDARD_ROWS[6], KIT_ROWS_6X2),
    "12x1": (STANDARD_ROWS[12], KIT_ROWS_12X1),
}
