"""The `ECG` value object: 12 calibrated leads plus how they were obtained.

Everything downstream of the digitizer (encoders, delivery, evaluation) takes
an :class:`ECG`; everything upstream produces one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np

from ecgbridge.standards import DEFAULT_GAIN_MM_MV, DEFAULT_SPEED_MM_S

#: The 12 standard leads in the order every ECG holds them.
LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)

#: Default output sampling rate in Hz.
DEFAULT_FS: float = 500.0

_LEAD_ALIASES = {name.upper(): name for name in LEADS}
_LEAD_ALIASES.update({"AVR": "aVR", "AVL": "aVL", "AVF": "aVF", "-AVR": "-aVR"})


def normalise_lead_name(name: str) -> str:
    """Return the canonical spelling of a lead name (``"avr"`` -> ``"aVR"``).

    Parameters
    ----------
    name : str
        Lead name in any case, with optional spaces (``"V 1"``, ``"lead II"``).

    Returns
    -------
    str
        The canonical name as in :data:`LEADS`.

    Raises
    ------
    ValueError
        If `name` is not one of the 12 standard leads.
    """
    key = name.strip().upper().replace(" ", "").replace("LEAD", "")
    if key in _LEAD_ALIASES and _LEAD_ALIASES[key] in LEADS:
        return _LEAD_ALIASES[key]
    raise ValueError(f"unknown ECG lead name {name!r}; expected one of {', '.join(LEADS)}")


@dataclass(frozen=True)
class PanelInfo:
    """Where one lead was found on the page (in the deskewed page's pixels).

    Attributes
    ----------
    lead : str
        Canonical lead name.
    page : int
        0-based page index (multi-page PDFs).
    box : tuple of float
        ``(x0, y0, x1, y1)`` pixel box of the panel in the rectified frame; ``x0`` is
        the column of time `start_s`, so sample time t lies at
        ``x0 + (t - start_s) * mm_per_s * px_per_mm_x``.
    baseline_px : float
        Row of 0 mV in pixels.
    start_s : float
        Time in the recording of the panel's first column.
    duration_s : float
        Time span the panel shows.
    rhythm_strip : bool
        True for a long strip under the main grid.
    """

    lead: str
    page: int
    box: tuple[float, float, float, float]
    baseline_px: float
    start_s: float
    duration_s: float
    rhythm_strip: bool = False


class CalibrationSource(StrEnum):
    """Where a gain or paper speed came from (string-valued: JSON holds the words)."""

    PULSE = "pulse"
    PRINTED = "printed"
    USER = "user"
    VECTOR = "vector"
    DEFAULT = "default"


class CalibrationMethod(StrEnum):
    """How the samples were obtained: traced on a raster page, read from vector PDF
    paths, or read from a waveform file (WFDB, CSV, DICOM, FHIR)."""

    RASTER = "raster"
    VECTOR = "vector"
    WAVEFORM = "waveform"


#: Values of :attr:`Calibration.engine`: the ink engine of a raster page, or "" otherwise.
CALIBRATION_ENGINES: tuple[str, ...] = ("", "classical", "learned")


@dataclass(frozen=True)
class Calibration:
    """Scale and geometry the digitizer found (or was told).

    Attributes
    ----------
    layout : str
        Detected layout, e.g. ``"3x4+II"``, ``"6x2"``, ``"12x1"``, ``"vector-pdf"``.
    px_per_mm_x, px_per_mm_y : float
        Grid pitch in pixels per millimetre, horizontally and vertically.
    mm_per_mv : float
        Gain (10 by default).
    mm_per_s : float
        Paper speed (25 by default).
    rotation_deg : float
        Rotation removed by deskewing, counter-clockwise positive.
    gain_source, speed_source : CalibrationSource
        ``"pulse"``, ``"printed"``, ``"user"``, ``"vector"`` or ``"default"`` (plain
        strings are accepted and converted).
    method : CalibrationMethod
        ``"raster"``, ``"vector"`` or ``"waveform"``.
    engine : str
        For raster pages, how trace ink was found: ``"learned"`` (segmentation model)
        or ``"classical"``; empty otherwise.
    transform : tuple of float
        Row-major 3x3 homography (9 values) mapping the input page's pixels to the
        rectified (deskewed / perspective-corrected) frame that :class:`PanelInfo`
        coordinates refer to; empty means identity.
    warnings : tuple of str
        Anything a reviewer should know (assumed defaults, repaired leads...).

    Raises
    ------
    ValueError
        On construction, for a source, method or engine not listed above, a gain or
        paper speed that is not a positive finite number, a pixel pitch that is neither
        NaN (unknown) nor positive, a rotation that is not finite, or a transform that is
        neither empty nor 9 finite values.
    """

    layout: str = "unknown"
    px_per_mm_x: float = float("nan")
    px_per_mm_y: float = float("nan")
    mm_per_mv: float = DEFAULT_GAIN_MM_MV
    mm_per_s: float = DEFAULT_SPEED_MM_S
    rotation_deg: float = 0.0
    # Typed str so callers may pass the plain words; __post_init__ stores the enum members.
    gain_source: str = CalibrationSource.DEFAULT
    speed_source: str = CalibrationSource.DEFAULT
    method: str = CalibrationMethod.RASTER
    engine: str = ""
    transform: tuple[float, ...] = ()
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, kind in (("gain_source", CalibrationSource), ("speed_source", CalibrationSource),
                           ("method", CalibrationMethod)):
            value = getattr(self, name)
            if value not in set(kind):
                raise ValueError(f"Calibration.{name} must be one of "
                                 f"{', '.join(kind)}; got {value!r}")
            object.__setattr__(self, name, kind(value))
        if self.engine not in CALIBRATION_ENGINES:
            raise ValueError(f"Calibration.engine must be one of {CALIBRATION_ENGINES}; "
                             f"got {self.engine!r}")
        for name in ("mm_per_mv", "mm_per_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Calibration.{name} must be positive and finite; got {value!r}")
        for name in ("px_per_mm_x", "px_per_mm_y"):
            value = getattr(self, name)
            if not (math.isnan(value) or (math.isfinite(value) and value > 0)):
                raise ValueError(f"Calibration.{name} must be NaN (unknown) or positive; "
                                 f"got {value!r}")
        if not math.isfinite(self.rotation_deg):
            raise ValueError(f"Calibration.rotation_deg must be finite; got {self.rotation_deg!r}")
        if len(self.transform) not in (0, 9) or not all(map(math.isfinite, self.transform)):
            raise ValueError("Calibration.transform must be empty or 9 finite values; "
                             f"got {len(self.transform)} values")
        object.__setattr__(self, "transform", tuple(float(v) for v in self.transform))
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "layout": self.layout,
            "px_per_mm_x": _finite_or_none(self.px_per_mm_x),
            "px_per_mm_y": _finite_or_none(self.px_per_mm_y),
            "mm_per_mv": self.mm_per_mv,
            "mm_per_s": self.mm_per_s,
            "rotation_deg": self.rotation_deg,
            "gain_source": str(self.gain_source),
            "speed_source": str(self.speed_source),
            "method": str(self.method),
            "engine": self.engine,
            "transform": list(self.transform),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class SourceInfo:
    """Where the ECG came from.

    Attributes
    ----------
    name : str
        File name (no directories) or a caller-given label.
    sha256 : str
        Hex digest of the input bytes ("" when digitized from an array).
    media_type : str
        e.g. ``"image/png"``, ``"application/pdf"``, ``"application/dicom"``.
    pages : int
        Number of pages digitized.
    dicom : Mapping[str, Any]
        Identity attributes copied from a DICOM input, keyed by DICOM keyword
        (PatientName, PatientID, PatientBirthDate, PatientSex, StudyInstanceUID,
        AccessionNumber, StudyDate, StudyTime, StudyID, ReferringPhysicianName,
        SOPClassUID, SOPInstanceUID, SeriesInstanceUID...), or given by a sidecar file
        beside an image/PDF input. Empty otherwise.
    acquisition_datetime : str
        When the ECG was recorded, as a DICOM DT string (``YYYYMMDDHHMMSS``, optionally
        with a ``+HHMM`` offset), taken only from evidence: the source waveform's
        acquisition attributes, the date/time printed on the page, or a sidecar file.
        Empty when unknown (never the processing or scan time).
    acquisition_evidence : str
        Where `acquisition_datetime` came from (e.g. ``"printed on the page"``).
    record_uid : str
        The ECG record's identity UID when the source carries one (an ecgbridge DICOM
        waveform's SeriesInstanceUID, an ecgbridge FHIR identifier); empty otherwise.
    filters : Mapping[str, float]
        Filter settings in Hz when known (``low_hz``, ``high_hz``, ``notch_hz``).
    history : tuple of str
        What was done to the samples before (e.g. ``"digitized from a paper ECG image"``).
    printed_identity : Mapping[str, str]
        Patient fields printed on a vector PDF page (``PatientID``), offered but used
        only when the ``printed_identity`` writer setting accepts them.
    equipment : tuple of Mapping
        Equipment that made the source waveform (``Manufacturer``,
        ``ManufacturerModelName``, ``DeviceSerialNumber``, ``SoftwareVersions``,
        ``InstitutionName``, ``Purpose``), carried into Contributing Equipment.
    """

    name: str = ""
    sha256: str = ""
    media_type: str = ""
    pages: int = 1
    dicom: Mapping[str, Any] = field(default_factory=dict)
    acquisition_datetime: str = ""
    acquisition_evidence: str = ""
    record_uid: str = ""
    filters: Mapping[str, float] = field(default_factory=dict)
    history: tuple[str, ...] = ()
    equipment: tuple[Mapping[str, str], ...] = ()
    printed_identity: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dicom", MappingProxyType(dict(self.dicom)))
        object.__setattr__(self, "filters", MappingProxyType(dict(self.filters)))
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(
            self, "printed_identity", MappingProxyType(dict(self.printed_identity))
        )
        object.__setattr__(
            self, "equipment", tuple(MappingProxyType(dict(e)) for e in self.equipment)
        )

    def replace(self, **changes: Any) -> SourceInfo:
        """Return a copy with some attributes changed."""
        import dataclasses

        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class ECG:
    """An immutable 12-lead ECG in millivolts.

    Attributes
    ----------
    signals : numpy.ndarray
        float64 array of shape ``(12, n)`` in mV, read-only; NaN where the page
        does not show that lead at that time.
    fs : float
        Sampling rate in Hz.
    leads : tuple of str
        Always :data:`LEADS` (I, II, III, aVR, aVL, aVF, V1..V6).
    quality : tuple of float
        Per-lead quality in [0, 1] (0 for a lead that is absent).
    calibration : Calibration
        Scale and geometry found.
    panels : tuple of PanelInfo
        Where each trace was found.
    source : SourceInfo
        Input provenance and DICOM identity.
    """

    signals: np.ndarray
    fs: float = DEFAULT_FS
    leads: tuple[str, ...] = LEADS
    quality: tuple[float, ...] = (0.0,) * 12
    calibration: Calibration = field(default_factory=Calibration)
    panels: tuple[PanelInfo, ...] = ()
    source: SourceInfo = field(default_factory=SourceInfo)

    def __post_init__(self) -> None:
        sig = np.array(self.signals, dtype=np.float64, copy=True)
        if sig.ndim != 2 or sig.shape[0] != len(LEADS):
            raise ValueError(
                f"ECG signals must have shape (12, n_samples), got {tuple(sig.shape)}"
            )
        if tuple(self.leads) != LEADS:
            raise ValueError(f"ECG leads must be {LEADS}, got {tuple(self.leads)}")
        if not (np.isfinite(self.fs) and self.fs > 0):
            raise ValueError(f"ECG sampling rate must be a positive number, got {self.fs!r}")
        if len(self.quality) != len(LEADS):
            raise ValueError(f"ECG quality needs 12 values, got {len(self.quality)}")
        sig.setflags(write=False)
        object.__setattr__(self, "signals", sig)
        object.__setattr__(self, "leads", tuple(self.leads))
        object.__setattr__(
            self, "quality", tuple(float(np.clip(q, 0.0, 1.0)) for q in self.quality)
        )
        object.__setattr__(self, "panels", tuple(self.panels))

    @property
    def n_samples(self) -> int:
        """Number of samples per lead."""
        return int(self.signals.shape[1])

    @property
    def duration_s(self) -> float:
        """Length of the recording in seconds."""
        return self.n_samples / self.fs

    @property
    def time_s(self) -> np.ndarray:
        """Time of every sample in seconds, starting at 0."""
        return np.arange(self.n_samples) / self.fs

    def lead(self, name: str) -> np.ndarray:
        """Return one lead's samples (read-only view) by name."""
        return self.signals[LEADS.index(normalise_lead_name(name))]

    def present_leads(self) -> tuple[str, ...]:
        """Leads with at least one finite sample."""
        return tuple(
            name for name, row in zip(LEADS, self.signals, strict=True) if np.isfinite(row).any()
        )

    def derived_leads(self) -> tuple[str, ...]:
        """Leads with samples that no panel of the page shows: computed from other leads.

        Only a digitized ECG (one with :attr:`panels`) can tell; for any other the
        result is empty.
        """
        if not self.panels:
            return ()
        shown = {p.lead for p in self.panels}
        return tuple(lead for lead in self.present_leads() if lead not in shown)

    def replace(self, **changes: Any) -> ECG:
        """Return a copy with some attributes changed."""
        values: dict[str, Any] = {
            "signals": self.signals,
            "fs": self.fs,
            "leads": self.leads,
            "quality": self.quality,
            "calibration": self.calibration,
            "panels": self.panels,
            "source": self.source,
        }
        values.update(changes)
        return ECG(**values)

    @classmethod
    def from_leads(
        cls,
        leads: Mapping[str, Sequence[float] | np.ndarray],
        fs: float = DEFAULT_FS,
        n_samples: int | None = None,
        **kwargs: Any,
    ) -> ECG:
        """Build an ECG from a mapping of lead name to samples; missing leads are NaN.

        Parameters
        ----------
        leads : Mapping
            Lead name (any spelling accepted by :func:`normalise_lead_name`) to samples in mV.
        fs : float
            Sampling rate in Hz.
        n_samples : int, optional
            Length of the result; defaults to the longest lead.
        **kwargs
            Other :class:`ECG` attributes.
        """
        arrays = {normalise_lead_name(k): np.asarray(v, dtype=np.float64) for k, v in leads.items()}
        longest = max((a.size for a in arrays.values()), default=0)
        n = n_samples if n_samples is not None else longest
        sig = np.full((len(LEADS), n), np.nan)
        for name, arr in arrays.items():
            m = min(n, arr.size)
            sig[LEADS.index(name), :m] = arr[:m]
        return cls(signals=sig, fs=fs, **kwargs)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description (no samples): calibration, quality, panels, source."""
        return {
            "fs": self.fs,
            "n_samples": self.n_samples,
            "duration_s": self.duration_s,
            "leads": list(self.leads),
            "present_leads": list(self.present_leads()),
            "quality": dict(zip(self.leads, self.quality, strict=True)),
            "calibration": self.calibration.to_dict(),
            "panels": [
                {
                    "lead": p.lead,
                    "page": p.page,
                    "box": list(p.box),
                    "baseline_px": p.baseline_px,
                    "start_s": p.start_s,
                    "duration_s": p.duration_s,
                    "rhythm_strip": p.rhythm_strip,
                }
                for p in self.panels
            ],
            "source": {
                "name": self.source.name,
                "sha256": self.source.sha256,
                "media_type": self.source.media_type,
                "pages": self.source.pages,
                "acquisition_datetime": self.source.acquisition_datetime or None,
                "acquisition_evidence": self.source.acquisition_evidence or None,
                "printed_identity": dict(self.source.printed_identity),
            },
        }


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
