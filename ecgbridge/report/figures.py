"""Evaluation figures (matplotlib, optional extra ``plot``).

Every builder returns a :class:`matplotlib.figure.Figure` made without pyplot (no global
state, no display needed, safe in threads); :func:`save_figure` renders it with the Agg
canvas. matplotlib is imported lazily: :func:`require_matplotlib` raises a clear
:class:`~ecgbridge.errors.EcgBridgeError` when it is missing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgbridge.ecg import LEADS
from ecgbridge.errors import EcgBridgeError
from ecgbridge.fsutil import write_bytes_atomic
from ecgbridge.report.metrics import ErrorHistogram, LeadScore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ecgbridge.report.evaluate import EvaluationReport, RecordPair, RecordResult

#: Colours of the reference and the reconstruction in every figure.
REFERENCE_COLOUR = "black"
PREDICTION_COLOUR = "tab:red"

#: Resolution of saved figures.
FIGURE_DPI = 110

#: Above this many records the heatmap drops its per-record tick labels.
_MAX_LABELLED_RECORDS = 60

#: Standard 6x2 arrangement of the overlay figure (rows of (left, right) leads).
_OVERLAY_GRID = (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"),
                 ("aVF", "V6"))


def require_matplotlib() -> None:
    """Import matplotlib or raise an EcgBridgeError saying how to install it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise EcgBridgeError(
            "figures need matplotlib, which is not installed: install ecgbridge[plot] "
            "(pip install 'ecgbridge[plot]')"
        ) from exc


