"""Real peers for network tests: Orthanc in a private network namespace, the
Medplum FHIR test server on 127.0.0.1, free ports, and a ready-to-send item.

Import these helpers from a test module (``from peers import ...``; pytest puts
``tests/`` on ``sys.path``) and wrap them in fixtures there.

Orthanc 1.10 cannot bind to one address, so it runs inside a fresh network
namespace that holds only a loopback interface: nothing outside the test can
reach it and every port is free. Test code talks to it through
:meth:`NetworkNamespace.call`, which runs a function on a thread that joined the
namespace (Linux network namespaces are per thread; threads started from it
inherit it, so pynetdicom's association threads do too).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ecgbridge.deliver.base import DeliveryItem
from ecgbridge.ecg import ECG, LEADS, SourceInfo

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parent
RECORDS_DIR = TESTS_DIR / "data" / "records"
FHIR_SERVER_DIR = TESTS_DIR / "fhir_server"

ORTHANC_BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
ORTHANC_AE_TITLE = "ORTHANC"
ORTHANC_DICOM_PORT = 4242
ORTHANC_HTTP_PORT = 8042
#: Our calling AE title, registered in Orthanc's DicomModalities.
SCU_AE_TITLE = "ECGBRIDGE"

_CLONE_NEWNET = 0x40000000


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the test process dies (no leaked peers)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout_s} s"
                ) from None
            time.sleep(0.05)


# --- private network namespace -------------------------------------------------------


def namespaces_available() -> str | None:
    """Return None if private network namespaces work here, else the reason."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        proc = subprocess.run(
            ["unshare", "--net", "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --net failed: {exc}"
    if proc.returncode != 0:
        return f"unshare --net failed: {proc.stderr.decode(errors='replace').strip()}"
    return None


class NetworkNamespace:
    """A private network namespace with only ``lo`` up, held by a sleeping process."""

    def __init__(self) -> None:
        self._holder = subprocess.Popen(
            ["unshare", "--net", "sleep", "infinity"],
            preexec_fn=_die_with_parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.path = f"/proc/{self._holder.pid}/ns/net"
        deadline = time.monotonic() + 5
        while os.readlink(self.path) == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline:  # unshare has not exec'd sleep yet
                self.close()
                raise RuntimeError("unshare --net did not create a namespace")
            time.sleep(0.01)
        subprocess.run(["nsenter", f"--net={self.path}", "ip", "link", "set", "lo", "up"],
                       check=True, timeout=10)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a program inside the namespace (it ends if the test process dies)."""
        return subprocess.Popen(
            ["nsenter", f"--net={self.path}", *argv], preexec_fn=_die_with_parent, **kwargs
        )

    def call(self, fn: Callable[[], T], timeout_s: float = 60.0) -> T:
        """Run `fn` on a thread inside the namespace; return its result or raise its error."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({self.path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            try:
                outcome["value"] = fn()
            except BaseException as exc:  # re-raised on the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=run, name="netns-call", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            raise TimeoutError(f"call in network namespace did not finish in {timeout_s} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")  # type: ignore[return-value]

    def close(self) -> None:
        """End the holder (the namespace goes when its last process ends)."""
        if self._holder.poll() is None:
            self._holder.terminate()
            self._holder.wait(timeout=10)


# --- Orthanc -----------------------------------------------------------------------


class OrthancPeer:
    """Orthanc with its own configuration and storage, inside a network namespace.

    Parameters
    ----------
    workdir : Path
        Folder for the configuration, the database and the log.
    namespace : NetworkNamespace
        Where Orthanc runs (and where :meth:`rest` and delivery calls must run).
    """

    def __init__(
        self, workdir: Path, namespace: NetworkNamespace, tls: dict[str, Path] | None = None
    ) -> None:
        self.workdir = workdir
        self.tls = tls
        self.namespace = namespace
        self.host = "127.0.0.1"
        self.dicom_port = ORTHANC_DICOM_PORT
        self.http_port = ORTHANC_HTTP_PORT
        self.ae_title = ORTHANC_AE_TITLE
        self.config_path = workdir / "orthanc.json"
        self.log_path = workdir / "orthanc.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "ecgbridge-test",
            "StorageDirectory": str(self.workdir / "db"),
            "IndexDirectory": str(self.workdir / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {"ecgbridge": [SCU_AE_TITLE, "127.0.0.1", 11112]},
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "Plugins": [],
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 4,
        }
        if self.tls is not None:
            config.update({
                "DicomTlsEnabled": True,
                "DicomTlsCertificate": str(self.tls["cert_file"]),
                "DicomTlsPrivateKey": str(self.tls["key_file"]),
                "DicomTlsTrustedCertificates": str(self.tls["ca_file"]),
                "DicomTlsRemoteCertificateRequired": True,
            })
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 20.0) -> None:
        """Start Orthanc and wait until both its DICOM and REST ports answer."""
        if self.running:
            return
        log = self.log_path.open("ab")
        self._process = self.namespace.popen(
            [ORTHANC_BINARY, str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self._process.returncode}: {self.log()}")
            try:
                self.rest("/system")
                self.namespace.call(lambda: wait_for_port(self.host, self.dicom_port, 2.0))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"Orthanc not ready in {timeout_s} s: {self.log()}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def rest(self, path: str, data: bytes | None = None, method: str | None = None) -> Any:
        """Call Orthanc's REST API (GET, or POST with `data`); return the decoded JSON."""
        url = f"http://{self.host}:{self.http_port}{path}"
        verb = method or ("POST" if data is not None else "GET")

        def fetch() -> Any:
            request = urllib.request.Request(url, data=data, method=verb)
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read().decode("utf-8"))

        return self.namespace.call(fetch)

    def instance_uids(self) -> list[str]:
        """SOPInstanceUIDs of every stored instance."""
        uids = []
        for orthanc_id in self.rest("/instances"):
            tags = self.rest(f"/instances/{orthanc_id}/simplified-tags")
            uids.append(tags["SOPInstanceUID"])
        return uids

    def delete_all_instances(self) -> None:
        """Empty the store (between tests sharing one Orthanc)."""
        for orthanc_id in self.rest("/instances"):
            self.rest(f"/instances/{orthanc_id}", method="DELETE")

    def log(self) -> str:
        """The tail of Orthanc's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def running_orthanc(workdir: Path, tls: dict[str, Path] | None = None) -> Iterator[OrthancPeer]:
    """Start Orthanc in a fresh private network namespace; stop both afterwards.

    With `tls` (``cert_file``, ``key_file``, ``ca_file`` PEM paths) Orthanc accepts
    only DICOM TLS associations from clients whose certificate ``ca_file`` signed.
    """
    namespace = NetworkNamespace()
    peer = OrthancPeer(workdir, namespace, tls)
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()
        namespace.close()


# --- Medplum FHIR test server --------------------------------------------------------


def fhir_server_unavailable() -> str | None:
    """Return None if the Node FHIR test server can run, else the reason."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (FHIR_SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        return (
            "the Medplum packages are not installed: run "
            "`npm ci --prefix tests/fhir_server`"
        )
    return None


