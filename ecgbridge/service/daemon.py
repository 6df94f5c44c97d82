"""Compose the daemon: sources -> journal -> worker pool -> destinations, plus HTTP.

Start order: clean up and recover the state folder, start the workers and
delivery threads, then open the doors (HTTP, DICOM SCP, inbox). Stop order is the
reverse: close the doors first (nothing new is accepted), give running
digitizations ``shutdown.grace_seconds`` to finish, stop delivering, close the
journal. Anything unfinished stays in the journal and resumes at the next start.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from ecgbridge.config import Settings
from ecgbridge.deliver.base import Destination
from ecgbridge.errors import ConfigError
from ecgbridge.jobs.diskfull import low_space
from ecgbridge.jobs.intake import Intake
from ecgbridge.jobs.journal import DEAD_LETTER, FAILED, RECEIVED, Job, Journal
from ecgbridge.jobs.runner import DeliveryWorker, DigitizationScheduler
from ecgbridge.jobs.store import StateFolder, recover_orphans
from ecgbridge.jobs.worker import DigitizeRequest
from ecgbridge.metrics import Metrics
from ecgbridge.service.http import HealthServer
from ecgbridge.service.logs import configure_logging
from ecgbridge.service.statelock import StateLock
from ecgbridge.sources.dicom_scp import StorageScp
from ecgbridge.sources.folder import FolderWatcher

log = logging.getLogger("ecgbridge.service")


def destinations_of(settings: Settings) -> list[Destination]:
    """The enabled destinations of `settings` (outbox, DICOM, FHIR), built by
    :func:`ecgbridge.deliver.factory.build_destinations`."""
    from ecgbridge.deliver.factory import build_destinations

    return build_destinations(
        outbox=settings.deliver.outbox, dicom=settings.deliver.dicom, fhir=settings.deliver.fhir
    )


def describe_metrics(metrics: Metrics) -> None:
    """Register HELP texts of the daemon's counters and histograms."""
    metrics.describe("ecgbridge_received_total", "counter", "Inputs received, by source.")
    metrics.describe("ecgbridge_duplicates_total", "counter",
                     "Inputs received again (same SOP Instance UID or bytes), not re-processed.")
    metrics.describe("ecgbridge_digitized_total", "counter", "Jobs digitized and encoded.")
    metrics.describe("ecgbridge_failed_total", "counter", "Jobs failed (input quarantined).")
    metrics.describe("ecgbridge_delivered_total", "counter", "Deliveries done, by destination.")
    metrics.describe("ecgbridge_delivery_failures_total", "counter",
                     "Failed delivery attempts, by destination.")
    metrics.describe("ecgbridge_dead_letter_total", "counter",
                     "Deliveries given up (dead-letter), by destination.")
    metrics.describe("ecgbridge_dicom_stores_total", "counter", "C-STORE requests, by status.")
    metrics.describe("ecgbridge_dicom_refused_total", "counter",
                     "DICOM connections and objects refused, by what and reason (setup_timeout, "
                     "tls_failed, peer_limit, too_many_pending, too_many_associations, "
                     "pdu_too_large, object_too_large, ...).")
    metrics.describe("ecgbridge_digitize_duration_seconds", "histogram",
                     "Time to digitize and encode one job.")
    metrics.describe("ecgbridge_end_to_end_seconds", "histogram",
                     "Time from receipt to the last delivery of a job.")


