"""ecgbridge: paper ECGs in, DICOM 12-lead waveforms and FHIR Observations out."""

from ecgbridge.api import digitize
from ecgbridge.ecg import (
    ECG,
    LEADS,
    Calibration,
    CalibrationMethod,
    CalibrationSource,
    PanelInfo,
    SourceInfo,
)
from ecgbridge.version import __version__

__all__ = [
    "ECG", "LEADS", "Calibration", "CalibrationMethod", "CalibrationSource", "PanelInfo",
    "SourceInfo", "digitize", "__version__",
]
