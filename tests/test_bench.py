"""Synthetic scored sets (ecgbridge.testing.devset) and the ``ecgbridge bench`` command."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from ecgbridge.cli import main
from ecgbridge.ecg import ECG, LEADS
from ecgbridge.report.bench import (
    BenchReport,
    PageTiming,
    find_pages,
    load_record,
    score_predictions,
)
from ecgbridge.testing.devset import list_records, plan_pages, render_set


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, records_dir):
    """Three clean pages rendered from the fixture records, with a manifest."""
    out = tmp_path_factory.mktemp("synth_set")
    manifest = render_set(records_dir, out, 3, seed=5, profile="clean")
    return out, manifest


def test_plans_are_deterministic_and_varied(records_dir):
    records = list_records(records_dir)
    a = plan_pages(records, 40, seed=7)
    b = plan_pages(records, 40, seed=7)
    assert a == b
    assert a != plan_pages(records, 40, seed=8)
    assert len({p.options["layout"] for p in a}) >= 5
    assert {p.record for p in a} == set(records)
    dpis = [p.options["dpi"] for p in a]
    assert min(dpis) >= 100 and max(dpis) <= 300
    rotations = [abs(p.options.get("rotation_deg", 0.0)) for p in a]
    assert max(rotations) <= 8.0 and sum(r > 0 for r in rotations) >= 10
    qualities = [p.options["jpeg_quality"] for p in a if "jpeg_quality" in p.options]
    assert qualities and min(qualities) >= 60 and max(qualities) <= 95
    clean = plan_pages(records, 5, seed=7, profile="clean")
    assert all(set(p.options) == {"layout", "seed", "dpi"} for p in clean)


def test_held_out_records_are_refused(tmp_path):
    holdout = tmp_path / "records-holdout"
    holdout.mkdir()
    with pytest.raises(ValueError, match="held-out"):
        list_records(holdout)


def test_rendered_set_has_a_scorer_manifest(small_set):
    out, manifest = small_set
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest and len(manifest) == 3
    for entry in manifest:
        assert (out / entry["image"]).is_file()
        assert (out / "records" / f"{entry['record']}.hea").is_file()
        assert (out / entry["meta"]).is_file()
        assert set(entry["windows"]) <= set(LEADS) and entry["windows"]
        for window in entry["windows"].values():
            pairs = [window] if isinstance(window[0], int) else window
            assert all(0 <= a < b <= entry["n_samples"] for a, b in pairs)
    assert [p.name for p in find_pages(out)] == [e["image"] for e in manifest]


def _truth_predictions(out, manifest, noise_mv=0.0):
    rng = np.random.default_rng(0)
    preds = {}
    for entry in manifest:
        signals, fs = load_record(out / "records", entry["record"])
        shown = np.full_like(signals, np.nan)
        for lead, window in entry["windows"].items():
            for a, b in [window] if isinstance(window[0], int) else window:
                row = LEADS.index(lead)
                shown[row, a:b] = signals[row, a:b] + rng.normal(0, noise_mv, b - a)
        preds[entry["image"].rsplit(".", 1)[0]] = ECG(signals=shown, fs=fs)
    return preds


def test_scoring_perfect_and_noisy_predictions(small_set):
    out, manifest = small_set
    perfect = score_predictions(_truth_predictions(out, manifest), out)
    assert perfect["summary"]["snr_db"] == pytest.approx(60.0)
    assert perfect["summary"]["missing"] == 0
    noisy = score_predictions(_truth_predictions(out, manifest, noise_mv=0.05), out)
    assert 5.0 < noisy["summary"]["snr_db"] < 30.0
    nothing = score_predictions({}, out)
    assert nothing["summary"]["snr_db"] == pytest.approx(0.0)
    assert nothing["summary"]["missing"] == 3


def test_report_statistics_use_the_pages_that_digitized():
    pages = tuple(
        PageTiming(name=f"p{i}.png", seconds=s, repeats=(s,), ok=True, traced_peak_mb=10.0 * i)
        for i, s in enumerate([0.1, 0.2, 0.3, 0.4, 1.0], start=1)
    ) + (PageTiming(name="bad.png", seconds=0.01, repeats=(0.01,), ok=False, error="X"),)
    report = BenchReport(pages=pages, repeat=1, max_rss_mb=100.0)
    assert report.failed == 1
    assert report.median_s == pytest.approx(0.3)
    assert report.p95_s == pytest.approx(0.4 + 0.8 * 0.6)
    assert report.traced_peak_mb == pytest.approx(50.0)
    assert "pages=6 failed=1 median_s=0.300" in report.summary_line()
    doc = report.to_dict()
    assert doc["failed"] == 1 and doc["pages"][5]["error"] == "X"
    assert math.isnan(BenchReport(pages=pages[5:], repeat=1, max_rss_mb=1.0).median_s)


def test_bench_command_times_scores_and_counts_failures(small_set, tmp_path, capsys):
    out, manifest = small_set
    pages = tmp_path / "pages"
    pages.mkdir()
    for entry in manifest:
        (pages / entry["image"]).write_bytes((out / entry["image"]).read_bytes())
    (pages / "zz_broken.png").write_bytes(b"not an image")
    report_path = tmp_path / "bench.json"
    code = main(["bench", str(pages), "--score", str(out), "--json", str(report_path),
                 "--no-memory", "--pred-out", str(tmp_path / "pred")])
    text = capsys.readouterr().out
    assert code == 1  # a page failed
    failed_lines = [line for line in text.splitlines() if " FAILED " in line]
    assert any(line.startswith("zz_broken.png ") for line in failed_lines)
    assert f"SUMMARY pages=4 failed={len(failed_lines)} " in text
    doc = json.loads(report_path.read_text())
    assert len(doc["pages"]) == 4
    assert doc["scores"]["summary"]["images"] == 3
    ok = [p for p in doc["pages"] if p["ok"]]
    assert len(ok) == 4 - len(failed_lines) and doc["failed"] == len(failed_lines)
    assert all(p["seconds"] > 0 for p in ok)
    assert doc["max_rss_mb"] > 0
    written = sorted(p.name for p in (tmp_path / "pred").glob("*.hea"))
    assert len(written) == len(ok)


def test_bench_checks_the_score_set_before_digitizing(small_set, tmp_path, capsys):
    out, _ = small_set
    started = time.monotonic()
    code = main(["bench", str(out), "--score", str(out), "--records", str(tmp_path),
                 "--no-memory"])
    captured = capsys.readouterr()
    assert code == 2
    assert "truth record(s) not found in" in captured.err and "--records" in captured.err
    assert " ok" not in captured.out and time.monotonic() - started < 5  # nothing digitized
    assert main(["bench", str(out), "--score", str(tmp_path)]) == 2
    assert "has no manifest.json" in capsys.readouterr().err


def test_bench_refuses_an_empty_folder(tmp_path, capsys):
    assert main(["bench", str(tmp_path)]) == 2
    assert "no page files" in capsys.readouterr().err
