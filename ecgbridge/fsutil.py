"""File-system helpers used by every layer that writes: atomic writes and fsync.

A reader never sees a half-written output: :func:`write_bytes_atomic` writes a hidden
temporary file, fsyncs it and renames it into place; :func:`fsync_path` makes a file's
bytes, or the names created in a folder, survive a crash or power cut.

Outputs get the permissions an ordinary ``open()`` would give them (``0666`` minus the
process umask), like the WFDB files written by the ``wfdb`` package, unless the writer
passes a mode (the ``--file-mode`` option, ``deliver.outbox.file_mode``; see
:func:`parse_file_mode`).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path

#: Permissions of a new file before the umask is applied (as ``open()`` uses).
DEFAULT_CREATE_MODE = 0o666
_mode_lock = threading.Lock()
_OCTAL_MODE = re.compile(r"^(?:0o?)?([0-7]{3})$")


def parse_file_mode(value: str | None) -> int | None:
    """Permission bits from an octal text such as ``"0640"``, ``"640"`` or ``"0o640"``.

    Empty or None: None (outputs follow the umask).

    Raises
    ------
    ValueError
        If `value` is not three octal digits (an optional ``0`` or ``0o`` before them);
        an int is refused too, since YAML reads ``640`` as decimal six hundred forty.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"a file mode is octal text such as '0640' (quoted in YAML), got {value!r}"
        )
    match = _OCTAL_MODE.match(value.strip().lower())
    if match is None:
        raise ValueError(f"a file mode is three octal digits such as 0640, got {value!r}")
    return int(match.group(1), 8)


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


def output_mode(mode: int | None = None) -> int:
    """Permission bits of an output: `mode` when given, else ``0666`` minus the umask."""
    if mode is not None:
        return mode
    return DEFAULT_CREATE_MODE & ~current_umask()


def write_bytes_atomic(
    path: Path, data: bytes, *, fsync: bool = True, mode: int | None = None
) -> Path:
    """Write `data` to `path` through a temporary file and a rename.

    The file gets :func:`output_mode` of `mode` (None: ``0666`` minus the umask) before
    it appears under its name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, output_mode(mode))  # mkstemp creates 0600 whatever the umask
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


def write_text_atomic(
    path: Path, text: str, *, fsync: bool = True, mode: int | None = None
) -> Path:
    """Write UTF-8 `text` to `path` atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync, mode=mode)


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
