"""The state folder: received inputs, per-job artifacts and quarantine, written durably.

Layout::

    state/
      journal.sqlite3            job journal (see ecgbridge.jobs.journal)
      inputs/<job_id>_<name>     received inputs, fsynced before they are journaled
      inputs/.<random>.part      an object being received (never journaled, removed at start)
      inputs/.spool-<random>     a C-STORE data set arriving (the same)
      jobs/<job_id>/out/         encoded artifacts (same files re-sent after a restart)
      quarantine/<job_id>_<name> inputs that failed, with <job_id>_<name>.reason.txt
      duplicates/<job_id>_<name> inbox files received again (same bytes or SOP Instance
                                 UID as job <job_id>), kept for review, not processed

An input is first made durable and only then recorded in the journal; a crash
between the two is repaired at start-up by :func:`recover_orphans`, which
journals inputs found without a job. Inputs live in one flat folder so that
receiving an object costs two fsyncs (the file, then the folder after the
rename) and no directory creation.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecgbridge.fsutil import fsync_path, write_text_atomic
from ecgbridge.inputs.sidecar import sidecar_files
from ecgbridge.jobs.journal import Journal, job_id_for_key

log = logging.getLogger("ecgbridge.jobs.store")

INPUTS_DIR = "inputs"
JOBS_DIR = "jobs"
QUARANTINE_DIR = "quarantine"
DUPLICATES_DIR = "duplicates"
OUTPUT_SUBDIR = "out"
#: Suffix of files still being received.
PARTIAL_SUFFIX = ".part"
#: Length of a job id (hex digits) at the start of stored input names.
JOB_ID_LENGTH = 16
#: Suffix of the text file written beside a quarantined input.
REASON_SUFFIX = ".reason.txt"

#: A bytes-like object written without copying.
Buffer = bytes | bytearray | memoryview

_DICOM_MAGIC_OFFSET = 128
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, default: str = "input") -> str:
    """A file name with only ``[A-Za-z0-9._-]`` (no directories, no leading dot)."""
    cleaned = _UNSAFE_NAME.sub("_", Path(name).name).lstrip(".")
    return cleaned[:120] or default


@dataclass(frozen=True)
class InputIdentity:
    """How an input is recognised again: its journal key and content hash."""

    key: str
    sha256: str
    sop_instance_uid: str = ""

    @property
    def job_id(self) -> str:
        """The job id this input maps to."""
        return job_id_for_key(self.key)


def identify_file(path: Path) -> InputIdentity:
    """Return the identity of an input file.

    DICOM files (``DICM`` at offset 128) with a SOP Instance UID are keyed by it
    (the same object sent twice, even re-encoded, is one job); anything else by
    the SHA-256 of its bytes.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        head = fh.read(_DICOM_MAGIC_OFFSET + 4)
        digest.update(head)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    sha = digest.hexdigest()
    if head[_DICOM_MAGIC_OFFSET:_DICOM_MAGIC_OFFSET + 4] == b"DICM":
        uid = _read_sop_instance_uid(path)
        if uid:
            return InputIdentity(key=f"sop:{uid}", sha256=sha, sop_instance_uid=uid)
    return InputIdentity(key=f"sha256:{sha}", sha256=sha)


def _read_sop_instance_uid(path: Path) -> str:
    try:
        import pydicom

        ds = pydicom.dcmread(
            str(path), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
        )
        uid = ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID", "")
        return str(uid).strip()
    except Exception:  # corrupt DICOM: fall back to the content hash
        return ""


