"""One daemon per state folder: an exclusive lock on ``state/serve.lock``.

Two daemons on one state folder would digitize and deliver the same jobs twice and
fight over the journal. The lock is an ``flock`` held by the open file: the kernel
drops it when the process ends, however it ends (SIGKILL included), so a stale
lock never needs cleaning. The file holds the owner's process id, for the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ecgbridge.errors import ConfigError

#: Name of the lock file inside the state folder.
LOCK_FILE = "serve.lock"


class StateLock:
    """The exclusive lock of a state folder, held from :meth:`acquire` to :meth:`release`.

    Parameters
    ----------
    folder : Path
        The state folder (must exist).
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises
        ------
        ConfigError
            When another process holds it (another ``ecgbridge serve`` on this folder).
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise ConfigError(
                f"state.path: the state folder {self.path.parent} is in use by another "
                f"ecgbridge serve{f' (process {owner})' if owner else ''}; stop it or give "
                "this one its own --state folder"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _read_owner(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
