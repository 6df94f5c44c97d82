"""The state folder: received inputs, per-job artifacts and quarantine, written durably.

Layout::

    state/
      journal.sqlite3            job journal (see ecgbridge.jobs.journal)
      incoming/                  temporary files being received (never journaled)
      jobs/<job_id>/input/<name> the received input, fsynced before it is journaled
      jobs/<job_id>/out/         encoded artifacts (same files re-sent after a restart)
      quarantine/<job_id>_<name> inputs that failed, with <job_id>_<name>.reason.txt

An input is first made durable (file and directory fsynced) and only then
recorded in the journal; a crash between the two is repaired at start-up by
:func:`recover_orphans`, which journals inputs found without a job.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ecgbridge.encode.atomic import write_text_atomic
from ecgbridge.jobs.journal import Journal, job_id_for_key

log = logging.getLogger("ecgbridge.jobs.store")

INCOMING_DIR = "incoming"
JOBS_DIR = "jobs"
QUARANTINE_DIR = "quarantine"
INPUT_SUBDIR = "input"
OUTPUT_SUBDIR = "out"
#: Suffix of the text file written beside a quarantined input.
REASON_SUFFIX = ".reason.txt"

_DICOM_MAGIC_OFFSET = 128
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def fsync_dir(folder: Path) -> None:
    """fsync a directory so the names created in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        self.root = Path(root)
        self.incoming = self.root / INCOMING_DIR
        self.jobs = self.root / JOBS_DIR
        self.quarantine = self.root / QUARANTINE_DIR
        for folder in (self.root, self.incoming, self.jobs, self.quarantine):
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
    def write_incoming(self, data: bytes) -> Path:
        """Write received bytes durably into ``incoming/`` and return the temporary path."""
        fd, tmp = tempfile.mkstemp(prefix="recv-", suffix=".part", dir=self.incoming)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def adopt(self, src: Path, job_id: str, name: str, *, move: bool = True) -> Path:
        """Put `src` durably at ``jobs/<job_id>/input/<name>`` and return that path.

        With `move` the source is renamed (or copied then removed when it lies on
        another file system); otherwise it is copied and left in place.
        """
        folder = self.job_dir(job_id) / INPUT_SUBDIR
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / safe_name(name)
        if move:
            try:
                os.replace(src, target)
            except OSError:
                self._copy_durably(src, target)
                Path(src).unlink(missing_ok=True)
            else:
                _fsync_file(target)
        else:
            self._copy_durably(src, target)
        fsync_dir(folder)
        if created:
            fsync_dir(folder.parent)
            fsync_dir(self.jobs)
        if move:
            with contextlib.suppress(OSError):
                fsync_dir(Path(src).parent)
        return target

    def _copy_durably(self, src: Path, target: Path) -> None:
        tmp = target.with_name(f".{target.name}.part")
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, target)

    # ------------------------------------------------------------ quarantine
    def quarantine_input(self, job_id: str, input_path: Path, reason: str) -> Path:
        """Move a failed job's input into ``quarantine/`` with a ``.reason.txt`` beside it."""
        target = self.quarantine / f"{job_id}_{safe_name(input_path.name)}"
        write_text_atomic(
            target.with_name(target.name + REASON_SUFFIX), f"job {job_id}: {reason.strip()}\n"
        )
        if input_path.exists():
            os.replace(input_path, target)
            fsync_dir(self.quarantine)
            fsync_dir(input_path.parent)
        return target

    def release_from_quarantine(self, job_id: str, quarantined: Path) -> Path:
        """Move a quarantined input back into its job folder (for ``jobs retry``)."""
        original = quarantined.name[len(job_id) + 1:] if quarantined.name.startswith(
            f"{job_id}_"
        ) else quarantined.name
        target = self.adopt(quarantined, job_id, original, move=True)
        quarantined.with_name(quarantined.name + REASON_SUFFIX).unlink(missing_ok=True)
        return target

    def remove_job(self, job_id: str) -> None:
        """Delete a job's folder (its input and artifacts)."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # -------------------------------------------------------------- recovery
    def clean_incoming(self) -> int:
        """Delete half-received temporary files (never acknowledged); return how many."""
        removed = 0
        for leftover in self.incoming.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_orphans(state: StateFolder, journal: Journal) -> list[str]:
    """Journal inputs that were stored but not recorded (crash in between).

    Returns
    -------
    list of str
        Ids of the jobs created.
    """
    created: list[str] = []
    for job_dir in sorted(p for p in state.jobs.iterdir() if p.is_dir()):
        inputs = sorted(
            p for p in (job_dir / INPUT_SUBDIR).glob("*")
            if p.is_file() and not p.name.startswith(".")
        ) if (job_dir / INPUT_SUBDIR).is_dir() else []
        if not inputs or journal.get(job_dir.name) is not None:
            continue
        ident = identify_file(inputs[0])
        if ident.job_id != job_dir.name:
            log.warning("state folder %s does not match its input; left alone", job_dir.name)
            continue
        source = "dicom" if ident.key.startswith("sop:") else "inbox"
        job_id, new = journal.add_job(
            input_key=ident.key, source=source, input_name=inputs[0].name,
            input_path=state.relative(inputs[0]), sha256=ident.sha256,
        )
        if new:
            created.append(job_id)
            log.info("recovered job %s from the state folder", job_id)
    return created
