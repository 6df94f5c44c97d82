"""Where batch tasks run: a local process pool (default) or a Dask distributed cluster.

Both engines take tasks with :meth:`submit` and hand back ``(key, rows)`` or
``(key, WorkerLost(reason))`` from :meth:`poll`; :meth:`expire` abandons a task
past its deadline. The client never holds more than :attr:`capacity` tasks.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ecgbridge.batch.worker import process_input


@dataclass(frozen=True)
class WorkerLost:
    """A task whose worker died, or that ran past the per-page timeout."""

    reason: str
    retry: bool = True


Result = tuple[str, "list[dict[str, Any]] | WorkerLost"]


def _pool_main(conn: Connection) -> None:
    from ecgbridge.jobs.worker_guard import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the client's to handle
    die_with_parent()  # a SIGKILLed client leaves no worker digitizing under PID 1
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(process_input(task))


#: Native thread pools a pool worker starts with one thread (a page runs on one core;
#: two workers each spinning two OpenBLAS threads on two cores doubled every page's time).
#: The outputs are the same bytes. Variables the user set are left as they are.
THREAD_VARIABLES: tuple[str, ...] = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
)


@contextlib.contextmanager
def _single_threaded_environ() -> Iterator[None]:
    """Set THREAD_VARIABLES to 1 while a worker is spawned (it copies the environment)."""
    added = [v for v in THREAD_VARIABLES if v not in os.environ]
    for var in added:
        os.environ[var] = "1"
    try:
        yield
    finally:
        for var in added:
            os.environ.pop(var, None)


class _Slot:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_pool_main, args=(child,), daemon=True)
        with _single_threaded_environ():
            self.proc.start()
        child.close()
        self.key: str | None = None
        self.started = 0.0


class LocalPool:
    """`workers` processes on this machine, one task each at a time.

    A worker that dies (crash, out-of-memory kill) or is killed for running past the
    timeout is replaced; only the task it held is reported lost.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._ctx = mp.get_context("spawn")
        self._slots = [_Slot(self._ctx) for _ in range(self.workers)]
        self.capacity = self.workers
        self.describe = f"local pool of {self.workers} worker process(es)"

    def submit(self, key: str, task: dict[str, Any]) -> None:
        """Send `task` to an idle worker (the caller keeps at most `capacity` in flight)."""
        slot = next(s for s in self._slots if s.key is None)
        try:
            slot.conn.send(task)
        except OSError:  # the idle worker died (killed, out of memory): start another
            slot = self._replace(slot)
            slot.conn.send(task)
        slot.key, slot.started = key, time.monotonic()

    def poll(self, timeout: float) -> list[Result]:
        """Results that arrived within `timeout` seconds."""
        busy = [s for s in self._slots if s.key is not None]
        if not busy:
            return []
        handles: list[Any] = [s.conn for s in busy] + [s.proc.sentinel for s in busy]
        ready = set(wait(handles, timeout))
        out: list[Result] = []
        for slot in busy:
            key = slot.key
            assert key is not None
            if slot.conn in ready:
                try:
                    out.append((key, slot.conn.recv()))
                    slot.key = None
                    continue
                except (EOFError, OSError):
                    pass
            if slot.conn in ready or slot.proc.sentinel in ready:
                slot.proc.join(1)
                code = slot.proc.exitcode
                out.append((key, WorkerLost(f"worker process died (exit code {code})")))
                self._replace(slot)
        return out

    def running(self) -> dict[str, float]:
        """Key -> monotonic start time of every task in flight."""
        return {s.key: s.started for s in self._slots if s.key is not None}

    def expire(self, key: str) -> None:
        """Kill the worker running `key` (past its timeout) and start a fresh one."""
        for slot in self._slots:
            if slot.key == key:
                self._replace(slot)

    def _replace(self, slot: _Slot) -> _Slot:
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(5)
        slot.conn.close()
        fresh = _Slot(self._ctx)
        self._slots[self._slots.index(slot)] = fresh
        return fresh

    def close(self) -> None:
        """Stop every worker."""
        for slot in self._slots:
            with contextlib.suppress(OSError):
                slot.conn.send(None)
        for slot in self._slots:
            slot.proc.join(5)
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join(5)


class DaskEngine:
    """Tasks on an existing Dask distributed cluster (``tcp://host:8786``).

    Needs the optional extra ``ecgbridge[cluster]``. Dask reschedules a task whose
    worker died; when it gives up (``KilledWorker``, after the scheduler's
    ``distributed.scheduler.allowed-failures`` deaths) the task is reported lost and
    not tried again, the page being the likely cause. A task
    past its timeout is released and reported; Dask cannot stop a running task, so
    its worker thread stays busy until the page finishes.
    """

    def __init__(self, address: str, in_flight_per_thread: int = 2) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise ValueError(
                "--scheduler needs Dask distributed: pip install 'ecgbridge[cluster]'"
            ) from exc
        from distributed import as_completed

        self._client = Client(address, timeout="30s")
        threads = sum(self._client.nthreads().values()) or 1
        self.capacity = max(1, threads * in_flight_per_thread)
        self.workers = threads
        self.describe = f"Dask cluster {address} ({threads} worker thread(s))"
        self._futures: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._done = as_completed()

    def submit(self, key: str, task: dict[str, Any]) -> None:
        """Submit `task` to the cluster."""
        future = self._client.submit(process_input, task, key=key, pure=False)
        self._futures[key] = future
        self._started[key] = time.monotonic()
        self._done.add(future)

    def poll(self, timeout: float) -> list[Result]:
        """Results that arrived within `timeout` seconds."""
        out: list[Result] = []
        deadline = time.monotonic() + timeout
        while self._futures and time.monotonic() < deadline:
            batch = self._done.next_batch(block=False)
            if not batch:
                time.sleep(0.05)
                continue
            for future in batch:
                key = str(future.key)
                if self._futures.pop(key, None) is None:
                    continue  # expired earlier
                self._started.pop(key, None)
                out.append((key, self._result(future)))
            break
        return out

    @staticmethod
    def _result(future: Any) -> list[dict[str, Any]] | WorkerLost:
        try:
            return future.result()  # type: ignore[no-any-return]
        except Exception as exc:
            name = type(exc).__name__
            # KilledWorker: Dask already re-ran the task after each worker death
            # (distributed.scheduler.allowed-failures times); do not add more tries.
            return WorkerLost(f"worker lost while digitizing ({name}: {exc})",
                              retry=name != "KilledWorker")

    def running(self) -> dict[str, float]:
        """Key -> monotonic start time of every task in flight."""
        return dict(self._started)

    def expire(self, key: str) -> None:
        """Forget `key` (past its timeout) and ask Dask to cancel it."""
        future = self._futures.pop(key, None)
        self._started.pop(key, None)
        if future is not None:
            future.cancel()

    def close(self) -> None:
        """Disconnect from the cluster (the cluster keeps running)."""
        self._client.close()
