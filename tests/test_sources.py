"""Sources: the inbox folder watcher and the DICOM Storage SCP (with dcmtk as the peer)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from daemon_support import (
    ct_image,
    dcmtk_available,
    echoscu,
    encapsulated_pdf,
    free_port,
    have_openssl,
    multiframe_true_color,
    pattern_image,
    secondary_capture,
    storescu,
    vl_photographic,
)

from ecgbridge.config import DicomScpSettings, ScpTlsSettings
from ecgbridge.jobs.intake import SOURCE_DICOM, Intake
from ecgbridge.jobs.journal import RECEIVED, Journal, job_id_for_key
from ecgbridge.jobs.store import StateFolder
from ecgbridge.sources.dicom_scp import STATUS_SUCCESS, StorageScp
from ecgbridge.sources.folder import FolderWatcher, is_candidate_name

needs_dcmtk = pytest.mark.skipif(not dcmtk_available(), reason="dcmtk is not installed")


# ------------------------------------------------------------------ folder


@pytest.mark.parametrize(
    ("name", "taken"),
    [("ecg.png", True), ("ECG 2.PDF", True), (".hidden.png", False), ("x.png.part", False),
     ("x.tmp", False), ("x.png~", False), ("x.crdownload", False), (".~lock.x#", False)],
)
def test_temporary_and_hidden_names_are_ignored(name: str, taken: bool) -> None:
    assert is_candidate_name(name) is taken


class _Collector:
    """A `take` callback that moves files out like the real intake does."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.target.mkdir(parents=True, exist_ok=True)
        self.taken: list[tuple[str, bytes]] = []
        self.event = threading.Event()

    def __call__(self, path: Path) -> None:
        data = path.read_bytes()
        os.replace(path, self.target / path.name)
        self.taken.append((path.name, data))
        self.event.set()


