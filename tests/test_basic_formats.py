"""WFDB, CSV and JSON writers and readers round-trip an ECG."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecgbridge import ECG
from ecgbridge.encode.csv_format import read_csv
from ecgbridge.encode.registry import parse_formats, write_outputs
from ecgbridge.encode.wfdb_format import read_wfdb
from ecgbridge.errors import EncodingError


def _ecg_with_gaps() -> ECG:
    rng = np.random.default_rng(0)
    sig = rng.normal(0, 0.5, size=(12, 5000)).round(3)
    sig[0, 1250:] = np.nan  # lead I shown only 0-2.5 s, as in a 3x4 page
    sig[5, :1250] = np.nan
    return ECG(signals=sig, fs=500.0)


def test_wfdb_round_trip_within_one_microvolt_and_keeps_gaps(tmp_path):
    ecg = _ecg_with_gaps()
    files = write_outputs(ecg, tmp_path, "page", ["wfdb"])
    assert sorted(f.name for f in files) == ["page.dat", "page.hea"]
    back = read_wfdb(tmp_path / "page")
    assert back.fs == 500.0
    np.testing.assert_array_equal(np.isnan(back.signals), np.isnan(ecg.signals))
    finite = np.isfinite(ecg.signals)
    assert np.abs(back.signals[finite] - ecg.signals[finite]).max() <= 0.0005 + 1e-9


def test_wfdb_refuses_amplitudes_it_cannot_hold(tmp_path):
    sig = np.zeros((12, 10))
    sig[3, 2] = 40.0
    with pytest.raises(EncodingError, match="40.0 mV"):
        write_outputs(ECG(signals=sig), tmp_path, "big", ["wfdb"])
    assert not (tmp_path / "big.hea").exists()


def test_csv_round_trip_and_header(tmp_path):
    ecg = _ecg_with_gaps()
    write_outputs(ecg, tmp_path, "page", ["csv"])
    lines = (tmp_path / "page.csv").read_text().splitlines()
    assert lines[0] == "time_s,I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"
    assert len(lines) == 5001
    back = read_csv(tmp_path / "page.csv")
    assert back.fs == pytest.approx(500.0)
    np.testing.assert_allclose(back.signals, ecg.signals, atol=1e-4, equal_nan=True)


def test_json_summary_written(tmp_path):
    write_outputs(_ecg_with_gaps(), tmp_path, "page", ["json"])
    doc = json.loads((tmp_path / "page.json").read_text())
    assert doc["present_leads"] == list(doc["leads"])
    assert doc["fs"] == 500.0


def test_parse_formats_names_the_bad_one():
    assert parse_formats("wfdb, CSV") == ["wfdb", "csv"]
    with pytest.raises(EncodingError, match="'xml'"):
        parse_formats("wfdb,xml")


@pytest.mark.parametrize(("stem", "record"), [("ecg+1", "ecg_1"), ("scan 2.v1", "scan_2_v1")])
def test_wfdb_stems_wfdb_cannot_hold_are_made_safe(tmp_path, stem, record):
    files = write_outputs(_ecg_with_gaps(), tmp_path, stem, ["wfdb"])
    assert sorted(f.name for f in files) == [f"{record}.dat", f"{record}.hea"]
    back = read_wfdb(tmp_path / record)
    assert back.n_samples == 5000