def _new_figure(width_in: float, height_in: float) -> Figure:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = FIGURE_DPI) -> Path:
    """Render `fig` to a PNG at `path` (atomically) and return the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return write_bytes_atomic(path, buf.getvalue(), fsync=False)


def overlay_figure(
    reference: np.ndarray,
    prediction: np.ndarray,
    fs: float,
    windows: Sequence[np.ndarray] | None = None,
    title: str = "",
    lead_notes: Mapping[str, str] | None = None,
) -> Figure:
    """Reference vs reconstruction, all 12 leads (6 rows x 2 columns).

    Parameters
    ----------
    reference, prediction : numpy.ndarray
        ``(12, n)`` arrays in mV on the same time grid (prediction NaN where undefined).
    fs : float
        Sampling rate in Hz.
    windows : sequence of numpy.ndarray, optional
        Scored sample indices per lead; the reference is drawn grey outside them.
    title : str
        Figure title (record name and scores).
    lead_notes : Mapping, optional
        Lead name -> text shown after the lead name (e.g. its SNR).
    """
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(prediction, dtype=np.float64)
    if ref.shape != pred.shape or ref.shape[0] != len(LEADS):
        raise ValueError(f"overlay_figure: need two (12, n) arrays, got {ref.shape}, {pred.shape}")
    t = np.arange(ref.shape[1]) / fs
    fig = _new_figure(13.0, 10.0)
    axes = fig.subplots(len(_OVERLAY_GRID), 2, sharex=True)
    for row, pair in enumerate(_OVERLAY_GRID):
        for col, lead in enumerate(pair):
            ax = axes[row][col]
            j = LEADS.index(lead)
            shown = np.zeros(ref.shape[1], dtype=bool)
            if windows is not None and windows[j].size:
                shown[windows[j]] = True
            elif windows is None:
                shown[:] = True
            ax.plot(t, np.where(shown, np.nan, ref[j]), color="0.7", lw=0.6)
            ax.plot(t, np.where(shown, ref[j], np.nan), color=REFERENCE_COLOUR, lw=0.8,
                    label="reference")
            ax.plot(t, pred[j], color=PREDICTION_COLOUR, lw=0.8, alpha=0.85,
                    label="reconstruction")
            ax.set_title(lead, loc="left", fontsize=10, fontweight="bold")
            if lead_notes and lead_notes.get(lead):
                ax.set_title(lead_notes[lead], loc="right", fontsize=8)
            ax.set_ylabel("mV")
            ax.grid(True, lw=0.3, alpha=0.5)
            if row == len(_OVERLAY_GRID) - 1:
                ax.set_xlabel("time (s)")
    axes[0][1].legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "reference vs reconstruction")
    return fig


def error_histogram_figure(histogram: ErrorHistogram, title: str = "") -> Figure:
    """Distribution of prediction − reference over all scored, predicted samples."""
    fig = _new_figure(7.0, 4.2)
    ax = fig.subplots()
    edges = histogram.edges
    total = max(histogram.total, 1)
    ax.bar(edges[:-1], histogram.counts / total, width=np.diff(edges), align="edge",
           color="tab:blue", edgecolor="none")
    ax.set_xlabel("prediction − reference (mV)")
    ax.set_ylabel("fraction of samples")
    ax.set_title(
        title or f"error distribution: {histogram.total} samples, mean "
        f"{_num(histogram.mean_mv, 3)} mV, sd {_num(histogram.std_mv, 3)} mV"
    )
    ax.axvline(0.0, color="black", lw=0.8)
    ax.grid(True, lw=0.3, alpha=0.5)
    return fig


def correlation_heatmap_figure(record_names: Sequence[str], pearson: np.ndarray) -> Figure:
    """Pearson r per record (rows) and lead (columns); unscored cells grey."""
    r = np.asarray(pearson, dtype=np.float64)
    if r.ndim != 2 or r.shape != (len(record_names), len(LEADS)):
        raise ValueError(
            f"correlation_heatmap_figure: need a ({len(record_names)}, 12) matrix, got {r.shape}"
        )
    import matplotlib

    height = min(14.0, 2.0 + 0.25 * max(len(record_names), 4))
    fig = _new_figure(8.0, height)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="0.8")
    image = ax.imshow(np.ma.masked_invalid(r), aspect="auto", cmap=cmap, vmin=-1.0, vmax=1.0,
                      interpolation="nearest")
    ax.set_xticks(range(len(LEADS)), labels=list(LEADS))
    if len(record_names) <= _MAX_LABELLED_RECORDS:
        ax.set_yticks(range(len(record_names)), labels=list(record_names), fontsize=8)
    else:
        ax.set_ylabel(f"scored record (from 0, in metrics.csv order; {len(record_names)})")
    ax.set_xlabel("lead")
    ax.set_title("Pearson r per record and lead")
    fig.colorbar(image, ax=ax, label="Pearson r")
    return fig


def mae_bar_figure(mae_per_lead: Mapping[str, float]) -> Figure:
    """Mean absolute error per lead, one bar per lead (NaN leads drawn as 0 and marked n/a)."""
    fig = _new_figure(8.0, 4.2)
    ax = fig.subplots()
    values = [mae_per_lead.get(lead, math.nan) for lead in LEADS]
    heights = [v if math.isfinite(v) else 0.0 for v in values]
    bars = ax.bar(list(LEADS), heights, color="tab:orange")
    ax.bar_label(bars, labels=[_num(v, 3) if math.isfinite(v) else "n/a" for v in values],
                 fontsize=8)
    ax.set_xlabel("lead")
    ax.set_ylabel("MAE (mV)")
    ax.set_title("mean absolute error per lead")
    ax.grid(True, axis="y", lw=0.3, alpha=0.5)
    return fig


def _num(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def figure_text(fig: Any) -> dict[str, list[str]]:
    """Titles and tick labels of every axes of `fig` (for tests and accessibility checks)."""
    out: dict[str, list[str]] = {"titles": [], "xticks": [], "yticks": [], "xlabels": [],
                                 "ylabels": []}
    for ax in fig.axes:
        out["titles"].extend(t for t in (ax.get_title("left"), ax.get_title()) if t)
        out["xticks"].extend(t.get_text() for t in ax.get_xticklabels() if t.get_text())
        out["yticks"].extend(t.get_text() for t in ax.get_yticklabels() if t.get_text())
        out["xlabels"].append(ax.get_xlabel())
        out["ylabels"].append(ax.get_ylabel())
    return out


def write_evaluation_figures(
    report: EvaluationReport,
    pairs: Sequence[RecordPair],
    out_dir: Path,
    record: str | None = None,
) -> tuple[dict[str, Path], str | None]:
    """Write the four evaluation figures into `out_dir`.

    Parameters
    ----------
    report : EvaluationReport
        The evaluation.
    pairs : sequence of RecordPair
        The pairs that were scored (the overlay record is read again from its files).
    out_dir : Path
        Where ``overlay.png``, ``error_histogram.png``, ``correlation_heatmap.png`` and
        ``mae_per_lead.png`` go.
    record : str, optional
        Record drawn in the overlay; default the record with the median aligned SNR.

    Returns
    -------
    figures : dict
        Figure key -> path written.
    overlay_record : str or None
        Name of the record in the overlay (None when nothing could be scored).

    Raises
    ------
    EcgBridgeError
        If matplotlib is missing, or `record` names no scored record.
    """
    from ecgbridge.report.evaluate import align_pair
    from ecgbridge.report.metrics import per_lead_means

    require_matplotlib()
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    chosen = _choose_overlay_record(report, record)
    if chosen is not None and chosen.score is not None:
        pair = next(p for p in pairs if p.name == chosen.name)
        aligned = align_pair(pair)
        s = chosen.score
        title = (f"{chosen.name}: SNR {_num(s.snr_db, 2)} dB, aligned SNR "
                 f"{_num(s.aligned_snr_db, 2)} dB (shift {s.shift_s:+.3f} s), "
                 f"Pearson r {_num(s.means['pearson'], 3)}")
        notes = {ls.lead: _lead_note(ls) for ls in s.leads}
        fig = overlay_figure(aligned.reference, aligned.prediction, aligned.fs,
                             aligned.windows, title, notes)
        figures["overlay"] = save_figure(fig, out_dir / "overlay.png")
    figures["error_histogram"] = save_figure(
        error_histogram_figure(report.histogram), out_dir / "error_histogram.png")
    scored = [r for r in report.results if r.score is not None]
    if scored:
        matrix = np.array([[ls.pearson for ls in r.score.leads] for r in scored
                           if r.score is not None])
        figures["correlation_heatmap"] = save_figure(
            correlation_heatmap_figure([r.name for r in scored], matrix),
            out_dir / "correlation_heatmap.png",
        )
    figures["mae_per_lead"] = save_figure(
        mae_bar_figure(per_lead_means(report.scores, "mae_mv")), out_dir / "mae_per_lead.png")
    return figures, chosen.name if chosen is not None else None


def _lead_note(score: LeadScore) -> str:
    if not score.scored:
        return "not scored (no reference signal there)"
    if not score.predicted:
        return "not predicted"
    return f"SNR {_num(score.snr_db, 1)} dB, aligned {_num(score.aligned_snr_db, 1)} dB"


def _choose_overlay_record(report: EvaluationReport, record: str | None) -> RecordResult | None:
    if record is None:
        return report.median_record()
    for r in report.results:
        if r.name == record:
            if r.score is None:
                raise EcgBridgeError(
                    f"--record {record}: this record was not scored ({r.status}: "
                    f"{'; '.join(r.notes)})"
                )
            return r
    raise EcgBridgeError(f"--record {record}: no record of that name among the evaluated pairs")
