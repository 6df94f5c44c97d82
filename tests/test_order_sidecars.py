"""Order sidecar files beside ``X.png``: an HL7 v2 message ``X.hl7`` or a DICOM worklist
item ``X.wl`` gives the patient and order of the ECG (never its time)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecgbridge.ecg import ECG, Calibration
from ecgbridge.encode.dicom_waveform import to_dicom_waveform
from ecgbridge.encode.fhir_observation import to_fhir_observation
from ecgbridge.encode.record_facts import RecordSettings
from ecgbridge.errors import InputError
from ecgbridge.inputs.hl7 import read_hl7_identity
from ecgbridge.inputs.load import load_input
from ecgbridge.inputs.sidecar import read_sidecar, sidecar_files

#: An IHE-style order (HL7 v2.3.1 ORM^O01): the social security number comes first in
#: PID-3, the medical record number second; the accession number is OBR-18, the
#: Study Instance UID ZDS-1.
ORM = "\r".join([
    r"MSH|^~\&|HIS|HOSP|ECG|CARDIO|20210205120000||ORM^O01|MSG0001|P|2.3.1",
    r"PID|1||123-45-6789^^^SSA^SS~1282423^^^HOSP&1.2.3.4.5&ISO^MR||Testmann^Test^Maria^Jr^Dr"
    r"^^L||19700101083000|F|||Street 1^^Town",
    r"PV1|1|O",
    r"ORC|NW|PLC-1|FIL-9||SC",
    r"OBR|1|PLC-1|FIL-9|93000^ECG 12 leads^C4|||20210205120000|||||||||||ACC-17|RP-1",
    r"ZDS|1.2.826.0.1.3680043.2.1.17^HIS^Application^DICOM",
]) + "\r"

#: A result (HL7 v2.5.1 ORU^R01) in MLLP framing with newlines, ISO 8859-1, escapes and
#: the v2.5.1 IPC segment.
ORU = ("\x0b" + "\n".join([
    r"MSH|^~\&|CART|WARD|PACS|HOSP|20210205134500||ORU^R01^ORU_R01|MSG77|P|2.5.1|||||"
    r"|8859/1",
    r"PID|1||PI-77^^^WARD^PI||Müller\S\Lüdenscheid^Jürgen||19551231|M",
    r"OBR|1||FIL-77|93000^ECG^C4|||20210205133933",
    r"IPC|ACC\T\77|RP-77|1.2.826.0.1.77|SPS-77",
]) + "\x1c\r").encode("latin-1")


def _png(folder: Path, name: str = "scan.png") -> Path:
    path = folder / name
    Image.fromarray(np.full((48, 64, 3), 255, dtype=np.uint8)).save(path)
    return path


def test_an_order_gives_the_medical_record_number_name_birth_date_sex_and_accession():
    identity = read_hl7_identity(ORM.encode("ascii"), "scan.hl7")
    assert identity == {
        "PatientID": "1282423", "IssuerOfPatientID": "HOSP",
        "PatientName": "Testmann^Test^Maria^Dr^Jr", "PatientBirthDate": "19700101",
        "PatientSex": "F", "AccessionNumber": "ACC-17",
        "StudyInstanceUID": "1.2.826.0.1.3680043.2.1.17",
    }


def test_a_result_in_latin_1_with_escapes_and_mllp_framing_is_read():
    identity = read_hl7_identity(ORU, "scan.hl7")
    assert identity == {
        "PatientID": "PI-77", "IssuerOfPatientID": "WARD",
        # an escaped component separator inside the family name stays in that part
        "PatientName": "Müller Lüdenscheid^Jürgen", "PatientBirthDate": "19551231",
        "PatientSex": "M", "AccessionNumber": "ACC&77", "StudyInstanceUID": "1.2.826.0.1.77",
    }
    assert "AcquisitionDateTime" not in identity  # an order's or result's times are not it


def test_a_result_embedding_its_report_is_read(tmp_path: Path):
    report = "A" * 2_000_000  # base64 of a PDF report in OBX-5 (ED), as carts send it
    png = _png(tmp_path)
    png.with_suffix(".hl7").write_text("\r".join([
        r"MSH|^~\&|CART|WARD|PACS|HOSP|20210205134500||ORU^R01|M|P|2.5.1",
        "PID|1||PI-77^^^WARD^PI||Doe^John||19551231|M", "OBR|1||FIL-77|93000^ECG^C4",
        f"OBX|1|ED|PDF^ECG report||^application^pdf^Base64^{report}"]), encoding="ascii")
    assert read_sidecar(png) == {
        "PatientID": "PI-77", "IssuerOfPatientID": "WARD", "PatientName": "Doe^John",
        "PatientBirthDate": "19551231", "PatientSex": "M", "AccessionNumber": "FIL-77"}


def test_the_sidecar_reaches_the_dicom_and_fhir_records(tmp_path: Path, record_signals):
    png = _png(tmp_path)
    assert sidecar_files(png) == []
    png.with_suffix(".hl7").write_text(ORM, encoding="ascii", newline="")
    assert sidecar_files(png) == [png.with_suffix(".hl7")]
    source = load_input(png).source
    signals, fs = record_signals("E07506")
    ecg = ECG(signals=signals, fs=fs, quality=(0.9,) * 12,
              calibration=Calibration(method="raster"), source=source)
    ds = to_dicom_waveform(ecg, acquisition_datetime="2021-02-05T13:39:33")
    assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName), ds.PatientBirthDate,
            ds.PatientSex, ds.AccessionNumber, ds.StudyInstanceUID) == (
        "1282423", "HOSP", "Testmann^Test^Maria^Dr^Jr", "19700101", "F", "ACC-17",
        "1.2.826.0.1.3680043.2.1.17")
    if shutil.which("dciodvfy"):
        from test_clinical_records import _dciodvfy_errors

        assert _dciodvfy_errors(ds, tmp_path / "hl7.dcm") == []
    doc = to_fhir_observation(ecg, settings=RecordSettings(patient_id_system="urn:oid:1.2.3"))
    assert doc["subject"]["identifier"] == {"system": "urn:oid:1.2.3", "value": "1282423",
                                            "assigner": {"display": "HOSP"}}
    assert "effectiveDateTime" not in doc


@pytest.mark.parametrize(("message", "reason"), [
    ("PID|1||1^^^H^MR", "must begin with MSH"),
    (r"MSH|^~\&|A|B|C|D|20210101||ORM^O01|1|P|2.3", "without a PID segment"),
    ("\r".join([r"MSH|^~\&|A|B|C|D|20210101||ORU^R01|1|P|2.3", "PID|1||1^^^H^MR",
                "PID|2||2^^^H^MR"]), "more than one patient"),
    ("\r".join([r"MSH|^~\&|A|B|C|D|20210101||ORU^R01|1|P|2.3", "PID|1||1^^^H^MR|||||X"]),
     "PID-8 sex 'X'"),
    ("\r".join([r"MSH|^~\&|A|B|C|D|20210101||ORU^R01|1|P|2.3||||||KOI8-R",
                "PID|1||1"]), "character set 'KOI8-R'"),
    ("\r".join([r"MSH|^~\&|A|B|C|D|20210101||ORU^R01|1|P|2.3", "PID|1||1||X||1970"]),
     "is not a date"),
    ("\r".join([r"MSH|^~\&|A|B|C|D|20210101||ORU^R01|1|P|2.3", "PID|1||1",
                "IPC|ACC|RP|not-a-uid"]), "is not a DICOM UID"),
    ("\r".join([r"MSH|^~\&|A|B|C|D|20210101||ORU^R01|1|P|2.3", "PID|1||1",
                "OBR|1|||||||||||||||||ACC-0123456789ABCDEF"]),
     r"AccessionNumber does not fit DICOM \(20 characters; 16 at most"),
])
def test_a_message_that_cannot_say_who_is_refused_with_the_reason(tmp_path: Path, message,
                                                                   reason):
    png = _png(tmp_path)
    png.with_suffix(".hl7").write_text(message, encoding="ascii", newline="")
    with pytest.raises(InputError, match=reason):
        read_sidecar(png)
    with pytest.raises(InputError, match=reason):
        load_input(png)


def test_two_sidecars_that_both_give_identity_are_refused(tmp_path: Path):
    png = _png(tmp_path)
    png.with_suffix(".hl7").write_text(ORM, encoding="ascii", newline="")
    png.with_suffix(".json").write_text(json.dumps({"fs": 500.0}))  # a summary: not one
    assert read_sidecar(png)["PatientID"] == "1282423"
    png.with_suffix(".json").write_text(json.dumps({"PatientID": "other"}))
    with pytest.raises(InputError, match="2 sidecar files give its identity"):
        read_sidecar(png)


def _worklist_item(path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = "Wörk^List", "WL-5", "HOSP"
    ds.PatientBirthDate, ds.PatientSex = "19800229", "O"
    ds.AccessionNumber, ds.StudyInstanceUID = "ACC-WL", "1.2.826.0.1.55"
    ds.ReferringPhysicianName = "Ref^Doc"
    step = Dataset()
    step.Modality, step.ScheduledStationAETitle = "ECG", "CART1"
    step.ScheduledProcedureStepStartDate = "20210205"
    step.ScheduledProcedureStepStartTime = "120000"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=False)


def test_a_worklist_item_gives_the_patient_and_order_but_not_its_schedule(tmp_path: Path):
    png = _png(tmp_path)
    _worklist_item(png.with_suffix(".wl"))
    assert sidecar_files(png) == [png.with_suffix(".wl")]
    source = load_input(png).source
    assert source.dicom == {
        "PatientID": "WL-5", "IssuerOfPatientID": "HOSP", "PatientName": "Wörk^List",
        "PatientBirthDate": "19800229", "PatientSex": "O", "AccessionNumber": "ACC-WL",
        "StudyInstanceUID": "1.2.826.0.1.55", "ReferringPhysicianName": "Ref^Doc",
    }
    assert source.acquisition_datetime == ""  # the scheduled start is not the recording
    png.with_suffix(".hl7").write_text(ORM, encoding="ascii", newline="")
    with pytest.raises(InputError, match="2 sidecar files give its identity"):
        load_input(png)
    png.with_suffix(".hl7").unlink()
    png.with_suffix(".wl").write_bytes(b"not a worklist item at all")
    with pytest.raises(InputError, match="not a (readable )?DICOM worklist item"):
        load_input(png)
