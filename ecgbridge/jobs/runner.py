"""Run jobs: digitization in a process pool, delivery per destination with backoff.

Two kinds of threads drive the journal:

* one :class:`DigitizationScheduler` hands ``received`` jobs to a process pool,
  at most ``queue_size`` at a time (the rest wait durably in the journal), and
  records each outcome (``digitized`` + delivery rows, or ``failed`` + quarantine);
* one :class:`DeliveryWorker` per destination sends the due deliveries of that
  destination, oldest due first, retrying with exponential backoff; a failing
  destination only delays its own rows.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ecgbridge.config import RetrySettings
from ecgbridge.deliver.base import DeliveryItem, Destination
from ecgbridge.errors import DeliveryError, describe_failure
from ecgbridge.jobs.diskfull import DISK_FULL_KIND, DiskBackoff, is_disk_full
from ecgbridge.jobs.journal import Job, Journal
from ecgbridge.jobs.store import StateFolder
from ecgbridge.jobs.worker import (
    DigitizeOutcome,
    DigitizeRequest,
    run_digitization,
    worker_initializer,
)
from ecgbridge.metrics import Metrics

log = logging.getLogger("ecgbridge.jobs.runner")

#: A job whose worker process died this many times fails (a poison input).
MAX_WORKER_DEATHS = 2


def redact(text: str, *names: str) -> str:
    """`text` with file names (which may carry patient names) replaced by ``<input>``."""
    for name in names:
        if name:
            text = text.replace(name, "<input>")
    return text


def make_process_pool(
    processes: int, max_memory_bytes: int = 0, page_seconds: float = 0.0,
    setup: Callable[[], object] | None = None,
) -> cf.ProcessPoolExecutor:
    """A pool of `processes` spawned workers (no fork of a multi-threaded daemon), each
    dying with the daemon, capped at `max_memory_bytes` of address space and
    `page_seconds` per page (0: no cap), after running `setup` (picklable)."""
    return cf.ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=worker_initializer,
        initargs=(max_memory_bytes, page_seconds, setup),
    )


class DigitizationScheduler:
    """Feed received jobs to a process pool and record their outcomes.

    Parameters
    ----------
    journal, state
        The job journal and state folder.
    make_request : callable
        ``job -> DigitizeRequest`` (formats and options from the settings).
    destinations : sequence of str
        Names of the destinations; one delivery row each is opened on success.
    processes : int
        Pool size.
    queue_size : int
        Most jobs handed to the pool at once.
    job_timeout : float
        Seconds after which a running digitization fails the job (the pool is
        restarted to reclaim the stuck worker).
    max_memory_bytes : int
        Address-space cap of each worker (0: none).
    page_seconds : float
        Time limit per page of an input (0: none).
    worker_setup : callable, optional
        Run first in each worker process (picklable: the daemon's logging set-up).
    metrics : Metrics, optional
        Counters to update.
    on_digitized : callable, optional
        Called after a job was digitized (to wake delivery workers).
    poll_seconds : float
        Longest pause between two looks at the journal.
    digitize : callable
        The function run in the worker processes (a picklable top-level function).
    """

    def __init__(
        self,
        journal: Journal,
        state: StateFolder,
        make_request: Callable[[Job], DigitizeRequest],
        destinations: Sequence[str],
        *,
        processes: int,
        queue_size: int,
        job_timeout: float = 300.0,
        max_memory_bytes: int = 0,
        page_seconds: float = 0.0,
        worker_setup: Callable[[], object] | None = None,
        metrics: Metrics | None = None,
        on_digitized: Callable[[], None] | None = None,
        poll_seconds: float = 0.5,
        digitize: Callable[[DigitizeRequest], DigitizeOutcome] = run_digitization,
    ) -> None:
        self.journal = journal
        self.state = state
        self.make_request = make_request
        self.destinations = list(destinations)
        self.processes = processes
        self.queue_size = queue_size
        self.job_timeout = job_timeout
        self.max_memory_bytes = max_memory_bytes
        self.page_seconds = page_seconds
        self.worker_setup = worker_setup
        self.metrics = metrics or Metrics()
        self.on_digitized = on_digitized
        self.poll_seconds = poll_seconds
        self.digitize = digitize
        self._pool: cf.ProcessPoolExecutor | None = None
        self._running: dict[str, tuple[cf.Future[DigitizeOutcome], float]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._accepting = True
        self._crashes: dict[str, int] = {}
        self._suspects: set[str] = set()
        #: pauses digitization while the state disk is full (jobs wait, none fails)
        self.disk = DiskBackoff("digitization", log)

    @property
    def in_flight(self) -> int:
        """Jobs currently in the pool."""
        return len(self._running)

    @property
    def alive(self) -> bool:
        """True while the scheduling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Look for new jobs now (called by the sources)."""
        self._wake.set()

    def start(self) -> None:
        """Start the pool and the scheduling thread."""
        self._pool = make_process_pool(self.processes, self.max_memory_bytes, self.page_seconds,
                                       self.worker_setup)
        self._thread = threading.Thread(target=self._loop, name="ecgbridge-scheduler", daemon=True)
        self._thread.start()

    def stop(self, grace_seconds: float) -> None:
        """Stop handing out jobs, wait up to `grace_seconds` for running ones, then stop.

        Jobs still running afterwards stay ``received`` in the journal and are
        digitized again at the next start (their partial output is discarded).
        """
        self._accepting = False
        deadline = time.monotonic() + grace_seconds
        while self._running and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._collect()
        self._shutdown_pool(kill=True)

    def _shutdown_pool(self, kill: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:
            for proc in list(getattr(pool, "_processes", {}).values()):
                if proc.is_alive():
                    proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._collect()
                self._check_timeouts()
                if self._accepting:
                    self._submit()
            except Exception as exc:  # the scheduler must survive anything
                if is_disk_full(exc):
                    self.disk.failed("no space left on the disk of the state folder")
                else:
                    log.exception("scheduler iteration failed")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _submit(self) -> None:
        if self._pool is None or any(j in self._suspects for j in self._running):
            return  # a suspect runs alone
        if self.disk.waiting():
            return  # the state disk is full: try again after the pause
        free = self.queue_size - len(self._running)
        if free <= 0:
            return
        candidates = self.journal.jobs_to_digitize(
            exclude=list(self._running), limit=free + len(self._suspects)
        )
        suspects = [job for job in candidates if job.job_id in self._suspects]
        if suspects:
            # drain the pool, then digitize the oldest suspect on its own
            if not self._running:
                self._start(suspects[0])
            return
        for job in candidates[:free]:
            if not self._start(job):
                return

    def _start(self, job: Job) -> bool:
        """Hand one job to the pool; False if the pool is broken (it is restarted)."""
        assert self._pool is not None
        try:
            request = self.make_request(job)
            future = self._pool.submit(self.digitize, request)
        except cf.BrokenExecutor:
            self._restart_pool("the process pool broke")
            return False
        except Exception as exc:
            log.exception("cannot start the digitization of job %s", job.job_id)
            self._fail(job.job_id, f"digitization could not start: {describe_failure(exc)}")
            return True
        self._running[job.job_id] = (future, time.monotonic())
        future.add_done_callback(lambda _f: self._wake.set())
        return True

    def _collect(self) -> None:
        for job_id, (future, _) in list(self._running.items()):
            if not future.done():
                continue
            del self._running[job_id]
            try:
                outcome = future.result()
            except cf.BrokenExecutor:
                self._worker_died(job_id)
                continue
            except cf.CancelledError:
                continue
            except Exception:
                log.exception("digitization of job %s ended unexpectedly", job_id)
                self._fail(job_id, describe_failure(RuntimeError()))
                continue
            if not outcome.ok and outcome.error_kind == DISK_FULL_KIND:
                self._suspects.discard(job_id)
                self.disk.failed(outcome.reason)  # stays "received": retried after the pause
                continue
            try:
                self._record(outcome)
            except Exception as exc:
                if is_disk_full(exc):  # the journal could not be written: retried later
                    self.disk.failed("no space left on the disk of the state folder "
                                     "(journal)")
                    continue
                # Otherwise the job would stay "received" and be digitized again forever.
                log.exception("cannot record the outcome of job %s", job_id)
                self._fail(job_id, f"the result could not be recorded: "
                                   f"{describe_failure(exc)}")

    def _worker_died(self, job_id: str) -> None:
        """A worker process died (out of memory, killed by the OS...).

        Every job that was in the pool becomes a suspect and is re-queued; suspects
        are then digitized one at a time, so a job is blamed only for deaths while
        it ran alone, and fails after :data:`MAX_WORKER_DEATHS` of them.
        """
        suspects = [job_id, *self._running]
        alone = len(suspects) == 1
        self._running.clear()
        for suspect in suspects:
            self._suspects.add(suspect)
            if alone:
                deaths = self._crashes.get(suspect, 0) + 1
                self._crashes[suspect] = deaths
                if deaths >= MAX_WORKER_DEATHS:
                    self._suspects.discard(suspect)
                    self._crashes.pop(suspect, None)
                    self._fail(suspect, "the worker process digitizing this input died "
                                        f"{deaths} times (out of memory or killed)")
        self._restart_pool("a worker process died")

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        late = [j for j, (_, t0) in self._running.items() if now - t0 > self.job_timeout]
        if not late:
            return
        for job_id in late:
            self._running.pop(job_id, None)
            self._fail(job_id, f"digitization took longer than {self.job_timeout:.0f} s")
        self._restart_pool("a digitization timed out")

    def _restart_pool(self, why: str) -> None:
        log.warning("restarting the process pool: %s", why)
        survivors = list(self._running)
        self._running.clear()  # re-submitted from the journal (still "received")
        self._shutdown_pool(kill=True)
        self._pool = make_process_pool(self.processes, self.max_memory_bytes, self.page_seconds,
                                       self.worker_setup)
        if survivors:
            log.info("re-queued %d job(s) after the pool restart", len(survivors))

    def _record(self, outcome: DigitizeOutcome) -> None:
        self._suspects.discard(outcome.job_id)
        self._crashes.pop(outcome.job_id, None)
        job = self.journal.get(outcome.job_id)
        if job is None:
            return
        if outcome.ok:
            files = {fmt: self.state.relative(Path(p)) for fmt, p in outcome.files.items()}
            self.journal.mark_digitized(
                outcome.job_id, files, outcome.sop_instance_uid, self.destinations
            )
            self.disk.succeeded()
            self.metrics.inc("ecgbridge_digitized_total")
            self.metrics.observe("ecgbridge_digitize_duration_seconds", outcome.seconds)
            log.info(
                "job digitized",
                extra={"job_id": outcome.job_id, "sop_instance_uid": outcome.sop_instance_uid,
                       "seconds": round(outcome.seconds, 3), "reused": outcome.reused},
            )
            if self.on_digitized is not None:
                self.on_digitized()
        else:
            self._fail(outcome.job_id, outcome.reason)

    def _fail(self, job_id: str, reason: str) -> None:
        self._suspects.discard(job_id)
        self._crashes.pop(job_id, None)
        job = self.journal.get(job_id)
        if job is None:
            return
        quarantined: str | None = None
        source = self.state.resolve(job.input_path)
        try:
            target = self.state.quarantine_input(job_id, source, reason)
            quarantined = self.state.relative(target)
        except OSError as exc:
            if is_disk_full(exc):  # the job stays "received" and is tried again later
                self.disk.failed("no space left on the disk of the state folder (quarantine)")
                return
            log.error("cannot quarantine the input of job %s: %s", job_id, exc.strerror or exc)
        try:
            self.journal.mark_failed(job_id, reason, quarantined)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            if quarantined is not None:  # put the input back where its job expects it
                os.replace(self.state.resolve(quarantined), source)
            self.disk.failed("no space left on the disk of the state folder (journal)")
            return
        self.metrics.inc("ecgbridge_failed_total")
        log.warning("job failed", extra={"job_id": job_id, "sha256": job.sha256,
                                         "reason": redact(reason, job.input_name)})


class DeliveryWorker:
    """Send one destination's due deliveries, retrying with exponential backoff.

    Parameters
    ----------
    destination : Destination
        Where to deliver.
    journal, state
        The job journal and state folder.
    retry : RetrySettings
        Backoff base/max and attempts before dead-letter.
    metrics : Metrics, optional
        Counters to update.
    """

    def __init__(
        self,
        destination: Destination,
        journal: Journal,
        state: StateFolder,
        retry: RetrySettings,
        metrics: Metrics | None = None,
        idle_seconds: float = 0.5,
    ) -> None:
        self.destination = destination
        self.journal = journal
        self.state = state
        self.retry = retry
        self.metrics = metrics or Metrics()
        self.idle_seconds = idle_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: why the last attempt failed (None after a success), for /healthz
        self.last_error: str | None = None

    def wake(self) -> None:
        """Look for due deliveries now."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        """True while the delivery thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the delivery thread."""
        self._thread = threading.Thread(
            target=self._loop, name=f"ecgbridge-deliver-{self.destination.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the delivery in progress (if any)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:
                log.exception("delivery loop of %s failed", self.destination.name)
                worked = False
            if not worked:
                due = self.journal.next_attempt_time(self.destination.name)
                wait = self.idle_seconds if due is None else min(
                    self.idle_seconds, max(0.0, due - time.time())
                )
                self._wake.wait(wait)
                self._wake.clear()

    def run_once(self, now: float | None = None) -> bool:
        """Attempt the delivery due soonest; return False if none was due."""
        name = self.destination.name
        job = self.journal.next_due_delivery(name, now)
        if job is None:
            return False
        delivery = next(d for d in job.deliveries if d.destination == name)
        item = DeliveryItem(
            job_id=job.job_id,
            files={fmt: self.state.resolve(p) for fmt, p in job.files.items()},
            sop_instance_uid=job.sop_instance_uid,
            input_name=job.input_name, received_at=job.received_at,
        )
        try:
            receipt = self.destination.deliver(item)
        except DeliveryError as exc:
            self._failed(job, delivery.attempts + 1, str(exc), exc.retryable)
            return True
        except Exception as exc:  # a bug in a destination: retry, do not lose the job
            log.exception("delivery to %s failed unexpectedly", name)
            self._failed(job, delivery.attempts + 1, f"{name}: {describe_failure(exc)}", True)
            return True
        self.last_error = None
        completed = self.journal.mark_delivered(job.job_id, name, receipt.detail)
        self.metrics.inc("ecgbridge_delivered_total", destination=name)
        log.info("delivered", extra={"job_id": job.job_id, "destination": name,
                                     "sop_instance_uid": job.sop_instance_uid})
        if completed:
            self.metrics.observe("ecgbridge_end_to_end_seconds", time.time() - job.received_at)
        return True

    def _failed(self, job: Job, attempts: int, error: str, retryable: bool) -> None:
        name = self.destination.name
        self.last_error = error
        self.metrics.inc("ecgbridge_delivery_failures_total", destination=name)
        if retryable and attempts < self.retry.max_attempts:
            delay = self.retry.delay(attempts)
            self.journal.mark_delivery_failed(job.job_id, name, error, retry_at=time.time() + delay)
            log.warning("delivery failed, will retry",
                        extra={"job_id": job.job_id, "destination": name, "attempt": attempts,
                               "retry_in_s": round(delay, 1), "reason": error})
        else:
            self.journal.mark_delivery_failed(job.job_id, name, error, retry_at=None)
            self.metrics.inc("ecgbridge_dead_letter_total", destination=name)
            log.error("delivery dead-lettered",
                      extra={"job_id": job.job_id, "destination": name, "attempt": attempts,
                             "reason": error})
