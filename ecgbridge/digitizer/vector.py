"""Reading ECG traces straight from the vector paths of a PDF (ECG cart exports).

PDF units are exact (1 pt = 25.4/72 mm), so when a page's traces are stored as
polylines there is nothing to measure from pixels: a trace point at ``(x, y)``
millimetres is ``x / speed`` seconds and ``(baseline - y) / gain`` millivolts.
What remains to find is which polylines are traces, which lead each one is (from
the printed label nearest to its start, never a fixed order), the gain (from the
1 mV calibration pulse, else the printed "10 mm/mV"), the paper speed (printed
"25 mm/s", else 25) and where 0 mV lies (the pulse foot, else the trace's
isoelectric level).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy.optimize import linear_sum_assignment

from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.vector_shapes import (
    MIN_TRACE_WIDTH_MM,
    VectorPulse,
    VectorTrace,
    find_traces_and_pulses,
    grid_scale,
    to_paper_mm,
)
from ecgbridge.ecg import ECG, LEADS, Calibration, PanelInfo, SourceInfo, normalise_lead_name
from ecgbridge.inputs.page import Page, TextItem
from ecgbridge.standards import CART_GAINS_MM_PER_MV, DEFAULT_GAIN_MM_MV, DEFAULT_SPEED_MM_S

logger = logging.getLogger(__name__)

#: A pulse height within this fraction of one of
#: :data:`~ecgbridge.standards.CART_GAINS_MM_PER_MV` is that gain.
GAIN_SNAP_TOLERANCE: float = 0.03

#: A pulse foot closer than this to a trace's isoelectric level is its 0 mV line.
PULSE_FOOT_TOLERANCE_MM: float = 3.0
#: Labels farther than this from a trace's start cannot name it.
MAX_LABEL_DISTANCE_MM: float = 30.0
#: A stroke split by the PDF writer leaves gaps of at most this size.
PIECE_GAP_MM: float = 1.0
#: Characters of one word set one by one are at most this far apart.
GLYPH_GAP_MM: float = 0.8
#: Labels of one row of panels are printed in line within this height.
LABEL_ROW_TOLERANCE_MM: float = 3.0
#: Traces whose isoelectric levels differ by less than this share a row.
ROW_TOLERANCE_MM: float = 6.0

_LEAD_LABEL = re.compile(r"^-?(?:I{1,3}|a?V[RLF]|V\d{1,2}[RL]?)$", re.IGNORECASE)
_SPEED_TEXT = re.compile(r"(\d+(?:[.,]\d+)?)\s*mm\s*/\s*s(?:ec)?\b", re.IGNORECASE)
_GAIN_TEXT = re.compile(r"(\d+(?:[.,]\d+)?)\s*mm\s*/\s*mV\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Placed:
    """A labelled trace placed in time."""

    lead: str
    trace: VectorTrace
    baseline: float
    start_s: float
    rhythm: bool
    polarity: float = 1.0  # -1 for an inverted lead printed as such ("-aVR", Cabrera)


def digitize_vector_pages(
    pages: Sequence[Page],
    options: DigitizeOptions,
    *,
    source: SourceInfo | None = None,
) -> ECG | None:
    """Read the 12 leads from the vector trace polylines of PDF pages.

    Parameters
    ----------
    pages : sequence of Page
        Pages of one document; those without ``paths`` are skipped.
    options : DigitizeOptions
        ``paper_speed`` and ``gain``, when given, override what the pages say;
        ``fs`` is the output sampling rate.
    source : SourceInfo, optional
        Provenance copied into the result.

    Returns
    -------
    ECG or None
        The leads found, each placed at its true time (a 3x4 page's column c at
        2.5c s, rhythm strips and 6x1 strips from 0 s), leads of several pages
        merged; ``None`` when no page holds labelled vector traces, so that the
        raster pipeline can run instead.
    """
    warnings: list[str] = []
    traces: list[VectorTrace] = []
    pulses: list[VectorPulse] = []
    scales: dict[int, tuple[float, float]] = {}
    paper_pages: list[Page] = []
    for page in pages:
        if not page.paths:
            continue
        scale = grid_scale(page)
        if scale != (1.0, 1.0):
            warnings.append(
                f"page {page.index + 1} is drawn at {100 * scale[0]:.1f}% x "
                f"{100 * scale[1]:.1f}% of paper size (from its grid); corrected"
            )
            page = to_paper_mm(page, scale)
        scales[page.index] = scale
        paper_pages.append(page)
        page_traces, page_pulses = find_traces_and_pulses(page)
        traces.extend(page_traces)
        pulses.extend(page_pulses)
    if not traces:
        return None
    pages = paper_pages

    texts = [t for page in pages for t in page.texts]
    gain, gain_source = _gain(options, pulses, texts, warnings)
    speed, speed_source = _speed(options, texts, warnings)

    placed: list[_Placed] = []
    layouts: list[str] = []
    ignored_labels: set[str] = set()
    for page in pages:
        page_traces = [t for t in traces if t.page == page.index]
        if not page_traces:
            continue
        page_pulses = [p for p in pulses if p.page == page.index]
        page_placed, unlabelled, extra = _place_page(page, page_traces, page_pulses, speed)
        ignored_labels.update(extra)
        if unlabelled:
            warnings.append(
                f"page {page.index + 1}: {unlabelled} trace(s) without a lead label nearby "
                "were ignored"
            )
        if page_placed:
            placed.extend(page_placed)
            layouts.append(_layout_name(page_placed))
    if ignored_labels:
        warnings.append(
            "ignored traces of non-standard leads: " + ", ".join(sorted(ignored_labels))
        )
    if not placed:
        logger.info("vector traces found but none carries a standard lead label")
        return None

    first = next(p for p in pages if p.index == placed[0].trace.page)
    px_per_mm = (first.dpi or 72.0) / 25.4
    first_scale = scales[first.index]
    return _assemble(
        placed, pages, scales, options.fs, gain, speed,
        Calibration(
            layout=layouts[0] if len(set(layouts)) == 1 else "/".join(layouts),
            px_per_mm_x=px_per_mm * first_scale[0],
            px_per_mm_y=px_per_mm * first_scale[1],
            mm_per_mv=gain,
            mm_per_s=speed,
            gain_source=gain_source,
            speed_source=speed_source,
            method="vector",
            warnings=tuple(warnings),
        ),
        source or SourceInfo(),
    )


# ----------------------------------------------------------------- gain and speed


def _printed_values(texts: Sequence[TextItem], pattern: re.Pattern[str]) -> list[float]:
    values = []
    for item in texts:
        for match in pattern.finditer(item.text):
            values.append(float(match.group(1).replace(",", ".")))
    return values


def _gain(
    options: DigitizeOptions,
    pulses: Sequence[VectorPulse],
    texts: Sequence[TextItem],
    warnings: list[str],
) -> tuple[float, str]:
    printed = [v for v in _printed_values(texts, _GAIN_TEXT) if 1.0 <= v <= 100.0]
    printed_gain = Counter(printed).most_common(1)[0][0] if printed else None
    if options.gain is not None:
        return float(options.gain), "user"
    if pulses:
        measured = float(np.median([p.height for p in pulses]))
        gain = _snap_gain(measured)
        if printed_gain is not None and abs(printed_gain - gain) > 0.05 * printed_gain:
            warnings.append(
                f"calibration pulse gives {gain:g} mm/mV but the page prints "
                f"{printed_gain:g} mm/mV; the pulse was used"
            )
        return gain, "pulse"
    if printed_gain is not None:
        return float(printed_gain), "printed"
    warnings.append(
        f"no calibration pulse or printed gain found; assumed {DEFAULT_GAIN_MM_MV:g} mm/mV"
    )
    return DEFAULT_GAIN_MM_MV, "default"


def _snap_gain(measured: float) -> float:
    for standard in CART_GAINS_MM_PER_MV:
        if abs(measured - standard) <= GAIN_SNAP_TOLERANCE * standard:
            return standard
    return measured


def _speed(
    options: DigitizeOptions, texts: Sequence[TextItem], warnings: list[str]
) -> tuple[float, str]:
    if options.paper_speed is not None:
        return float(options.paper_speed), "user"
    printed = [v for v in _printed_values(texts, _SPEED_TEXT) if 5.0 <= v <= 200.0]
    if printed:
        counts = Counter(printed).most_common()
        if len(counts) > 1:
            warnings.append(
                "several paper speeds printed (" + ", ".join(f"{v:g}" for v, _ in counts)
                + f" mm/s); used {counts[0][0]:g} mm/s"
            )
        return float(counts[0][0]), "printed"
    warnings.append(f"no paper speed printed; assumed {DEFAULT_SPEED_MM_S:g} mm/s")
    return DEFAULT_SPEED_MM_S, "default"


# ------------------------------------------------------------- labels and placement


def _lead_labels(texts: Sequence[TextItem]) -> list[TextItem]:
    """Text items that read as a lead name, including names set glyph by glyph.

    Some writers place every character separately ("a", "V", "R"); items on one
    line with gaps under :data:`GLYPH_GAP_MM` are read as one word, and only whole
    words count (the "I"s of a "III" are not three labels).
    """
    finished: list[list[TextItem]] = []
    active: list[list[TextItem]] = []
    for item in sorted(texts, key=lambda t: t.box_mm[0]):
        still_open = []
        for run in active:
            if run[-1].box_mm[2] < item.box_mm[0] - GLYPH_GAP_MM:
                finished.append(run)
            else:
                still_open.append(run)
        active = still_open
        host = next((run for run in active if _continues(run[-1], item)), None)
        if host is None:
            active.append([item])
        else:
            host.append(item)
    finished.extend(active)

    words = []
    for run in finished:
        text = "".join(t.text.strip() for t in run)
        if not _LEAD_LABEL.match(text):
            continue
        if len(run) == 1:
            words.append(run[0])
        else:
            words.append(TextItem(text=text, box_mm=(
                min(t.box_mm[0] for t in run), min(t.box_mm[1] for t in run),
                max(t.box_mm[2] for t in run), max(t.box_mm[3] for t in run),
            )))
    return words


def _continues(left: TextItem, right: TextItem) -> bool:
    gap = right.box_mm[0] - left.box_mm[2]
    return (-0.2 <= gap <= GLYPH_GAP_MM
            and abs(_label_centre(left)[1] - _label_centre(right)[1]) <= GLYPH_GAP_MM)


def _label_centre(item: TextItem) -> tuple[float, float]:
    x0, y0, x1, y1 = item.box_mm
    return (x0 + x1) / 2, (y0 + y1) / 2


def _assign_labels(traces: Sequence[VectorTrace], labels: Sequence[TextItem]) -> list[int | None]:
    """Index of the label naming each trace: optimal one-to-one match of labels to trace starts."""
    result: list[int | None] = [None] * len(traces)
    if not labels:
        return result
    big = 1e6
    cost = np.full((len(traces), len(labels)), big)
    for i, trace in enumerate(traces):
        ax, ay = trace.x0, trace.level
        for j, label in enumerate(labels):
            lx, ly = _label_centre(label)
            if lx > trace.x0 + 0.5 * (trace.x1 - trace.x0):
                continue
            distance = float(np.hypot(lx - ax, ly - ay))
            if distance <= MAX_LABEL_DISTANCE_MM:
                cost[i, j] = distance
    rows, cols = linear_sum_assignment(cost)
    for i, j in zip(rows, cols, strict=True):
        if cost[i, j] < big:
            result[i] = int(j)
    return result


def _rejoin_pieces(
    traces: Sequence[VectorTrace], assigned: Sequence[int | None]
) -> tuple[list[VectorTrace], list[int | None]]:
    """Append unlabelled traces that continue a labelled one (a stroke split by the writer).

    A piece continues a trace when it starts at most :data:`PIECE_GAP_MM` to the
    right of the trace's end, no higher or lower than the trace's own steepest
    step allows. Labelled traces are never joined to each other (adjacent 3x4
    panels also touch).
    """
    pieces = sorted(
        (i for i, j in enumerate(assigned) if j is None), key=lambda i: traces[i].x0
    )
    merged = {i: traces[i].points for i, j in enumerate(assigned) if j is not None}
    leftover: list[int] = []
    for i in pieces:
        start = traces[i].points[0]
        host = next(
            (k for k, pts in merged.items()
             if 0.0 <= start[0] - pts[-1, 0] <= PIECE_GAP_MM
             and abs(start[1] - pts[-1, 1]) <= max(PIECE_GAP_MM, 2.0 * _steepest_step(pts))),
            None,
        )
        if host is None:
            leftover.append(i)
        else:
            merged[host] = np.vstack([merged[host], traces[i].points])
    out_traces = [VectorTrace(page=traces[k].page, points=pts) for k, pts in merged.items()]
    out_assigned: list[int | None] = [assigned[k] for k in merged]
    out_traces.extend(traces[i] for i in leftover)
    out_assigned.extend(None for _ in leftover)
    return out_traces, out_assigned


def _steepest_step(points: np.ndarray) -> float:
    """Largest height change between consecutive points of a polyline (mm)."""
    return float(np.max(np.abs(np.diff(points[:, 1])))) if points.shape[0] > 1 else 0.0


def _split_continuous_rows(
    traces: Sequence[VectorTrace], labels: Sequence[TextItem], assigned: Sequence[int | None]
) -> list[tuple[VectorTrace, TextItem | None]]:
    """Cut traces that run through several labelled panels (one polyline per row).

    A lead label lying further along a labelled trace, in line with the trace's
    own label and not naming any other trace, starts a new panel: the trace is
    cut where that label sits relative to its panel start, as the first label does.
    """
    used = {j for j in assigned if j is not None}
    result: list[tuple[VectorTrace, TextItem | None]] = []
    for trace, j in zip(traces, assigned, strict=True):
        if j is None:
            result.append((trace, None))
            continue
        first_x, first_y = _label_centre(labels[j])
        offset = first_x - trace.x0
        along = sorted(
            (k for k, label in enumerate(labels)
             if k not in used
             and abs(_label_centre(label)[1] - first_y) <= LABEL_ROW_TOLERANCE_MM
             and trace.x0 + MIN_TRACE_WIDTH_MM
             < _label_centre(label)[0] - offset
             < trace.x1 - MIN_TRACE_WIDTH_MM / 3),
            key=lambda k: _label_centre(labels[k])[0],
        )
        if not along:
            result.append((trace, labels[j]))
            continue
        used.update(along)
        inner = _snap_to_equal_panels(
            [_label_centre(labels[k])[0] - offset for k in along], trace.x0, trace.x1
        )
        cuts = [trace.x0, *inner, np.inf]
        for (start, stop), k in zip(pairwise(cuts), [j, *along], strict=True):
            x = trace.points[:, 0]
            piece = trace.points[(x >= start) & (x < stop)]
            if piece.shape[0] >= 2:
                result.append((VectorTrace(page=trace.page, points=piece), labels[k]))
    return result


def _snap_to_equal_panels(cuts: Sequence[float], x0: float, x1: float) -> list[float]:
    """Move label-derived cuts onto equal panel widths when they are close to them.

    Label boxes locate a panel start only to a millimetre or two (glyph bearings,
    centred text); printed layouts divide a row into equal panels (3x4: 2.5 s each).
    """
    n = len(cuts) + 1
    step = (x1 - x0) / n
    equal = [x0 + step * (k + 1) for k in range(n - 1)]
    if all(abs(c - e) <= 0.1 * step for c, e in zip(cuts, equal, strict=True)):
        return equal
    return list(cuts)


def _place_page(
    page: Page, traces: Sequence[VectorTrace], pulses: Sequence[VectorPulse], speed: float
) -> tuple[list[_Placed], int, set[str]]:
    labels = _lead_labels(page.texts)
    traces, assigned = _rejoin_pieces(traces, _assign_labels(traces, labels))
    named = _split_continuous_rows(traces, labels, assigned)
    origin = min(t.x0 for t, _ in named)
    widths = np.array([t.x1 - t.x0 for t, _ in named])
    longest = float(widths.max())
    has_short = bool(np.any(widths < 0.6 * longest))
    placed: list[_Placed] = []
    unlabelled = 0
    extra: set[str] = set()
    for trace, label in named:
        if label is None:
            unlabelled += 1
            continue
        name = label.text.strip()
        inverted = name.startswith("-")
        try:
            lead = normalise_lead_name(name.lstrip("-"))
        except ValueError:
            extra.add(name)
            continue
        placed.append(
            _Placed(
                lead=lead,
                trace=trace,
                baseline=_baseline(trace, pulses),
                start_s=(trace.x0 - origin) / speed,
                rhythm=has_short and (trace.x1 - trace.x0) >= 0.9 * longest,
                polarity=-1.0 if inverted else 1.0,
            )
        )
    return placed, unlabelled, extra


def _baseline(trace: VectorTrace, pulses: Sequence[VectorPulse]) -> float:
    level = trace.level
    feet = [p.foot for p in pulses
            if p.x_right <= trace.x0 + 1.0 and abs(p.foot - level) <= PULSE_FOOT_TOLERANCE_MM]
    if feet:
        return float(min(feet, key=lambda f: abs(f - level)))
    return level


def _layout_name(placed: Sequence[_Placed]) -> str:
    panels = [p for p in placed if not p.rhythm]
    rows: list[float] = []
    for level in sorted(p.trace.level for p in panels):
        if not rows or level - rows[-1] > ROW_TOLERANCE_MM:
            rows.append(level)
    columns = len({round(p.start_s, 1) for p in panels})
    name = f"{len(rows)}x{columns}"
    rhythm = [p.lead for p in sorted(placed, key=lambda p: p.trace.level) if p.rhythm]
    if len(rhythm) == 1:
        name += f"+{rhythm[0]}"
    elif rhythm:
        name += f"+{len(rhythm)}"
    return name


# ---------------------------------------------------------------------- assembly


def _duration_s(placed: Sequence[_Placed], speed: float) -> float:
    end = max(p.start_s + (p.trace.x1 - p.trace.x0) / speed for p in placed)
    # Strips stop a stroke short of their nominal length (9.996 s, 2.474 s columns...).
    nominal = np.ceil(end * 2.0) / 2.0
    return float(nominal) if nominal - end <= 0.05 else end


def _sample(trace: VectorTrace, start_s: float, baseline: float, gain: float, speed: float,
            fs: float, n: int) -> np.ndarray:
    x = np.maximum.accumulate(trace.points[:, 0])
    t = start_s + (x - trace.x0) / speed
    mv = (baseline - trace.points[:, 1]) / gain
    out = np.full(n, np.nan)
    k0 = max(int(np.ceil(t[0] * fs - 1e-6)), 0)
    k1 = min(int(np.floor(t[-1] * fs + 1e-6)), n - 1)
    if k1 >= k0:
        times = np.arange(k0, k1 + 1) / fs
        out[k0:k1 + 1] = np.interp(times, t, mv)
    return out


def _assemble(
    placed: Sequence[_Placed],
    pages: Sequence[Page],
    scales: dict[int, tuple[float, float]],
    fs: float,
    gain: float,
    speed: float,
    calibration: Calibration,
    source: SourceInfo,
) -> ECG:
    n = int(round(_duration_s(placed, speed) * fs))
    signals = np.full((len(LEADS), n), np.nan)
    panels: list[PanelInfo] = []
    dpi_by_page = {p.index: (p.dpi or 72.0) for p in pages}
    # Longest traces first; shorter ones only fill what is still missing.
    for item in sorted(placed, key=lambda p: -(p.trace.x1 - p.trace.x0)):
        row = LEADS.index(item.lead)
        samples = item.polarity * _sample(
            item.trace, item.start_s, item.baseline, gain, speed, fs, n
        )
        missing = np.isnan(signals[row])
        signals[row, missing] = samples[missing]
        # Paper millimetres back to rendered pixels.
        sx, sy = scales[item.trace.page]
        px_x = dpi_by_page[item.trace.page] / 25.4 * sx
        px_y = dpi_by_page[item.trace.page] / 25.4 * sy
        ys = item.trace.points[:, 1]
        panels.append(
            PanelInfo(
                lead=item.lead,
                page=item.trace.page,
                box=(item.trace.x0 * px_x, float(ys.min()) * px_y,
                     item.trace.x1 * px_x, float(ys.max()) * px_y),
                baseline_px=item.baseline * px_y,
                start_s=item.start_s,
                duration_s=(item.trace.x1 - item.trace.x0) / speed,
                rhythm_strip=item.rhythm,
            )
        )
    quality = tuple(1.0 if np.isfinite(row).any() else 0.0 for row in signals)
    panels.sort(key=lambda p: (p.page, LEADS.index(p.lead), p.start_s))
    return ECG(
        signals=signals,
        fs=fs,
        quality=quality,
        calibration=calibration,
        panels=tuple(panels),
        source=source,
    )
