"""Guards of a digitization worker process: it dies with the daemon, and it has a memory cap.

Run in each pool worker at start (:func:`guard_worker`):

* **dies with its parent**: on Linux the kernel sends SIGKILL to the worker when the
  daemon dies (``PR_SET_PDEATHSIG``), and a watcher thread ends it within a second
  on any system, so a SIGKILLed daemon leaves no orphan digitizing in the background
  (or holding memory and files) under PID 1;
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

log = logging.getLogger("ecgbridge.jobs.worker_guard")

_PR_SET_PDEATHSIG = 1


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


def limit_memory(max_bytes: int) -> bool:
    """Cap this process's address space at `max_bytes` (0: no cap); True if set."""
    if max_bytes <= 0:
        return False
    try:
        import resource
    except ImportError:  # not on POSIX
        return False
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            max_bytes = min(max_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot cap the worker's memory: %s", exc)
        return False
    return True
