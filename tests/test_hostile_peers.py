"""The daemon's DICOM port against stalled, half-open and misbehaving peers.

The real daemon (in this process: its SCP, HTTP endpoint and worker pool) on
127.0.0.1 with free ports; the peers are raw TCP sockets, dcmtk's echoscu and a
pynetdicom SCU sending what a well-behaved one never would.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_support import (
    ECHOSCU,
    MF_TRUE_COLOR_SC,
    SC_IMAGE,
    dcmtk_available,
    free_port,
    have_openssl,
    pattern_image,
    secondary_capture,
    send_raw_store,
    storescu,
)
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from ecgbridge.config import load_settings
from ecgbridge.service.daemon import Daemon

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not dcmtk_available(), reason="dcmtk is not installed"),
]

#: What the issue allows a C-ECHO to be kept out by stalled peers.
ECHO_DEADLINE_S = 40.0


def _daemon(tmp_path: Path, **overrides: Any) -> Daemon:
    base = {
        "inbox.path": str(tmp_path / "inbox"), "deliver.outbox.path": str(tmp_path / "outbox"),
        "state.path": str(tmp_path / "state"), "dicom.port": free_port(), "http.port": 0,
        "workers.processes": 1, "inbox.enabled": False,
    }
    base.update(overrides)
    return Daemon(load_settings(None, environ={}, overrides=base))


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[Daemon]:
    daemon = _daemon(tmp_path)
    daemon.start()
    yield daemon
    daemon.stop()


def _http(daemon: Daemon, path: str) -> str:
    assert daemon.http is not None
    url = f"http://127.0.0.1:{daemon.http.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as exc:  # 503 carries a body too
        return exc.read().decode()


def _refused(daemon: Daemon, what: str, reason: str) -> float:
    return daemon.metrics.counter_value("ecgbridge_dicom_refused_total", what=what,
                                        reason=reason)


def _half_open(port: int) -> socket.socket:
    """A connection that sends the first 20 bytes of an A-ASSOCIATE-RQ and stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"\x01\x00" + struct.pack(">L", 200) + b"\x00\x01\x00\x00" + b"ECGBRIDGE " [:10])
    return sock


def _echo_until_accepted(port: int, extra: list[str] | None = None) -> float:
    """Seconds until a C-ECHO succeeds (retrying every half second)."""
    start = time.monotonic()
    while time.monotonic() - start < ECHO_DEADLINE_S + 20:
        done = subprocess.run(
            [ECHOSCU, "-to", "5", "-ta", "5", "-td", "5", *(extra or []), "-aec", "ECGBRIDGE",
             "127.0.0.1", str(port)],
            capture_output=True, text=True, timeout=30, check=False,
        )
        if done.returncode == 0:
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError("no C-ECHO got through")


def test_half_open_and_garbage_connections_do_not_lock_the_port_out(running: Daemon) -> None:
    port = running.scp.port if running.scp else 0
    stalled = [_half_open(port) for _ in range(10)]
    garbage = []
    for i in range(50):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(bytes([0x42 + i % 7]) * 64)
        garbage.append(sock)
    try:
        time.sleep(0.3)
        health = json.loads(_http(running, "/healthz"))
        assert health["status"] == "degraded", health
        assert any("dicom_scp saturated" in r for r in health["degraded"])
        waited = _echo_until_accepted(port)
    finally:
        for sock in stalled + garbage:
            sock.close()
    print(f"C-ECHO accepted after {waited:.1f} s with 10 half-open peers")
    assert waited < ECHO_DEADLINE_S
    metrics = _http(running, "/metrics")
    assert 'ecgbridge_dicom_refused_total{reason="setup_timeout",what="connection"}' in metrics
    timeouts = _refused(running, "connection", "setup_timeout")
    limited = _refused(running, "connection", "peer_limit")
    assert timeouts >= 1 and timeouts + limited >= 10, metrics
    assert _refused(running, "connection", "not_an_association") + limited >= 50


def _certificates(folder: Path) -> tuple[Path, Path]:
    key, crt = folder / "server.key", folder / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=60,
    )
    return key, crt


