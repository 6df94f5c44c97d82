"""DICOM C-STORE delivery against real peers: Orthanc (in a private network
namespace) and pynetdicom storage SCPs on 127.0.0.1 (statuses, TLS)."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import (
    SCU_AE_TITLE,
    OrthancPeer,
    free_port,
    make_delivery_item,
    namespaces_available,
    running_orthanc,
)
from pydicom import dcmread
from pynetdicom import AE, evt

from ecgbridge.codes import TWELVE_LEAD_ECG_WAVEFORM as TWELVE_LEAD_ECG_WAVEFORM_STORAGE
from ecgbridge.deliver.base import DeliveryItem
from ecgbridge.deliver.dicom_store import (
    DicomStoreDestination,
    describe_status,
    is_retryable_status,
)
from ecgbridge.deliver.settings import DicomDestinationSettings, DicomTlsSettings
from ecgbridge.errors import DeliveryError

pytestmark = pytest.mark.network

SCP_AE_TITLE = "TESTSCP"
#: Verification SOP class (C-ECHO).
VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture(scope="module")
def item(tmp_path_factory: pytest.TempPathFactory) -> DeliveryItem:
    return make_delivery_item(tmp_path_factory.mktemp("encoded"), job_id="job-dicom-1")


# --- Orthanc -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    reason = namespaces_available()
    if reason is not None:
        pytest.skip(f"private network namespaces unavailable: {reason}")
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as peer:
        yield peer


@pytest.fixture()
def orthanc(orthanc_server: OrthancPeer) -> OrthancPeer:
    """The shared Orthanc, running and empty."""
    orthanc_server.start()
    orthanc_server.delete_all_instances()
    return orthanc_server


def _orthanc_settings(peer: OrthancPeer, **changes: Any) -> DicomDestinationSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "ae_title": peer.ae_title,
        "host": peer.host,
        "port": peer.dicom_port,
        "calling_ae_title": SCU_AE_TITLE,
        "timeout_s": 5.0,
    }
    values.update(changes)
    return DicomDestinationSettings(**values)


@pytest.mark.slow
def test_orthanc_stores_the_waveform_and_shows_it_over_rest(
    orthanc: OrthancPeer, item: DeliveryItem
) -> None:
    destination = DicomStoreDestination(_orthanc_settings(orthanc))

    receipt = orthanc.namespace.call(lambda: destination.deliver(item))

    assert receipt.destination == "dicom"
    assert "0x0000" in receipt.detail and "ORTHANC@127.0.0.1:4242" in receipt.detail
    assert item.sop_instance_uid in receipt.detail
    assert orthanc.instance_uids() == [item.sop_instance_uid]
    orthanc_id = orthanc.rest("/instances")[0]
    tags = orthanc.rest(f"/instances/{orthanc_id}/simplified-tags")
    assert tags["SOPClassUID"] == TWELVE_LEAD_ECG_WAVEFORM_STORAGE
    assert tags["Modality"] == "ECG"


@pytest.mark.slow
def test_orthanc_down_is_retryable_and_restart_delivers(
    orthanc: OrthancPeer, item: DeliveryItem
) -> None:
    destination = DicomStoreDestination(_orthanc_settings(orthanc))
    orthanc.stop()

    with pytest.raises(DeliveryError) as caught:
        orthanc.namespace.call(lambda: destination.deliver(item))
    assert caught.value.retryable is True
    assert "ORTHANC@127.0.0.1:4242" in str(caught.value)
    assert "cannot connect" in str(caught.value)

    orthanc.start()
    receipt = orthanc.namespace.call(lambda: destination.deliver(item))
    assert "0x0000" in receipt.detail
    assert orthanc.instance_uids() == [item.sop_instance_uid]


@pytest.mark.slow
def test_redelivery_to_orthanc_keeps_one_instance(
    orthanc: OrthancPeer, item: DeliveryItem
) -> None:
    destination = DicomStoreDestination(_orthanc_settings(orthanc))
    for _ in range(2):
        orthanc.namespace.call(lambda: destination.deliver(item))
    assert orthanc.instance_uids() == [item.sop_instance_uid]


@pytest.mark.slow
def test_orthanc_rejects_a_wrong_called_ae_title(
    orthanc: OrthancPeer, item: DeliveryItem
) -> None:
    destination = DicomStoreDestination(_orthanc_settings(orthanc, ae_title="NOTORTHANC"))

    with pytest.raises(DeliveryError) as caught:
        orthanc.namespace.call(lambda: destination.deliver(item))

    message = str(caught.value)
    assert "NOTORTHANC@127.0.0.1:4242" in message
    assert "called AE title not recognised" in message
    assert caught.value.retryable is True
    assert orthanc.instance_uids() == []


# --- pynetdicom storage SCP on 127.0.0.1 -------------------------------------------


class StorageScp:
    """A pynetdicom Storage SCP answering every C-STORE with a chosen status."""

    def __init__(self, status: int = 0x0000, ssl_context: ssl.SSLContext | None = None,
                 delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.received: list[str] = []
        self.port = free_port()
        ae = AE(ae_title=SCP_AE_TITLE)
        ae.add_supported_context(TWELVE_LEAD_ECG_WAVEFORM_STORAGE)
        ae.add_supported_context(VERIFICATION)
        ae.require_called_aet = True
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            ssl_context=ssl_context,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )

    def _on_store(self, event: Any) -> int:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.received.append(str(event.dataset.SOPInstanceUID))
        return self.status

    def settings(self, **changes: Any) -> DicomDestinationSettings:
        values: dict[str, Any] = {
            "enabled": True, "ae_title": SCP_AE_TITLE, "host": "127.0.0.1",
            "port": self.port, "timeout_s": 5.0,
        }
        values.update(changes)
        return DicomDestinationSettings(**values)

    def close(self) -> None:
        assert self._server is not None
        self._server.shutdown()


@pytest.fixture()
def scp_factory() -> Iterator[Callable[..., StorageScp]]:
    servers: list[StorageScp] = []

    def make(**kwargs: Any) -> StorageScp:
        server = StorageScp(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xB006, 0xB007])
def test_success_and_warning_statuses_count_as_delivered(
    scp_factory: Callable[..., StorageScp], item: DeliveryItem, status: int
) -> None:
    scp = scp_factory(status=status)

    receipt = DicomStoreDestination(scp.settings()).deliver(item)

    assert f"0x{status:04X}" in receipt.detail
    assert scp.received == [item.sop_instance_uid]


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(0xA700, True), (0xA7FF, True), (0x0213, True), (0xA900, False), (0xC000, False),
     (0xC123, False), (0x0122, False), (0x0124, False)],
)
def test_failure_statuses_say_which_peer_and_status(
    scp_factory: Callable[..., StorageScp], item: DeliveryItem, status: int, retryable: bool
) -> None:
    scp = scp_factory(status=status)
    destination = DicomStoreDestination(scp.settings())

    with pytest.raises(DeliveryError) as caught:
        destination.deliver(item)

    assert caught.value.retryable is retryable
    assert f"{SCP_AE_TITLE}@127.0.0.1:{scp.port}" in str(caught.value)
    assert f"0x{status:04X}" in str(caught.value)


def test_no_patient_data_in_logs_or_errors(
    scp_factory: Callable[..., StorageScp], item: DeliveryItem, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ds = dcmread(item.files["dicom"])
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-98765"
    identified = tmp_path / "identified.dcm"
    ds.save_as(identified)
    identified_item = DeliveryItem("job-identified", {"dicom": identified})
    caplog.set_level(logging.DEBUG)  # pynetdicom's PDU dumps included

    DicomStoreDestination(scp_factory().settings()).deliver(identified_item)
    with pytest.raises(DeliveryError) as caught:
        DicomStoreDestination(scp_factory(status=0xA900).settings()).deliver(identified_item)

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "job-identified" in logged
    for secret in ("Doe", "98765"):
        assert secret not in logged
        assert secret not in str(caught.value)


def test_status_classification_helpers() -> None:
    assert is_retryable_status(0xA701)
    assert not is_retryable_status(0xA901)
    assert not is_retryable_status(0xC211)
    assert describe_status(0xA702) == "0xA702 (refused: out of resources)"
    assert describe_status(0xC001) == "0xC001 (error: cannot understand)"


def test_dimse_timeout_is_retryable(
    scp_factory: Callable[..., StorageScp], item: DeliveryItem
) -> None:
    scp = scp_factory(delay_s=3.0)
    destination = DicomStoreDestination(scp.settings(timeout_s=1.0))

    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        destination.deliver(item)

    assert time.monotonic() - started < 3.0
    assert caught.value.retryable is True
    assert "no response within 1 s" in str(caught.value)


def test_connection_refused_is_retryable(item: DeliveryItem) -> None:
    port = free_port()  # nobody listens there
    settings = DicomDestinationSettings(
        enabled=True, ae_title="NOBODY", host="127.0.0.1", port=port, timeout_s=2.0
    )

    with pytest.raises(DeliveryError) as caught:
        DicomStoreDestination(settings).deliver(item)

    assert caught.value.retryable is True
    assert f"NOBODY@127.0.0.1:{port}" in str(caught.value)


def test_peer_without_the_sop_class_is_not_retryable(item: DeliveryItem) -> None:
    ae = AE(ae_title=SCP_AE_TITLE)
    ae.add_supported_context(VERIFICATION)  # no waveform storage
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    assert server is not None
    try:
        settings = DicomDestinationSettings(
            enabled=True, ae_title=SCP_AE_TITLE, host="127.0.0.1", port=port, timeout_s=5.0
        )
        with pytest.raises(DeliveryError) as caught:
            DicomStoreDestination(settings).deliver(item)
    finally:
        server.shutdown()
    assert caught.value.retryable is False
    assert TWELVE_LEAD_ECG_WAVEFORM_STORAGE in str(caught.value)


def test_item_without_dicom_file_is_not_retryable(item: DeliveryItem) -> None:
    settings = DicomDestinationSettings(enabled=True, ae_title="ANY", port=free_port())
    bare = DeliveryItem(job_id="job-bare", files={"json": item.files["json"]})

    with pytest.raises(DeliveryError) as caught:
        DicomStoreDestination(settings).deliver(bare)

    assert caught.value.retryable is False
    assert "job-bare" in str(caught.value)


def test_non_waveform_file_is_refused_before_connecting(
    item: DeliveryItem, tmp_path: Path
) -> None:
    ds = dcmread(item.files["dicom"])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    other = tmp_path / "sc.dcm"
    ds.save_as(other)
    settings = DicomDestinationSettings(enabled=True, ae_title="ANY", port=free_port())

    with pytest.raises(DeliveryError) as caught:
        DicomStoreDestination(settings).deliver(DeliveryItem("job-sc", {"dicom": other}))

    assert caught.value.retryable is False
    assert "not an ECG waveform storage class" in str(caught.value)


# --- TLS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    trustme = pytest.importorskip("trustme", reason="trustme generates the test certificates")
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert = ca.issue_cert("ecgbridge-client")
    other_ca = trustme.CA()
    paths = {
        "ca": folder / "ca.pem",
        "other_ca": folder / "other-ca.pem",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }
    paths["ca"].write_bytes(ca.cert_pem.bytes())
    paths["other_ca"].write_bytes(other_ca.cert_pem.bytes())
    paths["client_cert"].write_bytes(b"".join(b.bytes() for b in client_cert.cert_chain_pems))
    paths["client_key"].write_bytes(client_cert.private_key_pem.bytes())
    orthanc_cert = ca.issue_cert("127.0.0.1", "localhost")
    paths["server_cert"] = folder / "server.pem"
    paths["server_key"] = folder / "server.key"
    paths["server_cert"].write_bytes(b"".join(b.bytes() for b in orthanc_cert.cert_chain_pems))
    paths["server_key"].write_bytes(orthanc_cert.private_key_pem.bytes())

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS

    misnamed_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("pacs.example.org").configure_cert(misnamed_context)
    ca.configure_trust(misnamed_context)
    misnamed_context.verify_mode = ssl.CERT_REQUIRED
    return {"server_context": server_context, "misnamed_context": misnamed_context, **paths}


def _tls(pki: dict[str, Any], **changes: Any) -> DicomTlsSettings:
    values: dict[str, Any] = {
        "ca_file": pki["ca"], "cert_file": pki["client_cert"], "key_file": pki["client_key"],
    }
    values.update(changes)
    return DicomTlsSettings(**values)


@pytest.mark.slow
def test_mutual_tls_store(
    scp_factory: Callable[..., StorageScp], item: DeliveryItem, pki: dict[str, Any]
) -> None:
    scp = scp_factory(ssl_context=pki["server_context"])
    destination = DicomStoreDestination(scp.settings(tls=_tls(pki)))

    receipt = destination.deliver(item)

    assert "0x0000" in receipt.detail
    assert scp.received == [item.sop_instance_uid]


@pytest.mark.slow
def test_tls_verifies_the_host_name_unless_told_not_to(
    scp_factory: Callable[..., StorageScp], item: DeliveryItem, pki: dict[str, Any]
) -> None:
    # The server certificate is trusted but names pacs.example.org, not 127.0.0.1.
    scp = scp_factory(ssl_context=pki["misnamed_context"])
    strict = DicomStoreDestination(scp.settings(tls=_tls(pki)))
    with pytest.raises(DeliveryError):
        strict.deliver(item)
    assert scp.received == []

    lenient = DicomStoreDestination(scp.settings(tls=_tls(pki, verify_hostname=False)))
    assert "0x0000" in lenient.deliver(item).detail
    assert scp.received == [item.sop_instance_uid]


@pytest.mark.slow
def test_tls_rejects_an_untrusted_server(
    scp_factory: Callable[..., StorageScp], item: DeliveryItem, pki: dict[str, Any]
) -> None:
    scp = scp_factory(ssl_context=pki["server_context"])
    destination = DicomStoreDestination(scp.settings(tls=_tls(pki, ca_file=pki["other_ca"])))

    with pytest.raises(DeliveryError) as caught:
        destination.deliver(item)

    assert f"{SCP_AE_TITLE}@127.0.0.1:{scp.port}" in str(caught.value)
    assert scp.received == []


def test_tls_without_client_certificate_is_refused_by_mutual_tls_peer(
    scp_factory: Callable[..., StorageScp], item: DeliveryItem, pki: dict[str, Any]
) -> None:
    scp = scp_factory(ssl_context=pki["server_context"])
    destination = DicomStoreDestination(
        scp.settings(tls=DicomTlsSettings(ca_file=pki["ca"]))
    )

    with pytest.raises(DeliveryError):
        destination.deliver(item)
    assert scp.received == []


def test_unreadable_tls_files_are_a_permanent_error(tmp_path: Path) -> None:
    settings = DicomDestinationSettings(
        enabled=True, ae_title="ANY", port=11112,
        tls=DicomTlsSettings(ca_file=tmp_path / "missing-ca.pem"),
    )
    with pytest.raises(DeliveryError) as caught:
        DicomStoreDestination(settings)
    assert caught.value.retryable is False
    assert "TLS certificate" in str(caught.value)


def test_concurrent_deliveries_each_use_their_own_association(
    scp_factory: Callable[..., StorageScp], item: DeliveryItem
) -> None:
    scp = scp_factory()
    destination = DicomStoreDestination(scp.settings())
    errors: list[BaseException] = []

    def send() -> None:
        try:
            destination.deliver(item)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert scp.received == [item.sop_instance_uid] * 3


@pytest.mark.slow
def test_mutual_tls_store_into_orthanc(
    tmp_path: Path, item: DeliveryItem, pki: dict[str, Any]
) -> None:
    reason = namespaces_available()
    if reason is not None:
        pytest.skip(f"private network namespaces unavailable: {reason}")
    orthanc_tls = {
        "cert_file": pki["server_cert"], "key_file": pki["server_key"], "ca_file": pki["ca"],
    }
    with running_orthanc(tmp_path / "orthanc-tls", tls=orthanc_tls) as peer:
        secured = DicomStoreDestination(_orthanc_settings(peer, tls=_tls(pki)))
        receipt = peer.namespace.call(lambda: secured.deliver(item))
        assert "0x0000" in receipt.detail
        assert peer.instance_uids() == [item.sop_instance_uid]

        plain = DicomStoreDestination(_orthanc_settings(peer, timeout_s=2.0))
        with pytest.raises(DeliveryError) as caught:
            peer.namespace.call(lambda: plain.deliver(item))
        assert caught.value.retryable is True


@pytest.mark.slow
def test_a_rerun_lands_once_in_orthanc_under_the_sidecar_patient(
    orthanc: OrthancPeer, tmp_path: Path, record_signals: Any
) -> None:
    """Issue 12: a re-run's file is byte-identical, so a PACS keeps exactly one instance,
    filed under the patient and study of the sidecar file."""
    import io
    import json
    import urllib.request

    import numpy as np
    from PIL import Image

    from ecgbridge.ecg import ECG, Calibration
    from ecgbridge.encode.registry import WriteContext, write_outputs
    from ecgbridge.inputs.load import load_input

    png = tmp_path / "scan.png"
    Image.fromarray(np.full((64, 64, 3), 255, dtype=np.uint8)).save(png)
    png.with_suffix(".json").write_text(json.dumps({
        "PatientID": "PID-12", "PatientName": "Sidecar^Test", "StudyInstanceUID": "1.2.826.0.1.12",
        "AcquisitionDateTime": "2021-02-05T13:39:33+01:00"}))
    signals, fs = record_signals("E07506")
    files = []
    for run in ("first", "second"):
        ecg = ECG(signals=signals, fs=fs, quality=(0.9,) * 12,
                  calibration=Calibration(method="raster"), source=load_input(png).source)
        (path,) = write_outputs(ecg, tmp_path / run, "scan", ["dicom"], WriteContext())
        files.append(path)
    assert files[0].read_bytes() == files[1].read_bytes()
    uid = str(dcmread(files[0]).SOPInstanceUID)
    destination = DicomStoreDestination(_orthanc_settings(orthanc))
    for n, path in enumerate(files):
        item = DeliveryItem(job_id=f"rerun-{n}", files={"dicom": path}, sop_instance_uid=uid)
        orthanc.namespace.call(lambda item=item: destination.deliver(item))
    assert orthanc.instance_uids() == [uid]
    orthanc_id = orthanc.rest("/instances")[0]
    tags = orthanc.rest(f"/instances/{orthanc_id}/simplified-tags")
    assert (tags["PatientID"], tags["StudyInstanceUID"]) == ("PID-12", "1.2.826.0.1.12")
    url = f"http://{orthanc.host}:{orthanc.http_port}/instances/{orthanc_id}/file"

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as response:
            return bytes(response.read())

    stored_ds = dcmread(io.BytesIO(orthanc.namespace.call(fetch)))
    assert stored_ds == dcmread(files[0])  # the data set Orthanc keeps is the file's
