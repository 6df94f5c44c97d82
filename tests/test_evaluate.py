"""`ecgbridge evaluate` end to end on real fixture records, and the evaluation figures."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ecgbridge.cli import main
from ecgbridge.ecg import ECG, LEADS
from ecgbridge.encode.csv_format import write_csv
from ecgbridge.encode.wfdb_format import read_wfdb, write_wfdb
from ecgbridge.errors import EcgBridgeError
from ecgbridge.report.evaluate import evaluate, pair_by_name, pairs_from_manifest, record_name
from ecgbridge.report.metrics import ErrorHistogram

#: 3x4 layout windows (samples at 500 Hz) with a lead II rhythm strip.
WINDOWS_3X4 = {
    **{lead: [0, 1250] for lead in ("I", "III")},
    "II": [0, 5000],
    **{lead: [1250, 2500] for lead in ("aVR", "aVL", "aVF")},
    **{lead: [2500, 3750] for lead in ("V1", "V2", "V3")},
    **{lead: [3750, 5000] for lead in ("V4", "V5", "V6")},
}


def _copy_record(records_dir: Path, name: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for ext in ("hea", "dat"):
        shutil.copy(records_dir / f"{name}.{ext}", dest / f"{name}.{ext}")


def _windowed(signals: np.ndarray) -> np.ndarray:
    out = np.full_like(signals, np.nan)
    for j, lead in enumerate(LEADS):
        s, e = WINDOWS_3X4[lead]
        out[j, s:e] = signals[j, s:e]
    return out


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def pair_folders(tmp_path: Path, records_dir: Path) -> tuple[Path, Path]:
    """REF with three records; PRED with a noisy copy, a 250 Hz CSV lacking V6, and an orphan."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for name in ("E07506", "HR06004", "JS20005"):
        _copy_record(records_dir, name, ref)
    rng = np.random.default_rng(7)
    a = read_wfdb(ref / "E07506")
    write_wfdb(a.replace(signals=a.signals + rng.normal(0, 0.05, a.signals.shape)), pred, "E07506")
    b = read_wfdb(ref / "HR06004")
    half = np.array(b.signals[:, ::2])
    half[LEADS.index("V6")] = np.nan
    write_csv(ECG(signals=half, fs=250.0), pred, "HR06004")
    write_wfdb(a, pred, "ORPHAN")  # no reference of that name
    return pred, ref


