"""Shared pytest fixtures: the real records in tests/data/records and rendered ECG pages.

* ``records_dir``: the folder of WFDB fixture records (see tests/data/README.md).
* ``record_signals(name)``: ``(signals (12, n) mV in LEADS order, fs)`` of one record.
* ``sample_record``: the same for HR06004.
* ``rendered_page(record="HR06004", **render_kwargs)``: a
  :class:`ecgbridge.testing.RenderedPage`; identical calls share one rendering per session.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RECORDS_DIR = Path(__file__).parent / "data" / "records"

#: Records available as fixtures (10 s, 500 Hz, 12 leads, mV).
FIXTURE_RECORDS: tuple[str, ...] = ("HR06004", "E07506", "JS20005", "A1983", "00001_lr")

RecordLoader = Callable[[str], tuple[np.ndarray, float]]


@cache
def load_record(name: str) -> tuple[np.ndarray, float]:
    """Read a fixture record into ``(signals (12, n) mV in LEADS order, fs)`` (read-only)."""
    import wfdb

    from ecgbridge.ecg import LEADS, normalise_lead_name

    rec = wfdb.rdrecord(str(RECORDS_DIR / name))
    signals = np.full((len(LEADS), rec.sig_len), np.nan)
    for i, lead in enumerate(rec.sig_name):
        signals[LEADS.index(normalise_lead_name(lead))] = rec.p_signal[:, i]
    signals.setflags(write=False)
    return signals, float(rec.fs)


@lru_cache(maxsize=16)
def _render_cached(record: str, frozen_kwargs: tuple[tuple[str, Any], ...]) -> Any:
    from ecgbridge.testing import render_page

    signals, fs = load_record(record)
    return render_page(signals, fs, **dict(frozen_kwargs))


@pytest.fixture(scope="session")
def records_dir() -> Path:
    """Folder holding the WFDB fixture records."""
    return RECORDS_DIR


@pytest.fixture(scope="session")
def record_signals() -> RecordLoader:
    """Factory: ``record_signals("E07506") -> (signals, fs)``."""
    return load_record


@pytest.fixture(scope="session")
def sample_record() -> tuple[np.ndarray, float]:
    """``(signals, fs)`` of record HR06004."""
    return load_record("HR06004")


@pytest.fixture(scope="session")
def rendered_page() -> Callable[..., Any]:
    """Factory: ``rendered_page(record="HR06004", layout="3x4+II", dpi=150, ...)``.

    Keyword arguments go to :func:`ecgbridge.testing.render_page`; they must be
    hashable (use tuples, not lists).  Results are cached for the session.
    """

    def make(record: str = "HR06004", **kwargs: Any) -> Any:
        return _render_cached(record, tuple(sorted(kwargs.items())))

    return make