class FhirTestServer:
    """The Medplum in-memory FHIR R4 server of ``tests/fhir_server/server.js``."""

    def __init__(self, port: int, process: subprocess.Popen[str], scheme: str = "http") -> None:
        self.port = port
        self.process = process
        self.origin = f"{scheme}://127.0.0.1:{port}"
        self.base_url = f"{self.origin}/fhir"
        self.token_url = f"{self.origin}/token"

    def get(self, path: str) -> Any:
        """GET a FHIR path (relative to the base) and return the decoded JSON."""
        with urllib.request.urlopen(f"{self.base_url}/{path}", timeout=10) as response:
            return json.loads(response.read().decode("utf-8"))

    def control(self, **params: str | int) -> Any:
        """Drive the test switches (``fail=503``, ``fail=0``, ``revoke=1``)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        request = urllib.request.Request(f"{self.origin}/control?{query}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read().decode("utf-8"))


@contextlib.contextmanager
def running_fhir_server(*extra_args: str, env: dict[str, str] | None = None
                        ) -> Iterator[FhirTestServer]:
    """Start the FHIR test server on a free 127.0.0.1 port; stop it afterwards.

    `extra_args` go to server.js (``--token TOKEN``, ``--client ID:SECRET``,
    ``--tls CERT KEY``).
    """
    port = free_port()
    process = subprocess.Popen(
        ["node", str(FHIR_SERVER_DIR / "server.js"), str(port), *extra_args],
        cwd=FHIR_SERVER_DIR,
        preexec_fn=_die_with_parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line != "ready":
            rest = process.stdout.read() if process.poll() is not None else ""
            raise RuntimeError(f"FHIR test server did not start: {line} {rest}")
        yield FhirTestServer(port, process, "https" if "--tls" in extra_args else "http")
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


# --- a delivery item made from a real record -------------------------------------------


def record_ecg(record: str = "E07506") -> ECG:
    """The 12-lead ECG of one fixture record in ``tests/data/records``."""
    from ecgbridge.encode.wfdb_format import read_wfdb

    return read_wfdb(RECORDS_DIR / f"{record}.hea")


def make_delivery_item(
    out_dir: Path, job_id: str = "job-0001", record: str = "E07506"
) -> DeliveryItem:
    """Encode a fixture record into DICOM, FHIR R4 and JSON files and wrap them.

    Uses the project's encoders (``dicom``, ``fhir-r4``, ``json`` writers); if the
    clinical encoders are not available, a minimal valid 12-lead waveform and
    Observation are built here instead. Every call gets a new random source hash,
    hence a new FHIR identifier and new DICOM UIDs.
    """
    from pydicom import dcmread

    from ecgbridge.encode.registry import WriteContext, resolve_writer
    from ecgbridge.errors import EncodingError

    # A fresh source hash per item: the encoders derive the FHIR identifier and the
    # DICOM UIDs from it, so two items never collide on a shared server.
    source = SourceInfo(
        name=f"{record}.png", sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        media_type="image/png",
    )
    ecg = record_ecg(record).replace(source=source)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for fmt in ("dicom", "fhir-r4", "json"):
        try:
            writer = resolve_writer(fmt)
        except EncodingError:
            writer = None
        if writer is not None:
            paths = writer(ecg, out_dir, job_id, WriteContext())
            files[fmt] = paths[0]
        elif fmt == "dicom":
            files[fmt] = _minimal_waveform(ecg, out_dir / f"{job_id}.dcm")
        elif fmt == "fhir-r4":
            files[fmt] = _minimal_observation(ecg, out_dir / f"{job_id}.fhir-r4.json")
    sop_instance_uid = str(dcmread(files["dicom"], stop_before_pixels=True).SOPInstanceUID)
    return DeliveryItem(job_id=job_id, files=files, sop_instance_uid=sop_instance_uid)


_MDC_LEADS_DICOM = {
    "I": "2:1", "II": "2:2", "III": "2:61", "aVR": "2:62", "aVL": "2:63", "aVF": "2:64",
    "V1": "2:3", "V2": "2:4", "V3": "2:5", "V4": "2:6", "V5": "2:7", "V6": "2:8",
}
_MDC_LEADS_FHIR = {
    "I": "131329", "II": "131330", "III": "131389", "aVR": "131390", "aVL": "131391",
    "aVF": "131392", "V1": "131331", "V2": "131332", "V3": "131333", "V4": "131334",
    "V5": "131335", "V6": "131336",
}


def _minimal_waveform(ecg: ECG, path: Path) -> Path:
    """A small valid 12-Lead ECG Waveform object (fallback until the encoder lands)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    sop_class = UID("1.2.840.10008.5.1.4.1.1.9.1.1")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "ECG"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                    "Manufacturer"):
        setattr(ds, keyword, "")
    ds.PatientID = "TEST-0001"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ContentDate = "20260101"
    ds.ContentTime = "120000"
    ds.AcquisitionDateTime = "20260101120000"
    ds.AcquisitionContextSequence = Sequence()
    group = Dataset()
    group.WaveformOriginality = "DERIVED"
    group.NumberOfWaveformChannels = len(LEADS)
    group.NumberOfWaveformSamples = ecg.n_samples
    group.SamplingFrequency = ecg.fs
    group.MultiplexGroupLabel = "RHYTHM"
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    channels = []
    for lead in LEADS:
        source = Dataset()
        source.CodeValue = _MDC_LEADS_DICOM[lead]
        source.CodingSchemeDesignator = "MDC"
        source.CodeMeaning = f"Lead {lead}"
        units = Dataset()
        units.CodeValue = "uV"
        units.CodingSchemeDesignator = "UCUM"
        units.CodeMeaning = "microvolt"
        channel = Dataset()
        channel.ChannelSourceSequence = Sequence([source])
        channel.ChannelSensitivity = 1
        channel.ChannelSensitivityUnitsSequence = Sequence([units])
        channel.ChannelSensitivityCorrectionFactor = 1
        channel.ChannelBaseline = 0
        channel.ChannelSampleSkew = 0
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group.ChannelDefinitionSequence = Sequence(channels)
    microvolts = np.nan_to_num(ecg.signals.T * 1000.0, nan=0.0)
    group.WaveformData = np.clip(np.round(microvolts), -32767, 32767).astype("<i2").tobytes()
    ds.WaveformSequence = Sequence([group])
    ds.save_as(path, enforce_file_format=True)
    return path


def _minimal_observation(ecg: ECG, path: Path) -> Path:
    """A small valid R4 ECG Observation (fallback until the encoder lands)."""
    components = []
    for lead, row in zip(LEADS, ecg.signals, strict=True):
        data = " ".join("E" if not np.isfinite(v) else f"{v * 1000:.0f}" for v in row)
        components.append({
            "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.24",
                                 "code": _MDC_LEADS_FHIR[lead], "display": f"Lead {lead}"}]},
            "valueSampledData": {
                "origin": {"value": 0, "unit": "uV", "system": "http://unitsofmeasure.org",
                           "code": "uV"},
                "period": 1000.0 / ecg.fs,
                "factor": 1,
                "dimensions": 1,
                "data": data,
            },
        })
    observation = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "procedure"}]}],
        "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.24", "code": "131328",
                             "display": "MDC_ECG_ELEC_POTL"}]},
        "effectiveDateTime": "2026-01-01T12:00:00Z",
        "component": components,
    }
    path.write_text(json.dumps(observation), encoding="utf-8")
    return path
