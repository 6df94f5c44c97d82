"""The raster pipeline's stages hand each other frozen results."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ecgbridge.digitizer.calibration_check import GainDecision
from ecgbridge.digitizer.merge import PageResult
from ecgbridge.digitizer.page_layout import PageLayout
from ecgbridge.digitizer.panels import PanelSignals
from ecgbridge.digitizer.rectify import RectifiedPage
from ecgbridge.digitizer.row_reading import RowReadings
from ecgbridge.digitizer.rows import PageRow
from ecgbridge.digitizer.scale import PageScale, measure_scale
from ecgbridge.digitizer.timebase import TimeBase
from ecgbridge.digitizer.trace_ink import TraceInk

STAGE_RESULTS = (RectifiedPage, PageScale, TraceInk, RowReadings, PageRow, TimeBase,
                 GainDecision, PageLayout, PanelSignals, PageResult)


@pytest.mark.parametrize("kind", STAGE_RESULTS, ids=lambda k: k.__name__)
def test_every_stage_result_is_a_frozen_dataclass(kind: type) -> None:
    assert dataclasses.is_dataclass(kind)
    assert kind.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_a_page_without_grid_says_where_its_scale_came_from() -> None:
    blank = np.zeros((400, 1120), dtype=np.float32)  # no grid to measure
    by_dpi = measure_scale(blank, 200.0)
    assert by_dpi.source == "dpi" and not by_dpi.has_grid
    assert by_dpi.px_per_mm_x == pytest.approx(200.0 / 25.4)
    assert by_dpi.note == "no grid found: scale taken from the rendering resolution (200 dpi)"
    by_width = measure_scale(blank, None)
    assert by_width.source == "page width"
    assert by_width.px_per_mm_x == pytest.approx(1120 / 279.4)
    assert "page width (279.4 mm, US letter)" in by_width.note
    assert "length of the trace rows" in dataclasses.replace(by_width, source="row length").note
    assert PageScale(8.0, 8.0, "grid").note == ""


def test_the_speed_note_is_said_only_for_an_assumed_speed() -> None:
    scale = PageScale(8.0, 8.0, "grid")
    assert TimeBase((), scale, 25.0, "default").note == "paper speed 25 mm/s assumed"
    assert TimeBase((), scale, 50.0, "pulse").note == ""
    assert TimeBase((), scale, 25.0, "user").note == ""