@pytest.mark.usefixtures("matplotlib_installed")
def test_evaluate_pairs_by_name_and_reports_mismatches(
    pair_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, ref = pair_folders
    out = tmp_path / "report"
    rc = main(["evaluate", str(pred), str(ref), "--out", str(out), "--no-progress"])
    assert rc == 1  # some pairs could not be scored
    err = capsys.readouterr().err
    assert "MISSING-REFERENCE ORPHAN" in err
    assert "MISSING-PREDICTION JS20005" in err
    assert "HR06004: prediction at 250 Hz resampled to the reference's 500 Hz" in err
    assert "prediction lacks leads V6" in err

    rows = {r["record"]: r for r in _read_csv_rows(out / "metrics.csv")}
    assert rows["ORPHAN"]["status"] == "missing-reference"
    assert rows["JS20005"]["status"] == "missing-prediction"
    assert rows["E07506"]["status"] == "ok" and rows["HR06004"]["status"] == "ok"
    # white noise of 50 uV on real leads: SNR well above 0 and far below the cap
    assert 5.0 < float(rows["E07506"]["snr_db"]) < 40.0
    assert int(rows["E07506"]["leads_scored"]) == 12
    assert int(rows["HR06004"]["leads_scored"]) == 11  # V6 not predicted -> not scored here
    # decimation by 2 then linear interpolation back is close but not exact
    assert float(rows["HR06004"]["snr_db"]) > 15.0
    assert float(rows["HR06004"]["pearson"]) > 0.95

    leads = _read_csv_rows(out / "metrics_leads.csv")
    assert {r["lead"] for r in leads if r["record"] == "E07506"} == set(LEADS)

    doc = json.loads((out / "metrics.json").read_text())
    assert doc["summary"]["records"] == 2
    assert doc["summary"]["missing_prediction"] == 1
    assert doc["summary"]["missing_reference"] == 1
    assert set(doc["per_lead"]["mae_mv"]) == set(LEADS)
    assert sum(doc["error_histogram"]["counts"]) > 0

    for name in ("overlay", "error_histogram", "correlation_heatmap", "mae_per_lead"):
        image = cv2.imread(str(out / f"{name}.png"))
        assert image is not None and image.shape[0] > 200
        assert float(image.std()) > 10.0  # not blank
    html = (out / "index.html").read_text()
    for name in ("overlay.png", "error_histogram.png", "correlation_heatmap.png",
                 "mae_per_lead.png", "E07506", "missing-reference", "aligned SNR"):
        assert name in html


def test_evaluate_one_pair_of_files(records_dir: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    _copy_record(records_dir, "A1983", ref)
    truth = read_wfdb(ref / "A1983")
    write_csv(truth, tmp_path, "digitized")
    out = tmp_path / "one"
    rc = main(["evaluate", str(tmp_path / "digitized.csv"), str(ref / "A1983.hea"),
               "--out", str(out), "--no-figures"])
    assert rc == 0
    (row,) = _read_csv_rows(out / "metrics.csv")
    assert row["record"] == "digitized"
    # CSV keeps 0.1 uV: the error is rounding only
    assert float(row["snr_db"]) > 55.0
    assert float(row["shift_s"]) == 0.0
    assert not (out / "overlay.png").exists()
    assert (out / "index.html").exists()


@pytest.mark.usefixtures("matplotlib_installed")
def test_set_manifest_scores_only_visible_windows(records_dir: Path, tmp_path: Path) -> None:
    set_dir, records, pred = tmp_path / "set", tmp_path / "records", tmp_path / "pred"
    set_dir.mkdir()
    for name in ("E07506", "HR06004", "JS20005"):
        _copy_record(records_dir, name, records)
    manifest = [
        {"image": "page_a.png", "record": "E07506", "windows": WINDOWS_3X4},
        {"image": "page_b.jpg", "record": "HR06004", "windows": WINDOWS_3X4},
        {"image": "page_c.png", "record": "JS20005", "windows": WINDOWS_3X4},
        {"image": "page_d.png", "record": "E07506", "windows": WINDOWS_3X4},
    ]
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    a = read_wfdb(records / "E07506")
    # page_a: exact inside the windows, garbage outside (must not count)
    garbage = np.where(np.isnan(_windowed(np.array(a.signals))), 5.0, a.signals)
    write_wfdb(a.replace(signals=garbage), pred, "page_a")
    # page_b: lags the truth by 40 samples (0.08 s) and sits 0.3 mV high; the page shows
    # each lead's window, drawn 40 samples late
    b = np.array(read_wfdb(records / "HR06004").signals)
    lagged = np.full_like(b, np.nan)
    for j, lead in enumerate(LEADS):
        s, e = WINDOWS_3X4[lead]
        lagged[j, s + 40 : e + 40] = b[j, s : e - 40 if e + 40 > b.shape[1] else e] + 0.3
    write_wfdb(ECG(signals=lagged, fs=500.0), pred, "page_b")
    # page_c: no prediction -> counted as 0 mV; page_d: unreadable -> also 0 mV
    (pred / "page_d.csv").write_text("this is not, a record\n")

    out = tmp_path / "report"
    rc = main(["evaluate", str(pred), str(set_dir), "--records", str(records), "--out", str(out),
               "--record", "page_b"])
    assert rc == 1  # page_c missing
    rows = {r["record"]: r for r in _read_csv_rows(out / "metrics.csv")}
    assert float(rows["page_a"]["snr_db"]) == 60.0  # only windows scored: exact (1 uV steps)
    assert float(rows["page_b"]["aligned_snr_db"]) == 60.0
    assert float(rows["page_b"]["shift_s"]) == pytest.approx(0.08)
    assert float(rows["page_b"]["snr_db"]) < 5.0
    # missing prediction: sum(g^2) / sum((g - 0)^2) = 1 -> exactly 0 dB
    assert float(rows["page_c"]["snr_db"]) == 0.0
    assert rows["page_c"]["status"] == "missing-prediction"
    assert float(rows["page_d"]["snr_db"]) == 0.0
    assert rows["page_d"]["status"] == "error"
    assert "scored as 0 mV" in rows["page_d"]["notes"]
    assert (out / "overlay.png").exists()
    assert "record page_b" in (out / "index.html").read_text()


@pytest.mark.usefixtures("matplotlib_installed")
def test_unknown_overlay_record_is_reported(pair_folders: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    pred, ref = pair_folders
    rc = main(["evaluate", str(pred), str(ref), "--out", str(tmp_path / "r"),
               "--record", "NOPE", "--no-progress"])
    assert rc == 1
    assert "--record NOPE: no record of that name" in capsys.readouterr().err
    assert (tmp_path / "r" / "metrics.json").exists()


def test_metrics_work_without_matplotlib(pair_folders: tuple[Path, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pred, ref = pair_folders
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    from ecgbridge.report.figures import require_matplotlib

    with pytest.raises(EcgBridgeError, match=r"install ecgbridge\[plot\]"):
        require_matplotlib()
    out = tmp_path / "nomp"
    rc = main(["evaluate", str(pred), str(ref), "--out", str(out), "--no-progress"])
    assert rc == 1
    assert "install ecgbridge[plot]" in capsys.readouterr().err
    assert len(_read_csv_rows(out / "metrics.csv")) == 4
    assert not (out / "overlay.png").exists()


def test_record_name_strips_suffix_and_format_tag() -> None:
    assert record_name(Path("x/E07506.hea")) == "E07506"
    assert record_name(Path("page_01.fhir-r4.json")) == "page_01"
    assert record_name(Path("a.b.csv")) == "a.b"


def test_pairing_and_evaluate_api(pair_folders: tuple[Path, Path]) -> None:
    pred, ref = pair_folders
    pairs = pair_by_name(pred, ref)
    assert [p.name for p in pairs] == ["E07506", "HR06004", "JS20005", "ORPHAN"]
    report = evaluate(pairs)
    assert [r.status for r in report.results] == [
        "ok", "ok", "missing-prediction", "missing-reference"]
    median = report.median_record()
    assert median is not None and median.name in ("E07506", "HR06004")
    with pytest.raises(EcgBridgeError, match="manifest"):
        pairs_from_manifest(pred, ref)


# --------------------------------------------------------------------------- figure content
@pytest.fixture()
def matplotlib_installed() -> None:
    pytest.importorskip("matplotlib")


@pytest.mark.usefixtures("matplotlib_installed")
def test_overlay_figure_has_all_leads(record_signals) -> None:  # type: ignore[no-untyped-def]
    from ecgbridge.report.figures import figure_text, overlay_figure

    signals, fs = record_signals("E07506")
    fig = overlay_figure(signals, signals * 0.9, fs, title="E07506")
    text = figure_text(fig)
    assert sorted(t for t in text["titles"] if t in LEADS) == sorted(LEADS)
    assert len(fig.axes) == 12
    assert "time (s)" in text["xlabels"] and "mV" in text["ylabels"]
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and np.isfinite(ax.lines[2].get_ydata()).sum() == signals.shape[1]


@pytest.mark.usefixtures("matplotlib_installed")
def test_mae_bar_chart_has_one_bar_per_lead() -> None:
    from ecgbridge.report.figures import figure_text, mae_bar_figure

    values = {lead: 0.01 * (i + 1) for i, lead in enumerate(LEADS)}
    values["V6"] = math.nan
    fig = mae_bar_figure(values)
    (ax,) = fig.axes
    assert len(ax.patches) == 12
    heights = [p.get_height() for p in ax.patches]  # type: ignore[attr-defined]
    assert heights[:3] == pytest.approx([0.01, 0.02, 0.03])
    assert figure_text(fig)["xticks"] == list(LEADS)
    assert [t.get_text() for t in ax.texts][-1] == "n/a"


@pytest.mark.usefixtures("matplotlib_installed")
def test_heatmap_and_histogram_content() -> None:
    from ecgbridge.report.figures import (
        correlation_heatmap_figure,
        error_histogram_figure,
        figure_text,
    )

    r = np.linspace(-1, 1, 36).reshape(3, 12)
    r[1, 4] = np.nan
    fig = correlation_heatmap_figure(["a", "b", "c"], r)
    text = figure_text(fig)
    assert text["xticks"][:12] == list(LEADS)
    assert text["yticks"][:3] == ["a", "b", "c"]
    shown = fig.axes[0].images[0].get_array()
    assert shown is not None and shown.shape == (3, 12)
    assert bool(np.ma.getmaskarray(shown)[1, 4])  # the NaN cell is masked (drawn grey)
    with pytest.raises(ValueError, match=r"\(2, 12\)"):
        correlation_heatmap_figure(["a", "b"], r)
    h = ErrorHistogram()
    h.add(np.random.default_rng(0).normal(0, 0.1, 1000))
    fig = error_histogram_figure(h)
    (ax,) = fig.axes
    assert len(ax.patches) == h.n_bins
    assert "1000 samples" in ax.get_title()
    assert ax.get_xlabel().startswith("prediction")


def test_dicom_prediction_against_fhir_reference(records_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ecgbridge.encode.readers")
    from ecgbridge.encode.registry import write_outputs
    from ecgbridge.report.evaluate import find_records

    truth = read_wfdb(records_dir / "JS20005")
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    write_outputs(truth, pred, "JS20005", ["dicom", "json"])  # json = digitizer summary
    write_outputs(truth, ref, "JS20005", ["fhir-r4", "json"])
    assert find_records(pred)["JS20005"].name == "JS20005.dcm"
    assert find_records(ref)["JS20005"].name == "JS20005.fhir-r4.json"
    report = evaluate(pair_by_name(pred, ref))
    (result,) = report.results
    assert result.status == "ok" and result.score is not None
    assert result.score.leads_scored == 12
    assert result.score.snr_db > 50.0  # both formats keep about 1 uV


def test_csv_without_time_column_spans_the_reference(records_dir: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    _copy_record(records_dir, "E07506", ref)
    truth = np.array(read_wfdb(ref / "E07506").signals)
    pred = tmp_path / "pred"
    pred.mkdir()
    rows = truth[:, ::4].T  # 1250 rows for 10 s: 125 Hz, no time column
    lines = [",".join(LEADS)] + [",".join(f"{v:.4f}" for v in row) for row in rows]
    (pred / "E07506.csv").write_text("\n".join(lines) + "\n")
    (result,) = evaluate(pair_by_name(pred, ref)).results
    assert result.score is not None
    assert any("CSV without time_s" in n for n in result.notes)
    assert result.score.shift_s == 0.0
    assert result.score.means["pearson"] > 0.9  # placed at the right times


def test_partial_reference_is_scored_where_both_are_defined(records_dir: Path,
                                                             tmp_path: Path) -> None:
    truth = read_wfdb(records_dir / "HR06004")
    ref_signals = np.array(truth.signals)
    ref_signals[:, :1000] = np.nan  # the reference lacks the first 2 s
    write_wfdb(truth.replace(signals=ref_signals), tmp_path / "ref", "HR06004")
    write_wfdb(truth, tmp_path / "pred", "HR06004")
    (result,) = evaluate(pair_by_name(tmp_path / "pred", tmp_path / "ref")).results
    assert result.score is not None and result.score.leads_scored == 12
    assert result.score.lead("II").n_samples == 4000
    assert result.score.snr_db == 60.0
