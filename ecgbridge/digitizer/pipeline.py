"""Entry point of the digitizer: pages in, one :class:`ecgbridge.ecg.ECG` out.

Raster pages go through: normalise -> deskew -> grid pitch -> trace/grid separation
-> rows -> trace following -> calibration pulse -> labels/layout -> time placement
-> post-processing. Vector PDF pages are handed to ``ecgbridge.digitizer.vector``
first when present.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from ecgbridge.digitizer import calibration_check, postprocess, timebase
from ecgbridge.digitizer import quality as quality_model
from ecgbridge.digitizer.consistency import choose_reading, is_implausible, is_trusted
from ecgbridge.digitizer.deskew import estimate_rotation
from ecgbridge.digitizer.geometry import (
    axis_alignment_homography,
    rotation_homography,
    warp_image,
)
from ecgbridge.digitizer.grid import measure_grid
from ecgbridge.digitizer.inkmask import (
    grid_line_map,
    is_grid_mask,
    threshold_candidates,
    trace_mask,
    without_dark_grid,
)
from ecgbridge.digitizer.labels import LabelWord, find_label_words, read_label_at
from ecgbridge.digitizer.layout import (
    LOOK_ALIKE_FAMILIES,
    LabelEvidence,
    PanelSlot,
    assign_panels,
    choose_columns,
    complete_standard_layout,
    fill_missing_leads,
    layout_name,
    standard_panels,
)
from ecgbridge.digitizer.layout_inference import MIN_NAMED_LEADS, decide_layout, row_shapes
from ecgbridge.digitizer.normalise import ink_maps, to_rgb
from ecgbridge.digitizer.options import DEFAULT_SPEED_MM_S, DigitizeOptions
from ecgbridge.digitizer.perspective import estimate_axes, estimate_perspective
from ecgbridge.digitizer.pulse import CalibrationPulse, find_pulse
from ecgbridge.digitizer.rows import TraceRow, find_rows
from ecgbridge.digitizer.segment import learned_masks, model_available, segment_page
from ecgbridge.digitizer.trace import (
    TracePath,
    follow_trace,
    pen_core_kernel,
    refine_with_core,
)
from ecgbridge.ecg import ECG, LEADS, Calibration, PanelInfo, SourceInfo
from ecgbridge.errors import DigitizationError, NotAnEcgError
from ecgbridge.inputs.page import Page

log = logging.getLogger(__name__)

#: Standard recording length in seconds.
STANDARD_DURATION_S = 10.0
#: Smallest page side accepted, in pixels.
MIN_PAGE_SIDE_PX = 150
#: Page darkness below this (99.9th percentile of the ink map) means a blank page.
_BLANK_INK_LEVEL = 0.15
#: A pulse foot further than this (mm) from the row's most frequent level is distrusted.
_MAX_FOOT_TO_MODE_MM = 2.0
#: Keystone and shear corrections moving no page corner further than this (pixels,
#: beyond the page's rotation) are not applied.
_MIN_GEOMETRY_CORRECTION_PX = 2.0
#: How far before a row's first trace ink a calibration pulse is looked for (mm).
_PULSE_LEAD_IN_MM = 16.0
#: Without readable labels, rows must be at least this long (mm) to assume a standard layout.
_MIN_UNLABELLED_ROW_MM = 120.0
#: More trace rows than this on one page: not an ECG (or grid lines taken for traces).
_MAX_ROWS = 20
#: Most rows a known layout has (12x1 plus 3 rhythm strips); more: grid lines kept.
_MAX_PLAUSIBLE_ROWS = 15
#: Median fraction of a row's columns with trace ink for the ink threshold to be accepted.
_MIN_ROW_COVERAGE = 0.6
#: Rows of the standard layouts a layout hint names (used only when no label is readable).
_HINT_ROWS: dict[str, int] = {"3x4": 3, "3x4+II": 4, "6x2": 6, "6x2+II": 7, "12x1": 12}
#: Page width assumed for a gridless raster page without a known resolution (US letter).
_ASSUMED_PAGE_WIDTH_MM = 280.0
#: Length of a full trace row on standard printouts (10 s at 25 mm/s).
_STANDARD_TRACE_MM = 250.0
#: Width of the calibration pulse in seconds (IEC 60601-2-25 style printouts).
_PULSE_SECONDS = 0.2
#: A page must yield at least this many distinct, labelled leads.
_MIN_LEADS_PER_PAGE = MIN_NAMED_LEADS
#: Quality given to a lead computed from other leads instead of read from the page.
_DERIVED_QUALITY = 0.3
#: Rows within this many seconds of 10 s get their time origin from their end.
_ROW_END_SNAP_S = 0.25
#: Time of the last sample of a 10 s recording (at 500 Hz).
_LAST_SAMPLE_S = 0.002
#: Minimum match score of a label read at its expected place.
_REREAD_MIN_SCORE = 0.7
#: A row starting this many mm after the others (no pulses) is moved to their origin.
_LATE_START_MM = 4.0
#: Blank gaps between a calibration pulse and the signal shorter or longer than these
#: (mm) are not a printer's pulse gap (pen edge noise; a lost start of the signal).
_MIN_PULSE_GAP_MM, _MAX_PULSE_GAP_MM = 0.5, 6.0
_PAGE_WIDTH_SCALE_WARNING = "no grid found: scale assumed from the page width (280 mm)"
#: Without a grid, rows within this fraction of 250 mm (assumed scale) set the scale ...
_ROW_LENGTH_SCALE_TOLERANCE = 0.1
#: ... and off from it by more than this fraction (rows cut short explain less).
_ROW_LENGTH_SCALE_MIN_MISFIT = 0.03
#: Largest time-origin shift (mm) taken from row ends without a measured pulse gap.
_MAX_ROW_END_SHIFT_MM = 3.0
#: Lead of a rhythm strip whose label is unread and whose trace matches no panel.
_DEFAULT_STRIP_LEAD = "II"
#: Half-width (mm) of the strip blanked around internal panel boundaries (lead markers).
_BOUNDARY_BLANK_MM = 0.6


@dataclass
class PageResult:
    """What one raster page yielded."""

    signals: dict[str, np.ndarray] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    panels: list[PanelInfo] = field(default_factory=list)
    calibration: Calibration = field(default_factory=Calibration)
    #: Leads the page shows but that are not delivered (the warnings say why).
    left_out: tuple[str, ...] = ()


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
    return _merge_pages(results, options, src, errors)


def _merge_pages(
    results: list[PageResult], options: DigitizeOptions, source: SourceInfo, errors: list[str]
) -> ECG:
    n = int(round(STANDARD_DURATION_S * options.fs))
    for r in results:
        for sig in r.signals.values():
            n = max(n, sig.size)
    signals = np.full((len(LEADS), n), np.nan)
    quality = [0.0] * len(LEADS)
    panels: list[PanelInfo] = []
    for r in results:
        panels.extend(r.panels)
        for lead, sig in r.signals.items():
            i = LEADS.index(lead)
            if r.quality[lead] > quality[i]:
                row = np.full(n, np.nan)
                row[: sig.size] = sig
                # Keep what the worse version showed where the better one has nothing.
                old = signals[i]
                signals[i] = np.where(np.isfinite(row), row, old)
                quality[i] = r.quality[lead]
            else:
                row = signals[i]
                fill = np.isfinite(sig) & ~np.isfinite(row[: sig.size])
                row[: sig.size][fill] = sig[fill]
    present = {lead: signals[i] for i, lead in enumerate(LEADS) if np.isfinite(signals[i]).any()}
    present = postprocess.reconcile_limb_leads(present)
    for lead, sig in present.items():
        signals[LEADS.index(lead)] = sig
    # A lead the pages show is never computed from others: it is read, or named.
    shown = {p.lead for p in panels}
    derived = {lead: sig for lead, sig in postprocess.derive_missing_limb_leads(present).items()
               if lead not in shown}
    derived, _implausible, limit_notes = calibration_check.limit_leads(
        derived, why="derived from misread limb leads")
    explained = {lead for r in results for lead in r.left_out}
    derived_warnings = [
        f"lead {lead} is printed on the page but its trace could not be read; left out"
        for lead in LEADS if lead in shown and lead not in present and lead not in explained
    ]
    for lead, sig in derived.items():
        signals[LEADS.index(lead)] = sig
        quality[LEADS.index(lead)] = _DERIVED_QUALITY
        derived_warnings.append(
            f"lead {lead} not read from the page; derived from the other limb leads"
        )
    calib = results[0].calibration
    derived_warnings += limit_notes
    # The reading's evidence decides how far each lead can be trusted (< 0.5: not).
    judged = quality_model.lead_quality(quality_model.lead_evidence(
        signals, options.fs, quality, panels, calib))
    quality = [0.0 if not np.isfinite(signals[i]).any()
               else min(q, _DERIVED_QUALITY) if lead in derived else q
               for i, (lead, q) in enumerate(zip(LEADS, judged, strict=True))]
    if derived_warnings:
        calib = Calibration(**{**calib.__dict__,
                               "warnings": tuple(calib.warnings) + tuple(derived_warnings)})
    if len(results) > 1 or errors:
        warnings = list(calib.warnings) + [f"skipped {e}" for e in errors]
        layouts = "/".join(r.calibration.layout for r in results)
        calib = Calibration(**{**calib.__dict__, "warnings": tuple(warnings), "layout": layouts})
    if not np.isfinite(signals).any():
        raise DigitizationError("no lead could be digitized from any page")
    return ECG(signals=signals, fs=options.fs, quality=tuple(quality), calibration=calib,
               panels=tuple(panels), source=source)


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
    homography, angle, rectified = _rectify_homography(ink.any_ink, warnings)
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
        masks = learned_masks(seg, dark_ink, ppm_x, ppm_y, has_grid)
        mask, pulse_mask = masks.trace, masks.pulse_search
        rows = find_rows(mask, ppm_x, ppm_y)
    else:
        mask, rows = _trace_mask_and_rows(dark_ink, ppm_x, ppm_y, has_grid)
        pulse_mask = mask
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
        path = refine_with_core(path, _pen_core(mask, path.line_width, cores))
        if _is_straight_line(path, ppm_y):
            continue
        pulse = find_pulse(path, ppm_x, ppm_y)
        pulse_path = path
        if pulse is None:
            # Rows are found where ink stays near the baseline; a pulse drawn without a
            # foot line (a bare rectangle) lies just before that start.
            lead_in = _lead_in_path(pulse_mask, row, ppm_x, ppm_y)
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
            row_gap = _gap_after_pulse(pulse_path, start_pulses[-1], ppm_x)
            if row_gap is not None:
                signal_gaps.append(row_gap)
        spans.append((x_origin, x_end))
        _erase_path(erased, path, pad=max(1, int(round(0.15 * ppm_y))))
        _erase_thin(thin_erased, path)
        if pulse is not None:
            x0p = pulse.x_rise - pulse_path.x0
            x1p = min(int(pulse.x_fall) - pulse_path.x0 + 2, pulse_path.y.size)
            _erase_columns(erased, pulse_path, x0p, x1p, pad=2)

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
        spans = _late_starts_to_common_origin(spans, ppm_x)
        spans = _first_ink_to_first_sample(
            spans, ppm_x, float(np.median([timebase.pen_width(p) for p in paths])))
    if not rows:
        raise DigitizationError(f"page {page_index + 1}: only straight lines found, no traces")
    # Most rows' signal starts a printer-specific gap after the pulse's fall.
    gap = float(np.median(signal_gaps)) if 2 * len(signal_gaps) > len(falls) else 0.0
    if not has_grid and not dpi:
        scale = _scale_from_row_length(spans, from_fall, gap, ppm_x)
        if scale is not None:
            ppm_x = ppm_y = scale
            warnings[warnings.index(_PAGE_WIDTH_SCALE_WARNING)] = (
                "no grid found: scale taken from the length of the trace rows (250 mm)"
            )
    if speed_source == "default":
        pulse_speed = _speed_from_pulses([p for p in start_pulses if p is not None], ppm_x)
        if pulse_speed is not None:
            speed, speed_source = pulse_speed, "pulse"
    # The pen's horizontal width is best seen on the pulse's vertical edges.
    edges = [p.edge_px for p in start_pulses if p is not None]
    pen_px = float(np.median(edges)) if edges else None
    max_shift = max(_MAX_ROW_END_SHIFT_MM * ppm_x, gap + 1.0 * ppm_x)
    if not falls:
        # No pulse marks time 0: the first ink may be a pulse not recognised as one
        # (0.2 s) or stray ink before the trace; full rows' ends still tell the origin.
        max_shift = max(max_shift, (_PULSE_SECONDS * speed + 1.0) * ppm_x)
    shifted = _origins_from_row_ends(spans, paths, ppm_x * speed, ppm_x,
                                     expected_s=_STANDARD_TRACE_MM / speed, pen_px=pen_px,
                                     max_shift_px=max_shift)
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
        warnings.append("paper speed 25 mm/s assumed")

    # Labels.
    all_labels: list[list[LabelWord]] = []
    for row, (_x_origin, x_end) in zip(rows, spans, strict=True):
        region = (int(row.x_start - 15 * ppm_x), row.top, int(x_end), row.bottom)
        all_labels.append(find_label_words(erased, region, ppm_y, baseline=row.baseline))
    all_labels = _consistent_labels(all_labels, [r.baseline for r in rows], ppm_y)
    row_slots: list[list[PanelSlot]] = []
    any_label = any(all_labels)
    row_length = _typical_row_length([e - o for o, e in spans])
    n_columns = choose_columns(all_labels, [o for o, _e in spans], row_length, ppm_x)
    for labels, (x_origin, _x_end) in zip(all_labels, spans, strict=True):
        slots = assign_panels(labels, x_origin, row_length, n_columns, ppm_x) if any_label else []
        row_slots.append(slots)
    if any_label:
        row_slots = _unique_leads(row_slots)
        row_slots = _unlabelled_rows(row_slots, spans, row_length)
        row_slots = _reread_missing_labels(row_slots, rows, all_labels, thin_erased,
                                           mask & (1 - thin_erased), ppm_x)
        row_slots = fill_missing_leads(row_slots)
        row_slots = _complete_standard_layout(row_slots, all_labels, spans, row_length, ppm_x,
                                              warnings)
    else:
        _check_unlabelled_page(has_grid, row_length, ppm_x, page_index,
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
        row_slots = _standard_layout_rows(rows, spans, options, has_grid, row_length, ppm_x,
                                          page_index)
        warnings.append("no lead labels readable: standard lead order assumed")
    elif len({s.lead for r in row_slots for s in r if s.lead}) < _MIN_LEADS_PER_PAGE:
        n_warnings = len(warnings)
        row_slots = _few_labels_standard_rows(row_slots, all_labels, rows, spans, options,
                                              has_grid, row_length, ppm_x, page_index, warnings)
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
        baseline = _row_baseline(path, row)
        if pulse is not None and (
            abs(pulse.foot_y - baseline) <= _MAX_FOOT_TO_MODE_MM * ppm_y
            and abs(pulse.height_px / median_pulse_h - 1.0) <= 0.15
        ):
            baseline = pulse.foot_y
        for slot in slots:
            start_s = (slot.x0 - x_origin) / px_per_s
            duration_s = (slot.x1 - slot.x0) / px_per_s
            ys = _panel_values(path, slot, ppm_x, first=slot.column == 0,
                               last=slot.column == slot.columns - 1)
            if pulse is not None and slot.column == 0:
                _blank_pulse_fall(ys, path, slot, pulse)
            mv = (baseline - ys) / (ppm_y * gain)
            n_needed = max(n_total, int(np.ceil((start_s + duration_s) * fs)) + 1)
            samples = postprocess.place_samples(mv, slot.x0, x_origin, px_per_s, fs, n_needed)
            found = float(np.isfinite(ys).mean()) if ys.size else 0.0
            q = found * (0.5 + 0.5 * min(1.0, slot.label_score)) if any_label else 0.3 * found
            info = PanelInfo(
                lead=slot.lead, page=page_index,
                box=(float(slot.x0), float(row.top), float(slot.x1), float(row.bottom)),
                baseline_px=float(baseline), start_s=float(start_s), duration_s=float(duration_s),
                rhythm_strip=slot.columns == 1 and len(rows) > 1 and _is_rhythm(row_slots, slot),
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
        row_slots = _strip_names_from_panels(row_slots, candidates, rows)
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
            result.signals, result.panels, columns, n_total, _STANDARD_TRACE_MM / speed)
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


def _trace_mask_and_rows(dark_ink: np.ndarray, ppm_x: float, ppm_y: float, has_grid: bool
                         ) -> tuple[np.ndarray, list[TraceRow]]:
    """Trace-ink mask and its trace rows, at the first convincing ink threshold.

    When the ink above the first candidate threshold is mostly grid lines (a grid as
    dark as the traces), the grid lines are removed from the darkness map first; if
    that map gives no convincing rows, the thresholds are tried on the original map,
    passing over those whose mask is mostly grid. When none is convincing (noisy
    traces have few flat pieces), the threshold whose rows show the most trace is
    kept, or the first choice (its failure is reported by the caller).
    """
    lines = grid_line_map(dark_ink, ppm_x, ppm_y) if has_grid else None
    thresholds = threshold_candidates(dark_ink, ppm_x if has_grid else np.nan,
                                      ppm_y if has_grid else np.nan)
    if lines is not None and is_grid_mask(dark_ink, lines, thresholds[0]):
        cleaned = without_dark_grid(dark_ink, ppm_x, ppm_y)
        found, tried = _first_convincing(cleaned, None, ppm_x, ppm_y, has_grid)
        if found is None:
            found, _ = _first_convincing(dark_ink, lines, ppm_x, ppm_y, has_grid)
        if found is not None:
            return found
        dark_ink = cleaned
        thresholds = threshold_candidates(dark_ink, ppm_x, ppm_y)
    else:
        found, tried = _first_convincing(dark_ink, None, ppm_x, ppm_y, has_grid)
        if found is not None:
            return found
    usable = [t for t in tried if t[1] and len(t[1]) <= _MAX_PLAUSIBLE_ROWS]
    if usable:
        threshold, rows = max(usable, key=lambda t: _median_trace_seen(t[1]))
        return trace_mask(dark_ink, threshold, ppm_x), rows
    mask = trace_mask(dark_ink, thresholds[0], ppm_x)
    return mask, find_rows(mask, ppm_x, ppm_y)


def _first_convincing(dark_ink: np.ndarray, lines: np.ndarray | None, ppm_x: float,
                      ppm_y: float, has_grid: bool
                      ) -> tuple[tuple[np.ndarray, list[TraceRow]] | None,
                                 list[tuple[float, list[TraceRow]]]]:
    """Mask and rows at the first candidate threshold giving plausible trace rows.

    Also returns the rows of every threshold tried (those not passed over as grid).
    """
    tried: list[tuple[float, list[TraceRow]]] = []
    for threshold in threshold_candidates(dark_ink, ppm_x if has_grid else np.nan,
                                          ppm_y if has_grid else np.nan):
        if lines is not None and is_grid_mask(dark_ink, lines, threshold):
            continue
        mask = trace_mask(dark_ink, threshold, ppm_x)
        rows = find_rows(mask, ppm_x, ppm_y)
        tried.append((threshold, rows))
        if rows and len(rows) <= _MAX_PLAUSIBLE_ROWS and _median_coverage(rows) \
                >= _MIN_ROW_COVERAGE:
            return (mask, rows), tried
    return None, tried


def _rectify_homography(any_ink: np.ndarray, warnings: list[str]
                        ) -> tuple[np.ndarray, float, bool]:
    """Homography from the input page to the frame where the grid lines are axis-aligned.

    Perspective (keystone) is removed first, then rotation; a photographed page may
    also leave the two grid-line families non-perpendicular (shear), which an affine
    alignment of each family with its axis removes.

    Parameters
    ----------
    any_ink : numpy.ndarray
        Darkness map of the input page (grid visible).
    warnings : list of str
        Receives a note when perspective or shear is corrected.

    Returns
    -------
    tuple
        ``(homography, rotation_deg, rectified)``: the 3x3 input->rectified matrix,
        the page rotation (counter-clockwise positive) and whether the matrix differs
        from the identity.
    """
    h, w = any_ink.shape
    angle = estimate_rotation(any_ink)
    notes: list[str] = []
    keystone = estimate_perspective(any_ink, angle)
    if keystone is not None:
        # Photographed at an angle: make the grid lines parallel, then align them.
        framed = warp_image(any_ink, keystone, (w, h), fill=0.0)
        # A strong keystone is measured on bent lines: measure what is left once.
        residual = estimate_perspective(framed, angle)
        if residual is not None:
            keystone = residual @ keystone
            framed = warp_image(any_ink, keystone, (w, h), fill=0.0)
        notes.append("perspective corrected from the grid lines")
    else:
        framed, keystone = any_ink, np.eye(3)
    axes = estimate_axes(framed, _rotation_after(keystone, angle, (w, h)))
    if axes is not None:
        notes.append(f"shear of {axes[1] - axes[0]:+.2f} deg between grid lines corrected")
        angle = -axes[0]
        align = axis_alignment_homography(any_ink.shape, *axes)
    else:
        if framed is not any_ink:
            angle = estimate_rotation(framed)
        align = rotation_homography(any_ink.shape, angle)
    homography = align @ keystone
    rotation = rotation_homography(any_ink.shape, angle)
    if _largest_corner_shift(homography, rotation, (w, h)) < _MIN_GEOMETRY_CORRECTION_PX:
        # Keystone and shear corrections this small are not worth a resampling (on a
        # small scan they cost more than they give): the page is only rotated.
        homography, notes = rotation, []
    warnings.extend(notes)
    return homography, angle, not np.allclose(homography, np.eye(3))


def _largest_corner_shift(a: np.ndarray, b: np.ndarray, size: tuple[int, int]) -> float:
    """Largest distance (pixels) between where two homographies put a page corner."""
    w, h = size
    corners = np.array([[0.0, w, 0.0, w], [0.0, 0.0, h, h], [1.0, 1.0, 1.0, 1.0]])
    pa, pb = a @ corners, b @ corners
    return float(np.abs(pa[:2] / pa[2] - pb[:2] / pb[2]).max())


def _rotation_after(homography: np.ndarray, angle_deg: float, size: tuple[int, int]) -> float:
    """Rotation (counter-clockwise positive) of the page's horizontal lines after a warp.

    A keystone correction also turns the lines near the page centre by up to a couple
    of degrees; this is where the line directions are searched for afterwards.
    """
    w, h = size
    centre = np.array([w / 2.0, h / 2.0, 1.0])
    t = np.radians(-angle_deg)
    ahead = centre + 50.0 * np.array([np.cos(t), np.sin(t), 0.0])
    p, q = homography @ centre, homography @ ahead
    d = q[:2] / q[2] - p[:2] / p[2]
    return -float(np.degrees(np.arctan2(d[1], d[0])))


def _origins_from_row_ends(
    spans: list[tuple[float, float]], paths: list[TracePath], px_per_s: float, ppm: float,
    expected_s: float = STANDARD_DURATION_S, pen_px: float | None = None,
    max_shift_px: float | None = None,
) -> list[tuple[float, float]] | None:
    """Correct the rows' time origin from where full 10 s rows end.

    Printers leave a device-specific gap (0 to a few mm) between the calibration
    pulse and the signal, but a full row (250 mm: 10 s at 25 mm/s, 5 s at 50 mm/s)
    ends exactly `expected_s` after its start. For every row whose extent is within
    2.5 % of that the implied origin is computed; the largest (from the longest row,
    0.75 mm to `max_shift_px`, default 3 mm; beyond 3 mm only when two rows end
    together) is applied to every row, as rows can only be cut short. Returns None
    when no shift is found.
    """
    if max_shift_px is None:
        max_shift_px = _MAX_ROW_END_SHIFT_MM * ppm
    deltas = []
    for (x_origin, x_end), path in zip(spans, paths, strict=True):
        pen = pen_px if pen_px is not None else path.line_width
        x_last = x_end - 0.5 - 0.5 * pen
        total = (x_last - x_origin) / px_per_s
        if abs(total - expected_s) <= _ROW_END_SNAP_S * expected_s / STANDARD_DURATION_S:
            deltas.append(x_last - (expected_s - _LAST_SAMPLE_S) * px_per_s - x_origin)
    if len(deltas) < 2:
        return None
    arr = np.sort(np.asarray(deltas))[::-1]
    # Rows are only ever cut short (page edges, faded ink, a last wave lost in the
    # next panel's marker), never longer: the longest full row is the one to trust;
    # rows agreeing with it (within 0.5 mm) refine the estimate.
    agree = np.abs(arr - arr[0]) <= 0.5 * ppm
    shift = float(np.median(arr[agree]))
    if not 0.75 * ppm < abs(shift) <= max_shift_px:
        return None
    if abs(shift) > _MAX_ROW_END_SHIFT_MM * ppm and agree.sum() < 2:
        return None  # a large shift needs two rows ending together
    return [(o + shift, e) for o, e in spans]


def _gap_after_pulse(path: TracePath, pulse: CalibrationPulse, ppm_x: float) -> float | None:
    """Distance (px) from a pulse's fall to the row's first signal sample, if there is a gap.

    Printers leave a device-specific blank gap (0 to a few mm) between the calibration
    pulse and the signal; the signal's time origin is where its ink starts again (the
    centre of the pen's first column). Returns None when the trace runs on from the
    pulse or when the gap is implausibly short or long.
    """
    pen = max(pulse.edge_px, 1.0)
    c = int(np.ceil(pulse.x_fall + 0.5 * pen)) - path.x0
    n = path.y.size
    if not 0 <= c < n:
        return None
    empty = ~np.isfinite(path.y[c:])
    if not empty[: int(np.ceil(pen)) + 1].any():
        return None  # the trace continues from the pulse's foot
    first_empty = int(np.argmax(empty))
    inked = np.nonzero(~empty[first_empty:])[0]
    if inked.size == 0:
        return None
    start = path.x0 + c + first_empty + int(inked[0]) + 0.5 * (pen - 1.0)
    gap = start - pulse.x_fall
    if not _MIN_PULSE_GAP_MM * ppm_x <= gap <= _MAX_PULSE_GAP_MM * ppm_x:
        return None
    return float(gap)


def _speed_from_pulses(pulses: list[CalibrationPulse], ppm_x: float) -> float | None:
    """Paper speed from the calibration pulses' width (0.2 s: 5 mm at 25, 10 mm at 50 mm/s).

    Returns None when no pulse was found or their width matches neither speed.
    """
    if not pulses:
        return None
    width_mm = float(np.median([(p.x_fall - p.x_rise) / ppm_x for p in pulses]))
    for speed in (25.0, 50.0):
        nominal = _PULSE_SECONDS * speed
        if 0.75 * nominal <= width_mm <= 1.3 * nominal:
            return speed
    return None


def _scale_from_row_length(
    spans: list[tuple[float, float]], from_fall: set[int], gap: float, ppm: float
) -> float | None:
    """Horizontal scale (px/mm) from full trace rows, for a page without a grid.

    A full row of a standard printout is 250 mm long (10 s at 25 mm/s, 5 s at
    50 mm/s). When the typical row, measured with the assumed scale `ppm`, is off
    from that by more than row ends cut short explain but less than
    :data:`_ROW_LENGTH_SCALE_TOLERANCE`, it is the better ruler: the page size
    behind the assumed scale was wrong (A4 rather than letter, a scan's margins).
    """
    lengths = [e - (o + gap if i in from_fall else o) for i, (o, e) in enumerate(spans)]
    if not lengths:
        return None
    row_length = _typical_row_length(lengths)
    misfit = abs(row_length / ppm / _STANDARD_TRACE_MM - 1.0)
    if not _ROW_LENGTH_SCALE_MIN_MISFIT < misfit <= _ROW_LENGTH_SCALE_TOLERANCE:
        # Close to the assumed scale: rows cut short (faint ends) would only distort it.
        return None
    return float(row_length / _STANDARD_TRACE_MM)


def _median_coverage(rows: list[TraceRow]) -> float:
    """Median fraction of their columns in which the rows' trace was seen."""
    return float(np.median([r.coverage for r in rows])) if rows else 0.0


def _median_trace_seen(rows: list[TraceRow]) -> float:
    """Median number of columns in which the rows' trace was seen."""
    return float(np.median([r.coverage * (r.x_end - r.x_start) for r in rows]))


def _typical_row_length(lengths: list[float]) -> float:
    """The rows' common length: the longest, unless it alone sticks out by over 3 %."""
    arr = sorted(lengths, reverse=True)
    if len(arr) >= 3 and arr[0] > 1.03 * arr[1] and arr[1] <= 1.03 * arr[2]:
        return float(arr[1])
    return float(arr[0])


def _unique_leads(row_slots: list[list[PanelSlot]]) -> list[list[PanelSlot]]:
    """A lead is printed once in the multi-panel grid: a name read twice is doubtful.

    Every copy loses its name; the labels are then read again where they stand
    (:func:`_reread_missing_labels`) or inferred from their column group. (Rhythm
    strips, rows of one panel, may repeat a lead of the grid.)
    """
    seen: dict[str, int] = {}
    for r in row_slots:
        for s in r:
            if s.lead and s.columns > 1:
                seen[s.lead] = seen.get(s.lead, 0) + 1
    out = []
    for r in row_slots:
        row = []
        for s in r:
            if s.lead and s.columns > 1 and seen[s.lead] > 1:
                s = PanelSlot("", s.column, s.columns, s.x0, s.x1, 0.0)
            row.append(s)
        out.append(row)
    return out


def _complete_standard_layout(
    row_slots: list[list[PanelSlot]], all_labels: list[list[LabelWord]],
    spans: list[tuple[float, float]], row_length: float, ppm_x: float, warnings: list[str],
) -> list[list[PanelSlot]]:
    """Name the panels whose labels were unreadable from the standard layout the read ones fit.

    Only used when the labels leave leads unnamed; the read labels (words found in
    the rows and labels re-read at panel starts) must all agree with one standard
    arrangement (:func:`ecgbridge.digitizer.layout.complete_standard_layout`).
    Named-from-layout panels keep a label score of 0 (lower quality) and are listed
    in a warning.
    """
    named = {s.lead for r in row_slots for s in r if s.lead}
    if len(named) >= len(LEADS):
        return row_slots
    evidence = [LabelEvidence(i, float(w.box[0]), w.lead, w.score)
                for i, words in enumerate(all_labels) for w in words]
    # Labels re-read at a panel start (not among the words found in the row).
    evidence += [LabelEvidence(i, float(s.x0), s.lead, s.label_score)
                 for i, r in enumerate(row_slots) for s in r
                 if s.lead and s.label_score > 0 and all(w.lead != s.lead for w in all_labels[i])]
    completion = complete_standard_layout(evidence, spans, row_slots, row_length, ppm_x)
    if completion is None:
        return row_slots
    if completion.inferred:
        warnings.append(
            f"leads {', '.join(completion.inferred)} named from the standard "
            f"{completion.arrangement} layout; their labels were unreadable"
        )
    for read, expected in completion.misreads:
        warnings.append(
            f"a label read as {read} was taken as {expected} (standard "
            f"{completion.arrangement} layout)"
        )
    log.debug("layout completed to %s from %d agreeing labels", completion.arrangement,
              completion.agreeing)
    return completion.rows


def _standard_layout_rows(
    rows: list[TraceRow], spans: list[tuple[float, float]], options: DigitizeOptions,
    has_grid: bool, row_length: float, ppm_x: float, page_index: int,
) -> list[list[PanelSlot]]:
    """Panels of the standard layout for the page's number of full rows (labels unread).

    Raises
    ------
    NotAnEcgError
        No grid, or rows too short for an ECG printout.
    DigitizationError
        The number of rows matches no standard layout.
    """
    _check_unlabelled_page(has_grid, row_length, ppm_x, page_index, hint_vouches=False)
    row_slots: list[list[PanelSlot]] = [[] for _ in rows]
    std_rows = [i for i, row in enumerate(rows) if row.coverage > 0.5]
    hinted_rows = _HINT_ROWS.get(options.layout)
    if hinted_rows is not None and len(std_rows) > hinted_rows:
        # The user's layout hint: keep the longest-covered rows, top to bottom.
        best = sorted(std_rows, key=lambda i: -rows[i].coverage)[:hinted_rows]
        std_rows = sorted(best)
    for k, i in enumerate(std_rows):
        x_origin, x_end = spans[i]
        row_slots[i] = standard_panels(k, len(std_rows), x_origin, x_end)
    if not any(row_slots):
        raise DigitizationError(
            f"page {page_index + 1}: no lead labels could be read and the {len(rows)} trace "
            "rows match no standard layout"
        )
    return row_slots


def _check_unlabelled_page(has_grid: bool, row_length: float, ppm_x: float,
                           page_index: int, hint_vouches: bool) -> None:
    """Refuse a page without any readable label that does not look like an ECG printout.

    With `hint_vouches` (a user's layout hint was given), a page without grid is not
    refused for that.

    Raises
    ------
    NotAnEcgError
        No grid (and no hint), or rows too short for an ECG printout.
    """
    if not has_grid and not hint_vouches:
        raise NotAnEcgError(
            f"page {page_index + 1}: no ECG grid and no lead labels found; "
            "this does not look like an ECG printout"
        )
    if row_length / ppm_x < _MIN_UNLABELLED_ROW_MM:
        raise NotAnEcgError(
            f"page {page_index + 1}: no lead labels found and the longest trace row is only "
            f"{row_length / ppm_x:.0f} mm long; this does not look like an ECG printout"
        )


def _strip_names_from_panels(
    row_slots: list[list[PanelSlot]], candidates: dict[str, list[tuple[np.ndarray, float,
                                                                   PanelInfo]]],
    rows: list[TraceRow],
) -> list[list[PanelSlot]]:
    """Give unread rhythm-strip slots the name their trace was identified as (or drop them)."""
    names = {(int(info.box[0]), int(info.box[1])): lead
             for lead, items in candidates.items() for _s, _q, info in items}
    out = []
    for row, slots in zip(rows, row_slots, strict=True):
        kept = []
        for s in slots:
            if not s.lead:
                lead = names.get((s.x0, int(row.top)))
                if lead is None:
                    continue
                s = PanelSlot(lead, s.column, s.columns, s.x0, s.x1, s.label_score)
            kept.append(s)
        out.append(kept)
    return out


def _late_starts_to_common_origin(
    spans: list[tuple[float, float]], ppm_x: float
) -> list[tuple[float, float]]:
    """Without calibration pulses, move rows that start late to the page's common origin.

    The rows of a printout start at one x; a row found to start well after the
    others (its first waves faint or lost) but ending with them starts there too.
    The common origin is where most rows start together (stray ink before one row's
    trace does not move it), else the earliest start that two rows share.
    """
    tol = _LATE_START_MM * ppm_x
    starts = sorted(o for o, _e in spans)
    shared = [a for a, b in zip(starts, starts[1:], strict=False) if b - a <= tol]
    if not shared:
        return spans
    common = timebase.consensus_start(np.array(starts), timebase.SAME_START_MM * ppm_x)
    common = shared[0] if common is None else common
    end = float(np.median([e for _o, e in spans]))
    out = []
    for o, e in spans:
        if o - common > tol and abs(e - end) <= tol and o < common + 0.5 * (end - common):
            o = common
        out.append((o, e))
    return out


def _first_ink_to_first_sample(
    spans: list[tuple[float, float]], ppm_x: float, pen_px: float = 1.0
) -> list[tuple[float, float]]:
    """Without pulses, give the rows that start together their first sample's column.

    Rows of a page start at one x, but a row whose first samples are faint or lie on a
    steep wave is found to start a pixel or two late, and stray ink can make one start
    early; rows starting within :data:`_LATE_START_MM` of the median start share the
    start most of them agree on (:func:`timebase.first_sample_origin`, the earliest
    of them when no two agree), moved in by half the pen's width `pen_px`.
    """
    if not spans:
        return spans
    tol = _LATE_START_MM * ppm_x
    starts = np.array([o for o, _e in spans])
    together = np.abs(starts - np.median(starts)) <= tol
    if not together.any():
        return spans
    origin = timebase.first_sample_origin(starts[together], ppm_x, pen_px)
    if origin is None:
        origin = float(starts[together].min()) + 0.5 * max(pen_px - 1.0, 0.0)
    return [(origin if ok else o, e) for ok, (o, e) in zip(together, spans, strict=True)]


def _few_labels_standard_rows(
    row_slots: list[list[PanelSlot]], all_labels: list[list[LabelWord]], rows: list[TraceRow],
    spans: list[tuple[float, float]], options: DigitizeOptions, has_grid: bool,
    row_length: float, ppm_x: float, page_index: int, warnings: list[str],
) -> list[list[PanelSlot]]:
    """Too few labels to name the page: the standard layout its rows imply, unless contradicted.

    Each label read (other than a lone "I" stroke, which grid remnants imitate) that
    sits at the start of a standard panel is compared with that panel's lead: the same
    lead agrees, a look-alike of the same family ("II" for "III", "V2" for "V3") is a
    misread, any other lead contradicts. Words away from every panel start are not
    labels. The standard layout is used unless contradictions outnumber agreements;
    otherwise, or when no standard layout fits the rows, the labelled panels are
    returned unchanged (and the page is refused for too few leads).
    """
    try:
        standard = _standard_layout_rows(rows, spans, options, has_grid, row_length, ppm_x,
                                         page_index)
    except (NotAnEcgError, DigitizationError):
        return row_slots
    agree = misread = contra = 0
    for words, slots in zip(all_labels, standard, strict=True):
        for w in words:
            if w.lead == "I":
                continue
            near = [s for s in slots if abs(w.box[0] - s.x0) <= max(
                6.0 * ppm_x, 0.12 * (s.x1 - s.x0))]
            if not near or not near[0].lead:
                continue
            if near[0].lead == w.lead:
                agree += 1
            elif w.lead in _look_alikes(near[0].lead):
                misread += 1
            else:
                contra += 1
    if contra > agree:
        return row_slots
    read = sorted({w.lead for words in all_labels for w in words if w.lead != "I"})
    evidence = (f"{len(read)} lead label(s) readable ({', '.join(read)}; {agree} agree, "
                f"{misread} look-alike, {contra} contradict)" if read
                else "no lead label readable")
    warnings.append(
        f"{evidence}: standard lead order of a {_rows_description(standard)} page assumed"
    )
    return standard


def _look_alikes(lead: str) -> frozenset[str]:
    """Lead names printed much like `lead` (its family in :data:`LOOK_ALIKE_FAMILIES`)."""
    return next((f for f in LOOK_ALIKE_FAMILIES if lead in f), frozenset())


def _rows_description(row_slots: list[list[PanelSlot]]) -> str:
    """How many rows of how many panels, e.g. ``"3 rows of 4 panels + 1 strip"``."""
    multi = [r for r in row_slots if len(r) > 1]
    strips = [r for r in row_slots if len(r) == 1]
    if not multi:
        return f"{len(strips)}-row"
    text = f"{len(multi)}x{len(multi[0])}"
    return text + (f" + {len(strips)} strip(s)" if strips else "")


def _unlabelled_rows(
    row_slots: list[list[PanelSlot]], spans: list[tuple[float, float]], row_length: float
) -> list[list[PanelSlot]]:
    """Give rows where no label was read the page's usual number of (unnamed) panels.

    Only rows between labelled multi-panel rows (or above them) get panels: a last
    unlabelled row under a 3x4 grid is more likely a rhythm strip, whose lead cannot
    be inferred.
    """
    counts = [len(r) for r in row_slots if len(r) > 1]
    if not counts:
        return row_slots
    n = max(set(counts), key=counts.count)
    last_multi = max(i for i, r in enumerate(row_slots) if len(r) > 1)
    out = [list(r) for r in row_slots]
    for i, r in enumerate(out):
        if r or i > last_multi:
            continue
        x_origin, x_end = spans[i]
        if x_end - x_origin < 0.5 * row_length:
            continue
        col_w = row_length / n
        out[i] = [
            PanelSlot("", k, n, int(round(x_origin + k * col_w)),
                      int(round(x_origin + (k + 1) * col_w)), 0.0)
            for k in range(n)
        ]
    return out


def _is_straight_line(path: TracePath, ppm_y: float) -> bool:
    """True for a ruler line or page edge: no vertical excursion at all."""
    y = path.y[np.isfinite(path.y)]
    return y.size > 0 and float(np.percentile(y, 99) - np.percentile(y, 1)) < 0.3 * ppm_y


def _is_rhythm(row_slots: list[list[PanelSlot]], slot: PanelSlot) -> bool:
    return any(len(r) > 1 for r in row_slots)


def _consistent_labels(
    all_labels: list[list[LabelWord]], baselines: list[float], ppm: float
) -> list[list[LabelWord]]:
    """Keep label words that look like the page's labels.

    Lead labels of one page share their size and their vertical offset from the
    trace baseline; the reference is taken from multi-character labels (aVR, V1...),
    which random ink rarely imitates. Single "I"-like strokes must also score high.
    """
    multi = [
        (w.box[3] - w.box[1], w.box[1] - base)
        for row, base in zip(all_labels, baselines, strict=True)
        for w in row if len(w.lead) > 1 and w.score > 0.7
    ]
    if not multi:
        # Lone "I"-like strokes (pulse edges, ticks) without any real label: no labels.
        return [[] for _ in all_labels]
    ref_h = float(np.median([m[0] for m in multi]))
    ref_dy = float(np.median([m[1] for m in multi]))
    strict_dy = len(multi) >= 3
    if not strict_dy:
        # Too few real labels to vouch for lone vertical strokes read as "I".
        all_labels = [[w for w in row if w.lead != "I"] for row in all_labels]
    out = []
    for row, base in zip(all_labels, baselines, strict=True):
        keep = []
        for w in row:
            if not 0.7 <= (w.box[3] - w.box[1]) / ref_h <= 1.4:
                continue
            if len(w.lead) == 1 and w.score < 0.7:
                continue
            # Rows' resting levels differ from where printers put labels by up to several
            # mm, so only lone strokes ("I") are held to the page's label offset.
            if (len(w.lead) == 1 and strict_dy
                    and abs((w.box[1] - base) - ref_dy) > max(1.5 * ppm, 0.5 * ref_h)):
                continue
            keep.append(w)
        out.append(keep)
    return out


def _row_baseline(path: TracePath, row: TraceRow) -> float:
    """0-mV row of a row without pulse: the most frequent trace level."""
    y = path.y[np.isfinite(path.y)]
    if y.size < 10:
        return row.baseline
    hist = np.bincount(np.round(y - y.min()).astype(np.int64))
    k = int(np.argmax(np.convolve(hist, np.ones(3), mode="same")))
    return float(y.min() + k)


def _panel_values(path: TracePath, slot: PanelSlot, ppm_x: float, first: bool,
                  last: bool) -> np.ndarray:
    """Trace rows of a panel's columns, with lead-change markers at inner edges blanked.

    A marker drawn across the trace makes the columns next to the panel edge tall
    vertical runs; those (up to ``_BOUNDARY_BLANK_MM`` from the edge) carry no signal.
    """
    a = slot.x0 - path.x0
    b = slot.x1 - path.x0
    ys = np.full(slot.x1 - slot.x0, np.nan)
    lo, hi = max(a, 0), min(b, path.y.size)
    if hi > lo:
        ys[lo - a: hi - a] = path.y[lo:hi]
    blank = int(round(_BOUNDARY_BLANK_MM * ppm_x))
    if blank:
        # Only the marker's columns are blanked: tall vertical strokes next to the edge.
        tall = np.zeros(ys.size, dtype=bool)
        if hi > lo:
            heights = path.bottom[lo:hi] - path.top[lo:hi]
            tall[lo - a: hi - a] = heights > 2.5 * path.line_width + 1
        if not first:
            hits = np.nonzero(tall[:blank])[0]
            if hits.size:
                ys[: hits[-1] + 2] = np.nan
        if not last:
            hits = np.nonzero(tall[ys.size - blank:])[0]
            if hits.size:
                ys[ys.size - blank + hits[0] - 1:] = np.nan
    return ys


def _blank_pulse_fall(ys: np.ndarray, path: TracePath, slot: PanelSlot,
                      pulse: CalibrationPulse) -> None:
    """Blank the calibration pulse's falling edge where it reaches into the first panel.

    The pen has a width, so the vertical stroke of the pulse's fall covers a few
    columns after ``x_fall``; read as signal it would give a 1 mV spike at the start
    of the row. Columns up to half a pen width (plus one) past the fall, and
    following columns whose ink still spans the pulse from top to foot (a fall
    blurred wider than the pen), are not signal; a QRS right after the fall is.
    """
    pen = max(pulse.edge_px, path.line_width, 1.0)
    end = int(np.ceil(pulse.x_fall + 0.5 * pen)) + 1 - slot.x0
    limit = min(ys.size, end + int(np.ceil(2 * pen)))
    top = pulse.foot_y - pulse.height_px
    slack = max(2.0, pen)
    k = max(0, end)
    while k < limit:
        c = slot.x0 + k - path.x0
        if not 0 <= c < path.y.size:
            break
        # Still the fall (blurred wider than the pen) only while the ink spans the
        # pulse from top to foot; a QRS right after it is signal.
        if abs(path.top[c] - top) > slack or abs(path.bottom[c] - pulse.foot_y) > slack:
            break
        k += 1
    ys[: max(0, min(k, ys.size))] = np.nan


def _erase_thin(mask: np.ndarray, path: TracePath) -> None:
    """Erase only the pen line of the path (not whole tall runs, which may touch labels)."""
    half = int(np.ceil(path.line_width / 2.0)) + 1
    h = mask.shape[0]
    ok = np.nonzero(np.isfinite(path.y))[0]
    for c in ok:
        t, b = path.top[c], path.bottom[c]
        if b - t <= 2.5 * path.line_width + 1:
            y = int(round(path.y[c]))
            mask[max(0, y - half): min(h, y + half + 1), path.x0 + c] = 0
        else:
            mask[max(0, int(t) - 1): min(h, int(b) + 2), path.x0 + c] = 0


def _reread_missing_labels(
    row_slots: list[list[PanelSlot]], rows: list[TraceRow], all_labels: list[list[LabelWord]],
    mask: np.ndarray, erased_by_trace: np.ndarray, ppm: float,
) -> list[list[PanelSlot]]:
    """Read the label of unnamed panels where the page's other labels say it must be.

    Labels sit at the same offset from their panel start and baseline all over a
    page; the expected box is cut from a mask where only the pen line of the traces
    was erased (labels touching a trace keep their shape) and read directly.
    """
    offsets = []
    for row, slots, labels in zip(rows, row_slots, all_labels, strict=True):
        for s in slots:
            for lw in labels:
                if lw.lead == s.lead and s.x0 - 8 * ppm <= lw.box[0] < s.x1:
                    offsets.append((lw.box[0] - s.x0, lw.box[1] - row.baseline,
                                    lw.box[3] - lw.box[1]))
    if not offsets:
        return row_slots
    dx, dy, hh = (float(v) for v in np.median(np.asarray(offsets), axis=0))
    named = {s.lead for r in row_slots for s in r if s.lead}
    out = [list(r) for r in row_slots]
    h, w = mask.shape
    for row, slots in zip(rows, out, strict=True):
        for j, s in enumerate(slots):
            if s.lead:
                continue
            x0 = int(max(0, s.x0 + dx - 1.0 * ppm))
            y0 = int(max(0, row.baseline + dy - 0.3 * hh))
            x1 = int(min(w, x0 + 4.0 * hh + 2.0 * ppm))
            y1 = int(min(h, row.baseline + dy + 1.3 * hh))
            crop = mask[y0:y1, x0:x1]
            if crop.size == 0:
                continue
            found = _word_in_crop(crop, hh)
            if found is None:
                continue
            _word, (_wy0, _wy1, wx0, _wx1) = found
            allowed = {lead for lead in LEADS if lead not in named}
            valid = erased_by_trace == 0
            lead, score = read_label_at(mask, valid, x0 + wx0, int(round(row.baseline + dy)), hh,
                                        allowed)
            if lead and lead not in named and score >= _REREAD_MIN_SCORE:
                slots[j] = PanelSlot(lead, s.column, s.columns, s.x0, s.x1, score)
                named.add(lead)
    return out


def _word_in_crop(
    crop: np.ndarray, height: float
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The label-sized glyphs of a crop, cropped to their joint box."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, dtype=bool)
    for k in range(1, n):
        gh = stats[k, cv2.CC_STAT_HEIGHT]
        if 0.4 * height <= gh <= 1.35 * height and stats[k, cv2.CC_STAT_WIDTH] <= 2.5 * height:
            keep[k] = True
    if not keep.any():
        return None
    sel = keep[labels]
    ys, xs = np.nonzero(sel)
    # Glyphs of one word: keep the leftmost cluster (gaps below one glyph height).
    order = np.unique(xs)
    gaps = np.nonzero(np.diff(order) > 0.8 * height)[0]
    x_stop = order[gaps[0]] if gaps.size else order[-1]
    sel[:, x_stop + 1:] = False
    ys, xs = np.nonzero(sel)
    if ys.size == 0:
        return None
    box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    return sel[box[0]: box[1], box[2]: box[3]].astype(np.uint8), box


def _pen_core(mask: np.ndarray, line_width: float, cache: dict[int, np.ndarray]) -> np.ndarray:
    """The ink mask eroded to the pen strokes' cores (cached per kernel size)."""
    k = pen_core_kernel(line_width)
    if k not in cache:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        cache[k] = cv2.erode(mask, kernel) if k > 1 else mask
    return cache[k]


def _lead_in_path(mask: np.ndarray, row: TraceRow, ppm_x: float,
                  ppm_y: float) -> TracePath | None:
    """The trace just before and at a row's start, where a calibration pulse may stand."""
    x0 = max(0, int(row.x_start - _PULSE_LEAD_IN_MM * ppm_x))
    x1 = int(row.x_start + 2.0 * ppm_x)
    if row.x_start - x0 < 2.0 * ppm_x:
        return None
    return follow_trace(mask, x0, x1, row.trace_top, row.trace_bottom, row.baseline, ppm_y)


def _erase_path(mask: np.ndarray, path: TracePath, pad: int) -> None:
    _erase_columns(mask, path, 0, path.y.size, pad)


def _erase_columns(mask: np.ndarray, path: TracePath, c0: int, c1: int, pad: int) -> None:
    h = mask.shape[0]
    for c in range(max(c0, 0), min(c1, path.y.size)):
        t, b = path.top[c], path.bottom[c]
        if np.isfinite(t):
            mask[max(0, int(t) - pad): min(h, int(b) + pad + 1), path.x0 + c] = 0
