"""The batch run journal: ``DIR/_batch/journal.sqlite``, one row per input page.

SQLite in WAL mode, one transaction per finished input, so a killed client loses
at most the inputs in flight, which ``--resume`` digitizes again.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from ecgbridge.fsutil import write_text_atomic

JOURNAL_FILE = "journal.sqlite"
INDEX_CSV = "index.csv"
INDEX_PARQUET = "index.parquet"
SUMMARY_FILE = "summary.json"



class PageState(StrEnum):
    """What became of one page (string-valued: the journal and index hold the words)."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


#: The states by name, and all of them.
DONE, FAILED, SKIPPED = PageState
STATES: tuple[PageState, ...] = tuple(PageState)

#: Index columns, in order. ``folder`` is the input's output sub-folder below DIR. ``page``
#: is 1-based; 0 means the whole input (it failed to load or was skipped before any page
#: was read).
COLUMNS: tuple[str, ...] = (
    "path", "folder", "page", "pages", "size", "sha256", "state", "reason", "outputs", "layout",
    "quality", "seconds", "attempts", "finished_at",
)

_DEFAULTS: dict[str, Any] = {"folder": "", "reason": "", "outputs": "", "layout": "",
                             "quality": "", "attempts": 1}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    path TEXT NOT NULL, folder TEXT NOT NULL DEFAULT '', page INTEGER NOT NULL,
    pages INTEGER, size INTEGER, sha256 TEXT,
    state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', outputs TEXT NOT NULL DEFAULT '',
    layout TEXT NOT NULL DEFAULT '', quality TEXT NOT NULL DEFAULT '', seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 1, finished_at REAL,
    PRIMARY KEY (path, page)
);
CREATE INDEX IF NOT EXISTS pages_sha ON pages (sha256);
CREATE INDEX IF NOT EXISTS pages_size ON pages (size);
CREATE INDEX IF NOT EXISTS pages_state ON pages (state);
"""


class Journal:
    """Open (creating if needed) the journal of the batch output folder `out_dir`."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / "_batch"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / JOURNAL_FILE
        self._db = sqlite3.connect(str(self.path), timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(pages)")}
        if "folder" not in columns:  # a journal written before the column existed
            self._db.execute("ALTER TABLE pages ADD COLUMN folder TEXT NOT NULL DEFAULT ''")
        self._db.commit()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def is_empty(self) -> bool:
        """True when no input has been recorded yet."""
        return self._db.execute("SELECT 1 FROM pages LIMIT 1").fetchone() is None

    def input_state(self, path: str) -> str | None:
        """``done``, ``failed`` or ``skipped`` for a recorded input, else None.

        An input with at least one page row (page >= 1) was digitized (``done``), even
        when some of its pages were skipped; a page-0 row carries the input's own state.
        """
        row = self._db.execute(
            "SELECT page, state FROM pages WHERE path = ? ORDER BY page LIMIT 1", (path,)
        ).fetchone()
        if row is None:
            return None
        return str(row[1]) if row[0] == 0 else DONE

    def done_with_size(self, size: int) -> bool:
        """True when some digitized input has `size` bytes (cheap filter before hashing)."""
        q = "SELECT 1 FROM pages WHERE size = ? AND page >= 1 LIMIT 1"
        return self._db.execute(q, (size,)).fetchone() is not None

    def done_path_with_hash(self, sha256: str) -> str | None:
        """The path of a digitized input with this content hash, else None."""
        row = self._db.execute(
            "SELECT path FROM pages WHERE sha256 = ? AND page >= 1 LIMIT 1", (sha256,)
        ).fetchone()
        return None if row is None else str(row[0])

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Replace every row of the input(s) in `rows` with `rows`, in one transaction."""
        now = time.time()
        with self._db:
            for path in {r["path"] for r in rows}:
                self._db.execute("DELETE FROM pages WHERE path = ?", (path,))
            for r in rows:
                values = [_cell(r.get(c, _DEFAULTS.get(c))) for c in COLUMNS[:-1]] + [now]
                self._db.execute(
                    f"INSERT INTO pages ({', '.join(COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(COLUMNS))})", values,
                )

    def failed_inputs(self) -> Iterator[tuple[str, str]]:
        """``(path, output sub-folder)`` of inputs that failed as a whole or in a page."""
        cur = self._db.execute(
            "SELECT DISTINCT path, folder FROM pages WHERE state = ?", (FAILED,))
        for path, folder in cur:
            yield str(path), str(folder)

    def counts(self) -> dict[str, int]:
        """Pages per state, plus ``inputs`` (distinct paths)."""
        out = {str(s): 0 for s in STATES}
        for state, n in self._db.execute("SELECT state, COUNT(*) FROM pages GROUP BY state"):
            out[str(state)] = int(n)
        distinct = self._db.execute("SELECT COUNT(DISTINCT path) FROM pages").fetchone()
        out["inputs"] = int(distinct[0])
        return out

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row, ordered by path and page."""
        cur = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM pages ORDER BY path, page")
        for values in cur:
            yield dict(zip(COLUMNS, values, strict=True))

    def write_index(self) -> list[Path]:
        """Write ``index.csv`` (and ``index.parquet`` when pyarrow is installed)."""
        csv_path = self.dir / INDEX_CSV
        tmp = csv_path.with_name("." + INDEX_CSV + ".part")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for row in self.rows():
                writer.writerow(row)
        tmp.replace(csv_path)
        parquet = self._write_parquet()
        return [csv_path] if parquet is None else [csv_path, parquet]

    def _write_parquet(self, rows_per_batch: int = 50_000) -> Path | None:
        """Write ``index.parquet`` from the journal, a batch of rows at a time (None
        without pyarrow)."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return None
        types = {"page": pa.int64(), "pages": pa.int64(), "size": pa.int64(),
                 "seconds": pa.float64(), "attempts": pa.int64(), "finished_at": pa.float64()}
        schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
        parquet = self.dir / INDEX_PARQUET
        tmp = parquet.with_name("." + INDEX_PARQUET + ".part")
        cur = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM pages ORDER BY path, page")
        with pq.ParquetWriter(str(tmp), schema) as writer:
            while chunk := cur.fetchmany(rows_per_batch):
                columns = [list(col) for col in zip(*chunk, strict=True)]
                writer.write_batch(pa.record_batch(columns, schema=schema))
        tmp.replace(parquet)
        return parquet

    def write_summary(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``summary.json`` (counts, failure reasons, pages/s) and return it."""
        summary: dict[str, Any] = {"counts": self.counts()}
        reasons = self._db.execute(
            "SELECT reason, COUNT(*) FROM pages WHERE state = ? GROUP BY reason "
            "ORDER BY COUNT(*) DESC LIMIT 20", (FAILED,)
        ).fetchall()
        summary["top_failure_reasons"] = [{"reason": r, "pages": n} for r, n in reasons]
        total = self._db.execute("SELECT SUM(seconds) FROM pages WHERE page <= 1").fetchone()[0]
        summary["digitize_seconds"] = round(float(total or 0.0), 3)
        summary.update(extra or {})
        write_text_atomic(self.dir / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
        return summary


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value
