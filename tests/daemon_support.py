"""Helpers of the daemon tests: DICOM objects to send, dcmtk tools, free ports.

Import from test modules (``from daemon_support import ...``; pytest puts ``tests/``
on ``sys.path``). Objects are built at test time from arrays (rendered ECG pages
or plain test patterns), never from patient data.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import peers
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from ecgbridge.jobs.worker import DigitizeOutcome, DigitizeRequest

#: The dcmtk binaries (pynetdicom installs Python scripts with the same names earlier on PATH).
DCMTK_BIN = Path("/usr/bin")
ECHOSCU = str(DCMTK_BIN / "echoscu")
STORESCU = str(DCMTK_BIN / "storescu")
STORESCP = str(DCMTK_BIN / "storescp")

SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"
MF_GRAYSCALE_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def dcmtk_available() -> bool:
    """True when the dcmtk tools are installed at /usr/bin."""
    return all(os.access(p, os.X_OK) for p in (ECHOSCU, STORESCU, STORESCP))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 20.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on `port`."""
    peers.wait_for_port(host, port, timeout_s)


def _base_dataset(sop_class: str, modality: str = "OT") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Daemon"
    ds.PatientID = "TEST-0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.ConversionType = "WSD"
    return ds


def _file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    return meta


def _set_pixels(ds: Dataset, rgb: np.ndarray, frames: int = 1) -> None:
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if rgb.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    ds.PixelData = data * frames


def secondary_capture(path: Path, image: np.ndarray, *, jpeg: bool = False) -> str:
    """Write a Secondary Capture Image of `image` (RGB or grey uint8); return its UID.

    With `jpeg` the pixels are JPEG Baseline compressed (the transfer syntax
    storescu then proposes).
    """
    ds = _base_dataset(SC_IMAGE)
    _set_pixels(ds, image)
    ts = ExplicitVRLittleEndian
    if jpeg:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        if ds.SamplesPerPixel == 3:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
        ts = JPEGBaseline8Bit
    ds.file_meta = _file_meta(ds, ts)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def multiframe_true_color(path: Path, image: np.ndarray, frames: int = 2) -> str:
    """Write a Multi-frame True Color Secondary Capture; return its UID."""
    ds = _base_dataset(MF_TRUE_COLOR_SC)
    _set_pixels(ds, image, frames)
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def vl_photographic(path: Path, image: np.ndarray) -> str:
    """Write a VL Photographic Image of an RGB `image`; return its UID."""
    ds = _base_dataset(VL_PHOTOGRAPHIC, modality="XC")
    _set_pixels(ds, image)
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def encapsulated_pdf(path: Path, pdf_bytes: bytes) -> str:
    """Write an Encapsulated PDF object; return its UID."""
    ds = _base_dataset(ENCAPSULATED_PDF, modality="DOC")
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "ECG"
    if len(pdf_bytes) % 2:
        pdf_bytes += b"\x00"
    ds.EncapsulatedDocument = pdf_bytes
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def ct_image(path: Path) -> str:
    """Write a tiny CT Image (a SOP class the daemon refuses); return its UID."""
    ds = _base_dataset(CT_IMAGE, modality="CT")
    _set_pixels(ds, np.zeros((8, 8), dtype=np.uint8))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def pattern_image(height: int = 64, width: int = 96) -> np.ndarray:
    """A small RGB gradient (not an ECG)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 2) % 256, (y * 3) % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def storescu(port: int, files: list[Path], *, aet: str = "STORESCU", aec: str = "ECGBRIDGE",
             extra: list[str] | None = None, timeout: float = 60.0
             ) -> subprocess.CompletedProcess[str]:
    """Send `files` in one association with dcmtk's storescu."""
    cmd = [STORESCU, "-aet", aet, "-aec", aec, *(extra or []), "127.0.0.1", str(port),
           *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def echoscu(port: int, *, aet: str = "ECHOSCU", aec: str = "ECGBRIDGE", timeout: float = 30.0
            ) -> subprocess.CompletedProcess[str]:
    """C-ECHO with dcmtk's echoscu."""
    return subprocess.run([ECHOSCU, "-aet", aet, "-aec", aec, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=timeout, check=False)


def read_uid(path: Path) -> str:
    """SOP Instance UID of a DICOM file."""
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def have_openssl() -> bool:
    """True when the openssl command is available (TLS tests make their certificates)."""
    return shutil.which("openssl") is not None


def crash_on_poison(request: DigitizeRequest) -> DigitizeOutcome:
    """A worker function whose process dies on inputs named ``*poison*`` (like an
    out-of-memory kill) and succeeds, producing no files, on any other input."""
    if "poison" in Path(request.input_path).name:
        os._exit(3)
    return DigitizeOutcome(job_id=request.job_id, ok=True)


def send_raw_store(assoc: Any, sop_class: str, instance_uid: str, dataset: bytes,
                   message_id: int = 1) -> Any:
    """Send encoded `dataset` bytes as a C-STORE naming `sop_class` on the first accepted
    context, whatever they hold; return the response (None: the association ended).

    The association's reactor is paused as pynetdicom's own send_c_store does: left
    running, it may take the response first (and drop it as unexpected).
    """
    from pynetdicom.dimse_primitives import C_STORE

    req = C_STORE()
    req.MessageID = message_id
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = instance_uid
    req.Priority = 2
    req.DataSet = io.BytesIO(dataset)
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, assoc.accepted_contexts[0].context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    return rsp
