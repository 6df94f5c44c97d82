"""Full disks: recognise the error, back off, and say so (without a hot loop).

A full state or outbox disk is a temporary condition: the work waits, is retried
with exponential backoff, and ``/healthz`` reports "degraded" with the reason;
nothing is failed for it. :class:`DiskBackoff` is the shared state of one
component (the scheduler, the inbox): the first failure is logged once, later
ones only when the backoff grows, and the recovery once.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

#: ``DigitizeOutcome.error_kind`` of a job that could not be written for lack of space.
DISK_FULL_KIND = "DiskFull"
#: Free space under which a watched folder makes the daemon "degraded".
MIN_FREE_BYTES = 1 << 20

_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(exc: BaseException) -> bool:
    """True if `exc` says a disk (or quota) is full, from the OS or from SQLite."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return "disk is full" in str(exc).lower()  # "database or disk is full"
    return False


def low_space(folders: dict[str, Path], min_free: int = MIN_FREE_BYTES) -> list[str]:
    """Reasons for every folder (by role) whose file system has less than `min_free`."""
    reasons = []
    devices: set[int] = set()
    for role, folder in folders.items():
        try:
            device = os.stat(folder).st_dev
            st = os.statvfs(folder)
        except OSError:
            continue
        if device in devices:
            continue  # one line per file system
        devices.add(device)
        free = st.f_bavail * st.f_frsize
        if free < min_free:
            reasons.append(f"{role} disk full ({free // 1024} KiB free)")
    return reasons


class DiskBackoff:
    """Exponential backoff while a disk is full, with rate-limited logs.

    Parameters
    ----------
    what : str
        What waits (``"digitization"``, ``"inbox intake"``), for the log lines.
    logger : logging.Logger
        Where to log.
    base_seconds, max_seconds : float
        First and longest pause.
    """

    def __init__(
        self, what: str, logger: logging.Logger, base_seconds: float = 1.0,
        max_seconds: float = 60.0,
    ) -> None:
        self.what = what
        self.log = logger
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self._lock = threading.Lock()
        self._failures = 0
        self._until = 0.0
        self._reason = ""

    def failed(self, reason: str) -> float:
        """Record one disk-full failure; return the pause before the next try."""
        with self._lock:
            self._failures += 1
            delay = min(self.max_seconds, self.base_seconds * 2.0 ** (self._failures - 1))
            now = time.monotonic()
            self._until = now + delay
            self._reason = reason
            grew = delay < self.max_seconds or self._failures == 1
        if grew:  # once per doubling: a full disk does not flood the log
            self.log.warning("%s paused: %s; retrying in %.0f s", self.what, reason, delay,
                             extra={"reason": reason, "retry_in_s": round(delay, 1)})
        return delay

    def succeeded(self) -> None:
        """A write worked: the disk has room again."""
        with self._lock:
            if not self._failures:
                return
            self._failures = 0
            self._until = 0.0
        self.log.info("%s resumed: the disk has room again", self.what)

    def waiting(self) -> bool:
        """True while the pause after the last failure lasts."""
        return time.monotonic() < self._until

    def problem(self) -> str | None:
        """The reason from the last failure until the next success, else None."""
        with self._lock:
            return self._reason if self._failures else None
