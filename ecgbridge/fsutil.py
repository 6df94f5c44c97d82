"""File-system helpers used by every layer that writes: atomic writes and fsync.

A reader never sees a half-written output: :func:`write_bytes_atomic` writes a hidden
temporary file, fsyncs it and renames it into place; :func:`fsync_path` makes a file's
bytes, or the names created in a folder, survive a crash or power cut.

Outputs get the permissions an ordinary ``open()`` would give them (``0666`` minus the
process umask), like the WFDB files written by the ``wfdb`` package, unless
:func:`set_output_mode` fixed a mode.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

#: Permissions of a new file before the umask is applied (as ``open()`` uses).
DEFAULT_CREATE_MODE = 0o666
_mode_lock = threading.Lock()
_fixed_mode: int | None = None


def set_output_mode(mode: int | None) -> None:
    """Fix the permission bits of every output written from now on (None: follow the umask).

    Raises
    ------
    ValueError
        If `mode` is not within 0o000-0o777.
    """
    global _fixed_mode
    if mode is not None and not 0 <= int(mode) <= 0o777:
        raise ValueError(f"file mode must be between 0o000 and 0o777, got {oct(int(mode))}")
    _fixed_mode = None if mode is None else int(mode)


def current_umask() -> int:
    """The process umask (read from /proc where possible, without changing it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _mode_lock:  # os.umask can only be read by setting it
        old = os.umask(0o022)
        os.umask(old)
    return old


def output_mode() -> int:
    """Permission bits outputs are given now."""
    if _fixed_mode is not None:
        return _fixed_mode
    return DEFAULT_CREATE_MODE & ~current_umask()


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write `data` to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, output_mode())  # mkstemp creates 0600 whatever the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str, *, fsync: bool = True) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def fsync_path(path: Path, *, strict: bool = True) -> None:
    """fsync a file (its bytes) or a folder (the names created in it).

    Parameters
    ----------
    path : Path
        File or folder.
    strict : bool
        With False, a folder that cannot be opened or fsynced (some network or
        Windows file systems) is passed over instead of raising :class:`OSError`.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)
