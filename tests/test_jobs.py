"""The job journal, the state folder, delivery with backoff, and ``ecgbridge jobs``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from ecgbridge.cli import main
from ecgbridge.config import RetrySettings
from ecgbridge.deliver.outbox import OutboxDestination
from ecgbridge.deliver.settings import OutboxSettings
from ecgbridge.ecg import ECG, SourceInfo
from ecgbridge.encode.registry import WriteContext, resolve_writer
from ecgbridge.jobs.intake import Intake
from ecgbridge.jobs.journal import (
    DEAD,
    DEAD_LETTER,
    DELIVERED,
    DIGITIZED,
    FAILED,
    PENDING,
    RECEIVED,
    Journal,
    job_id_for_key,
)
from ecgbridge.jobs.runner import DeliveryWorker, DigitizationScheduler
from ecgbridge.jobs.store import REASON_SUFFIX, StateFolder, identify_file, recover_orphans
from ecgbridge.jobs.worker import DigitizeRequest, read_manifest, run_digitization
from ecgbridge.metrics import Metrics


@pytest.fixture()
def state(tmp_path: Path) -> StateFolder:
    return StateFolder(tmp_path / "state")


@pytest.fixture()
def journal(state: StateFolder) -> Journal:
    j = Journal.in_state_folder(state.root)
    yield j  # type: ignore[misc]
    j.close()


def _ecg_from_record(record_signals, name: str = "HR06004") -> ECG:  # type: ignore[no-untyped-def]
    signals, fs = record_signals(name)
    return ECG(signals=np.asarray(signals), fs=fs, quality=(1.0,) * 12,
               source=SourceInfo(name=f"{name}.png", sha256="ab" * 32, media_type="image/png"))


def _received_job(state: StateFolder, journal: Journal, content: bytes, name: str) -> str:
    inbox = state.root.parent / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / name).write_bytes(content)
    result = Intake(state, journal).take_file(inbox / name)
    assert result.created
    return result.job_id


def _digitized_job(state: StateFolder, journal: Journal, ecg: ECG, destinations: list[str],
                   content: bytes = b"page-1") -> str:
    """A job as the worker leaves it: encoded by the real DICOM and JSON writers."""
    job_id = _received_job(state, journal, content, f"page-{content.hex()[:8]}.png")
    out = state.output_dir(job_id)
    out.mkdir(parents=True)
    files: dict[str, str] = {}
    for fmt in ("dicom", "json"):
        written = resolve_writer(fmt)(ecg, out, job_id, WriteContext())
        files[fmt] = state.relative(written[0])
    import pydicom

    uid = str(pydicom.dcmread(state.resolve(files["dicom"])).SOPInstanceUID)
    journal.mark_digitized(job_id, files, uid, destinations)
    return job_id


# ----------------------------------------------------------------- journal


def test_same_input_twice_is_one_job(state: StateFolder, journal: Journal, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    intake = Intake(state, journal)
    (inbox / "a.png").write_bytes(b"same bytes")
    first = intake.take_file(inbox / "a.png")
    (inbox / "copy of a.png").write_bytes(b"same bytes")
    second = intake.take_file(inbox / "copy of a.png")
    assert first.created and not second.created
    assert first.job_id == second.job_id == job_id_for_key(f"sha256:{first.identity.sha256}")
    assert list(inbox.iterdir()) == []  # both left the inbox
    assert journal.count_by_state()[RECEIVED] == 1
    stored = state.resolve(journal.get(first.job_id).input_path)  # type: ignore[union-attr]
    assert stored.read_bytes() == b"same bytes"


def test_dicom_inputs_are_keyed_by_sop_instance_uid(tmp_path: Path) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    ident = identify_file(path)
    assert ident.key == f"sop:{ds.SOPInstanceUID}"
    assert ident.sop_instance_uid == ds.SOPInstanceUID
    (tmp_path / "y.png").write_bytes(b"\x89PNG not really")
    assert identify_file(tmp_path / "y.png").key.startswith("sha256:")


def test_journal_survives_reopening(state: StateFolder, journal: Journal) -> None:
    job_id = _received_job(state, journal, b"abc", "p.png")
    journal.close()
    again = Journal.in_state_folder(state.root)
    try:
        job = again.get(job_id)
        assert job is not None and job.state == RECEIVED and job.input_name == "p.png"
        mode = again._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = again._db.execute("PRAGMA synchronous").fetchone()[0]
        assert mode == "wal" and sync == 2  # 2 = FULL
    finally:
        again.close()


def test_orphaned_input_is_recovered(state: StateFolder, journal: Journal, tmp_path: Path) -> None:
    # a crash after the input was made durable but before the journal row
    src = tmp_path / "late.png"
    src.write_bytes(b"orphan")
    ident = identify_file(src)
    state.adopt(src, ident.job_id, "late.png")
    (state.inputs / ".recv-x.part").write_bytes(b"half")
    assert journal.get(ident.job_id) is None
    # an object stored by the SCP whose dataset UID differs from its C-STORE request's
    sender_uid = "1.2.826.0.1.3680043.8.498.1"
    scp_job = job_id_for_key(f"sop:{sender_uid}")
    state.store_bytes([_dicom_bytes("1.2.826.0.1.3680043.8.498.2")], scp_job,
                      f"{sender_uid}.dcm")
    assert sorted(recover_orphans(state, journal)) == sorted([ident.job_id, scp_job])
    assert journal.get(ident.job_id).state == RECEIVED  # type: ignore[union-attr]
    recovered = journal.get(scp_job)
    assert recovered is not None and recovered.input_key == f"sop:{sender_uid}"
    assert recovered.source == "dicom"
    assert recover_orphans(state, journal) == []
    assert state.clean_partial() == 1


def _dicom_bytes(uid: str) -> bytes:
    import io

    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------- delivery


def test_failing_destination_does_not_block_the_other(
    state: StateFolder, journal: Journal, tmp_path: Path, record_signals  # type: ignore[no-untyped-def]
) -> None:
    ecg = _ecg_from_record(record_signals)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the outbox folder should be")
    good = OutboxDestination(OutboxSettings(path=tmp_path / "good", formats=["dicom", "json"]),
                             name="good")
    bad = OutboxDestination(OutboxSettings(path=blocked / "sub", formats=["dicom"]), name="bad")
    retry = RetrySettings(base_seconds=10.0, max_seconds=40.0, max_attempts=3)
    metrics = Metrics()
    job_ids = [_digitized_job(state, journal, ecg, ["bad", "good"], content=bytes([i]) * 5)
               for i in range(3)]
    bad_worker = DeliveryWorker(bad, journal, state, retry, metrics)
    good_worker = DeliveryWorker(good, journal, state, retry, metrics)

    t0 = time.time()
    assert bad_worker.run_once(t0)  # first attempt fails...
    while good_worker.run_once(t0):  # ...the other destination delivers everything
        pass
    for job_id in job_ids:
        assert (tmp_path / "good" / f"{job_id}.dcm").is_file()
        job = journal.get(job_id)
        assert job is not None and job.state == DIGITIZED
        by_dest = {d.destination: d for d in job.deliveries}
        assert by_dest["good"].state == DELIVERED
    first = journal.get(job_ids[0])
    bad_row = next(d for d in first.deliveries if d.destination == "bad")  # type: ignore[union-attr]
    assert bad_row.state == PENDING and bad_row.attempts == 1
    assert "cannot write" in bad_row.last_error
    assert bad_row.next_attempt_at == pytest.approx(t0 + 10.0, abs=2.0)  # backoff base

    # the failed row is not due before its backoff; the other jobs rotate in front of it
    assert bad_worker.run_once(t0 + 1) is True  # job 2's first attempt
    assert bad_worker.run_once(t0 + 1) is True  # job 3's first attempt
    assert bad_worker.run_once(t0 + 1) is False  # nothing due now
    # two more failures exhaust max_attempts=3 -> dead-letter
    assert bad_worker.run_once(t0 + 11)
    row = next(d for d in journal.get(job_ids[0]).deliveries if d.destination == "bad")  # type: ignore[union-attr]
    assert row.attempts == 2 and row.next_attempt_at == pytest.approx(time.time() + 20.0, abs=2.0)
    attempts = 0
    while bad_worker.run_once(t0 + 1000):  # far in the future: every retry is due
        attempts += 1
    assert attempts == 5  # 3 jobs x 3 attempts, minus the 4 made above
    dead = journal.get(job_ids[0])
    assert dead is not None and dead.state == DEAD_LETTER
    assert "bad:" in dead.reason
    assert journal.count_by_state()[DEAD_LETTER] == 3
    assert metrics.counter_value("ecgbridge_dead_letter_total", destination="bad") == 3
    assert metrics.counter_value("ecgbridge_delivered_total", destination="good") == 3

    # repair the destination, re-queue with the admin command: delivered, once
    blocked.unlink()
    assert main(["jobs", "retry", dead.job_id[:8], "--state", str(state.root)]) == 0
    assert journal.get(dead.job_id).state == DIGITIZED  # type: ignore[union-attr]
    while bad_worker.run_once(time.time()):
        pass
    assert journal.get(job_ids[1]).state == DEAD_LETTER  # type: ignore[union-attr]
    done = journal.get(dead.job_id)
    assert done is not None and done.state == DELIVERED
    assert (blocked / "sub" / f"{dead.job_id}.dcm").read_bytes() == state.resolve(
        done.files["dicom"]).read_bytes()


def test_permanent_refusal_goes_to_dead_letter_at_once(
    state: StateFolder, journal: Journal, tmp_path: Path, record_signals  # type: ignore[no-untyped-def]
) -> None:
    ecg = _ecg_from_record(record_signals)
    job_id = _digitized_job(state, journal, ecg, ["csv-only"])
    # the item has no CSV: the outbox refuses for good (retryable=False)
    dest = OutboxDestination(OutboxSettings(path=tmp_path / "o", formats=["csv"]), name="csv-only")
    worker = DeliveryWorker(dest, journal, state, RetrySettings(max_attempts=10))
    assert worker.run_once()
    job = journal.get(job_id)
    assert job is not None and job.state == DEAD_LETTER
    assert job.deliveries[0].state == DEAD and job.deliveries[0].attempts == 1
    assert "no csv file" in job.reason


def test_jobs_list_show_and_purge(
    state: StateFolder, journal: Journal, tmp_path: Path, record_signals,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    ecg = _ecg_from_record(record_signals)
    job_id = _digitized_job(state, journal, ecg, ["outbox"])
    dest = OutboxDestination(OutboxSettings(path=tmp_path / "out", formats=["dicom"]))
    assert DeliveryWorker(dest, journal, state, RetrySettings()).run_once()
    job = journal.get(job_id)
    assert job is not None and job.state == DELIVERED

    assert main(["jobs", "list", "--state", str(state.root)]) == 0
    listed = capsys.readouterr().out
    assert job_id in listed and "delivered" in listed
    assert main(["jobs", "show", job_id, "--state", str(state.root)]) == 0
    shown = capsys.readouterr().out
    assert "delivery outbox: delivered, 1 attempt(s)" in shown
    assert job.sop_instance_uid in shown

    assert main(["jobs", "purge", "--older-than", "1", "--state", str(state.root)]) == 0
    assert "purged 0" in capsys.readouterr().out
    assert journal.get(job_id) is not None
    # age the job by two days, then purge removes it and its folder
    journal._db.execute("UPDATE jobs SET finished_at = ? WHERE job_id = ?",
                        (time.time() - 2 * 86400, job_id))
    assert main(["jobs", "purge", "--older-than", "1", "--state", str(state.root)]) == 0
    assert "purged 1" in capsys.readouterr().out
    assert journal.get(job_id) is None
    assert not state.job_dir(job_id).exists()


def test_jobs_command_without_journal_is_an_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "list", "--state", str(tmp_path / "none")]) == 1
    assert "no job journal" in capsys.readouterr().err


# ------------------------------------------------------------ digitization


def _one_process_scheduler(state: StateFolder, journal: Journal) -> DigitizationScheduler:
    """A real scheduler with one worker process, encoding DICOM + JSON for the outbox."""
    return DigitizationScheduler(
        journal, state,
        lambda job: DigitizeRequest(job.job_id, str(state.resolve(job.input_path)),
                                    str(state.output_dir(job.job_id)), ("dicom", "json")),
        ["outbox"], processes=1, queue_size=2, poll_seconds=0.05,
    )


def _run_until_settled(scheduler: DigitizationScheduler, journal: Journal, job_id: str,
                       linger_s: float = 0.0) -> None:
    """Run `scheduler` until the job leaves RECEIVED (60 s at most), then `linger_s` more."""
    scheduler.start()
    try:
        deadline = time.monotonic() + 60
        while journal.get(job_id).state == RECEIVED and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.1)
        time.sleep(linger_s)
    finally:
        scheduler.stop(grace_seconds=5)


def test_unreadable_input_fails_with_reason_and_is_quarantined(
    state: StateFolder, journal: Journal
) -> None:
    job_id = _received_job(state, journal, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "broken.png")
    scheduler = _one_process_scheduler(state, journal)
    _run_until_settled(scheduler, journal, job_id)
    job = journal.get(job_id)
    assert job is not None and job.state == FAILED and job.reason
    quarantined = state.resolve(job.input_path)
    assert quarantined.parent == state.quarantine and quarantined.is_file()
    reason_file = quarantined.with_name(quarantined.name + REASON_SUFFIX)
    assert job.reason in reason_file.read_text()
    assert scheduler.metrics.counter_value("ecgbridge_failed_total") == 1

    # retry moves the input out of quarantine and re-queues the job
    assert main(["jobs", "retry", job_id, "--state", str(state.root)]) == 0
    again = journal.get(job_id)
    assert again is not None and again.state == RECEIVED
    assert state.resolve(again.input_path).is_file() and not quarantined.exists()
    assert not reason_file.exists()


def test_completed_artifacts_are_reused_after_a_restart(tmp_path: Path) -> None:
    out = tmp_path / "job" / "out"
    out.mkdir(parents=True)
    (out / "j.dcm").write_bytes(b"dicom bytes")
    (out / "j.json").write_text("{}")
    (out / "manifest.json").write_text(
        '{"job_id": "j", "files": {"dicom": "j.dcm", "json": "j.json"}, '
        '"sop_instance_uid": "1.2.3"}'
    )
    assert read_manifest(out) is not None
    outcome = run_digitization(
        DigitizeRequest("j", str(tmp_path / "missing.png"), str(out), ("dicom", "json"))
    )
    assert outcome.ok and outcome.reused and outcome.sop_instance_uid == "1.2.3"
    assert outcome.files["dicom"] == str(out / "j.dcm")
    # an incomplete folder (file missing) is not trusted
    os.remove(out / "j.json")
    assert read_manifest(out) is None


def test_an_input_that_kills_its_worker_fails_alone(state: StateFolder, journal: Journal) -> None:
    from daemon_support import crash_on_poison

    ids = [_received_job(state, journal, f"page {i}".encode(), f"page{i}.png") for i in range(3)]
    poison = _received_job(state, journal, b"kills the worker", "poison.png")
    ids += [_received_job(state, journal, f"later {i}".encode(), f"later{i}.png")
            for i in range(2)]
    scheduler = DigitizationScheduler(
        journal, state,
        lambda job: DigitizeRequest(job.job_id, str(state.resolve(job.input_path)),
                                    str(state.output_dir(job.job_id)), ("json",)),
        [], processes=2, queue_size=4, poll_seconds=0.05, digitize=crash_on_poison,
    )
    scheduler.start()
    try:
        deadline = time.monotonic() + 120
        while journal.count_by_state()[RECEIVED] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        scheduler.stop(grace_seconds=5)
    failed = journal.get(poison)
    assert failed is not None and failed.state == FAILED
    assert "died 2 times" in failed.reason
    assert (state.quarantine / Path(failed.input_path).name).is_file()
    # every other input, even those in the pool when it died, was digitized
    assert [journal.get(i).state for i in ids] == [DELIVERED] * len(ids)  # type: ignore[union-attr]


def test_an_outcome_that_cannot_be_recorded_fails_the_job_once(
    state: StateFolder, journal: Journal
) -> None:
    """A result the journal cannot take must fail the job, not re-digitize it forever."""
    job_id = _received_job(state, journal, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "page.png")
    scheduler = _one_process_scheduler(state, journal)
    recorded: list[str] = []

    def broken_record(outcome: object) -> None:
        recorded.append("x")
        raise ValueError("journal refused the outcome")

    scheduler._record = broken_record  # type: ignore[method-assign]
    _run_until_settled(scheduler, journal, job_id, linger_s=0.5)  # room for a wrong re-run
    job = journal.get(job_id)
    assert job is not None and job.state == FAILED
    assert "the result could not be recorded" in (job.reason or "")
    assert recorded == ["x"]
