"""End to end: render pages from real records, digitize them, compare with the truth.

Every case is a page drawn by :func:`ecgbridge.testing.render_page` from a fixture
record, handed to :func:`ecgbridge.digitize` as an RGB array with no layout hint.
The truth is exact (the renderer knows every sample's pixel), so the bounds
below are what a good classical digitizer reaches on such pages:

* strict SNR (no alignment; NaN counts as 0 mV, as in the shared scorer),
  median over the 12 leads, on each lead's visible window;
* lead identities: no output lead is clearly closer to another lead's truth than to
  its own at the same times (catches swapped or mislabelled rows);
* grid scale within 1 % and time placement: few samples outside what the page shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import ecgbridge
from ecgbridge.ecg import LEADS


@dataclass(frozen=True)
class Case:
    """One rendered page and the accuracy it must reach."""

    record: str
    render: tuple[tuple[str, Any], ...]
    min_median_snr_db: float
    layout: str | None = None  # layout name the digitizer should report, when unambiguous
    snr_xfail: str | None = None  # known shortfall of the digitizer (reason), if any


CASES: dict[str, Case] = {
    "3x4+II_200dpi": Case("HR06004", (("layout", "3x4+II"), ("dpi", 200)), 10.0, "3x4+II"),
    "3x4_150dpi": Case("E07506", (("layout", "3x4"), ("dpi", 150)), 8.0, "3x4"),
    "3x4+3_150dpi": Case(
        "A1983", (("layout", "3x4+3"), ("dpi", 150)), 10.0, "3x4+3"),
    "6x2_150dpi": Case("E07506", (("layout", "6x2"), ("dpi", 150)), 10.0, "6x2"),
    "12x1_200dpi": Case("00001_lr", (("layout", "12x1"), ("dpi", 200)), 8.0, "12x1"),
    # Jittery traces: few flat pieces, so no ink threshold looks convincing at first.
    "6x2_noisy_traces": Case("JS20005", (("layout", "6x2"), ("dpi", 200)), 6.0, "6x2"),
    # The printer leaves 4 mm between the calibration pulse and the signal.
    "6x2_pulse_gap_4mm": Case(
        "E07506", (("layout", "6x2"), ("dpi", 150), ("pulse_gap_mm", 4.0)), 10.0, "6x2"
    ),
    "3x4+II_rotated5": Case(
        "HR06004", (("layout", "3x4+II"), ("dpi", 150), ("rotation_deg", 5.0)), 8.0
    ),
    "3x4+II_120dpi_jpeg": Case(
        "E07506", (("layout", "3x4+II"), ("dpi", 120), ("jpeg_quality", 75)), 8.0
    ),
    "3x4+II_large_amplitudes": Case(
        "JS20005", (("layout", "3x4+II"), ("dpi", 150), ("grid_color", "pink")), 8.0
    ),
}

_DIGITIZED: dict[str, tuple[Any, Any]] = {}


@pytest.fixture
def digitized(request, rendered_page):
    """``(page, ecg)`` for the case named by the test's parameter (digitized once per session;
    a digitizer error is remembered and raised again rather than re-run)."""
    name = request.param
    if name not in _DIGITIZED:
        case = CASES[name]
        page = rendered_page(case.record, **dict(case.render))
        try:
            _DIGITIZED[name] = (page, ecgbridge.digitize(np.array(page.image)))
        except Exception as exc:
            _DIGITIZED[name] = (page, exc)
    page, result = _DIGITIZED[name]
    if isinstance(result, Exception):
        raise result
    return page, result


def _on_truth_grid(ecg, page) -> np.ndarray:
    """The prediction linearly interpolated onto the record's sample times."""
    t_truth = np.arange(page.n_samples) / page.fs
    t_pred = np.arange(ecg.n_samples) / ecg.fs
    out = np.full((len(LEADS), page.n_samples), np.nan)
    inside = (t_truth >= t_pred[0]) & (t_truth <= t_pred[-1])
    for j in range(len(LEADS)):
        out[j, inside] = np.interp(t_truth[inside], t_pred, ecg.signals[j])
    return out


