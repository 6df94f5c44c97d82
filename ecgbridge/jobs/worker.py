"""The daemon's worker: what a pool process does with one job (digitize, encode into the
job folder).

:func:`run_digitization` runs in the daemon's process pool. It takes and returns
plain picklable dataclasses and never raises: every failure becomes a
:class:`DigitizeOutcome` with ``ok=False`` and a reason a person can act on.

The artifacts are written into ``out.partial/`` and renamed to ``out/`` once
complete, with a ``manifest.json``; a job resumed after a crash whose ``out/``
is complete re-uses those very files (same SOP Instance UID, same bytes), so a
destination never receives two different versions of one input.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.fsutil import fsync_path
from ecgbridge.jobs.diskfull import DISK_FULL_KIND, is_disk_full

#: Name of the manifest listing the artifacts of a completed ``out/`` folder.
MANIFEST_FILE = "manifest.json"
_PARTIAL_SUFFIX = ".partial"
_OUT_OF_MEMORY = ("out of memory while digitizing: the input needs more than the worker's "
                  "memory limit (workers.max_memory_mb)")
#: How native libraries (OpenCV) report a failed allocation instead of MemoryError.
_ALLOCATION_FAILURES = ("Insufficient memory", "Failed to allocate")


@dataclass(frozen=True)
class DigitizeRequest:
    """Everything a worker needs to process one job (all picklable).

    Attributes
    ----------
    job_id : str
        Job identifier; also the stem of the encoded files.
    input_path : str
        Absolute path of the stored input.
    out_dir : str
        Absolute path of the job's ``out`` folder.
    formats : tuple of str
        Encoder format names (``"dicom"``, ``"fhir-r4"``, ``"json"`` ...).
    options : DigitizeOptions
        How to digitize (already validated).
    record_options : tuple of (str, str)
        Writer options about time and identity (``records`` settings).
    """

    job_id: str
    input_path: str
    out_dir: str
    formats: tuple[str, ...]
    options: DigitizeOptions = field(default_factory=DigitizeOptions)
    record_options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DigitizeOutcome:
    """Result of :func:`run_digitization`.

    Attributes
    ----------
    job_id : str
        The job.
    ok : bool
        True if every format was written.
    files : dict
        Format name -> absolute path of its main file.
    sop_instance_uid : str
        SOP Instance UID of the DICOM waveform, if one was written.
    reason : str
        Why it failed (empty on success).
    error_kind : str
        Class name of the error (``"NotAnEcgError"`` ...).
    seconds : float
        Wall time spent.
    reused : bool
        True when complete artifacts of an earlier run were re-used.
    """

    job_id: str
    ok: bool
    files: dict[str, str] = field(default_factory=dict)
    sop_instance_uid: str = ""
    reason: str = ""
    error_kind: str = ""
    seconds: float = 0.0
    reused: bool = False


def worker_initializer(
    max_memory_bytes: int = 0, page_seconds: float = 0.0,
    setup: Callable[[], object] | None = None,
) -> None:
    """Pool initializer: Ctrl-C is handled by the daemon, not by each worker; the
    worker dies with the daemon and its memory is capped (see ``worker_guard``);
    `setup` (picklable, e.g. the daemon's logging configuration) runs first."""
    from ecgbridge.jobs.worker_guard import die_with_parent, limit_memory, set_page_time_limit

    if setup is not None:
        setup()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    limit_memory(max_memory_bytes)
    set_page_time_limit(page_seconds)


def run_digitization(request: DigitizeRequest) -> DigitizeOutcome:
    """Digitize and encode one job; never raises."""
    start = time.monotonic()
    out_dir = Path(request.out_dir)
    try:
        previous = read_manifest(out_dir)
        previous_files: dict[str, str] = dict(previous["files"]) if previous else {}
        if previous is not None and set(request.formats) <= set(previous_files):
            return DigitizeOutcome(
                job_id=request.job_id, ok=True,
                files={k: str(out_dir / v) for k, v in previous_files.items()},
                sop_instance_uid=str(previous.get("sop_instance_uid", "")),
                seconds=time.monotonic() - start, reused=True,
            )
        files, uid = _digitize_and_encode(request, out_dir)
        return DigitizeOutcome(
            job_id=request.job_id, ok=True, files=files, sop_instance_uid=uid,
            seconds=time.monotonic() - start,
        )
    except MemoryError:
        return _failure(request, _OUT_OF_MEMORY, "MemoryError", start)
    except Exception as exc:
        if any(text in str(exc) for text in _ALLOCATION_FAILURES):  # OpenCV's own
            return _failure(request, _OUT_OF_MEMORY, "MemoryError", start)
        if _caused_by_full_disk(exc):
            # not the input's fault: the scheduler retries it once there is room
            return _failure(request, "no space left on the disk of the state folder while "
                            "writing the results", DISK_FULL_KIND, start)
        from ecgbridge.errors import EcgBridgeError, describe_failure

        if not isinstance(exc, EcgBridgeError):  # a defect: the details go to the log only
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            name = Path(request.input_path).name
            logging.getLogger("ecgbridge.jobs.worker").error(
                "digitization failed unexpectedly", extra={
                    "job_id": request.job_id, "reason": detail.replace(name, "<input>")})
        reason = describe_failure(exc)
        name = Path(request.input_path).name.removeprefix(f"{request.job_id}_")
        if isinstance(exc, EcgBridgeError) and not reason.startswith(f"{name}:"):
            reason = f"{name}: {reason}"  # every reason names the file it is about
        return _failure(request, reason, type(exc).__name__, start)


def _caused_by_full_disk(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):  # the error itself or what it wraps
        if seen is None:
            return False
        if is_disk_full(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _failure(request: DigitizeRequest, reason: str, kind: str, start: float) -> DigitizeOutcome:
    return DigitizeOutcome(
        job_id=request.job_id, ok=False, reason=reason or kind, error_kind=kind,
        seconds=time.monotonic() - start,
    )


def _digitize_and_encode(request: DigitizeRequest, out_dir: Path) -> tuple[dict[str, str], str]:
    from ecgbridge.api import digitize_input
    from ecgbridge.encode.registry import WriteContext, resolve_writer
    from ecgbridge.jobs.worker_guard import page_time_limit

    stored = Path(request.input_path)
    # messages name the file as it was received, not as stored (<job_id>_<name>)
    ecg, loaded = digitize_input(stored, request.options,
                                 name=stored.name.removeprefix(f"{request.job_id}_"),
                                 page_guard=page_time_limit)

    partial = out_dir.with_name(out_dir.name + _PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    context = WriteContext(loaded=loaded, options=dict(request.record_options))
    relative: dict[str, str] = {}
    for fmt in request.formats:
        written = resolve_writer(fmt)(ecg, partial, request.job_id, context)
        relative[fmt] = _main_file(fmt, written).name
    uid = _sop_instance_uid(partial / relative["dicom"]) if "dicom" in relative else ""
    manifest = {"job_id": request.job_id, "files": relative, "sop_instance_uid": uid}
    (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    for item in partial.iterdir():
        fsync_path(item)
    fsync_path(partial)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(partial, out_dir)
    fsync_path(out_dir.parent)
    return {k: str(out_dir / v) for k, v in relative.items()}, uid


def _main_file(fmt: str, written: list[Path]) -> Path:
    if not written:
        raise RuntimeError(f"encoder {fmt!r} wrote no file")
    if fmt == "wfdb":
        for path in written:
            if path.suffix == ".hea":
                return path
    return written[0]


def _sop_instance_uid(path: Path) -> str:
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return str(ds.get("SOPInstanceUID", ""))


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of a completed ``out/`` folder whose files all exist, else None."""
    try:
        data = json.loads((out_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all((out_dir / str(v)).is_file() for v in files.values()):
        return None
    return data  # type: ignore[no-any-return]


