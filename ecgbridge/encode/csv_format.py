"""CSV: first column ``time_s``, then the 12 leads in mV; empty cells where a lead is absent."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ecgbridge.ecg import ECG, LEADS
from ecgbridge.encode.context import file_mode_of
from ecgbridge.errors import InputError
from ecgbridge.fsutil import write_text_atomic


def ecg_to_csv(ecg: ECG) -> str:
    """Return the CSV text of `ecg` (µV precision)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["time_s", *LEADS])
    t = ecg.time_s
    for i in range(ecg.n_samples):
        col = ecg.signals[:, i]
        writer.writerow(
            [f"{t[i]:.6f}", *("" if not np.isfinite(v) else f"{v:.4f}" for v in col)]
        )
    return buf.getvalue()


def write_csv(ecg: ECG, out_dir: Path, stem: str, context: object = None) -> list[Path]:
    """Write ``<stem>.csv``."""
    return [write_text_atomic(out_dir / f"{stem}.csv", ecg_to_csv(ecg),
                              mode=file_mode_of(context))]


def read_csv(path: Path) -> ECG:
    """Read a CSV written by :func:`write_csv` (or any CSV with lead-name columns).

    Raises
    ------
    InputError
        If the file has no recognisable lead column or fewer than 2 rows.
    """
    from ecgbridge.ecg import normalise_lead_name

    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 3:
        raise InputError(f"{path}: CSV needs a header and at least 2 rows")
    header = [h.strip() for h in rows[0]]
    data = np.array(
        [[float(x) if x.strip() not in ("", "nan", "NaN") else np.nan for x in r] for r in rows[1:]]
    )
    leads: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        try:
            leads[normalise_lead_name(name)] = data[:, j]
        except ValueError:
            continue
    if not leads:
        raise InputError(f"{path}: no ECG lead columns in header {header}")
    fs = 500.0
    if header[0].lower() == "time_s":
        dt = np.diff(data[:, 0])
        if dt.size and np.all(dt > 0):
            fs = float(round(1.0 / np.median(dt), 6))
    return ECG.from_leads(leads, fs=fs)
