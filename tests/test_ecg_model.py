"""The ECG value object: shape, immutability, lead names, summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecgbridge import ECG, LEADS
from ecgbridge.ecg import (
    Calibration,
    CalibrationMethod,
    CalibrationSource,
    SourceInfo,
    normalise_lead_name,
)


def test_leads_are_the_standard_twelve_in_order():
    assert LEADS == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("avr", "aVR"), ("AVF", "aVF"), ("v1", "V1"), ("Lead II", "II"), (" i ", "I")],
)
def test_normalise_lead_name(raw, canonical):
    assert normalise_lead_name(raw) == canonical


def test_normalise_lead_name_rejects_unknown():
    with pytest.raises(ValueError, match="unknown ECG lead name 'V7'"):
        normalise_lead_name("V7")


def test_ecg_is_immutable_and_copies_input():
    data = np.zeros((12, 100))
    ecg = ECG(signals=data)
    data[0, 0] = 5.0
    assert ecg.signals[0, 0] == 0.0
    with pytest.raises(ValueError):
        ecg.signals[0, 0] = 1.0
    with pytest.raises(AttributeError):
        ecg.fs = 250.0  # type: ignore[misc]


def test_ecg_rejects_wrong_shape_and_rate():
    with pytest.raises(ValueError, match=r"shape \(12, n_samples\), got \(11, 10\)"):
        ECG(signals=np.zeros((11, 10)))
    with pytest.raises(ValueError, match="positive"):
        ECG(signals=np.zeros((12, 10)), fs=0)


def test_from_leads_fills_missing_with_nan_and_reports_present():
    ecg = ECG.from_leads({"ii": np.arange(5.0), "V6": [1.0, 2.0]}, fs=250)
    assert ecg.n_samples == 5
    assert ecg.present_leads() == ("II", "V6")
    assert np.isnan(ecg.lead("I")).all()
    np.testing.assert_array_equal(ecg.lead("V6")[:2], [1.0, 2.0])
    assert np.isnan(ecg.lead("V6")[2:]).all()
    assert ecg.duration_s == pytest.approx(0.02)


def test_summary_is_json_serialisable_and_has_no_samples():
    ecg = ECG(
        signals=np.zeros((12, 50)),
        quality=(0.5,) * 12,
        calibration=Calibration(layout="3x4+II", px_per_mm_x=7.87, warnings=("gain assumed",)),
        source=SourceInfo(name="page.png", sha256="ab" * 32, dicom={"PatientID": "X"}),
    )
    doc = json.loads(json.dumps(ecg.summary(), allow_nan=False))
    assert doc["calibration"]["layout"] == "3x4+II"
    assert doc["calibration"]["px_per_mm_y"] is None
    assert doc["quality"]["V6"] == 0.5
    assert "PatientID" not in json.dumps(doc)  # identity stays out of the summary
    with pytest.raises(TypeError):
        ecg.source.dicom["PatientID"] = "Y"  # type: ignore[index]


def test_quality_is_clipped_to_unit_interval():
    ecg = ECG(signals=np.zeros((12, 3)), quality=(2.0,) + (-1.0,) * 11)
    assert ecg.quality[0] == 1.0 and ecg.quality[1] == 0.0


def test_calibration_takes_plain_words_and_keeps_them_in_json():
    cal = Calibration(gain_source="pulse", speed_source="user", method="vector")
    assert cal.gain_source is CalibrationSource.PULSE
    assert cal.method is CalibrationMethod.VECTOR
    doc = json.loads(json.dumps(cal.to_dict()))
    assert (doc["gain_source"], doc["speed_source"], doc["method"]) == ("pulse", "user", "vector")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"gain_source": "guessed"}, "gain_source"),
        ({"method": "ocr"}, "method"),
        ({"engine": "auto"}, "engine"),
        ({"mm_per_mv": 0.0}, "mm_per_mv"),
        ({"mm_per_s": float("inf")}, "mm_per_s"),
        ({"px_per_mm_x": -3.0}, "px_per_mm_x"),
        ({"rotation_deg": float("nan")}, "rotation_deg"),
        ({"transform": (1.0, 0.0, 0.0)}, "transform"),
    ],
)
def test_calibration_refuses_impossible_values(changes, field):
    with pytest.raises(ValueError, match=f"Calibration.{field}"):
        Calibration(**changes)
