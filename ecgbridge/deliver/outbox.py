"""Outbox folder: the encoded files of each job copied under the job's id."""

from __future__ import annotations

import re
import time
from glob import escape as glob_escape
from pathlib import Path

from ecgbridge.deliver.base import DeliveryItem, DeliveryReceipt
from ecgbridge.deliver.settings import OutboxSettings
from ecgbridge.errors import DeliveryError
from ecgbridge.fsutil import fsync_path, parse_file_mode, write_bytes_atomic

#: File name suffix in the outbox per format (the WFDB ``.dat`` follows its ``.hea``).
OUTBOX_SUFFIXES: dict[str, str] = {
    "dicom": ".dcm",
    "fhir-r4": ".fhir-r4.json",
    "fhir-r5": ".fhir-r5.json",
    "json": ".json",
    "wfdb": ".hea",
    "csv": ".csv",
}

#: Overlay images: ``<stem>.overlay.png`` (page 1), ``<stem>.p<N>.overlay.png`` (page N).
OVERLAY_SUFFIX = ".overlay.png"

#: Temporary files of write_bytes_atomic for an outbox file: ``.<name>.<random>.part``
#: where the name holds the job id (16 hex digits).
_PARTIAL_COPY = re.compile(r"^\..*[0-9a-f]{16}.*\.[a-z0-9_]{8}\.part$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def outbox_name(job_id: str, fmt: str, source: Path) -> str:
    """Return the outbox file name of one format of one job.

    Parameters
    ----------
    job_id : str
        Job identifier (the file stem).
    fmt : str
        Format name (``"dicom"``, ``"fhir-r4"`` ...).
    source : Path
        The encoded file; its suffix is used for formats without a fixed one
        (e.g. the overlay image).
    """
    suffix = OUTBOX_SUFFIXES.get(fmt)
    if suffix is None:
        suffix = f".{fmt}{source.suffix}"
    return f"{job_id}{suffix}"


def _rename_wfdb_header(text: str, old_stem: str, new_stem: str) -> str:
    """Point a WFDB header at ``<new_stem>`` (record name and signal file names)."""
    if old_stem == new_stem:
        return text
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    record_line_seen = False
    for line in lines:
        if line.startswith("#") or not line.strip():
            out.append(line)
            continue
        first, sep, rest = line.partition(" ")
        if not record_line_seen:
            record_line_seen = True
            name, slash, segments = first.partition("/")
            if name == old_stem:
                first = new_stem + slash + segments
        elif first == f"{old_stem}.dat":
            first = f"{new_stem}.dat"
        out.append(first + sep + rest)
    return "".join(out)


class OutboxDestination:
    """Copy each job's encoded files into a folder as ``<job_id>.<format suffix>``.

    Files are written atomically (temporary file, fsync, rename) so a consumer
    polling the folder never sees a partial file; delivering the same item again
    overwrites the files with identical content.

    Parameters
    ----------
    settings : OutboxSettings
        Folder and formats to copy.
    name : str
        Destination name in the journal.
    """

    def __init__(self, settings: OutboxSettings, name: str = "outbox") -> None:
        self.settings = settings
        self.name = name

    def clean_partial(self) -> int:
        """Delete the temporary files of copies cut short (daemon killed mid-write).

        Only names this destination writes are touched (``.<job_id>.<suffix>.<random>.part``);
        return how many were removed.
        """
        removed = 0
        try:
            leftovers = list(Path(self.settings.path).glob(".*.part"))
        except OSError:
            return 0
        for path in leftovers:
            if _PARTIAL_COPY.match(path.name):
                try:
                    path.unlink()
                    removed += 1
                except OSError:
                    continue
        return removed

    def deliver(self, item: DeliveryItem) -> DeliveryReceipt:
        """Copy the configured formats of `item` into the outbox.

        Raises
        ------
        DeliveryError
            Not retryable if the job id is unsafe as a file name or a configured
            format is missing from the item; retryable if the folder cannot be written
            (disk full, permissions, unmounted share).
        """
        stem = self.stem(item)
        if not _SAFE_JOB_ID.match(item.job_id) or not _SAFE_JOB_ID.match(stem):
            raise DeliveryError(
                f"outbox: job id {item.job_id!r} is not usable as a file name",
                retryable=False,
            )
        missing = [fmt for fmt in self.settings.formats if fmt not in item.files]
        if missing:
            raise DeliveryError(
                f"outbox: job {item.job_id} has no {', '.join(missing)} file to copy "
                f"(it has {', '.join(sorted(item.files)) or 'none'})",
                retryable=False,
            )
        folder = Path(self.settings.path)
        written: list[Path] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for fmt in self.settings.formats:
                written.extend(self._copy(item, fmt, folder, stem))
            fsync_path(folder, strict=False)  # the renames; passed over where unsupported
        except OSError as exc:
            raise DeliveryError(
                f"outbox: cannot write job {item.job_id} into {folder}: {exc.strerror or exc}",
                retryable=True,
            ) from exc
        names = ", ".join(p.name for p in written)
        return DeliveryReceipt(self.name, f"wrote {names} in {folder}")

    def stem(self, item: DeliveryItem) -> str:
        """The stem of `item`'s files, from ``naming`` (``{job_id}`` by default)."""
        pattern = self.settings.naming
        if pattern == "{job_id}":
            return item.job_id
        when = time.gmtime(item.received_at or time.time())
        source = Path(item.input_name).stem if item.input_name else "input"
        return pattern.format(
            job_id=item.job_id, input=_UNSAFE.sub("_", source).strip("._")[:80] or "input",
            date=time.strftime("%Y%m%d", when), time=time.strftime("%H%M%S", when),
        )

    def _copy(self, item: DeliveryItem, fmt: str, folder: Path, stem: str) -> list[Path]:
        source = Path(item.files[fmt])
        mode = parse_file_mode(self.settings.file_mode)
        if fmt == "wfdb":
            data_file = source.with_suffix(".dat")
            dat = write_bytes_atomic(folder / f"{stem}.dat", data_file.read_bytes(), mode=mode)
            header = _rename_wfdb_header(
                source.read_text(encoding="utf-8"), source.stem, stem
            )
            hea = write_bytes_atomic(folder / f"{stem}.hea", header.encode("utf-8"), mode=mode)
            return [dat, hea]
        target = folder / outbox_name(stem, fmt, source)
        written = [write_bytes_atomic(target, source.read_bytes(), mode=mode)]
        if fmt == "overlay":
            for page_number, page_file in _further_overlay_pages(source):
                name = f"{stem}.p{page_number}{OVERLAY_SUFFIX}"
                written.append(write_bytes_atomic(folder / name, page_file.read_bytes(),
                                                  mode=mode))
        return written


def _further_overlay_pages(first_page: Path) -> list[tuple[int, Path]]:
    """The overlay images of pages 2, 3 ... written beside the first page's one."""
    if not first_page.name.endswith(OVERLAY_SUFFIX):
        return []
    stem = first_page.name[: -len(OVERLAY_SUFFIX)]
    pattern = re.compile(re.escape(stem) + r"\.p(\d+)" + re.escape(OVERLAY_SUFFIX) + "$")
    pages = []
    for candidate in first_page.parent.glob(f"{glob_escape(stem)}.p*{OVERLAY_SUFFIX}"):
        match = pattern.match(candidate.name)
        if match:
            pages.append((int(match.group(1)), candidate))
    return sorted(pages)
