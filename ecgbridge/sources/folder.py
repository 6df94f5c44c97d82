"""The inbox folder watcher: complete files dropped into a folder become jobs.

A file is taken only when it is complete:

* temporary names (``*.part``, ``*.tmp``, ``*~``, ``*.crdownload``, ``*.swp``) and
  dotfiles are ignored, so a writer that writes ``x.png.part`` and renames it to
  ``x.png`` (an atomic move) is picked up at the rename;
* a file written in place is taken once its size and mtime have not changed for
  ``stable_seconds`` (partial writes are waited for);
* files that arrived while the daemon was down are found by a scan at start-up,
  and a periodic rescan catches events the OS dropped;
* a sidecar file ``X.json``, ``X.hl7`` or ``X.wl`` (patient, study, time; see
  :mod:`ecgbridge.inputs.sidecar`) is not a job of its own while an input ``X.*`` lies
  beside it: the intake adopts it with that input. Write the sidecar first (or rename
  the input into the inbox last); a sidecar whose input was already taken becomes a job
  that fails with its reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ecgbridge.inputs.sidecar import SIDECAR_SUFFIXES
from ecgbridge.jobs.diskfull import DiskBackoff, is_disk_full

log = logging.getLogger("ecgbridge.sources.folder")

#: File name endings of files still being written by their producer.
TEMPORARY_SUFFIXES: tuple[str, ...] = (".part", ".tmp", "~", ".crdownload", ".swp", ".partial")


def is_candidate_name(name: str) -> bool:
    """True for names the watcher may take (no dotfiles, no temporary names)."""
    lowered = name.lower()
    return bool(name) and not name.startswith(".") and not lowered.endswith(TEMPORARY_SUFFIXES)


def is_waiting_sidecar(path: Path) -> bool:
    """True for a sidecar file (``X.json``, ``X.hl7``, ``X.wl``) while its input ``X.*`` lies
    beside it."""
    if path.suffix.lower() not in SIDECAR_SUFFIXES:
        return False
    try:
        return any(
            other != path and other.stem == path.stem and is_candidate_name(other.name)
            and other.suffix.lower() not in SIDECAR_SUFFIXES  # another sidecar is no input
            for other in path.parent.iterdir()
        )
    except OSError:
        return False


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    stable_since: float


class _Events(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        for raw in (getattr(event, "dest_path", ""), event.src_path):
            if raw:
                path = Path(raw.decode() if isinstance(raw, bytes) else raw)
                if path.parent == self.watcher.folder:
                    self.watcher.notice(path)


class FolderWatcher:
    """Watch a folder and hand each complete file to `take`.

    Parameters
    ----------
    folder : Path
        The inbox (created if missing).
    take : callable
        ``take(path)`` adopts the file (moving it away); exceptions are logged and
        the file is tried again at the next rescan.
    stable_seconds : float
        How long size and mtime must stay unchanged.
    poll_seconds : float
        How often pending files are checked.
    rescan_seconds : float
        Interval of the full rescan.
    follow_symlinks : bool
        Take symbolic links (off: each is left alone with one warning, so a link
        cannot make the daemon read a file outside the inbox).
    """

    def __init__(
        self,
        folder: Path,
        take: Callable[[Path], object],
        *,
        stable_seconds: float = 1.0,
        poll_seconds: float = 0.25,
        rescan_seconds: float = 30.0,
        follow_symlinks: bool = False,
    ) -> None:
        self.folder = Path(folder).absolute()
        self.take = take
        self.stable_seconds = stable_seconds
        self.poll_seconds = poll_seconds
        self.rescan_seconds = rescan_seconds
        self.follow_symlinks = follow_symlinks
        self._refused_links: set[Path] = set()
        self._subfolders = 0
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._thread: threading.Thread | None = None
        self._failures: dict[Path, int] = {}
        #: pauses intake while the state disk is full (files wait in the inbox)
        self.disk = DiskBackoff("inbox intake", log)

    def start(self) -> None:
        """Scan what is already there, then watch for changes."""
        self.folder.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        observer.schedule(_Events(self), str(self.folder), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.rescan()
        self._thread = threading.Thread(target=self._loop, name="ecgbridge-inbox", daemon=True)
        self._thread.start()
        log.info("watching inbox %s", self.folder)

    @property
    def alive(self) -> bool:
        """True while both the file-system observer and the polling thread run."""
        return bool(
            self._observer is not None and self._observer.is_alive()
            and self._thread is not None and self._thread.is_alive()
        )

    def stop(self) -> None:
        """Stop watching (files not yet taken stay in the folder for the next start)."""
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5.0)
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def notice(self, path: Path) -> None:
        """Consider `path` (called for every event and by the rescan)."""
        if not is_candidate_name(path.name):
            return
        with self._lock:
            if path not in self._pending:
                self._pending[path] = _Pending(-1, -1, time.monotonic())

    def rescan(self) -> None:
        """Consider every file in the folder."""
        try:
            entries = list(self.folder.iterdir())
        except OSError as exc:
            log.error("cannot list inbox %s: %s", self.folder, exc)
            return
        subfolders = 0
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                subfolders += 1
            elif entry.is_file() or entry.is_symlink():
                self.notice(entry)
        if subfolders and subfolders != self._subfolders:
            log.warning("the inbox holds %d sub-folder(s); files inside sub-folders are not "
                        "taken (put them in the inbox itself)", subfolders)
        self._subfolders = subfolders
        self._refused_links &= set(entries)  # forget links that were removed

    def poll(self) -> int:
        """Take every pending file that is stable now; return how many were taken."""
        if self.disk.waiting():
            return 0
        now = time.monotonic()
        ready: list[Path] = []
        with self._lock:
            for path, seen in list(self._pending.items()):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    del self._pending[path]  # moved away or deleted
                    continue
                except OSError:
                    continue
                if (st.st_size, st.st_mtime_ns) != (seen.size, seen.mtime_ns):
                    self._pending[path] = _Pending(st.st_size, st.st_mtime_ns, now)
                    continue
                # mtime in the future or a just-written file: also require wall-clock age
                age = time.time() - st.st_mtime_ns / 1e9
                if now - seen.stable_since >= self.stable_seconds and age >= self.stable_seconds:
                    ready.append(path)
                    del self._pending[path]
        taken = 0
        for i, path in enumerate(ready):
            if is_waiting_sidecar(path):
                continue
            if self._stop.is_set():
                self.notice(path)
                break
            if not self.follow_symlinks and path.is_symlink():
                self._refuse_link(path)
                continue
            try:
                self.take(path)
                taken += 1
                self._failures.pop(path, None)
                self.disk.succeeded()
            except FileNotFoundError:
                continue
            except Exception as exc:
                if is_disk_full(exc):  # not the file's fault: all wait for room
                    self.disk.failed("no space left on the disk of the state folder")
                    for waiting in ready[i:]:
                        self.notice(waiting)
                    break
                count = self._failures.get(path, 0) + 1
                self._failures[path] = count
                # the message of an OSError holds the file name: log only its reason
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                log.error("cannot take an inbox file (attempt %d): %s: %s",
                          count, type(exc).__name__, detail)
        return taken

    def _refuse_link(self, path: Path) -> None:
        if path in self._refused_links:
            return
        self._refused_links.add(path)
        # the name may be a patient's: not logged
        log.warning("a symbolic link in the inbox was not taken (inbox.follow_symlinks is "
                    "off); it stays in the inbox")

    def _loop(self) -> None:
        next_rescan = time.monotonic() + self.rescan_seconds
        while not self._stop.is_set():
            self.poll()
            if time.monotonic() >= next_rescan:
                self.rescan()
                next_rescan = time.monotonic() + self.rescan_seconds
            self._stop.wait(self.poll_seconds)
