"""Guards of a digitization worker process: it dies with the daemon, and it has a memory cap.

Run in each pool worker at start (:func:`guard_worker`):

* **dies with its parent**: on Linux the kernel sends SIGKILL to the worker when the
  daemon dies (``PR_SET_PDEATHSIG``), and a watcher thread ends it within a second
  on any system, so a SIGKILLed daemon leaves no orphan digitizing in the background
  (or holding memory and files) under PID 1;
* **time per page**: :func:`page_time_limit` ends a digitization that takes longer
  than the per-page limit times the page count, with a clear reason (the worker
  stays usable, unlike the scheduler's job timeout which replaces it);
* **memory cap**: ``RLIMIT_AS`` bounds the worker's address space, so a hostile input
  that slips past the pixel budgets ends in a ``MemoryError`` (a clear refusal of
  that one input) instead of the kernel's OOM killer picking a process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ecgbridge.errors import EcgBridgeError

log = logging.getLogger("ecgbridge.jobs.worker_guard")

_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8
#: Seconds allowed per page in this worker (0: no limit); set by the pool initializer.
_page_seconds = 0.0


class PageTimeLimitError(EcgBridgeError):
    """Digitizing took longer than the per-page time limit allows."""


def set_page_time_limit(seconds: float) -> None:
    """Seconds a page may take in this process (0: no limit)."""
    global _page_seconds
    _page_seconds = max(0.0, float(seconds))


@contextmanager
def page_time_limit(pages: int) -> Iterator[None]:
    """Raise :class:`PageTimeLimitError` in the block after ``pages`` x the page limit.

    Only in the main thread of a process (the worker's), through ``SIGALRM``; a
    native call in progress is interrupted when it returns to Python.
    """
    seconds = _page_seconds * max(1, pages)
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(_signum: int, _frame: FrameType | None) -> None:
        raise PageTimeLimitError(
            f"digitizing took longer than {_page_seconds:g} s per page ({pages} page(s)); "
            "the page is too large or too busy to be read in time "
            "(workers.page_timeout_seconds)"
        )

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def die_with_parent(poll_seconds: float = 1.0) -> None:
    """End this process when its parent process ends (however it ends)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher thread below still does it
    if os.getppid() != parent or parent == 1:
        os._exit(1)  # the parent died before the death signal was armed

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="ecgbridge-parent-watch", daemon=True).start()


def _limit_malloc_arenas(arenas: int = 4) -> None:
    """Few glibc malloc arenas: each reserves 64 MB of address space, and a library's
    thread pool (one thread per core) would otherwise use the cap up on a large machine."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def limit_memory(max_bytes: int) -> bool:
    """Cap this process's address space at `max_bytes` (0: no cap); True if set."""
    if max_bytes <= 0:
        return False
    try:
        import resource
    except ImportError:  # not on POSIX
        return False
    _limit_malloc_arenas()
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            max_bytes = min(max_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot cap the worker's memory: %s", exc)
        return False
    return True
