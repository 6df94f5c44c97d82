"""FHIR Observation (R4/R5) of a 12-lead ECG: validation, codes, data strings, round trips."""

from __future__ import annotations

import copy
import hashlib
import json
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from peers import fhir_server_unavailable, running_fhir_server

from ecgbridge import codes
from ecgbridge.ecg import ECG, LEADS, Calibration, SourceInfo
from ecgbridge.encode.fhir_observation import (
    check_observation,
    encode_data,
    fhir_json,
    observation_model,
    read_fhir_observation,
    to_fhir_model,
    to_fhir_observation,
    write_fhir_r4,
    write_fhir_r5,
)
from ecgbridge.encode.readers import read_ecg
from ecgbridge.encode.record_facts import RecordSettings, fhir_record_identifier
from ecgbridge.encode.registry import WriteContext
from ecgbridge.errors import EncodingError, InputError

SHA = hashlib.sha256(b"page.png bytes").hexdigest()


@pytest.fixture(scope="module")
def digitized(record_signals) -> ECG:
    """E07506 shaped like a digitized 3x4 page: each non-II lead shows one 2.5 s quarter."""
    signals, fs = record_signals("E07506")
    shown = np.array(signals)
    quarter = shown.shape[1] // 4
    for i, lead in enumerate(LEADS):
        if lead != "II":
            column = (i // 3) if i < 6 else 2 + (i - 6) // 3
            keep = np.zeros(shown.shape[1], bool)
            keep[column * quarter:(column + 1) * quarter] = True
            shown[i, ~keep] = np.nan
    return ECG(
        signals=shown, fs=fs, quality=tuple(0.6 + 0.03 * i for i in range(12)),
        calibration=Calibration(layout="3x4+II", method="raster"),
        source=SourceInfo(name="page.png", sha256=SHA, media_type="image/png"),
    )


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_observation_validates_and_follows_the_ecg_example(digitized, version):
    doc = to_fhir_observation(digitized, version=version)
    model = observation_model(doc, version)  # fhir.resources: R4B models for R4, R5 default
    assert model.status == "final"
    check_observation(doc, version)
    assert doc["category"][0]["coding"][0]["code"] == "procedure"
    code_pairs = {(c["system"], c["code"]) for c in doc["code"]["coding"]}
    assert code_pairs == {("http://loinc.org", "11524-6"),
                          ("urn:oid:2.16.840.1.113883.6.24", "131328")}
    lead_codes = [c["code"]["coding"][0]["code"] for c in doc["component"]]
    assert lead_codes == ["131329", "131330", "131389", "131390", "131391", "131392",
                          "131331", "131332", "131333", "131334", "131335", "131336"]
    for comp in doc["component"]:
        sd = comp["valueSampledData"]
        assert sd["origin"] == {"value": 0, "unit": "mV",
                                "system": "http://unitsofmeasure.org", "code": "mV"}
        assert sd["factor"] == 0.001 and sd["dimensions"] == 1
        assert sd["lowerLimit"] < 0 < sd["upperLimit"]
        if version == "R4":
            assert sd["period"] == 2 and "interval" not in sd
        else:
            assert sd["interval"] == 2 and sd["intervalUnit"] == "ms" and "period" not in sd
    assert doc["identifier"] == [fhir_record_identifier(digitized)]
    assert doc["identifier"][0]["system"] == "urn:dicom:uid"
    assert "Digitized" in doc["method"]["text"]
    assert "V6 0.93" in doc["note"][0]["text"]  # per-lead quality is reported


def test_versions_are_not_interchangeable(digitized):
    r4 = to_fhir_observation(digitized, version="R4")
    r5 = to_fhir_observation(digitized, version="R5")
    with pytest.raises(EncodingError, match=r"R5 Observation is not valid: .*period.*\(and"):
        observation_model(r4, "R5")  # 'period' is not an R5 field (12 components)
    with pytest.raises(EncodingError, match="R4"):
        observation_model(r5, "R4")
    with pytest.raises(EncodingError, match="R5 SampledData needs"):
        check_observation(r4, "R5")


def test_data_string_marks_unshown_samples_and_has_one_token_per_sample(digitized):
    doc = to_fhir_observation(digitized)
    for comp, row in zip(doc["component"], digitized.signals, strict=True):
        tokens = comp["valueSampledData"]["data"].split()
        assert len(tokens) == digitized.n_samples
        is_e = np.array([t == "E" for t in tokens])
        assert np.array_equal(is_e, np.isnan(row))
        numbers = np.array([int(t) for t, e in zip(tokens, is_e, strict=True) if not e])
        assert np.array_equal(numbers, np.round(row[~np.isnan(row)] * 1000).astype(int))


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_round_trip_is_exact_to_half_a_microvolt(digitized, version):
    doc = json.loads(json.dumps(to_fhir_observation(digitized, version=version)))
    back = read_fhir_observation(doc)
    assert back.fs == digitized.fs
    assert np.array_equal(np.isnan(back.signals), np.isnan(digitized.signals))
    shown = np.isfinite(digitized.signals)
    assert np.abs(back.signals[shown] - digitized.signals[shown]).max() <= 0.0005 + 1e-12


def test_values_beyond_the_limits_are_l_and_u():
    row = np.array([0.0, 40.0, -40.0, np.nan, 1.2345])
    assert encode_data(row) == "0 U L E 1234"  # 1.2345 mV rounds to 1234 µV (half to even)


def test_absent_leads_get_no_component_and_an_empty_ecg_is_refused(digitized):
    signals = np.array(digitized.signals)
    signals[6:] = np.nan
    doc = to_fhir_observation(digitized.replace(signals=signals))
    assert len(doc["component"]) == 6
    assert "Not shown on the page: V1" in doc["note"][0]["text"]
    with pytest.raises(EncodingError, match="no lead"):
        to_fhir_observation(digitized.replace(signals=np.full_like(signals, np.nan)))


def test_subject_comes_from_the_dicom_identity_but_not_the_time_of_an_image(digitized):
    """A Secondary Capture's study/scan time is not the ECG's acquisition time."""
    source = SourceInfo(
        name="page.dcm", sha256=SHA, media_type="application/dicom",
        dicom={"PatientName": "TEST^ECG", "PatientID": "TEST-ECG-1", "StudyDate": "20240101",
               "StudyTime": "120000", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"},
    )
    doc = to_fhir_observation(digitized.replace(source=source),
                              settings=RecordSettings(patient_id_system="urn:oid:1.2.3.4"))
    assert doc["subject"]["identifier"] == {"system": "urn:oid:1.2.3.4", "value": "TEST-ECG-1"}
    assert doc["subject"]["type"] == "Patient"
    assert "effectiveDateTime" not in doc
    observation_model(doc, "R4")


def test_given_subject_device_and_effective_win(digitized):
    when = datetime(2023, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    doc = to_fhir_observation(digitized, subject="Patient/42", device="Device/7", effective=when)
    assert doc["subject"] == {"reference": "Patient/42"}
    assert doc["device"] == {"reference": "Device/7"}
    assert doc["effectiveDateTime"] == "2023-05-06T07:08:09+02:00"
    observation_model(doc, "R4")


def test_without_a_known_time_effective_is_omitted_not_invented(digitized):
    doc = to_fhir_observation(digitized)
    assert "effectiveDateTime" not in doc and "subject" not in doc
    assert "issued" not in doc  # no wall clock: the same input gives the same bytes
    assert fhir_json(to_fhir_observation(digitized)) == fhir_json(doc)

def test_identifier_is_deterministic_for_the_same_content(digitized):
    anonymous = digitized.replace(source=SourceInfo())
    a, b = to_fhir_observation(anonymous), to_fhir_observation(anonymous)
    assert a["identifier"] == b["identifier"]
    assert a["identifier"][0]["system"] == "urn:dicom:uid"
    changed = to_fhir_observation(anonymous.replace(signals=anonymous.signals + 0.01))
    assert changed["identifier"] != a["identifier"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda sd: sd.update(data=sd["data"] + " 1,5"), "neither a decimal"),
        (lambda sd: sd.update(data=sd["data"] + " abc"), "neither a decimal"),
        (lambda sd: sd.update(data=sd["data"] + " 7"), "different numbers of samples"),
        (lambda sd: sd.pop("period"), "needs 'period'"),
        (lambda sd: sd.update(dimensions=0), "dimensions=0"),
    ],
)
def test_own_checks_catch_what_fhir_resources_does_not(digitized, mutate, message):
    doc = copy.deepcopy(to_fhir_observation(digitized, version="R4"))
    mutate(doc["component"][0]["valueSampledData"])
    with pytest.raises(EncodingError, match=message):
        check_observation(doc, "R4")


def test_wrong_component_code_is_caught(digitized):
    doc = copy.deepcopy(to_fhir_observation(digitized))
    doc["component"][0]["code"]["coding"][0]["code"] = "999999"
    with pytest.raises(EncodingError, match="not an MDC"):
        check_observation(doc, "R4")


def test_writers_make_valid_files_that_read_back(digitized, tmp_path):
    ctx = WriteContext(options={"fhir_subject": "Patient/abc"})
    (r4,) = write_fhir_r4(digitized, tmp_path, "page", ctx)
    (r5,) = write_fhir_r5(digitized, tmp_path, "page", ctx)
    assert (r4.name, r5.name) == ("page.fhir-r4.json", "page.fhir-r5.json")
    for path, version in ((r4, "R4"), (r5, "R5")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        observation_model(doc, version)
        assert doc["subject"] == {"reference": "Patient/abc"}
        back = read_ecg(path)
        assert back.source.media_type == "application/fhir+json"
        shown = np.isfinite(digitized.signals)
        assert np.array_equal(np.isfinite(back.signals), shown)
        assert np.abs(back.signals[shown] - digitized.signals[shown]).max() <= 0.0005 + 1e-12


def test_reads_the_spec_example_shape():
    # Shaped like the spec's Observation/ekg: origin 2048, factor 1.612, period 10 ms, E tokens.
    doc = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": codes.FHIR_SYSTEM_MDC, "code": "131328"}]},
        "component": [{
            "code": {"coding": [{"system": codes.FHIR_SYSTEM_MDC, "code": "131330"}]},
            "valueSampledData": {"origin": {"value": 2048}, "period": 10, "factor": 1.612,
                                 "lowerLimit": -3300, "upperLimit": 3300, "dimensions": 1,
                                 "data": "2041 2043 E 2038"},
        }],
    }
    ecg = read_fhir_observation(doc)
    assert ecg.fs == 100.0 and ecg.present_leads() == ("II",)
    expected = [2048 + 1.612 * v for v in (2041, 2043)]
    assert ecg.lead("II")[:2] == pytest.approx(expected)
    assert np.isnan(ecg.lead("II")[2])


def test_mdc_codes_under_the_iso_11073_system_are_read_as_leads(digitized):
    doc = json.loads(json.dumps(to_fhir_observation(digitized)))
    for component in doc["component"]:
        for coding in component["code"]["coding"]:
            assert coding["system"] == codes.FHIR_SYSTEM_MDC
            coding["system"] = "urn:iso:std:iso:11073:10101"  # as some devices name MDC
    back = read_fhir_observation(copy.deepcopy(doc))
    reference = read_fhir_observation(to_fhir_observation(digitized))
    assert back.present_leads() == reference.present_leads() == digitized.present_leads()
    assert np.array_equal(back.signals, reference.signals, equal_nan=True)
    for component in doc["component"]:
        component["code"]["coding"][0]["system"] = "http://loinc.org"
    with pytest.raises(InputError, match="no component holds an MDC-coded"):
        read_fhir_observation(doc)


def test_not_an_observation_is_an_input_error(tmp_path):
    path = tmp_path / "patient.json"
    path.write_text(json.dumps({"resourceType": "Patient"}))
    with pytest.raises(InputError, match="not a FHIR Observation"):
        read_fhir_observation(path)


def test_unknown_version_is_refused(digitized):
    with pytest.raises(EncodingError, match="unknown FHIR version"):
        to_fhir_observation(digitized, version="R3")  # type: ignore[arg-type]


@pytest.mark.network
def test_a_real_r4_server_accepts_the_r4_observation_and_refuses_r5(digitized):
    reason = fhir_server_unavailable()
    if reason:
        pytest.skip(reason)

    def post(server, doc) -> int:
        request = urllib.request.Request(
            f"{server.base_url}/Observation", data=json.dumps(doc).encode("utf-8"),
            headers={"Content-Type": "application/fhir+json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    with running_fhir_server() as server:
        assert post(server, to_fhir_observation(digitized, version="R4")) == 201
        assert post(server, to_fhir_observation(digitized, version="R5")) == 400
        found = server.get("Observation?code=http://loinc.org|11524-6")
        assert len(found.get("entry", [])) == 1


@pytest.mark.parametrize(("version", "module"), [("R4", "fhir.resources.R4B.observation"),
                                                 ("R5", "fhir.resources.observation")])
def test_model_helper_returns_the_version_s_model(digitized, version, module):
    model = to_fhir_model(digitized, version=version, subject="Patient/1")
    assert type(model).__module__ == module
    assert model.subject.reference == "Patient/1"
    assert len(model.component) == 12


def test_empty_data_is_an_input_error(digitized):
    doc = copy.deepcopy(to_fhir_observation(digitized))
    for comp in doc["component"]:
        comp["valueSampledData"]["data"] = ""
    with pytest.raises(InputError, match="no samples"):
        read_fhir_observation(doc)


@pytest.mark.parametrize(
    ("acquired", "zone", "expected"),
    [("20240304050607.123+0130", "", "2024-03-04T05:06:07+01:30"),
     ("20240304", "", "2024-03-04"),
     ("202403040506", "", "2024-03-04"),  # no zone known: the date only, never a guess
     ("202403040506", "Europe/Berlin", "2024-03-04T05:06:00+01:00"),
     ("20240704050607", "Europe/Berlin", "2024-07-04T05:06:07+02:00"),
     ("20240704050607-0500", "Europe/Berlin", "2024-07-04T05:06:07-05:00")],
)
def test_source_times_become_fhir_datetimes_with_an_explicit_zone(
    digitized, acquired, zone, expected
):
    source = SourceInfo(sha256=SHA, media_type="application/dicom",
                        acquisition_datetime=acquired, acquisition_evidence="test")
    doc = to_fhir_observation(digitized.replace(source=source),
                              settings=RecordSettings(timezone=zone))
    assert doc["effectiveDateTime"] == expected
    observation_model(doc, "R4")


@pytest.mark.parametrize("fs", [360.0, 250.0, 1000.0 / 3.0])
def test_rates_with_recurring_periods_round_trip(fs):
    ecg = ECG.from_leads({"II": np.sin(np.arange(100) / 5.0)}, fs=fs)
    back = read_fhir_observation(to_fhir_observation(ecg, version="R5"))
    assert back.fs == pytest.approx(fs, rel=1e-9)
