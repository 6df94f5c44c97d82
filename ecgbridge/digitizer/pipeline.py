"""Entry point of the digitizer: pages in, one :class:`ecgbridge.ecg.ECG` out.

Vector PDF pages are handed to :mod:`ecgbridge.digitizer.vector` first when present.
A raster page is read by :func:`digitize_raster_page_with` as a sequence of stages,
each returning a frozen result:

1. :func:`ecgbridge.digitizer.rectify.rectify_page` -> ``RectifiedPage`` (ink maps
   with perspective, shear and rotation removed);
2. :func:`ecgbridge.digitizer.scale.measure_scale` -> ``PageScale`` (px/mm);
3. :func:`ecgbridge.digitizer.trace_ink.find_trace_ink` -> ``TraceInk`` (trace mask
   and rows);
4. :func:`ecgbridge.digitizer.row_reading.read_rows` -> ``RowReadings`` (one
   ``PageRow`` per row: trace, with its steep strokes read to a sub-pixel and the
   columns where another row's wave crosses it left unread; calibration pulse);
5. :func:`ecgbridge.digitizer.timebase.place_rows` -> ``TimeBase`` (time origins,
   paper speed);
6. :func:`ecgbridge.digitizer.calibration_check.decide_gain` -> ``GainDecision``;
7. :func:`ecgbridge.digitizer.page_layout.lay_out_page` -> ``PageLayout`` (labels,
   named panels);
8. :func:`ecgbridge.digitizer.panels.panel_signals` -> ``PanelSignals`` (leads);
9. the checks of :mod:`ecgbridge.digitizer.calibration_check` -> :class:`PageResult`.

The pages of a document are merged by :func:`ecgbridge.digitizer.merge.merge_pages`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ecgbridge.digitizer import (
    calibration_check,
    page_layout,
    panels,
    postprocess,
    rectify,
    row_reading,
    scale,
    timebase,
    trace_ink,
)
from ecgbridge.digitizer.consistency import choose_reading, is_implausible, is_trusted
from ecgbridge.digitizer.layout import layout_name
from ecgbridge.digitizer.merge import PageResult, merge_pages
from ecgbridge.digitizer.normalise import InkMaps, ink_maps, to_rgb
from ecgbridge.digitizer.options import DigitizeOptions
from ecgbridge.digitizer.quality import reading_trust
from ecgbridge.digitizer.segment import model_available, segment_page
from ecgbridge.ecg import ECG, Calibration, SourceInfo
from ecgbridge.errors import DigitizationError, NotAnEcgError
from ecgbridge.inputs.page import Page
from ecgbridge.standards import STANDARD_DURATION_S, STANDARD_TRACE_MM

log = logging.getLogger(__name__)

#: With ``engine="auto"``, a classical reading whose limb leads keep the laws is kept
#: without a second reading when its leads' mean quality (judged alike for both
#: engines, see :func:`ecgbridge.digitizer.quality.reading_trust`) is at least this.
#: The quality model flags a third of good leads, so a good reading's mean is about
#: 0.4 to 0.7; below 0.3 most of its leads are flagged. Measured on the training
#: pages: 0.3 keeps the gain of judging readings by their leads (aligned SNR 11.03
#: against 11.04 at 0.5) while clean 200-dpi pages are still read once (4 of the 20
#: dev pages read twice, against 9 at 0.5).
KEEP_CLASSICAL_TRUST = 0.3

#: Smallest page side accepted, in pixels.
MIN_PAGE_SIDE_PX = 150
#: Page darkness below this (99.9th percentile of the ink map) means a blank page.
_BLANK_INK_LEVEL = 0.15


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
    (see :mod:`ecgbridge.digitizer.consistency`) and whose leads the quality evidence
    trusts enough (:func:`ecgbridge.digitizer.quality.reading_trust` at least
    :data:`KEEP_CLASSICAL_TRUST`) is kept. Otherwise the learned engine reads it too
    and the reading the evidence trusts more wins; a warning states the choice and its
    evidence, or why one engine could not read the page. A reading only one engine could make is
    refused when its limb leads break the laws as unrelated traces would.
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
    trust: dict[str, float] = {}
    for engine in ("classical", "learned"):
        try:
            readings[engine] = digitize_raster_page_with(
                engine, image, options, page_index=page_index,
                debug=stages[engine] if debug is not None else None, dpi=dpi)
        except (DigitizationError, NotAnEcgError) as exc:
            errors[engine] = exc
            continue
        trust[engine] = _reading_trust(readings[engine], options.fs)
        if (engine == "classical" and is_trusted(readings[engine].signals)
                and trust[engine] >= KEEP_CLASSICAL_TRUST):
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
                            {e: str(x) for e, x in errors.items()}, trust)
    _keep_stages(debug, stages[choice.engine])
    result = readings[choice.engine]
    return replace(result, calibration=replace(
        result.calibration, warnings=(choice.warning, *result.calibration.warnings)))


def _reading_trust(result: PageResult, fs: float) -> float:
    """:func:`ecgbridge.digitizer.quality.reading_trust` of one engine's page reading."""
    return reading_trust(result.signals, result.quality, result.panels, result.calibration, fs)


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
    rgb, ink = _page_ink(image, page_index)
    page = rectify.rectify_page(rgb, ink, segment_page(rgb) if engine == "learned" else None)
    _keep_image(debug, "1_normalised", page.dark_ink)
    page_scale = scale.measure_scale(page.any_ink, dpi)
    traces = trace_ink.find_trace_ink(page, page_scale, page_index)
    _keep_image(debug, "2_grid_removed", traces.mask)
    readings = row_reading.read_rows(traces, page_scale, page_index, page.dark_ink)
    time = timebase.place_rows(readings.rows, page_scale, options.paper_speed,
                               even_scale=not page.keystoned)
    # Gain: the standard gain most rows' pulses agree on (outlier rows disregarded).
    gain = calibration_check.decide_gain(
        [r.pulse.mm_per_mv if r.pulse is not None else None for r in time.rows], options.gain)
    layout = page_layout.lay_out_page(time.rows, readings, traces.mask, time.scale, options,
                                      page_index)
    leads = panels.panel_signals(layout.rows, time, gain, layout.from_labels, options.fs,
                                 page_index)
    result = _checked_result(engine, page, time, gain, layout.notes, leads, options)
    if debug is not None:
        debug.update(postprocess.debug_images(
            rgb, page.transform, [r.row for r in leads.rows], [list(r.slots) for r in leads.rows],
            [r.path for r in leads.rows], [list(r.labels) for r in leads.rows]))
    return result


