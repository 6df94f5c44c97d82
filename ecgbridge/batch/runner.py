"""Drive a batch run: stream inputs, keep the engine busy, journal every result."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgbridge.batch.engines import WorkerLost
from ecgbridge.batch.inputs import count_inputs, iter_inputs
from ecgbridge.batch.journal import DONE, FAILED, SKIPPED, Journal
from ecgbridge.batch.worker import STAGING_DIR
from ecgbridge.digitizer.options import DigitizeOptions

log = logging.getLogger("ecgbridge.batch")

#: Attempts per input when its worker dies (the first try and one retry).
MAX_ATTEMPTS = 2
#: Lock file in ``DIR/_batch`` held by the running client (one run per output folder).
LOCK_FILE = "batch.lock"


@dataclass
class BatchConfig:
    """What to digitize and how (see ``ecgbridge batch --help``)."""

    sources: list[str]
    out_dir: Path
    formats: list[str]
    options: DigitizeOptions
    resume: bool = False
    retry_failed: bool = False
    limit: int | None = None
    timeout_s: float = 600.0
    progress: bool = False
    log_every_s: float = 30.0
    write_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Progress:
    pages: int = 0
    inputs: int = 0
    failed: int = 0
    skipped: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)


def run_batch(config: BatchConfig, engine: Any) -> dict[str, Any]:
    """Run the batch on `engine`; return the summary (also written to ``_batch/``).

    Raises
    ------
    ValueError
        The output folder holds a journal and neither --resume nor --retry-failed is
        given, or another batch run is using it.
    """
    journal = Journal(config.out_dir)
    lock_fd = -1
    try:
        if not journal.is_empty() and not (config.resume or config.retry_failed):
            raise ValueError(
                f"{config.out_dir} already holds a batch journal; pass --resume to carry on, "
                "--retry-failed to redo failures, or choose another --out"
            )
        lock_fd = _lock(journal.dir)
        clean_staging(journal.dir)
        return _Run(config, engine, journal).run()
    finally:
        journal.close()
        if lock_fd >= 0:
            os.close(lock_fd)


def _lock(batch_dir: Path) -> int:
    """Hold ``_batch/batch.lock`` (released by the kernel however the client ends)."""
    fd = os.open(batch_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"another ecgbridge batch is running on {batch_dir.parent}") from None
    return fd


def clean_staging(batch_dir: Path) -> int:
    """Remove what killed workers left in ``_batch/staging``; return how many folders.

    Called before a run starts (under the lock, so no task of this run is writing):
    a staging folder then belongs to a worker of a run that was killed; its page is
    not journalled as done, so the run digitizes it again. Called again at the end of
    a run with nothing in flight, for the folders of workers killed during the run
    (their pages were retried).
    """
    staging = batch_dir / STAGING_DIR
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(staging) as entries:
        for entry in entries:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d staging folder(s) left by a killed run", removed)
    return removed


class _Run:
    def __init__(self, config: BatchConfig, engine: Any, journal: Journal) -> None:
        self.c, self.engine, self.journal = config, engine, journal
        self.inflight: dict[str, dict[str, Any]] = {}
        self.progress = _Progress()
        self.interrupted = False
        self._seq = 0
        # Task keys are unique to this run: a Dask scheduler may still hold the keys
        # of a killed client's tasks, and a reused key would return another page's rows.
        self._run_id = uuid.uuid4().hex[:12]
        self._bar: Any = None
        self._last_log = time.monotonic()

    def run(self) -> dict[str, Any]:
        self._start_progress()
        try:
            self._loop(self._tasks())
        except KeyboardInterrupt:
            self.interrupted = True
            log.warning("interrupted: finishing %d page(s) in flight", len(self.inflight))
            self._drain()
        finally:
            if self._bar is not None:
                self._bar.close()
        if not self.inflight:
            clean_staging(self.journal.dir)  # folders of workers killed during this run
        self.journal.write_index()
        elapsed = time.monotonic() - self.progress.started
        return self.journal.write_summary({
            "engine": self.engine.describe, "this_run": {
                "inputs": self.progress.inputs, "pages": self.progress.pages,
                "failed_pages": self.progress.failed, "skipped_inputs": self.progress.skipped,
                "wall_seconds": round(elapsed, 3),
                "pages_per_second": round(self.progress.pages / elapsed, 3) if elapsed else 0.0,
                "interrupted": self.interrupted,
            },
        })

    def _loop(self, tasks: Iterator[dict[str, Any]]) -> None:
        pending = iter(tasks)
        exhausted = False
        while True:
            while not exhausted and len(self.inflight) < self.engine.capacity:
                task = next(pending, None)
                if task is None:
                    exhausted = True
                else:
                    self._submit(task)
            if exhausted and not self.inflight:
                return
            self._collect(1.0)

    def _drain(self) -> None:
        try:
            while self.inflight:
                self._collect(1.0)
        except KeyboardInterrupt:
            log.warning("second interrupt: %d page(s) left for --resume", len(self.inflight))

    def _tasks(self) -> Iterator[dict[str, Any]]:
        paths: Any = self._fresh_paths()
        if self.c.retry_failed and not self.c.sources:
            paths = [(Path(p), folder) for p, folder in list(self.journal.failed_inputs())]
        for count, (path, rel) in enumerate(paths):
            if self.c.limit is not None and count >= self.c.limit:
                return
            yield {"path": str(path), "rel": rel, "out_dir": str(self.c.out_dir.resolve()),
                   "formats": self.c.formats, "options": self.c.options, "attempts": 1,
                   "write_options": self.c.write_options}

    def _fresh_paths(self) -> Iterator[tuple[Path, str]]:
        redo = {p for p, _ in self.journal.failed_inputs()} if self.c.retry_failed else set()
        for path, rel in iter_inputs(self.c.sources):
            state = self.journal.input_state(str(path))
            if state in (DONE, SKIPPED):
                continue
            if state == FAILED and str(path) not in redo:
                continue
            if state is None and self.c.resume and self._moved_copy(path, rel):
                continue
            yield path, rel

    def _moved_copy(self, path: Path, rel: str) -> bool:
        """Record `path` as skipped when the same content was digitized at another path."""
        try:
            size = path.stat().st_size
            if not self.journal.done_with_size(size):
                return False
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return False
        other = self.journal.done_path_with_hash(digest)
        if other is None:
            return False
        self.journal.record([{"path": str(path), "folder": rel, "page": 0, "size": size,
                              "sha256": digest, "state": SKIPPED,
                              "reason": f"same content as {other} (done)"}])
        self.progress.skipped += 1
        return True

    def _submit(self, task: dict[str, Any]) -> None:
        self._seq += 1
        key = f"ecgbridge-batch-{self._run_id}-{self._seq}-{task['attempts']}"
        self.inflight[key] = task
        self.engine.submit(key, task)

    def _collect(self, timeout: float) -> None:
        for key, result in self.engine.poll(timeout):
            task = self.inflight.pop(key, None)
            if task is not None:
                self._finish(task, result)
        now = time.monotonic()
        for key, started in list(self.engine.running().items()):
            if now - started > self.c.timeout_s and key in self.inflight:
                self.engine.expire(key)
                task = self.inflight.pop(key)
                reason = f"timed out after {self.c.timeout_s:g} s"
                self._finish(task, WorkerLost(reason, retry=False))
        self._report()

    def _finish(self, task: dict[str, Any], result: list[dict[str, Any]] | WorkerLost) -> None:
        if isinstance(result, WorkerLost):
            if result.retry and task["attempts"] < MAX_ATTEMPTS:
                log.warning("%s: %s; retrying", task["path"], result.reason)
                self._submit({**task, "attempts": task["attempts"] + 1})
                return
            result = [{"path": task["path"], "folder": task["rel"], "page": 0, "state": FAILED,
                       "reason": result.reason, "attempts": task["attempts"]}]
        self.journal.record(result)
        self.progress.inputs += 1
        self.progress.pages += len(result)
        failed = [r for r in result if r["state"] == FAILED]
        self.progress.failed += len(failed)
        for row in failed:
            page = f" page {row['page']}" if row["page"] else ""
            self._say(f"FAILED {row['path']}{page}: {row['reason']}")
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(failed=self.progress.failed, refresh=False)

    def _start_progress(self) -> None:
        if self.c.progress:
            from tqdm import tqdm

            self._bar = tqdm(unit="input", dynamic_ncols=True)
        if self.c.sources and "-" not in self.c.sources:
            threading.Thread(target=self._count, daemon=True).start()

    def _count(self) -> None:
        try:
            total = count_inputs(self.c.sources)
        except OSError:
            return
        if self.c.limit is not None:
            total = min(total, self.c.limit)
        self.progress.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def _report(self) -> None:
        now = time.monotonic()
        if self._bar is not None or now - self._last_log < self.c.log_every_s:
            return
        self._last_log = now
        p = self.progress
        rate = p.inputs / max(now - p.started, 1e-9)
        eta = ""
        if p.total:
            eta = f", ETA {max(p.total - p.inputs, 0) / rate:.0f} s" if rate else ""
        log.warning("batch: %d input(s), %d page(s), %d failed, %.2f inputs/s%s",
                    p.inputs, p.pages, p.failed, rate, eta)

    def _say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line)
        else:
            log.warning("%s", line)
