"""Received C-STORE datasets go straight to disk, never whole into memory.

pynetdicom can write the data set of each incoming C-STORE to a file while it
arrives (``STORE_RECV_CHUNKED_DATASET``), fragment by fragment, in the DICOM file
format. :func:`spool_into` turns that on and points those files at a folder of the
state folder (hidden ``.spool-*`` names, removed at start if a crash left one), so
the handler only has to rename the finished file into place: a 200 MB object costs
a few kB of memory, whatever the number of associations.

Both settings are process-wide in pynetdicom; :func:`stop_spooling` restores them.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

from pynetdicom import _config, dimse_messages

#: Name prefix of the files being received.
SPOOL_PREFIX = ".spool-"

_lock = threading.Lock()
_original = dimse_messages.NamedTemporaryFile


class SpoolFile:
    """The file a data set is received into; a write error (disk full) does not break
    the association: it is kept in :attr:`failed` (the C-STORE is then refused) and
    the rest of the data set is read and dropped."""

    def __init__(self, **kwargs: Any) -> None:
        self._file = _original(**kwargs)
        self.name = self._file.name
        self.file = self  # pynetdicom calls .file.flush()
        self.failed: OSError | None = None

    def write(self, data: bytes) -> int:
        """Append `data` (dropped after a failure)."""
        if self.failed is None:
            try:
                self._file.write(data)
            except OSError as exc:
                self.failed = exc
        return len(data)

    def flush(self) -> None:
        """Hand what was written to the OS."""
        if self.failed is None:
            try:
                self._file.flush()
            except OSError as exc:
                self.failed = exc

    def close(self) -> None:
        """Close the file (its errors are already in :attr:`failed` or irrelevant)."""
        try:
            self._file.close()
        except OSError as exc:
            self.failed = self.failed or exc


def spool_into(folder: Path) -> None:
    """Write received C-STORE data sets into `folder` as they arrive."""
    with _lock:
        _config.STORE_RECV_CHUNKED_DATASET = True
        dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[assignment]
            SpoolFile, dir=str(folder), prefix=SPOOL_PREFIX)


def stop_spooling() -> None:
    """Back to pynetdicom's defaults (data sets in memory)."""
    with _lock:
        _config.STORE_RECV_CHUNKED_DATASET = False
        dimse_messages.NamedTemporaryFile = _original  # type: ignore[assignment]


def spooled_path(request: Any) -> Path | None:
    """The file holding a received C-STORE's data set, or None when it is in memory."""
    path = getattr(request, "_dataset_path", None)
    return Path(path) if isinstance(path, str | Path) else None


def spool_error(request: Any) -> OSError | None:
    """Why the data set of `request` could not be written to disk (None: it was)."""
    spool = getattr(request, "_dataset_file", None)
    if isinstance(spool, SpoolFile):
        spool.flush()
        return spool.failed
    return None


def discard(request: Any) -> None:
    """Remove the spooled file of a request nobody will store (best effort)."""
    path = spooled_path(request)
    if path is not None:
        path.unlink(missing_ok=True)