def _lead_snrs(page, ecg) -> dict[str, float]:
    pred = _on_truth_grid(ecg, page)
    snrs = {}
    for j, lead in enumerate(LEADS):
        shown = np.isfinite(page.truth_signals[j])
        truth = page.truth_signals[j, shown]
        guess = np.nan_to_num(pred[j, shown], nan=0.0)
        noise = float(np.sum((truth - guess) ** 2))
        snrs[lead] = 60.0 if noise == 0 else min(60.0, 10 * np.log10(np.sum(truth**2) / noise))
    return snrs


def _snr_params() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=False, reason=case.snr_xfail))
        if case.snr_xfail else name
        for name, case in CASES.items()
    ]


@pytest.mark.parametrize("digitized", _snr_params(), indirect=True)
def test_median_lead_snr(digitized, request):
    page, ecg = digitized
    case = CASES[request.node.callspec.params["digitized"]]
    snrs = _lead_snrs(page, ecg)
    median = float(np.median(list(snrs.values())))
    detail = ", ".join(f"{k} {v:.1f}" for k, v in snrs.items())
    assert median >= case.min_median_snr_db, f"median lead SNR {median:.1f} dB ({detail})"


@pytest.mark.parametrize("digitized", list(CASES), indirect=True)
def test_lead_identities(digitized, record_signals, request):
    """No output lead is clearly closer to another lead's truth than to its own.

    Closeness is the RMS difference after removing the mean, over the lead's visible
    window; "clearly" means by more than 25 %, so near-identical leads of a record
    (II and aVF, V4 and V5) are not held against the digitizer.
    """
    page, ecg = digitized
    case = CASES[request.node.callspec.params["digitized"]]
    record, _ = record_signals(case.record)
    pred = _on_truth_grid(ecg, page)
    wrong = []
    for j, lead in enumerate(LEADS):
        idx = np.flatnonzero(np.isfinite(page.truth_signals[j]) & np.isfinite(pred[j]))
        if idx.size < 0.5 * np.isfinite(page.truth_signals[j]).sum():
            wrong.append(f"{lead}: only {idx.size} samples predicted")
            continue
        guess = pred[j, idx] - pred[j, idx].mean()
        rms = [float(np.sqrt(np.mean((guess - record[m, idx] + record[m, idx].mean()) ** 2)))
               for m in range(len(LEADS))]
        best = int(np.argmin(rms))
        if rms[best] < 0.75 * rms[j]:
            wrong.append(f"{lead} looks like {LEADS[best]} (RMS {rms[best]:.3f} mV vs "
                         f"{rms[j]:.3f} mV to its own truth)")
    assert len(wrong) <= 1, "; ".join(wrong)


@pytest.mark.parametrize("digitized", list(CASES), indirect=True)
def test_scale_and_time_placement(digitized):
    page, ecg = digitized
    assert ecg.fs == 500.0
    assert ecg.duration_s == pytest.approx(10.0, abs=0.05)
    cal = ecg.calibration
    assert cal.px_per_mm_x == pytest.approx(page.px_per_mm, rel=0.01)
    assert cal.px_per_mm_y == pytest.approx(page.px_per_mm, rel=0.01)
    assert cal.mm_per_mv == pytest.approx(10.0, rel=0.05)
    pred = _on_truth_grid(ecg, page)
    margin = int(0.1 * page.fs)  # 0.1 s tolerance at panel edges
    stray = 0
    total = 0
    for j in range(len(LEADS)):
        shown = np.isfinite(page.truth_signals[j]).astype(float)
        near = np.convolve(shown, np.ones(2 * margin + 1), mode="same") > 0
        finite = np.isfinite(pred[j])
        stray += int(np.sum(finite & ~near))
        total += int(np.sum(finite))
    assert total > 0
    assert stray <= 0.05 * total, f"{stray} of {total} samples lie where the page shows nothing"


@pytest.mark.parametrize(
    "digitized", [name for name, case in CASES.items() if case.layout], indirect=True
)
def test_layout_is_recognised(digitized):
    page, ecg = digitized
    assert ecg.calibration.layout == page.layout
