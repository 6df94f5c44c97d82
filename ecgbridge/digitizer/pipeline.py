"""Entry point of the digitizer: pages in, one :class:`ecgbridge.ecg.ECG` out.

Raster pages go through: normalise -> deskew -> grid pitch -> trace/grid separation
-> rows -> trace following -> calibration pulse -> labels/layout -> time placement
-> post-processing. Vector PDF pages are handed to ``ecgbridge.digitizer.vector``
first when present.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ecgbridge.digitizer import (
    calibration_check,
    layout_repair,
    panels,
    postprocess,
    rectify,
    row_labels,
    row_reading,
    timebase,
    trace_ink,
)
from ecgbridge.digitizer.consistency import choose_reading, is_implausible, is_trusted
from ecgbridge.digitizer.geometry import (
    warp_image,
)
from ecgbridge.digitizer.grid import measure_grid
from ecgbridge.digitizer.labels import LabelWord, find_label_words
from ecgbridge.digitizer.layout import (
    PanelSlot,
    assign_panels,
    choose_columns,
    fill_missing_leads,
    layout_name,
)
from ecgbridge.digitizer.layout_inference import decide_layout, row_shapes
from ecgbridge.digitizer.merge import PageResult, merge_pages
from ecgbridge.digitizer.normalise import ink_maps, to_rgb
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.pulse import CalibrationPulse, find_pulse
from ecgbridge.digitizer.rows import TraceRow, find_rows
from ecgbridge.digitizer.segment import learned_trace_mask, model_available, segment_page
from ecgbridge.digitizer.trace import (
    TracePath,
    follow_trace,
    refine_with_core,
)
from ecgbridge.ecg import ECG, Calibration, PanelInfo, SourceInfo
from ecgbridge.errors import DigitizationError, NotAnEcgError
from ecgbridge.inputs.page import Page
from ecgbridge.standards import (
    DEFAULT_SPEED_MM_S,
    PULSE_SECONDS,
    STANDARD_DURATION_S,
    STANDARD_TRACE_MM,
)

log = logging.getLogger(__name__)

#: Smallest page side accepted, in pixels.
MIN_PAGE_SIDE_PX = 150
#: Page darkness below this (99.9th percentile of the ink map) means a blank page.
_BLANK_INK_LEVEL = 0.15
#: A pulse foot further than this (mm) from the row's most frequent level is distrusted.
_MAX_FOOT_TO_MODE_MM = 2.0
#: More trace rows than this on one page: not an ECG (or grid lines taken for traces).
_MAX_ROWS = 20
#: Page width assumed for a gridless raster page without a known resolution (US letter).
_ASSUMED_PAGE_WIDTH_MM = 280.0
#: A page must yield at least this many distinct, labelled leads.
_MIN_LEADS_PER_PAGE = 3
_PAGE_WIDTH_SCALE_WARNING = "no grid found: scale assumed from the page width (280 mm)"
#: Lead of a rhythm strip whose label is unread and whose trace matches no panel.
_DEFAULT_STRIP_LEAD = "II"


def digitize_pages(
    pages: Sequence[Page],
    options: DigitizeOptions,
    *,
    source: SourceInfo | None = None,
    debug: dict[str, np.ndarray] | None = None,
) -> ECG:
    """Digitize the pages of one document into a 12-lead ECG.

    Parameters
    ----------
    pages : sequence of Page
        The document's pages (raster, or vector with paths).
    options : DigitizeOptions
        Layout hint, paper speed, gain and output sampling rate.
    source : SourceInfo, optional
        Provenance copied into the result.
    debug : dict, optional
        When given, intermediate images (uint8) are stored in it by stage name.

    Returns
    -------
    ECG
        Samples at ``options.fs`` placed at their true time, NaN where not shown.

    Raises
    ------
    NotAnEcgError
        No page looks like an ECG (blank, photo without grid or traces).
    DigitizationError
        Pages look like an ECG but no lead could be digitized reliably.
    """
    if not pages:
        raise DigitizationError("the input has no pages to digitize")
    src = source if source is not None else SourceInfo(pages=len(pages))
    if any(p.paths for p in pages):
        try:
            from ecgbridge.digitizer.vector import digitize_vector_pages
        except ImportError:
            log.info("vector digitizer not available; using the raster pipeline")
        else:
            ecg = digitize_vector_pages(pages, options, source=src)
            if ecg is not None:
                return ecg
    results: list[PageResult] = []
    errors: list[str] = []
    for page in pages:
        try:
            results.append(
                digitize_raster_page(page.image, options, page_index=page.index,
                                     debug=debug if len(results) == 0 else None,
                                     dpi=page.dpi)
            )
        except (DigitizationError, NotAnEcgError) as exc:
            if len(pages) == 1:
                raise
            log.warning("page %d skipped: %s", page.index + 1, exc)
            errors.append(f"page {page.index + 1}: {exc}")
    if not results:
        raise DigitizationError("no page could be digitized: " + "; ".join(errors))
    return merge_pages(results, options, src, errors)


def digitize_raster_page(
    image: np.ndarray,
    options: DigitizeOptions,
    *,
    page_index: int = 0,
    debug: dict[str, np.ndarray] | None = None,
    dpi: float | None = None,
) -> PageResult:
    """Digitize one raster page with the engine the options ask for.

    With ``engine="auto"`` (and the model installed) the classical engine reads the
    page first; a reading whose limb leads keep Einthoven's and Goldberger's laws
    (see :mod:`ecgbridge.digitizer.consistency`) is kept. Otherwise the learned engine
    reads it too and the reading that keeps the laws better wins; a warning states
    the choice and its evidence, or why one engine could not read the page. A reading
    only one engine could make is refused when its limb leads break the laws as
    unrelated traces would.
    Parameters, return value and errors are those of :func:`digitize_raster_page_with`.
    """
    if options.engine == "classical" or (options.engine == "auto" and not model_available()):
        return digitize_raster_page_with("classical", image, options, page_index=page_index,
                                         debug=debug, dpi=dpi)
    if options.engine == "learned":
        if not model_available():
            raise DigitizationError("the learned engine was asked for but its model "
                                    "is not installed")
        return digitize_raster_page_with("learned", image, options, page_index=page_index,
                                         debug=debug, dpi=dpi)
    readings: dict[str, PageResult] = {}
    errors: dict[str, DigitizationError | NotAnEcgError] = {}
    # Each engine's stage images apart: the caller gets those of the reading delivered.
    stages: dict[str, dict[str, np.ndarray]] = {"classical": {}, "learned": {}}
    for engine in ("classical", "learned"):
        try:
            readings[engine] = digitize_raster_page_with(
                engine, image, options, page_index=page_index,
                debug=stages[engine] if debug is not None else None, dpi=dpi)
        except (DigitizationError, NotAnEcgError) as exc:
            errors[engine] = exc
            continue
        if engine == "classical" and is_trusted(readings[engine].signals):
            _keep_stages(debug, stages[engine])
            return readings[engine]
    _keep_stages(debug, stages["learned"] or stages["classical"])
    if not readings:
        raise errors["learned"]
    if len(readings) == 1 and is_implausible(next(iter(readings.values())).signals):
        (engine,) = readings
        other = next(iter(errors.values()))
        raise DigitizationError(
            f"{other}; the {engine} engine's reading was not delivered either: its limb "
            f"leads break Einthoven's and Goldberger's laws as unrelated traces would")
    choice = choose_reading({e: r.signals for e, r in readings.items()},
                            {e: str(x) for e, x in errors.items()})
    _keep_stages(debug, stages[choice.engine])
    result = readings[choice.engine]
    result.calibration = replace(result.calibration,
                                 warnings=(choice.warning, *result.calibration.warnings))
    return result


def _keep_stages(debug: dict[str, np.ndarray] | None, images: dict[str, np.ndarray]) -> None:
    """Hand one engine's stage images to the caller's `debug` dict (when it asked)."""
    if debug is not None:
        debug.clear()
        debug.update(images)


def digitize_raster_page_with(
    engine: str,
    image: np.ndarray,
    options: DigitizeOptions,
    *,
    page_index: int = 0,
    debug: dict[str, np.ndarray] | None = None,
    dpi: float | None = None,
) -> PageResult:
    """Digitize one raster page with one engine.

    Parameters
    ----------
    engine : str
        "learned" (trace ink from the segmentation model) or "classical".
    image : numpy.ndarray
        Grey or RGB page.
    options : DigitizeOptions
        Hints and output rate.
    page_index : int
        0-based page number (for :class:`PanelInfo`).
    debug : dict, optional
        Receives intermediate images.
    dpi : float, optional
        Rendering resolution of the page (PDF pages); used for the scale only when
        the page has no grid to measure.

    Raises
    ------
    NotAnEcgError, DigitizationError
        With the reason the page cannot be digitized.
    """
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_PAGE_SIDE_PX:
        raise DigitizationError(
            f"page {page_index + 1} is {w}x{h} px; at least {MIN_PAGE_SIDE_PX} px per side needed"
        )
    warnings: list[str] = []
    ink = ink_maps(rgb)
    if float(np.percentile(ink.any_ink[::4, ::4], 99.9)) < _BLANK_INK_LEVEL:
        raise NotAnEcgError(f"page {page_index + 1} is blank (no ink found)")
    seg = segment_page(rgb) if engine == "learned" else None
    homography, angle, rectified = rectify.rectify_homography(ink.any_ink, warnings)
    if rectified:
        any_ink = warp_image(ink.any_ink, homography, (w, h), fill=0.0)
        dark_ink = warp_image(ink.dark_ink, homography, (w, h), fill=0.0)
        if seg is not None:
            seg = replace(seg, trace=warp_image(seg.trace, homography, (w, h), fill=0.0),
                          text=warp_image(seg.text, homography, (w, h), fill=0.0))
    else:
        any_ink, dark_ink = ink.any_ink, ink.dark_ink
    if debug is not None:
        debug["1_normalised"] = (255 - 255 * dark_ink).astype(np.uint8)
    gx, gy = measure_grid(any_ink)
    has_grid = np.isfinite(gx.px_per_mm) and np.isfinite(gy.px_per_mm)
    if has_grid:
        ppm_x, ppm_y = float(gx.px_per_mm), float(gy.px_per_mm)
    else:
        if dpi:
            ppm_x = ppm_y = float(dpi) / 25.4
            warnings.append(
                f"no grid found: scale taken from the rendering resolution ({dpi:g} dpi)"
            )
        else:
            # No grid (pure black/white print): assume a landscape page ~280 mm wide.
            ppm_x = ppm_y = w / _ASSUMED_PAGE_WIDTH_MM
            warnings.append(_PAGE_WIDTH_SCALE_WARNING)
    if seg is not None:
        mask = learned_trace_mask(seg, dark_ink, ppm_x)
        rows = find_rows(mask, ppm_x, ppm_y)
    else:
        mask, rows = trace_ink.trace_mask_and_rows(dark_ink, ppm_x, ppm_y, has_grid)
    if debug is not None:
        debug["2_grid_removed"] = (255 - 255 * mask).astype(np.uint8)
    if not rows:
        if not has_grid:
            raise NotAnEcgError(
                f"page {page_index + 1} does not look like an ECG: no grid and no trace rows found"
            )
        raise DigitizationError(f"page {page_index + 1}: grid found but no trace rows")
    if len(rows) > _MAX_ROWS:
        raise NotAnEcgError(
            f"page {page_index + 1} does not look like an ECG: {len(rows)} line-like rows found"
        )

    speed = options.paper_speed or DEFAULT_SPEED_MM_S
    speed_source = "user" if options.paper_speed else "default"

    # Follow every row, find pulses, erase traces before reading labels.
    paths: list[TracePath] = []
    pulses: list[CalibrationPulse | None] = []
    spans: list[tuple[float, float]] = []
    erased = mask.copy()
    thin_erased = mask.copy()
    start_pulses: list[CalibrationPulse | None] = []
    signal_gaps: list[float] = []
    kept_rows: list[TraceRow] = []
    page_x_end = max(r.x_end for r in rows)
    cores: dict[int, np.ndarray] = {}
    for row in rows:
        path = follow_trace(mask, row.x_start, page_x_end, row.trace_top, row.trace_bottom,
                            row.baseline, ppm_y)
        path = refine_with_core(path, row_reading.pen_core(mask, path.line_width, cores))
        if row_reading.is_straight_line(path, ppm_y):
            continue
        pulse = find_pulse(path, ppm_x, ppm_y)
        pulse_path = path
        if pulse is None:
            # Rows are found where ink stays near the baseline; a pulse drawn without a
            # foot line (a bare rectangle) lies just before that start.
            lead_in = row_reading.lead_in_path(mask, row, ppm_x, ppm_y)
            pulse = find_pulse(lead_in, ppm_x, ppm_y) if lead_in is not None else None
            if pulse is not None and pulse.x_fall < row.x_start - 3.0 * ppm_x:
                pulse = None
            if pulse is not None and lead_in is not None:
                pulse_path = lead_in
        x_origin = pulse.x_fall if pulse else float(row.x_start)
        x_end = float(row.x_end)
        end_pulse = find_pulse(path, ppm_x, ppm_y, from_end=True)
        if end_pulse is not None and end_pulse.x_rise > x_origin + 20 * ppm_x:
            x_end = end_pulse.x_rise
            pulse = pulse or end_pulse
        kept_rows.append(row)
        paths.append(path)
        pulses.append(pulse)
        start_pulses.append(pulse if pulse is not None and pulse is not end_pulse else None)
        if start_pulses[-1] is not None:
            row_gap = timebase.gap_after_pulse(pulse_path, start_pulses[-1], ppm_x)
            if row_gap is not None:
                signal_gaps.append(row_gap)
        spans.append((x_origin, x_end))
        row_reading.erase_path(erased, path, pad=max(1, int(round(0.15 * ppm_y))))
        row_reading.erase_thin(thin_erased, path)
        if pulse is not None:
            x0p = pulse.x_rise - pulse_path.x0
            x1p = min(int(pulse.x_fall) - pulse_path.x0 + 2, pulse_path.y.size)
            row_reading.erase_columns(erased, pulse_path, x0p, x1p, pad=2)

    rows = kept_rows
    falls = [p.x_fall for p in start_pulses if p is not None]
    # Rows whose time origin is a pulse's fall (their signal may start after a gap).
    from_fall = {i for i, p in enumerate(start_pulses) if p is not None}
    if falls:
        common = float(np.median(falls))
        rise = float(np.median([p.x_rise for p in start_pulses if p is not None]))
        for i, p in enumerate(start_pulses):
            x_origin, x_end = spans[i]
            # A row starting at the others' pulse (undetected here) or after it.
            if p is None and (x_origin > common - 5.0 * ppm_x or abs(x_origin - rise) < 3 * ppm_x):
                spans[i] = (common, x_end)
                from_fall.add(i)
            elif p is not None and abs(p.x_fall - common) <= 1.0 * ppm_x:
                # Rows of one page share their time origin: average out edge noise.
                spans[i] = (common, x_end)
    elif rows:
        spans = timebase.late_starts_to_common_origin(spans, ppm_x)
        spans = timebase.first_ink_to_first_sample(
            spans, ppm_x, float(np.median([timebase.pen_width(p) for p in paths])))
    if not rows:
        raise DigitizationError(f"page {page_index + 1}: only straight lines found, no traces")
    # Most rows' signal starts a printer-specific gap after the pulse's fall.
    gap = float(np.median(signal_gaps)) if 2 * len(signal_gaps) > len(falls) else 0.0
    if not has_grid and not dpi:
        scale = timebase.scale_from_row_length(spans, from_fall, gap, ppm_x)
        if scale is not None:
            ppm_x = ppm_y = scale
            warnings[warnings.index(_PAGE_WIDTH_SCALE_WARNING)] = (
                "no grid found: scale taken from the length of the trace rows (250 mm)"
            )
    if speed_source == "default":
        pulse_speed = timebase.speed_from_pulses([p for p in start_pulses if p is not None], ppm_x)
        if pulse_speed is not None:
            speed, speed_source = pulse_speed, "pulse"
    # The pen's horizontal width is best seen on the pulse's vertical edges.
    edges = [p.edge_px for p in start_pulses if p is not None]
    pen_px = float(np.median(edges)) if edges else None
    max_shift = max(timebase.MAX_ROW_END_SHIFT_MM * ppm_x, gap + 1.0 * ppm_x)
    if not falls:
        # No pulse marks time 0: the first ink may be a pulse not recognised as one
        # (0.2 s) or stray ink before the trace; full rows' ends still tell the origin.
        max_shift = max(max_shift, (PULSE_SECONDS * speed + 1.0) * ppm_x)
    shifted = timebase.origins_from_row_ends(spans, paths, ppm_x * speed, ppm_x,
                                             expected_s=STANDARD_TRACE_MM / speed,
                                             pen_px=pen_px, max_shift_px=max_shift)
    if shifted is None:
        # Rows not full length (or a gap too small to tell from the row ends).
        shifted = [(o + gap, e) if i in from_fall else (o, e)
                   for i, (o, e) in enumerate(spans)]
    spans = shifted

    # Gain: the standard gain most rows' pulses agree on (outlier rows disregarded).
    gain_decision = calibration_check.decide_gain(
        [p.mm_per_mv if p is not None else None for p in pulses], options.gain)
    gain = gain_decision.mm_per_mv
    warnings.extend(gain_decision.warnings)
    if speed_source == "default":
        warnings.append(f"paper speed {DEFAULT_SPEED_MM_S:g} mm/s assumed")

    # Labels.
    all_labels: list[list[LabelWord]] = []
    for row, (_x_origin, x_end) in zip(rows, spans, strict=True):
        region = (int(row.x_start - 15 * ppm_x), row.top, int(x_end), row.bottom)
        all_labels.append(find_label_words(erased, region, ppm_y, baseline=row.baseline))
    all_labels = row_labels.consistent_labels(all_labels, [r.baseline for r in rows], ppm_y)
    row_slots: list[list[PanelSlot]] = []
    any_label = any(all_labels)
    row_length = timebase.typical_row_length([e - o for o, e in spans])
    n_columns = choose_columns(all_labels, [o for o, _e in spans], row_length, ppm_x)
    for labels, (x_origin, _x_end) in zip(all_labels, spans, strict=True):
        slots = assign_panels(labels, x_origin, row_length, n_columns, ppm_x) if any_label else []
        row_slots.append(slots)
    if any_label:
        row_slots = layout_repair.unique_leads(row_slots)
        row_slots = layout_repair.unlabelled_rows(row_slots, spans, row_length)
        row_slots = row_labels.reread_missing_labels(row_slots, rows, all_labels, thin_erased,
                                                     mask & (1 - thin_erased), ppm_x)
        row_slots = fill_missing_leads(row_slots)
        row_slots = layout_repair.complete_to_standard_layout(
            row_slots, all_labels, spans, row_length, ppm_x, warnings)
    else:
        layout_repair.check_unlabelled_page(has_grid, row_length, ppm_x, page_index,
                                            hint_vouches=options.layout != "auto")
    decision = decide_layout(
        row_slots, all_labels,
        row_shapes(paths, [r.baseline for r in rows], spans, row_length, ppm_x, ppm_y),
        [o for o, _e in spans], row_length, ppm_x, options.layout, paths,
    )
    row_slots = decision.rows
    spans = [(o, e) for o, (_o, e) in zip(decision.origins, spans, strict=True)]
    warnings.extend(decision.warnings)
    if not decision.from_labels:
        any_label = False  # named from the layout: the quality of an unlabelled page
    elif not any_label:
        row_slots = layout_repair.standard_layout_rows(rows, spans, options, has_grid,
                                                       row_length, ppm_x, page_index)
        warnings.append("no lead labels readable: standard lead order assumed")
    elif len({s.lead for r in row_slots for s in r if s.lead}) < _MIN_LEADS_PER_PAGE:
        n_warnings = len(warnings)
        row_slots = layout_repair.few_labels_standard_rows(
            row_slots, all_labels, rows, spans, options, has_grid, row_length, ppm_x,
            page_index, warnings)
        # Named from the layout, not from labels: the quality of an unlabelled page.
        any_label = len(warnings) == n_warnings

    named = {s.lead for r in row_slots for s in r if s.lead}
    if len(named) < _MIN_LEADS_PER_PAGE:
        raise DigitizationError(
            f"page {page_index + 1}: lead labels could be read for only {len(named)} lead(s) "
            f"({', '.join(sorted(named)) or 'none'}); the layout cannot be trusted"
        )

    # Signals.
    heights = [p.height_px for i, p in enumerate(pulses)
               if p is not None and i not in gain_decision.outlier_rows]
    median_pulse_h = float(np.median(heights)) if heights else 1.0
    result = PageResult()
    fs = options.fs
    n_total = int(round(STANDARD_DURATION_S * fs))
    px_per_s = ppm_x * speed
    candidates: dict[str, list[tuple[np.ndarray, float, PanelInfo]]] = {}
    for row, path, pulse, (x_origin, _x_end), slots in zip(
        rows, paths, pulses, spans, row_slots, strict=True
    ):
        baseline = panels.row_baseline(path, row)
        if pulse is not None and (
            abs(pulse.foot_y - baseline) <= _MAX_FOOT_TO_MODE_MM * ppm_y
            and abs(pulse.height_px / median_pulse_h - 1.0) <= 0.15
        ):
            baseline = pulse.foot_y
        for slot in slots:
            start_s = (slot.x0 - x_origin) / px_per_s
            duration_s = (slot.x1 - slot.x0) / px_per_s
            ys = panels.panel_values(path, slot, ppm_x, first=slot.column == 0,
                               last=slot.column == slot.columns - 1)
            if pulse is not None and slot.column == 0:
                panels.blank_pulse_fall(ys, path, slot, pulse)
            mv = (baseline - ys) / (ppm_y * gain)
            n_needed = max(n_total, int(np.ceil((start_s + duration_s) * fs)) + 1)
            samples = postprocess.place_samples(mv, slot.x0, x_origin, px_per_s, fs, n_needed)
            found = float(np.isfinite(ys).mean()) if ys.size else 0.0
            q = found * (0.5 + 0.5 * min(1.0, slot.label_score)) if any_label else 0.3 * found
            info = PanelInfo(
                lead=slot.lead, page=page_index,
                box=(float(slot.x0), float(row.top), float(slot.x1), float(row.bottom)),
                baseline_px=float(baseline), start_s=float(start_s), duration_s=float(duration_s),
                rhythm_strip=(slot.columns == 1 and len(rows) > 1
                              and panels.is_rhythm(row_slots, slot)),
            )
            candidates.setdefault(slot.lead, []).append((samples, q, info))
    if not candidates:
        raise DigitizationError(f"page {page_index + 1}: no lead panels found")
    warnings.extend(postprocess.unused_rows_warnings(
        [(float(r.x_start), float(r.top), float(r.x_end), float(r.bottom)) for r in rows],
        page_index, [bool(slots) for slots in row_slots]))
    if "" in candidates:
        candidates = postprocess.name_unlabelled_strips(candidates, fs, _DEFAULT_STRIP_LEAD,
                                                        warnings)
        row_slots = panels.strip_names_from_panels(row_slots, candidates, rows)
    candidates = postprocess.check_einthoven(candidates)
    candidates = postprocess.relabel_rhythm_strips(candidates)
    candidates = postprocess.align_panels_to_rhythm(candidates, fs, warnings)
    for lead, items in candidates.items():
        items.sort(key=lambda it: -it[1])
        merged = items[0][0].copy()
        for other, _q, _info in items[1:]:
            m = min(merged.size, other.size)
            fill = ~np.isfinite(merged[:m]) & np.isfinite(other[:m])
            merged[:m][fill] = other[:m][fill]
        last = max((info.start_s + info.duration_s for _s, _q, info in items), default=0.0)
        keep = n_total if last <= STANDARD_DURATION_S * 1.05 else merged.size
        result.signals[lead] = merged[:keep]
        result.quality[lead] = float(items[0][1])
        result.panels.extend(info for _s, _q, info in items)
    # Grid columns have the standard width (2.5 s on a 3x4 page): else the scale was misread.
    if not options.paper_speed:
        columns = max((s.columns for r in row_slots for s in r), default=1)
        timed = calibration_check.columns_to_standard_width(
            result.signals, result.panels, columns, n_total, STANDARD_TRACE_MM / speed)
        result.signals, result.panels, ppm_x = timed.signals, timed.panels, ppm_x * timed.factor
        warnings.extend([timed.warning] if timed.warning else [])
    # No lead beyond a surface ECG's amplitude is delivered without a word.
    checked = calibration_check.check_amplitudes(result.signals, gain_decision)
    warnings.extend(checked.gain.warnings[len(gain_decision.warnings):])
    gain_decision, gain = checked.gain, checked.gain.mm_per_mv
    result.signals = checked.signals
    result.quality = {lead: q for lead, q in result.quality.items() if lead in result.signals}
    result.left_out = checked.dropped
    result.calibration = Calibration(
        layout=layout_name([s for s in row_slots if s]),
        px_per_mm_x=ppm_x, px_per_mm_y=ppm_y, mm_per_mv=gain, mm_per_s=speed,
        rotation_deg=float(angle), gain_source=gain_decision.source, speed_source=speed_source,
        method="raster", engine=engine,
        transform=tuple(float(v) for v in homography.ravel()) if rectified else (),
        warnings=tuple(warnings),
    )
    if debug is not None:
        debug.update(postprocess.debug_images(rgb, homography if rectified else None, rows,
                                              row_slots,
                                              paths, all_labels))
    return result


