"""Every printed lead is delivered or named in a warning; derived leads say so per lead."""

from __future__ import annotations

import io

import numpy as np
import pydicom

from ecgbridge.digitizer import merge
from ecgbridge.digitizer.merge import PageResult, merge_pages
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.postprocess import name_unlabelled_strips
from ecgbridge.ecg import ECG, LEADS, Calibration, PanelInfo, SourceInfo
from ecgbridge.encode.dicom_waveform import (
    DERIVED_LEAD_DESCRIPTION,
    dicom_bytes,
    to_dicom_waveform,
)
from ecgbridge.encode.fhir_observation import to_fhir_observation


def _panel(lead: str, start: int, stop: int, strip: bool = False, y0: float = 0.0) -> PanelInfo:
    return PanelInfo(lead=lead, page=0, box=(float(start), y0, float(stop), y0 + 10.0),
                     baseline_px=5.0, start_s=start / 500, duration_s=(stop - start) / 500,
                     rhythm_strip=strip)


def _shown(signal: np.ndarray, start: int, stop: int) -> np.ndarray:
    out = np.full(signal.size, np.nan)
    out[start:stop] = signal[start:stop]
    return out


def test_a_strip_matching_no_panel_is_named_in_a_warning(
    sample_record: tuple[np.ndarray, float],
) -> None:
    signals, fs = sample_record
    v1, v2 = signals[LEADS.index("V1")], signals[LEADS.index("V2")]
    strip = (_shown(v2, 0, 5000), 0.5, _panel("", 0, 5000, strip=True, y0=900.0))
    # Two panels with the same trace: the strip could repeat either; it is left out.
    candidates = {"V1": [(_shown(v2, 0, 1250), 0.5, _panel("V1", 0, 1250))],
                  "V2": [(_shown(v2, 1250, 2500), 0.5, _panel("V2", 1250, 2500))],
                  "": [strip]}
    warnings: list[str] = []
    out = name_unlabelled_strips(candidates, fs, warnings=warnings)
    assert sum(len(v) for v in out.values()) == 2
    assert len(warnings) == 1
    assert "rhythm strip" in warnings[0] and "y 900-910" in warnings[0]
    assert "left out" in warnings[0]
    # A strip that matches one panel clearly is delivered and nothing is said.
    candidates["V1"] = [(_shown(v1, 0, 1250), 0.5, _panel("V1", 0, 1250))]
    warnings.clear()
    out = name_unlabelled_strips(candidates, fs, warnings=warnings)
    assert len(out["V2"]) == 2 and warnings == []


def _page_result(signals: np.ndarray, read: dict[str, tuple[int, int]],
                 printed: tuple[str, ...]) -> PageResult:
    return PageResult(
        signals={lead: _shown(signals[LEADS.index(lead)], start, stop)
                 for lead, (start, stop) in read.items()},
        quality={lead: 0.9 for lead in read},
        panels=[_panel(lead, 0, 1250) for lead in printed],
        calibration=Calibration(layout="3x4", method="raster"),
    )


def test_a_printed_lead_that_was_not_read_is_named_not_derived(
    sample_record: tuple[np.ndarray, float],
) -> None:
    signals, fs = sample_record
    # I and II read; III printed but not traced; aVR, aVL, aVF not on the page.
    page = _page_result(signals, {"I": (0, 5000), "II": (0, 5000)}, ("I", "II", "III"))
    ecg = merge_pages([page], DigitizeOptions(fs=fs), SourceInfo(), [])
    assert "III" not in ecg.present_leads()
    assert {"aVR", "aVL", "aVF"} <= set(ecg.present_leads())
    assert set(ecg.derived_leads()) == {"aVR", "aVL", "aVF"}
    warnings = " | ".join(ecg.calibration.warnings)
    assert "lead III is printed on the page but its trace could not be read" in warnings
    assert "lead aVF not read from the page; derived" in warnings


def _ecg_with_derived_avf(signals: np.ndarray, fs: float) -> ECG:
    panels = [_panel(lead, 0, 5000) for lead in LEADS if lead != "aVF"]
    return ECG(signals=signals, fs=fs, quality=(0.9,) * 11 + (0.9,),
               calibration=Calibration(layout="12x1", method="raster"), panels=panels)


def test_dicom_channel_of_a_derived_lead_says_so(sample_record: tuple[np.ndarray, float]) -> None:
    signals, fs = sample_record
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(to_dicom_waveform(
        _ecg_with_derived_avf(signals, fs)))))
    channels = ds.WaveformSequence[0].ChannelDefinitionSequence
    derivation = {ch.ChannelLabel: ch.ChannelDerivationDescription for ch in channels}
    assert derivation["aVF"] == DERIVED_LEAD_DESCRIPTION
    assert all(text != DERIVED_LEAD_DESCRIPTION for lead, text in derivation.items()
               if lead != "aVF")


def test_fhir_note_names_the_derived_lead(sample_record: tuple[np.ndarray, float]) -> None:
    signals, fs = sample_record
    note = to_fhir_observation(_ecg_with_derived_avf(signals, fs))["note"][0]["text"]
    assert "computed from the other limb leads (Einthoven/Goldberger): aVF." in note
    plain = to_fhir_observation(ECG(signals=signals, fs=fs, panels=[_panel(lead, 0, 5000)
                                                                   for lead in LEADS]))
    assert "computed from" not in plain["note"][0]["text"]


def test_a_derived_lead_beyond_5_mv_is_left_out_with_a_warning() -> None:
    t = np.arange(5000) / 500.0
    wave = np.sin(2 * np.pi * t)
    # I and II are plausible, but III = II - I reaches 6.5 mV.
    page = PageResult(signals={"I": -2.0 * wave, "II": 4.5 * wave},
                      quality={"I": 0.9, "II": 0.9},
                      panels=[_panel("I", 0, 5000), _panel("II", 0, 5000)],
                      calibration=Calibration(layout="3x4", method="raster"))
    ecg = merge_pages([page], DigitizeOptions(), SourceInfo(), [])
    assert "III" not in ecg.present_leads() and "aVL" in ecg.present_leads()
    assert np.nanmax(np.abs(ecg.signals)) <= 5.0
    assert any(w.startswith("lead III left out") and "derived" in w
               for w in ecg.calibration.warnings)


def test_a_reading_in_which_no_lead_can_be_trusted_says_so() -> None:
    """Traces that jump like no pen draws, breaking the limb-lead laws: every lead's
    quality is under the contract's 0.5 and a warning says the reading is not to be
    trusted."""
    rng = np.random.default_rng(5)
    leads = ("I", "II", "III", "aVR", "aVL", "aVF")
    page = PageResult(signals={lead: np.cumsum(rng.normal(0, 0.4, 5000)) % 3.0 - 1.5
                               for lead in leads},
                      quality={lead: 0.5 for lead in leads},
                      panels=[_panel(lead, 0, 5000) for lead in leads],
                      calibration=Calibration(layout="3x4", method="raster"))
    ecg = merge_pages([page], DigitizeOptions(), SourceInfo(), [])
    assert max(ecg.quality) < merge.TRUST_THRESHOLD
    assert any("none of this reading's leads is to be trusted" in w
               for w in ecg.calibration.warnings)