@pytest.mark.skipif(not have_openssl(), reason="openssl is not installed")
def test_an_idle_connection_does_not_block_a_tls_scp(tmp_path: Path) -> None:
    key, crt = _certificates(tmp_path)
    daemon = _daemon(tmp_path, **{"dicom.tls.enabled": True, "dicom.tls.cert_file": str(crt),
                                  "dicom.tls.key_file": str(key), "dicom.setup_timeout": 3})
    daemon.start()
    port = daemon.scp.port if daemon.scp else 0
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    plain = _half_open(port)  # no TLS at all: a failed handshake
    try:
        waited = _echo_until_accepted(port, ["+tla", "+cf", str(crt), "-ic"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _refused(daemon, "connection", "setup_timeout") < 1:
            time.sleep(0.2)
        assert _refused(daemon, "connection", "setup_timeout") >= 1
        assert _refused(daemon, "connection", "tls_failed") >= 1
    finally:
        idle.close()
        plain.close()
        daemon.stop()
    print(f"TLS C-ECHO accepted after {waited:.1f} s with an idle connection")
    assert waited < ECHO_DEADLINE_S


def _associate(port: int, contexts: list[str]) -> Any:
    ae = AE(ae_title="HOSTILE")
    for uid in contexts:
        ae.add_requested_context(uid)
    assoc = ae.associate("127.0.0.1", port, ae_title="ECGBRIDGE")
    assert assoc.is_established
    return assoc


def _wait_aborted(assoc: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and assoc.is_established:
        time.sleep(0.05)
    return not assoc.is_established


def _send_store(assoc: Any, sop_class: str, path: Path) -> Any:
    """Send `path` as a C-STORE naming `sop_class` on the first accepted context;
    return the response (None if the association ended instead)."""
    ds = dcmread(path)
    # explicit VR little endian, the first transfer syntax pynetdicom proposes
    return send_raw_store(assoc, sop_class, ds.SOPInstanceUID, encode(ds, False, True))


def test_sop_class_differing_from_the_context_is_not_acknowledged(
    running: Daemon, tmp_path: Path
) -> None:
    port = running.scp.port if running.scp else 0
    path = tmp_path / "sc.dcm"
    secondary_capture(path, pattern_image())
    assoc = _associate(port, [SC_IMAGE])
    rsp = _send_store(assoc, MF_TRUE_COLOR_SC, path)
    assert rsp is not None and rsp.Status == 0xA900
    assoc.release()
    assoc = _associate(port, [SC_IMAGE])
    rsp = _send_store(assoc, Verification, path)
    assert rsp is None or rsp.Status != 0x0000
    assert _wait_aborted(assoc), "a Verification C-STORE was answered"
    assert _refused(running, "object", "sop_class_differs_from_context") == 2
    assert running.journal.count_by_state()["received"] == 0


def test_oversized_object_and_pdu_are_refused(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, **{"dicom.max_object_mb": 0.1})
    daemon.start()
    port = daemon.scp.port if daemon.scp else 0
    try:
        big = tmp_path / "big.dcm"
        secondary_capture(big, pattern_image(300, 400))  # 360 kB of pixels
        small = tmp_path / "small.dcm"
        secondary_capture(small, pattern_image())
        assoc = _associate(port, [SC_IMAGE])
        assert assoc.send_c_store(dcmread(big)).Status == 0xA700
        assert assoc.send_c_store(dcmread(small)).Status == 0x0000  # the next one is fine
        assoc.release()
        assert _refused(daemon, "object", "object_too_large") == 1

        assoc = _associate(port, [SC_IMAGE])
        raw = assoc.dul.socket.socket
        raw.sendall(b"\x04\x00" + struct.pack(">L", 1 << 30) + b"\x00" * 64)
        assert _wait_aborted(assoc), "a 1 GiB P-DATA PDU was read"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _refused(daemon, "connection", "pdu_too_large") < 1:
            time.sleep(0.1)
        assert _refused(daemon, "connection", "pdu_too_large") == 1
        assert daemon.journal.count_by_state()["received"] == 1
    finally:
        daemon.stop()


def test_a_large_object_is_received_into_a_file_not_memory(running: Daemon,
                                                           tmp_path: Path) -> None:
    import tracemalloc

    import numpy as np

    big = tmp_path / "big.dcm"
    rng = np.random.default_rng(7)
    uid = secondary_capture(big, rng.integers(0, 256, (2400, 3200, 3), dtype=np.uint8))
    size = big.stat().st_size  # 23 MB of pixels
    port = running.scp.port if running.scp else 0
    tracemalloc.start()  # the sender is dcmtk in its own process: this is the SCP's memory
    try:
        sent = storescu(port, [big])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent.returncode == 0, sent.stderr
    # held in memory without spooling: the whole data set (23.5 MB); with it 0.6 MB
    assert peak < size / 8, f"{peak / 2**20:.1f} MB held for a {size / 2**20:.0f} MB object"
    stored = list((Path(running.settings.state.path) / "inputs").glob(f"*_{uid}.dcm"))
    assert len(stored) == 1 and stored[0].stat().st_size >= size - 1024
    assert not list((Path(running.settings.state.path) / "inputs").glob(".spool-*"))
