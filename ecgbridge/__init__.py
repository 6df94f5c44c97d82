"""ecgbridge: paper ECGs in, DICOM 12-lead waveforms and FHIR Observations out."""

from ecgbridge.api import digitize
from ecgbridge.ecg import ECG, LEADS, Calibration, PanelInfo, SourceInfo

__version__ = "0.1.0"

__all__ = ["ECG", "LEADS", "Calibration", "PanelInfo", "SourceInfo", "digitize", "__version__"]