class Daemon:
    """The running service.

    Parameters
    ----------
    settings : Settings
        Effective configuration.
    destinations : sequence of Destination, optional
        Where to deliver; by default built from ``settings.deliver``.
    """

    def __init__(
        self, settings: Settings, destinations: Sequence[Destination] | None = None
    ) -> None:
        self.settings = settings
        self._options = settings.digitize.to_options()
        self.state = StateFolder(settings.state.path)
        self.lock = StateLock(self.state.root)
        self.lock.acquire()  # one daemon per state folder
        try:
            self._build(settings, destinations)
        except BaseException:
            self.lock.release()
            raise

    def _build(self, settings: Settings, destinations: Sequence[Destination] | None) -> None:
        self.journal = Journal.in_state_folder(settings.state.path)
        self.metrics = Metrics()
        describe_metrics(self.metrics)
        self.destinations = list(
            destinations_of(settings) if destinations is None else destinations
        )
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destination names must be unique, got {names}")
        self.scheduler = DigitizationScheduler(
            self.journal, self.state, self._request_for, names,
            processes=settings.workers.effective_processes(),
            queue_size=settings.workers.queue_size,
            job_timeout=settings.workers.job_timeout_seconds,
            max_memory_bytes=settings.workers.max_memory_mb * 2**20,
            page_seconds=settings.workers.page_timeout_seconds,
            worker_setup=functools.partial(
                configure_logging, settings.logging.level, settings.logging.json_format,
                settings.logging.include_patient_ids),
            metrics=self.metrics,
            on_digitized=self._wake_deliveries,
        )
        self.delivery_workers = [
            DeliveryWorker(d, self.journal, self.state, settings.retry, self.metrics)
            for d in self.destinations
        ]
        self.intake = Intake(self.state, self.journal, on_new_job=self._on_new_job)
        self.scp: StorageScp | None = None
        if settings.dicom.enabled:
            self.scp = StorageScp(
                settings.dicom, self.intake, on_store=self._on_store,
                on_refused=self._on_refused,
                log_patient_ids=settings.logging.include_patient_ids,
            )
        self.watcher: FolderWatcher | None = None
        if settings.inbox.enabled:
            self.watcher = FolderWatcher(
                settings.inbox.path, self._take_inbox_file,
                stable_seconds=settings.inbox.stable_seconds,
                poll_seconds=settings.inbox.poll_seconds,
                rescan_seconds=settings.inbox.rescan_seconds,
                follow_symlinks=settings.inbox.follow_symlinks,
            )
        self.http: HealthServer | None = None
        if settings.http.enabled:
            try:
                self.http = HealthServer(
                    settings.http.host, settings.http.port, self.metrics, self.health
                )
            except OSError as exc:
                self.journal.close()
                raise ConfigError(
                    f"http.port: cannot listen on {settings.http.host}:{settings.http.port}: "
                    f"{exc.strerror or exc}"
                ) from exc
        self._register_gauges()
        self._stop_requested = threading.Event()
        self._started = False

    # ----------------------------------------------------------- callbacks
    def _request_for(self, job: Job) -> DigitizeRequest:
        return DigitizeRequest(
            job_id=job.job_id,
            input_path=str(self.state.resolve(job.input_path).absolute()),
            out_dir=str(self.state.output_dir(job.job_id).absolute()),
            formats=tuple(self.settings.encode_formats()),
            options=self._options,
            record_options=tuple(self.settings.records.writer_options().items()),
        )

    def _take_inbox_file(self, path: Any) -> None:
        result = self.intake.take_file(path)
        if not result.created:
            self.metrics.inc("ecgbridge_duplicates_total", source="inbox")

    def _on_new_job(self, job_id: str, source: str) -> None:
        self.metrics.inc("ecgbridge_received_total", source=source)
        self.scheduler.wake()

    def _on_store(self, status: int) -> None:
        self.metrics.inc("ecgbridge_dicom_stores_total", status=f"0x{status:04X}")

    def _on_refused(self, what: str, reason: str) -> None:
        self.metrics.inc("ecgbridge_dicom_refused_total", what=what, reason=reason)

    def _wake_deliveries(self) -> None:
        for worker in self.delivery_workers:
            worker.wake()

    def _register_gauges(self) -> None:
        self.metrics.gauge(
            "ecgbridge_jobs", "Jobs in the journal, by state.",
            lambda: [((("state", s),), float(n)) for s, n in self.journal.count_by_state().items()],
        )
        if self.scp is not None:
            scp = self.scp
            self.metrics.gauge(
                "ecgbridge_dicom_connections", "DICOM connections being set up / associated now.",
                lambda: [((("phase", k),), float(v)) for k, v in scp.load().items()],
            )
        self.metrics.gauge(
            "ecgbridge_queue_depth", "Jobs waiting to be digitized (received, not finished).",
            lambda: [((), float(self.journal.count_by_state()[RECEIVED]))],
        )
        self.metrics.gauge(
            "ecgbridge_waiting_for_disk", "1 while digitization / inbox intake pause for a "
            "full state disk, by what waits.",
            lambda: [((("what", "digitization"),),
                      float(self.scheduler.disk.problem() is not None)),
                     ((("what", "inbox"),),
                      float(self.watcher is not None and self.watcher.disk.problem() is not None))],
        )
        self.metrics.gauge(
            "ecgbridge_in_flight", "Jobs being digitized in the worker pool now.",
            lambda: [((), float(self.scheduler.in_flight))],
        )
        self.metrics.gauge(
            "ecgbridge_deliveries_pending", "Deliveries waiting or retrying, by destination.",
            lambda: [
                ((("destination", d.name),),
                 float(self.journal.pending_deliveries_by_destination().get(d.name, 0)))
                for d in self.destinations
            ],
        )

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness of the daemon for ``/healthz``: every component running, journal readable."""
        try:
            counts = self.journal.count_by_state()
        except Exception as exc:
            return False, {"error": f"journal unavailable: {exc}"}
        components: dict[str, bool] = {"scheduler": self.scheduler.alive}
        if self.scp is not None:
            components["dicom_scp"] = self.scp.alive
        if self.watcher is not None:
            components["inbox"] = self.watcher.alive
        for worker in self.delivery_workers:
            components[f"deliver:{worker.destination.name}"] = worker.alive
        return all(components.values()), {
            "components": components,
            "degraded": self.degraded_reasons(),
            "jobs": counts,
            "in_flight": self.scheduler.in_flight,
            "failed": counts[FAILED],
            "dead_letter": counts[DEAD_LETTER],
        }

    def degraded_reasons(self) -> list[str]:
        """Why the daemon runs but not at full service (empty when all is well)."""
        reasons: list[str] = []
        if self.scp is not None:
            full = self.scp.saturated()
            if full:
                reasons.append(f"dicom_scp saturated: {full}")
        reasons += low_space(self._watched_folders())
        for what, backoff in (("digitization", self.scheduler.disk),
                              ("inbox", self.watcher.disk if self.watcher else None)):
            problem = backoff.problem() if backoff is not None else None
            if problem:
                reasons.append(f"{what} waiting: {problem}")
        pending = self.journal.pending_deliveries_by_destination()
        for worker in self.delivery_workers:
            error, name = worker.last_error, worker.destination.name
            if error and pending.get(name, 0):
                reasons.append(f"delivery to {name} failing: {error}")
        return reasons

    def _watched_folders(self) -> dict[str, Any]:
        folders: dict[str, Any] = {"state folder": self.state.root, "state/jobs": self.state.jobs}
        outbox = self.settings.deliver.outbox
        if outbox.enabled:
            folders["outbox"] = outbox.path
        return folders

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Recover the state folder and start every component."""
        leftovers = self.state.clean_partial()
        if leftovers:
            log.info("removed %d half-received file(s) from the state folder", leftovers)
        for destination in self.destinations:
            clean = getattr(destination, "clean_partial", None)
            removed = clean() if callable(clean) else 0
            if removed:
                log.info("removed %d half-written file(s) from %s", removed, destination.name)
        recovered = recover_orphans(self.state, self.journal)
        counts = self.journal.count_by_state()
        log.info("journal: %s; %d recovered", counts, len(recovered))
        self.scheduler.start()
        try:
            for worker in self.delivery_workers:
                worker.start()
            if self.http is not None:
                self.http.start()
            if self.scp is not None:
                try:
                    self.scp.start()
                except OSError as exc:
                    s = self.settings.dicom
                    raise ConfigError(
                        f"dicom.port: cannot listen on {s.host}:{s.port}: {exc.strerror or exc}"
                    ) from exc
            if self.watcher is not None:
                self.watcher.start()
        except BaseException:
            self.stop_components()
            raise
        self._started = True
        log.info(
            "ecgbridge ready: dicom=%s http=%s inbox=%s destinations=%s",
            f"{self.settings.dicom.host}:{self.scp.port}" if self.scp else "off",
            f"{self.settings.http.host}:{self.http.port}" if self.http else "off",
            self.settings.inbox.path if self.watcher else "off",
            ",".join(d.name for d in self.destinations) or "none",
        )

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop (signal-safe)."""
        self._stop_requested.set()

    def stop_components(self) -> None:
        """Stop what :meth:`start` started so far (start-up failed half-way)."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.scp is not None:
            self.scp.stop()
        self.scheduler.stop(0.0)
        for worker in self.delivery_workers:
            worker.stop()
        if self.http is not None:
            self.http.stop()
        self.journal.close()
        self.lock.release()

    def stop(self) -> None:
        """Close the doors, let running jobs finish within the grace period, stop."""
        if not self._started:
            self.lock.release()
            return
        self._started = False
        log.info("stopping: no new inputs accepted")
        if self.scp is not None:
            self.scp.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self.scheduler.stop(self.settings.shutdown.grace_seconds)
        for worker in self.delivery_workers:
            worker.stop()
        if self.http is not None:
            self.http.stop()
        self.journal.close()
        self.lock.release()
        log.info("stopped")

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received signal %d", signum)
            self.request_stop()

        previous = {
            sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.start()
            while not self._stop_requested.wait(1.0):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()
        return 0

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is received-but-unfinished or pending delivery (tests, tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.journal.count_by_state()
            pending = sum(self.journal.pending_deliveries_by_destination().values())
            if counts[RECEIVED] == 0 and pending == 0 and self.scheduler.in_flight == 0:
                return True
            time.sleep(0.1)
        return False
