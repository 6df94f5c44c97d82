"""Counters, gauges and histograms rendered in the Prometheus text exposition format.

Written by hand (format version 0.0.4) to avoid a dependency; thread-safe. It depends on
nothing else in ecgbridge, so the job runner (which counts) and the service (which serves
``/metrics``) both use it without the jobs layer importing the service layer.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable

#: Content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Histogram buckets in seconds (digitization and end-to-end latency).
DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: Labels = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Metrics:
    """The daemon's metrics registry.

    Counters and histograms are kept in memory (since start); gauges are read
    from callbacks at scrape time (e.g. the journal's queue depth).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, list[float]]] = {}
        self._help: dict[str, tuple[str, str]] = {}
        self._gauges: list[tuple[str, str, Callable[[], Iterable[tuple[Labels, float]]]]] = []

    def describe(self, name: str, kind: str, text: str) -> None:
        """Register HELP/TYPE text for a metric."""
        self._help[name] = (kind, text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Increase a counter."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + amount

    def counter_value(self, name: str, **labels: str) -> float:
        """Current value of one counter series (0 if never increased)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, 0.0)

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Add an observation (seconds) to a histogram."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._histograms.setdefault(name, {})
            bucket_counts = series.setdefault(key, [0.0] * (len(DURATION_BUCKETS) + 2))
            for i, bound in enumerate(DURATION_BUCKETS):
                if value <= bound:
                    bucket_counts[i] += 1
            bucket_counts[-2] += 1  # count
            bucket_counts[-1] += value  # sum

    def gauge(
        self, name: str, text: str, read: Callable[[], Iterable[tuple[Labels, float]]]
    ) -> None:
        """Register a gauge read at scrape time; `read` yields ``(labels, value)``."""
        self._help[name] = ("gauge", text)
        self._gauges.append((name, text, read))

    def render(self) -> str:
        """The exposition text of every metric."""
        lines: list[str] = []
        with self._lock:
            counters = {k: dict(v) for k, v in self._counters.items()}
            histograms = {
                k: {lk: list(lv) for lk, lv in v.items()} for k, v in self._histograms.items()
            }
        described = {kind: {n for n, (k, _) in self._help.items() if k == kind}
                     for kind in ("counter", "histogram")}
        for name in sorted(set(counters) | described["counter"]):
            self._header(lines, name, "counter")
            for labels, value in sorted(counters.get(name, {}).items()):
                lines.append(f"{name}{_fmt_labels(labels)} {_fmt_value(value)}")
        for name in sorted(set(histograms) | described["histogram"]):
            self._header(lines, name, "histogram")
            for labels, counts in sorted(histograms.get(name, {}).items()):
                for bound, n in zip(DURATION_BUCKETS, counts, strict=False):
                    lines.append(
                        f"{name}_bucket{_fmt_labels(labels, (('le', _fmt_value(bound)),))} "
                        f"{_fmt_value(n)}"
                    )
                inf = _fmt_labels(labels, (("le", "+Inf"),))
                lines.append(f"{name}_bucket{inf} {_fmt_value(counts[-2])}")
                lines.append(f"{name}_count{_fmt_labels(labels)} {_fmt_value(counts[-2])}")
                lines.append(f"{name}_sum{_fmt_labels(labels)} {_fmt_value(counts[-1])}")
        for name, _text, read in self._gauges:
            self._header(lines, name, "gauge")
            try:
                values = list(read())
            except Exception:  # a failing gauge must not break the scrape
                values = []
            for labels, value in values:
                lines.append(f"{name}{_fmt_labels(labels)} {_fmt_value(value)}")
        return "\n".join(lines) + "\n"

    def _header(self, lines: list[str], name: str, kind: str) -> None:
        _, text = self._help.get(name, (kind, name))
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
