"""Fuzz: 1,000 seeded malformed inputs through both doors of the real daemon.

700 damaged files dropped into the inbox and 300 damaged datasets sent as C-STOREs by
a pynetdicom SCU over 127.0.0.1 (see ``fuzz_inputs``). Asserted: the daemon never
crashes (every component alive), never hangs (each C-STORE answered, every job
settled in bounded time), loses nothing (each input is a job delivered or failed with
its input quarantined, or a recognised duplicate), and every failure reason is words:
no ``object at 0x``, no ``internal error``, no Python exception name.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import fuzz_inputs
import pytest
from daemon_support import (
    SC_IMAGE,
    free_port,
    pattern_image,
    secondary_capture,
    send_raw_store,
)
from pydicom.uid import generate_uid
from pynetdicom import AE

from ecgbridge.config import load_settings
from ecgbridge.jobs.journal import DELIVERED, FAILED, RECEIVED
from ecgbridge.service.daemon import Daemon

pytestmark = pytest.mark.network

SEED = 20261204
FILES = 700
STORES = 300
#: What a reason must never contain.
UNCLEAR = re.compile(r"object at 0x|internal error|\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback")


def _store_all(port: int, payloads: list[bytes]) -> list[int | None]:
    """Send each payload as a C-STORE on one association; the statuses (None: no answer)."""
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(SC_IMAGE, "1.2.840.10008.1.2")
    ae.dimse_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="ECGBRIDGE")
    assert assoc.is_established
    statuses: list[int | None] = []
    for i, payload in enumerate(payloads):
        if not assoc.is_established:  # the SCP may abort on a hostile object: reconnect
            assoc = ae.associate("127.0.0.1", port, ae_title="ECGBRIDGE")
            assert assoc.is_established
        rsp = send_raw_store(assoc, SC_IMAGE, generate_uid(), payload,
                             message_id=i % 65535 + 1)
        statuses.append(None if rsp is None else int(rsp.Status))
    assoc.release()
    return statuses


def test_a_thousand_malformed_inputs_through_both_doors(tmp_path: Path) -> None:
    seed_dcm = tmp_path / "seed.dcm"
    secondary_capture(seed_dcm, pattern_image(32, 48))
    inbox = tmp_path / "inbox"
    settings = load_settings(None, environ={}, overrides={
        "inbox.path": str(inbox), "deliver.outbox.path": str(tmp_path / "outbox"),
        "deliver.outbox.formats": ["json"], "state.path": str(tmp_path / "state"),
        "dicom.port": free_port(), "http.port": 0, "workers.processes": 1,
        "inbox.stable_seconds": 0.05, "inbox.poll_seconds": 0.05,
        "workers.job_timeout_seconds": 60,
    })
    daemon = Daemon(settings)
    daemon.start()
    started = time.monotonic()
    try:
        staging = tmp_path / "staging"
        staging.mkdir()
        for name, data in fuzz_inputs.files(FILES, SEED, seed_dcm.read_bytes()):
            (staging / name).write_bytes(data)
            (staging / name).rename(inbox / name)
        port = daemon.scp.port if daemon.scp else 0
        statuses = _store_all(port, list(fuzz_inputs.datasets(STORES, SEED + 1, str(seed_dcm))))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            counts = daemon.journal.count_by_state()
            taken = not any(inbox.iterdir())
            if taken and counts[RECEIVED] == 0 and daemon.scheduler.in_flight == 0 \
                    and daemon.wait_idle(0.1):
                break
            time.sleep(0.5)
        ok, health = daemon.health()
        jobs = daemon.journal.list_jobs(limit=10_000)
        metrics: dict[str, Any] = {
            source: daemon.metrics.counter_value("ecgbridge_received_total", source=source)
            for source in ("inbox", "dicom")}
        duplicates = daemon.metrics.counter_value("ecgbridge_duplicates_total", source="inbox")
    finally:
        daemon.stop()
    seconds = time.monotonic() - started
    assert ok, health  # no component died
    assert None not in statuses, "a C-STORE got no answer"
    assert not any(inbox.iterdir()), "files left in the inbox"
    states = [job.state for job in jobs]
    assert states.count(RECEIVED) == 0, "jobs never settled"
    assert set(states) <= {DELIVERED, FAILED}
    # nothing lost: every file is a job or a recognised duplicate; every stored object a job
    assert metrics["inbox"] + duplicates == FILES
    assert metrics["dicom"] == statuses.count(0x0000)
    assert len(jobs) == metrics["inbox"] + metrics["dicom"]
    failed = [job for job in jobs if job.state == FAILED]
    assert all(job.input_path and (tmp_path / "state" / job.input_path).exists()
               for job in failed), "a failed job's input is not in quarantine"
    unclear = sorted({job.reason for job in failed if UNCLEAR.search(job.reason or "")})
    assert not unclear, unclear[:10]
    nameless = [job.reason for job in failed if job.input_name not in (job.reason or "")]
    assert not nameless, nameless[:10]  # every reason names the file it is about
    print(f"fuzz: {FILES} files + {STORES} C-STOREs in {seconds:.0f} s; jobs {len(jobs)} "
          f"({states.count(DELIVERED)} delivered, {len(failed)} failed), "
          f"{int(duplicates)} duplicates, C-STORE statuses "
          f"{sorted({f'0x{s:04X}' for s in statuses if s is not None})}")
