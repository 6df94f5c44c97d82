"""Structured logging for the daemon: key=value text or one JSON object per line.

Log records carry only identifiers that are not patient data (job id, SOP
Instance UID, content hash, destination, reason) in their ``extra`` fields.
Fields named like patient identity are dropped unless the configuration allows
them (``logging.include_patient_ids``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

#: ``extra`` fields copied into every structured record when present.
CONTEXT_FIELDS: tuple[str, ...] = (
    "job_id", "source", "sop_instance_uid", "sha256", "destination", "reason", "attempt",
    "retry_in_s", "seconds", "reused", "status", "calling_aet", "peer", "file",
)
#: Fields that identify a patient; logged only when explicitly allowed.
PATIENT_FIELDS: tuple[str, ...] = ("patient_id", "patient_name", "accession_number")

_STANDARD = set(vars(logging.makeLogRecord({})))


def _context(record: logging.LogRecord, allow_patient: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_"):
            continue
        if key in PATIENT_FIELDS and not allow_patient:
            continue
        wanted = key in CONTEXT_FIELDS or (allow_patient and key in PATIENT_FIELDS)
        if wanted and value not in ("", None):
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and context fields."""

    def __init__(self, include_patient_ids: bool = False) -> None:
        super().__init__()
        self.include_patient_ids = include_patient_ids

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(_context(record, self.include_patient_ids))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class KeyValueFormatter(logging.Formatter):
    """Human-readable lines: ``time level logger: message key=value ...``."""

    def __init__(self, include_patient_ids: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.include_patient_ids = include_patient_ids

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = _context(record, self.include_patient_ids)
        if ctx:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in ctx.items())
        return line


#: Quoted values in a message ('x', "x", b'x'): what libraries put patient data in.
_QUOTED = re.compile("b?'[^'\\n]*'|b?\"[^\"\\n]*\"")


def scrub(text: str) -> str:
    """`text` with every quoted value replaced by ``'…'``, on one line."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _QUOTED.sub("'…'", first)


class ThirdPartyScrubber(logging.Filter):
    """Rewrite records of other libraries (pydicom, Pillow, Python warnings) so that
    the values they quote (``Invalid value for VR DA: '1970-01-31'``, a patient name)
    never reach the log, and each record stays one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("ecgbridge"):
            try:
                message = record.getMessage()
            except Exception:  # a library's bad format string
                message = str(record.msg)
            if record.name == "py.warnings":  # "path:line: Category: message\n  source"
                message = message.split(": ", 1)[-1]
            record.msg, record.args = scrub(message), None
            record.exc_info = record.exc_text = None
        return True


def configure_logging(level: str, json_format: bool, include_patient_ids: bool) -> None:
    """Send every logger (and Python warnings) to standard error in the chosen format.

    Also run in each worker process, so that what libraries say while digitizing is
    structured like the daemon's own lines and carries no patient values.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(include_patient_ids) if json_format
        else KeyValueFormatter(include_patient_ids)
    )
    handler.addFilter(ThirdPartyScrubber())
    logging.captureWarnings(True)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # pynetdicom logs every PDU at INFO, including patient attributes of datasets
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
