"""JSON summary: calibration, per-lead quality, panels and warnings (no samples)."""

from __future__ import annotations

import json
from pathlib import Path

from ecgbridge.ecg import ECG
from ecgbridge.encode.context import file_mode_of
from ecgbridge.fsutil import write_text_atomic
from ecgbridge.version import __version__


def ecg_summary_json(ecg: ECG) -> str:
    """Return the JSON text describing how `ecg` was digitized."""
    doc = {"ecgbridge_version": __version__, **ecg.summary()}
    return json.dumps(doc, indent=2, allow_nan=False)


def write_json(ecg: ECG, out_dir: Path, stem: str, context: object = None) -> list[Path]:
    """Write ``<stem>.json``."""
    return [write_text_atomic(out_dir / f"{stem}.json", ecg_summary_json(ecg) + "\n",
                              mode=file_mode_of(context))]
