"""One batch task: digitize one input file, write its outputs, return its journal rows.

Runs in a worker process (local pool or Dask worker). The outputs are written by
:func:`ecgbridge.api.digitize_file` (the ``digitize`` code path) into a
staging folder under ``DIR/_batch/staging`` and then renamed into place, so a killed
worker never leaves a partial set; only the small rows travel back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ecgbridge.batch.journal import DONE, FAILED

STAGING_DIR = "staging"
_process_tuned = False
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_SKIPPED_PAGE = re.compile(r"^skipped page (\d+): (.*)$")


def process_input(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Digitize ``task["path"]``; never raises.

    Parameters
    ----------
    task : dict
        ``path``, ``out_dir``, ``rel`` (output sub-folder), ``formats`` (list),
        ``options`` (a DigitizeOptions), ``attempts``.

    Returns
    -------
    list of dict
        One journal row per page (``page`` 1-based), or one row with ``page`` 0
        when the input could not be read or digitized at all.
    """
    start = time.monotonic()
    _tune_process()
    path = Path(task["path"])
    base = {"path": str(path), "folder": task.get("rel", ""), "attempts": task.get("attempts", 1)}
    try:
        data_size = path.stat().st_size
        base["size"] = data_size
        rows = _digitize(task, path, base)
    except MemoryError:
        rows = [{**base, "page": 0, "state": FAILED, "reason": "out of memory while digitizing"}]
    except Exception as exc:
        rows = [{**base, "page": 0, "state": FAILED, "reason": _reason(exc)}]
        if "sha256" not in rows[0] and path.is_file():
            rows[0].update(_hash_file(path))
    seconds = round(time.monotonic() - start, 4)
    for row in rows:
        row["seconds"] = seconds
    return rows


def _tune_process() -> None:
    """Once per worker process: OpenCV on one thread, and glibc malloc as by default.

    * A batch runs one page per worker process (or worker thread); a page spreading
      over every core as well would oversubscribe the machine. The outputs do not
      change (same bytes with 1 thread and with the default pool, on the dev pages).
    * A Dask nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``
      (``distributed.nanny.pre-spawn-environ``), which also pins glibc's mmap threshold
      at 128 KiB: every image-sized array is then mmapped and unmapped, and digitizing
      ran 2.5-3.5x slower (6 dev pages: 3.5 s, 12.8 s with the variable set). Where the
      variable is set, large blocks come from the heap again (mmap above 32 MiB) and
      up to 64 MiB of freed memory is kept for the next page.
    """
    global _process_tuned
    if _process_tuned:
        return
    _process_tuned = True
    import cv2

    cv2.setNumThreads(1)
    if "MALLOC_TRIM_THRESHOLD_" in os.environ and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
        except (OSError, AttributeError):
            pass  # not glibc: nothing to undo


def _digitize(task: dict[str, Any], path: Path, base: dict[str, Any]) -> list[dict[str, Any]]:
    from ecgbridge.api import digitize_file

    out_dir = Path(task["out_dir"])
    final = out_dir / task["rel"] if task["rel"] else out_dir
    staging = out_dir / "_batch" / STAGING_DIR / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        ecg, loaded, written = digitize_file(path, staging, list(task["formats"]),
                                             task["options"],
                                             write_options=task.get("write_options"))
        final.mkdir(parents=True, exist_ok=True)
        outputs = []
        for item in written:
            os.replace(item, final / item.name)
            outputs.append(str((final / item.name).relative_to(out_dir)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _page_rows(ecg, loaded, base, outputs)


def _page_rows(ecg: Any, loaded: Any, base: dict[str, Any], outputs: list[str]) -> list[dict]:
    from ecgbridge.ecg import LEADS

    n_pages = len(loaded.pages)
    skipped: dict[int, str] = {}
    for warning in ecg.calibration.warnings:
        m = _SKIPPED_PAGE.match(warning)
        if m:
            skipped[int(m.group(1))] = m.group(2)
    leads_by_page: dict[int, list[str]] = {}
    for panel in ecg.panels:
        leads_by_page.setdefault(panel.page + 1, []).append(panel.lead)
    layouts = ecg.calibration.layout.split("/")
    quality = {lead: round(float(q), 3) for lead, q in zip(LEADS, ecg.quality, strict=True)}
    common = {**base, "pages": n_pages, "sha256": loaded.source.sha256, "outputs": outputs}
    rows = []
    for page in range(1, n_pages + 1):
        if page in skipped:
            rows.append({**common, "page": page, "state": FAILED, "reason": skipped[page]})
            continue
        leads = sorted(set(leads_by_page.get(page, [])), key=LEADS.index)
        page_quality = {lead: quality[lead] for lead in leads} if n_pages > 1 else quality
        layout = layouts.pop(0) if len(layouts) > 1 else layouts[0]
        rows.append({**common, "page": page, "state": DONE, "reason": "",
                     "layout": layout, "quality": page_quality})
    return rows


def _reason(exc: BaseException) -> str:
    from ecgbridge.errors import describe_failure

    return describe_failure(exc)


def _hash_file(path: Path) -> dict[str, Any]:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return {"sha256": h.hexdigest()}
    except OSError:
        return {}
