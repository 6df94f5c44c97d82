"""Turn a received input into a durable job (shared by the inbox and the Storage SCP)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ecgbridge.inputs.sidecar import sidecar_files
from ecgbridge.jobs.journal import Journal
from ecgbridge.jobs.store import Buffer, InputIdentity, StateFolder, identify_file, safe_name

log = logging.getLogger("ecgbridge.jobs.intake")

#: Source labels recorded in the journal.
SOURCE_INBOX = "inbox"
SOURCE_DICOM = "dicom"


@dataclass(frozen=True)
class IntakeResult:
    """What happened to one received input."""

    job_id: str
    created: bool
    identity: InputIdentity


class Intake:
    """Record received inputs: durable file first, then the journal row.

    Parameters
    ----------
    state : StateFolder
        Where inputs are kept.
    journal : Journal
        The job journal.
    on_new_job : callable, optional
        Called with ``(job_id, source)`` after a new job was recorded (metrics, wake-up).
    """

    def __init__(
        self,
        state: StateFolder,
        journal: Journal,
        on_new_job: Callable[[str, str], None] | None = None,
    ) -> None:
        self.state = state
        self.journal = journal
        self.on_new_job = on_new_job
        self._lock = threading.Lock()

    def take_file(
        self, path: Path, *, source: str = SOURCE_INBOX, move: bool = True
    ) -> IntakeResult:
        """Adopt a complete file (moving it out of the inbox) and journal it.

        A duplicate (same SOP Instance UID or same bytes as an existing job) is
        moved to ``state/duplicates/`` without creating a second job. A sidecar file
        beside it (same name with ``.json``, ``.hl7`` or ``.wl``) is kept beside the
        stored input, where the worker's loader reads it (and beside a duplicate in
        ``state/duplicates/``).
        """
        ident = identify_file(path)
        sidecars = sidecar_files(path)
        with self._lock:
            if self.journal.has_key(ident.key):
                if move:
                    self.state.keep_duplicate(path, ident.job_id)
                    for sidecar in sidecars:
                        self.state.keep_duplicate(sidecar, ident.job_id)
                log.warning("input received again: not processed, kept in state/duplicates",
                            extra={"job_id": ident.job_id, "sha256": ident.sha256})
                return IntakeResult(ident.job_id, False, ident)
            stored_sidecars = [  # first, so the input is never stored without them
                (self.state.adopt(sidecar, ident.job_id, f"{Path(path.name).stem}"
                                  f"{sidecar.suffix}", move=move), sidecar)
                for sidecar in sidecars
            ]
            stored: Path | None = None
            try:
                stored = self.state.adopt(path, ident.job_id, path.name, move=move)
                job_id, created = self.journal.add_job(
                    input_key=ident.key, source=source, input_name=safe_name(path.name),
                    input_path=self.state.relative(stored), sha256=ident.sha256,
                    sync=False,  # the stored file is durable; its row is rebuilt from it
                )
            except Exception:
                if move:  # journal not writable (disk full): the file waits in the inbox
                    if stored is not None:
                        with contextlib.suppress(OSError):
                            os.replace(stored, path)
                    for stored_sidecar, sidecar in stored_sidecars:
                        with contextlib.suppress(OSError):
                            os.replace(stored_sidecar, sidecar)
                raise
        self._announce(job_id, created, source, ident)
        return IntakeResult(job_id, created, ident)

    def take_dicom_bytes(
        self, data: Buffer | Sequence[Buffer], sop_instance_uid: str
    ) -> IntakeResult:
        """Durably store a received DICOM object and journal it.

        `data` is the object in the DICOM file format (preamble, file meta, dataset),
        as one buffer or as consecutive parts.
        """
        uid = sop_instance_uid.strip()
        key = f"sop:{uid}" if uid else ""
        if key and self.journal.has_key(key):
            ident = InputIdentity(key=key, sha256="", sop_instance_uid=uid)
            log.info("duplicate DICOM object ignored",
                     extra={"job_id": ident.job_id, "sop_instance_uid": uid})
            return IntakeResult(ident.job_id, False, ident)
        # keyed by the SOP Instance UID of the C-STORE request: the object is neither
        # parsed nor hashed on the association's thread (its sha256 stays empty)
        if uid:
            ident = InputIdentity(key=key, sha256="", sop_instance_uid=uid)
        else:
            hasher = hashlib.sha256()
            for part in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
                hasher.update(part)
            digest = hasher.hexdigest()
            ident = InputIdentity(key=f"sha256:{digest}", sha256=digest)
        name = f"{safe_name(uid, 'object')}.dcm" if uid else "object.dcm"
        # no lock: concurrent copies of one object rename onto the same name and the
        # journal's unique key keeps one job
        stored = self.state.store_bytes(data, ident.job_id, name)
        job_id, created = self.journal.add_job(
            input_key=ident.key, source=SOURCE_DICOM, input_name=name,
            input_path=self.state.relative(stored), sha256=ident.sha256,
            sync=False,  # the stored file is durable; its row is rebuilt from it
        )
        self._announce(job_id, created, SOURCE_DICOM, ident)
        return IntakeResult(job_id, created, ident)

    def take_dicom_file(self, path: Path, sop_instance_uid: str) -> IntakeResult:
        """Adopt a received DICOM object already written in ``state/inputs/`` and journal it.

        `path` is the spooled file (DICOM file format); it is renamed into place, or
        left for its writer to remove when the object is a duplicate.
        """
        uid = sop_instance_uid.strip()
        key = f"sop:{uid}"
        ident = InputIdentity(key=key, sha256="", sop_instance_uid=uid)
        if self.journal.has_key(key):
            log.info("duplicate DICOM object ignored",
                     extra={"job_id": ident.job_id, "sop_instance_uid": uid})
            return IntakeResult(ident.job_id, False, ident)
        name = f"{safe_name(uid, 'object')}.dcm"
        stored = self.state.adopt_spooled(path, ident.job_id, name)
        job_id, created = self.journal.add_job(
            input_key=key, source=SOURCE_DICOM, input_name=name,
            input_path=self.state.relative(stored), sha256="",
            sync=False,  # the stored file is durable; its row is rebuilt from it
        )
        self._announce(job_id, created, SOURCE_DICOM, ident)
        return IntakeResult(job_id, created, ident)

    def _announce(self, job_id: str, created: bool, source: str, ident: InputIdentity) -> None:
        if not created:
            return
        log.info(
            "job received",
            extra={"job_id": job_id, "source": source, "sha256": ident.sha256,
                   "sop_instance_uid": ident.sop_instance_uid},
        )
        if self.on_new_job is not None:
            self.on_new_job(job_id, source)