def _wait(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_watcher_waits_for_complete_files(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "early.png").write_bytes(b"arrived while the daemon was down")
    collector = _Collector(tmp_path / "taken")
    watcher = FolderWatcher(inbox, collector, stable_seconds=0.6, poll_seconds=0.05,
                            rescan_seconds=60)
    watcher.start()
    try:
        # start-up rescan finds the early file
        assert _wait(lambda: [n for n, _ in collector.taken] == ["early.png"])

        # dotfiles and temporary names are never taken
        (inbox / ".secret.png").write_bytes(b"x")
        (inbox / "upload.png.part").write_bytes(b"partial")
        # a file written in pieces is taken only once it stopped changing, complete
        with open(inbox / "slow.png", "wb") as fh:
            for i in range(5):
                fh.write(bytes([i]) * 1000)
                fh.flush()
                time.sleep(0.25)  # each pause is shorter than stable_seconds
                assert "slow.png" not in [n for n, _ in collector.taken]
        assert _wait(lambda: "slow.png" in [n for n, _ in collector.taken])
        slow = dict(collector.taken)["slow.png"]
        assert len(slow) == 5000

        # an atomic move of a finished temporary file is taken
        os.replace(inbox / "upload.png.part", inbox / "upload.png")
        assert _wait(lambda: "upload.png" in [n for n, _ in collector.taken])
        assert dict(collector.taken)["upload.png"] == b"partial"
        time.sleep(0.8)
        assert sorted(p.name for p in inbox.iterdir()) == [".secret.png"]
        assert ".secret.png" not in dict(collector.taken)
    finally:
        watcher.stop()


def test_watcher_feeds_the_journal_and_empties_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    state = StateFolder(tmp_path / "state")
    journal = Journal.in_state_folder(state.root)
    intake = Intake(state, journal)
    for i in range(3):
        (inbox / f"page{i}.png").write_bytes(f"page {i}".encode())
    (inbox / "dup.png").write_bytes(b"page 0")  # same bytes as page0.png
    watcher = FolderWatcher(inbox, intake.take_file, stable_seconds=0.2, poll_seconds=0.05)
    watcher.start()
    try:
        assert _wait(lambda: not any(inbox.iterdir()))
        assert journal.count_by_state()[RECEIVED] == 3
        for job in journal.list_jobs():
            stored = state.resolve(job.input_path)
            assert stored.is_file() and stored.parent == state.inputs
            assert stored.name.startswith(job.job_id + "_")
    finally:
        watcher.stop()
        journal.close()


# -------------------------------------------------------------------- SCP


@pytest.fixture()
def scp(tmp_path: Path):  # type: ignore[no-untyped-def]
    state = StateFolder(tmp_path / "state")
    journal = Journal.in_state_folder(state.root)
    statuses: list[int] = []
    server = StorageScp(
        DicomScpSettings(port=free_port(), require_calling_aet=["STORESCU", "ECHOSCU"]),
        Intake(state, journal), on_store=statuses.append,
    )
    server.start()
    yield server, state, journal, statuses
    server.stop()
    journal.close()


@needs_dcmtk
@pytest.mark.network
def test_echo_and_store_every_accepted_sop_class(scp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, state, journal, statuses = scp
    assert echoscu(server.port).returncode == 0

    image = pattern_image()
    files = {
        "sc": tmp_path / "sc.dcm",
        "sc_jpeg": tmp_path / "sc_jpeg.dcm",
        "mf": tmp_path / "mf.dcm",
        "vl": tmp_path / "vl.dcm",
        "pdf": tmp_path / "pdf.dcm",
        "grey": tmp_path / "grey.dcm",
    }
    uids = {
        "sc": secondary_capture(files["sc"], image),
        "sc_jpeg": secondary_capture(files["sc_jpeg"], image, jpeg=True),
        "mf": multiframe_true_color(files["mf"], image, frames=2),
        "vl": vl_photographic(files["vl"], image),
        "pdf": encapsulated_pdf(files["pdf"], b"%PDF-1.4\n%%EOF\n"),
        "grey": secondary_capture(files["grey"], image[:, :, 0]),
    }
    # -xy: also propose JPEG Baseline (for sc_jpeg)
    done = storescu(server.port, list(files.values()), extra=["-xy"])
    assert done.returncode == 0, done.stderr
    assert statuses == [STATUS_SUCCESS] * len(files)
    # acknowledged = on disk and journaled, before any digitization
    for name, uid in uids.items():
        job = journal.get(job_id_for_key(f"sop:{uid}"))
        assert job is not None, name
        assert job.state == RECEIVED and job.source == SOURCE_DICOM
        stored = state.resolve(job.input_path)
        assert stored.read_bytes()[128:132] == b"DICM"
        import pydicom

        received = pydicom.dcmread(stored)
        assert str(received.SOPInstanceUID) == uid
        if name == "sc_jpeg":  # stored as received, still JPEG Baseline
            assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert not list(state.inputs.glob(".*"))  # no temporary file left

    # the same objects again: acknowledged, but no second job
    again = storescu(server.port, [files["sc"], files["pdf"]])
    assert again.returncode == 0
    assert sum(journal.count_by_state().values()) == len(files)


@needs_dcmtk
@pytest.mark.network
def test_unsupported_sop_class_is_refused(scp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _state, journal, statuses = scp
    ct_image(tmp_path / "ct.dcm")
    done = storescu(server.port, [tmp_path / "ct.dcm"])
    assert done.returncode != 0
    assert "no presentation context" in (done.stderr + done.stdout).lower()
    assert sum(journal.count_by_state().values()) == 0
    assert statuses == []


@needs_dcmtk
@pytest.mark.network
def test_calling_ae_allow_list(scp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _state, journal, _statuses = scp
    assert echoscu(server.port, aet="INTRUDER").returncode != 0
    secondary_capture(tmp_path / "sc.dcm", pattern_image())
    refused = storescu(server.port, [tmp_path / "sc.dcm"], aet="INTRUDER")
    assert refused.returncode != 0
    assert "rejected" in (refused.stderr + refused.stdout).lower()
    assert sum(journal.count_by_state().values()) == 0


def _make_certificates(folder: Path) -> tuple[Path, Path]:
    key, crt = folder / "server.key", folder / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=60,
    )
    return key, crt


@needs_dcmtk
@pytest.mark.network
@pytest.mark.skipif(not have_openssl(), reason="openssl is not installed")
def test_dicom_tls(tmp_path: Path) -> None:
    key, crt = _make_certificates(tmp_path)
    state = StateFolder(tmp_path / "state")
    journal = Journal.in_state_folder(state.root)
    server = StorageScp(
        DicomScpSettings(port=free_port(),
                         tls=ScpTlsSettings(enabled=True, cert_file=crt, key_file=key)),
        Intake(state, journal),
    )
    server.start()
    try:
        uid = secondary_capture(tmp_path / "sc.dcm", pattern_image())
        plain = storescu(server.port, [tmp_path / "sc.dcm"], timeout=30)
        assert plain.returncode != 0
        secure = storescu(server.port, [tmp_path / "sc.dcm"],
                          extra=["+tla", "+cf", str(crt), "-ic"], timeout=30)
        assert secure.returncode == 0, secure.stderr
        assert journal.get(job_id_for_key(f"sop:{uid}")) is not None
    finally:
        server.stop()
        journal.close()


@needs_dcmtk
@pytest.mark.network
@pytest.mark.parametrize("allowed", [False, True])
def test_patient_ids_are_logged_only_when_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, allowed: bool
) -> None:
    import logging

    from ecgbridge.service.logs import JsonFormatter

    state = StateFolder(tmp_path / "state")
    journal = Journal.in_state_folder(state.root)
    server = StorageScp(DicomScpSettings(port=free_port()), Intake(state, journal),
                        log_patient_ids=allowed)
    server.start()
    try:
        uid = secondary_capture(tmp_path / "sc.dcm", pattern_image())
        with caplog.at_level(logging.INFO, logger="ecgbridge"):
            assert storescu(server.port, [tmp_path / "sc.dcm"]).returncode == 0
    finally:
        server.stop()
        journal.close()
    formatter = JsonFormatter(include_patient_ids=allowed)
    lines = [formatter.format(r) for r in caplog.records if r.name.startswith("ecgbridge")]
    stored = [json.loads(line) for line in lines if "C-STORE stored" in line]
    assert len(stored) == 1
    assert stored[0]["sop_instance_uid"] == uid and stored[0]["calling_aet"] == "STORESCU"
    assert ("TEST-0001" in "\n".join(lines)) is allowed
    assert "Test^Daemon" not in "\n".join(lines)