def _page_ink(image: np.ndarray, page_index: int) -> tuple[np.ndarray, InkMaps]:
    """The page as RGB and its darkness maps.

    Raises
    ------
    DigitizationError
        The page is too small.
    NotAnEcgError
        The page is blank.
    """
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_PAGE_SIDE_PX:
        raise DigitizationError(
            f"page {page_index + 1} is {w}x{h} px; at least {MIN_PAGE_SIDE_PX} px per side needed"
        )
    ink = ink_maps(rgb)
    if float(np.percentile(ink.any_ink[::4, ::4], 99.9)) < _BLANK_INK_LEVEL:
        raise NotAnEcgError(f"page {page_index + 1} is blank (no ink found)")
    return rgb, ink


def _keep_image(debug: dict[str, np.ndarray] | None, name: str, darkness: np.ndarray) -> None:
    """Store a stage's darkness map (or mask) as a grey image, when the caller asked."""
    if debug is not None:
        debug[name] = (255 - 255 * darkness).astype(np.uint8)


def _checked_result(
    engine: str, page: rectify.RectifiedPage, time: timebase.TimeBase,
    gain: calibration_check.GainDecision, layout_notes: tuple[str, ...],
    leads: panels.PanelSignals, options: DigitizeOptions,
) -> PageResult:
    """The page's leads after the calibration checks, with its calibration and warnings.

    Grid columns must have the standard width (2.5 s on a 3x4 page), else the scale
    was misread (unless the user gave the speed); no lead beyond a surface ECG's
    amplitude is delivered without a word.
    """
    notes: list[str] = []
    signals, panel_list = leads.signals, leads.panels
    ppm_x = time.scale.px_per_mm_x
    if not options.paper_speed:
        columns = max((s.columns for r in leads.rows for s in r.slots), default=1)
        n_total = int(round(STANDARD_DURATION_S * options.fs))
        timed = calibration_check.columns_to_standard_width(
            signals, panel_list, columns, n_total, STANDARD_TRACE_MM / time.speed)
        signals, panel_list, ppm_x = timed.signals, timed.panels, ppm_x * timed.factor
        notes.extend([timed.warning] if timed.warning else [])
    checked = calibration_check.check_amplitudes(signals, gain)
    notes.extend(checked.gain.warnings[len(gain.warnings):])
    warnings = (*page.notes, *[n for n in (time.scale.note,) if n], *gain.warnings,
                *[n for n in (time.note,) if n], *layout_notes, *leads.notes, *notes)
    calibration = Calibration(
        layout=layout_name([list(r.slots) for r in leads.rows if r.slots]),
        px_per_mm_x=ppm_x, px_per_mm_y=time.scale.px_per_mm_y,
        mm_per_mv=checked.gain.mm_per_mv, mm_per_s=time.speed,
        rotation_deg=page.rotation_deg, gain_source=checked.gain.source,
        speed_source=time.speed_source, method="raster", engine=engine,
        transform=(tuple(float(v) for v in page.homography.ravel()) if page.rectified
                   else ()),
        warnings=warnings,
    )
    return PageResult(
        signals=checked.signals,
        quality={lead: q for lead, q in leads.quality.items() if lead in checked.signals},
        panels=panel_list, calibration=calibration, left_out=checked.dropped,
    )
