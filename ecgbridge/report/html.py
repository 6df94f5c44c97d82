"""``index.html`` of an evaluation: summary table, figures, per-lead and per-record tables.

Static, self-contained HTML (figures are linked by relative path); every value that comes
from file names is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ecgbridge.ecg import LEADS
from ecgbridge.fsutil import write_text_atomic
from ecgbridge.report.evaluate import EvaluationReport
from ecgbridge.report.metrics import METRIC_NAMES, per_lead_means

#: Records listed in the per-record table (worst aligned SNR first) before it is cut.
MAX_RECORD_ROWS = 500

#: Human-readable metric headings.
METRIC_LABELS: dict[str, str] = {
    "snr_db": "SNR (dB)",
    "aligned_snr_db": "aligned SNR (dB)",
    "pearson": "Pearson r",
    "mae_mv": "MAE (mV)",
    "rmse_mv": "RMSE (mV)",
}

#: Figure key -> caption, in page order.
FIGURE_CAPTIONS: dict[str, str] = {
    "overlay": "Reference (black) and reconstruction (red), all 12 leads",
    "error_histogram": "Distribution of prediction − reference",
    "correlation_heatmap": "Pearson r per record and lead",
    "mae_per_lead": "Mean absolute error per lead",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}
.bad{color:#b00}
"""


def _v(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}" if math.isfinite(x) else "–"
    return html.escape(str(x))


def index_html(
    report: EvaluationReport,
    figures: Mapping[str, Path],
    overlay_record: str | None = None,
    max_rows: int = MAX_RECORD_ROWS,
) -> str:
    """Return the HTML text of the evaluation page.

    Parameters
    ----------
    report : EvaluationReport
        The evaluation.
    figures : Mapping
        Figure key (see :data:`FIGURE_CAPTIONS`) -> PNG path, relative to the page.
    overlay_record : str, optional
        Name of the record drawn in the overlay figure.
    max_rows : int
        Longest per-record table.
    """
    s = report.summary()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>ecgbridge evaluation</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>ecgbridge evaluation</h1>",
        f"<p>{s['records']} record(s) scored of {s['pairs']} pair(s); scored samples: "
        f"{html.escape(str(s['scored_samples']))}; SNR cap {s['cap_db']:g} dB; aligned SNR "
        f"shift up to ±{s['max_shift_s']:g} s with per-lead offset removal.</p>",
        "<h2>Summary</h2><table><tr>",
        *(f"<th>{METRIC_LABELS[m]}</th>" for m in METRIC_NAMES),
        "<th>missing prediction</th><th>missing reference</th><th>errors</th></tr><tr>",
        *(f"<td>{_v(s[m])}</td>" for m in METRIC_NAMES),
        f"<td>{s['missing_prediction']}</td><td>{s['missing_reference']}</td>"
        f"<td>{s['error']}</td></tr></table>",
    ]
    if figures:
        parts.append("<h2>Figures</h2>")
        for key, caption in FIGURE_CAPTIONS.items():
            if key not in figures:
                continue
            if key == "overlay" and overlay_record:
                caption = f"{caption} — record {overlay_record}"
            src = html.escape(Path(figures[key]).as_posix(), quote=True)
            parts.append(
                f'<figure><img src="{src}" alt="{html.escape(caption, quote=True)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("<h2>Per lead (mean over records)</h2><table><tr><th class='l'>metric</th>")
    parts.extend(f"<th>{lead}</th>" for lead in LEADS)
    parts.append("</tr>")
    for m in METRIC_NAMES:
        means = per_lead_means(report.scores, m)
        parts.append(f"<tr><th class='l'>{METRIC_LABELS[m]}</th>")
        parts.extend(f"<td>{_v(means[lead])}</td>" for lead in LEADS)
        parts.append("</tr>")
    parts.append("</table>")
    parts.extend(_record_table(report, max_rows))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _record_table(report: EvaluationReport, max_rows: int) -> list[str]:
    def worst_first(r: Any) -> tuple[float, str]:
        v = r.score.aligned_snr_db if r.score is not None else -math.inf
        return (v if math.isfinite(v) else -math.inf, r.name)

    rows = sorted(report.results, key=worst_first)
    cut = f", first {max_rows} of {len(rows)}" if len(rows) > max_rows else ""
    out = [f"<h2>Records (worst aligned SNR first{cut})</h2>",
           "<table><tr><th class='l'>record</th><th class='l'>status</th>",
           *(f"<th>{METRIC_LABELS[m]}</th>" for m in METRIC_NAMES),
           "<th>shift (s)</th><th>leads</th><th class='l'>notes</th></tr>"]
    for r in rows[:max_rows]:
        cls = "" if r.status == "ok" else " bad"
        cells = [f"<td class='l'>{html.escape(r.name)}</td>",
                 f"<td class='l{cls}'>{html.escape(r.status)}</td>"]
        if r.score is not None:
            cells.extend(f"<td>{_v(r.score.means[m])}</td>" for m in METRIC_NAMES)
            cells.append(f"<td>{_v(r.score.shift_s)}</td><td>{r.score.leads_scored}</td>")
        else:
            cells.extend("<td>–</td>" for _ in range(len(METRIC_NAMES) + 2))
        cells.append(f"<td class='l'>{html.escape('; '.join(r.notes))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return out


def write_index_html(
    report: EvaluationReport,
    out_dir: Path,
    figures: Mapping[str, Path],
    overlay_record: str | None = None,
) -> Path:
    """Write ``out_dir/index.html``; figure paths are made relative to `out_dir`."""
    relative = {}
    for key, path in figures.items():
        p = Path(path)
        try:
            relative[key] = p.relative_to(out_dir)
        except ValueError:
            relative[key] = p
    text = index_html(report, relative, overlay_record)
    return write_text_atomic(out_dir / "index.html", text, fsync=False)