class StateFolder:
    """Paths and durable file operations of the daemon's state folder.

    Parameters
    ----------
    root : Path
        The state folder (created with its sub-folders if missing).
    """

    def __init__(self, root: Path) -> None:
        # Absolute, so paths recorded in the journal and handed to workers do not
        # depend on the working directory (the defaults are relative: ./state).
        self.root = Path(root).resolve()
        self.inputs = self.root / INPUTS_DIR
        self.jobs = self.root / JOBS_DIR
        self.quarantine = self.root / QUARANTINE_DIR
        for folder in (self.root, self.inputs, self.jobs, self.quarantine):
            folder.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        """Folder of one job."""
        return self.jobs / job_id

    def output_dir(self, job_id: str) -> Path:
        """Folder of a job's encoded artifacts."""
        return self.jobs / job_id / OUTPUT_SUBDIR

    def resolve(self, relative: str) -> Path:
        """Absolute path of a path stored relative to the state folder."""
        return self.root / relative

    def relative(self, path: Path) -> str:
        """Path relative to the state folder (as stored in the journal)."""
        return str(Path(path).relative_to(self.root))

    # ------------------------------------------------------------ receiving
    def input_path(self, job_id: str, name: str) -> Path:
        """Where the input `name` of a job is kept."""
        return self.inputs / f"{job_id}_{safe_name(name)}"

    def store_bytes(self, data: Buffer | Sequence[Buffer], job_id: str, name: str) -> Path:
        """Write received bytes durably as the job's input and return the path.

        `data` is one buffer or several written one after the other (e.g. file meta
        then the dataset, without joining them in memory). They go to a hidden
        ``.part`` file that is fsynced, renamed to its final name, and the folder is
        fsynced: when this returns the input survives a crash or power cut.
        """
        target = self.input_path(job_id, name)
        parts = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=PARTIAL_SUFFIX, dir=self.inputs)
        try:
            for part in parts:
                view = memoryview(part).cast("B")
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, target)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_path(self.inputs)
        return target

    def adopt(self, src: Path, job_id: str, name: str, *, move: bool = True) -> Path:
        """Put the file `src` durably in place as the job's input and return that path.

        With `move` the source is renamed (or copied then removed when it lies on
        another file system); otherwise it is copied and left in place.
        """
        target = self.input_path(job_id, name)
        if move:
            try:
                os.replace(src, target)
            except OSError:
                self._copy_durably(src, target)
                Path(src).unlink(missing_ok=True)
            else:
                fsync_path(target)  # the producer may never have flushed it
        else:
            self._copy_durably(src, target)
        fsync_path(self.inputs)
        return target

    def adopt_spooled(self, src: Path, job_id: str, name: str) -> Path:
        """Make a file received into ``inputs/`` durable under the job's input name.

        The data is fsynced before the rename, so a crash never leaves a final name
        on incomplete content; the folder is fsynced after it.
        """
        target = self.input_path(job_id, name)
        fsync_path(src)
        os.replace(src, target)
        fsync_path(self.inputs)
        return target

    def _copy_durably(self, src: Path, target: Path) -> None:
        tmp = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)  # e.g. disk full: no half copy left behind
            raise

    # ------------------------------------------------------------ quarantine
    def quarantine_input(self, job_id: str, input_path: Path, reason: str) -> Path:
        """Move a failed job's input (and its sidecar files, if any) into
        ``quarantine/`` with a ``.reason.txt`` beside it."""
        name = safe_name(input_path.name)
        target = self.quarantine / (name if name.startswith(f"{job_id}_") else f"{job_id}_{name}")
        write_text_atomic(
            target.with_name(target.name + REASON_SUFFIX), f"job {job_id}: {reason.strip()}\n"
        )
        for sidecar in sidecar_files(input_path):
            os.replace(sidecar, target.with_suffix(sidecar.suffix))
        if input_path.exists():
            os.replace(input_path, target)
            fsync_path(self.quarantine)
        return target

    def keep_duplicate(self, src: Path, job_id: str) -> Path:
        """Move an inbox file that repeats job `job_id` into ``duplicates/``; return it."""
        folder = self.root / DUPLICATES_DIR
        folder.mkdir(exist_ok=True)
        base = f"{job_id}_{safe_name(src.name)}"
        target, n = folder / base, 2
        while target.exists():
            target, n = folder / f"{base}.{n}", n + 1
        try:
            os.replace(src, target)
        except OSError:
            self._copy_durably(src, target)
            Path(src).unlink(missing_ok=True)
        return target

    def release_from_quarantine(self, job_id: str, quarantined: Path) -> Path:
        """Move a quarantined input back into its job folder (for ``jobs retry``)."""
        prefix = f"{job_id}_"
        name = quarantined.name
        original = name[len(prefix):] if name.startswith(prefix) else name
        for sidecar in sidecar_files(quarantined):  # perhaps added by the operator
            self.adopt(sidecar, job_id, f"{Path(original).stem}{sidecar.suffix}", move=True)
        target = self.adopt(quarantined, job_id, original, move=True)
        quarantined.with_name(quarantined.name + REASON_SUFFIX).unlink(missing_ok=True)
        return target

    def remove_job(self, job_id: str) -> None:
        """Delete a job's input and artifacts."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        for folder in (self.inputs, self.quarantine):
            for path in folder.glob(f"{job_id}_*"):
                path.unlink(missing_ok=True)

    # -------------------------------------------------------------- recovery
    def clean_partial(self) -> int:
        """Delete half-received temporary files (never acknowledged); return how many."""
        removed = 0
        for pattern in (f".*{PARTIAL_SUFFIX}", ".spool-*"):  # .spool-*: a C-STORE cut short
            for leftover in self.inputs.glob(pattern):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed


def recover_orphans(state: StateFolder, journal: Journal) -> list[str]:
    """Journal inputs that were stored but not recorded (crash in between).

    Returns
    -------
    list of str
        Ids of the jobs created.
    """
    created: list[str] = []
    for path in sorted(state.inputs.iterdir()):
        name = path.name
        separator = name[JOB_ID_LENGTH:JOB_ID_LENGTH + 1]
        if name.startswith(".") or separator != "_" or not path.is_file():
            continue
        job_id = name[:JOB_ID_LENGTH]
        if journal.get(job_id) is not None:
            continue
        ident = identify_file(path)
        if ident.job_id != job_id:
            # received by the SCP: keyed by the C-STORE request's SOP Instance UID,
            # which is also in the file name (<job_id>_<uid>.dcm)
            uid = name[JOB_ID_LENGTH + 1:].removesuffix(".dcm")
            if job_id_for_key(f"sop:{uid}") == job_id:
                ident = InputIdentity(key=f"sop:{uid}", sha256=ident.sha256,
                                      sop_instance_uid=uid)
            else:
                log.warning("stored input %s does not match its job id; left alone", job_id)
                continue
        source = "dicom" if ident.key.startswith("sop:") else "inbox"
        new_id, new = journal.add_job(
            input_key=ident.key, source=source, input_name=name[JOB_ID_LENGTH + 1:],
            input_path=state.relative(path), sha256=ident.sha256,
        )
        if new:
            created.append(new_id)
            log.info("recovered job %s from the state folder", new_id)
    return created
