"""``ecgbridge digitize`` through ``ecgbridge.cli.main``: outputs, failures, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ecgbridge.cli import main
from ecgbridge.ecg import LEADS


def _save(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory, rendered_page):
    """Two good pages (PNG and JPEG), one broken file, digitized in one CLI call."""
    folder = tmp_path_factory.mktemp("inputs")
    good_png = _save(folder / "page_a.png",
                     rendered_page("E07506", layout="3x4+II", dpi=150).image)
    good_jpg = _save(folder / "page_b.jpg",
                     rendered_page("A1983", layout="3x4+II", dpi=150, jpeg_quality=85).image)
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # PNG magic, no image
    out = tmp_path_factory.mktemp("out")
    return {"inputs": [good_png, broken, good_jpg], "out": out, "broken": broken}


@pytest.fixture(scope="module")
def batch_run(batch):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["digitize", *map(str, batch["inputs"]), "--out", str(batch["out"]),
                     "--format", "wfdb,csv,json", "--no-progress"])
    return code, err.getvalue()


def test_one_bad_input_among_good_ones_exits_1_and_names_it(batch, batch_run):
    code, stderr = batch_run
    assert code == 1
    failed = [line for line in stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1, stderr
    assert failed[0].startswith(f"FAILED {batch['broken']}: ")
    assert len(failed[0]) > len(f"FAILED {batch['broken']}: ") + 5, "the reason is missing"
    assert "1 of 3 inputs failed" in stderr


def test_good_inputs_are_written_in_every_format(batch, batch_run):
    out = batch["out"]
    for stem in ("page_a", "page_b"):
        for ext in ("hea", "dat", "csv", "json"):
            assert (out / f"{stem}.{ext}").is_file(), f"{stem}.{ext} missing; {batch_run[1]}"
    assert not list(out.glob("broken.*"))


def test_csv_has_time_then_twelve_leads(batch, batch_run):
    with open(batch["out"] / "page_a.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["time_s", *LEADS]
    body = rows[1:]
    assert len(body) == 5000
    t = np.array([float(r[0]) for r in body])
    np.testing.assert_allclose(np.diff(t), 1 / 500, atol=1e-6)
    values = np.array([[float(x) if x else np.nan for x in r[1:]] for r in body])
    assert values.shape == (5000, 12)
    finite = values[np.isfinite(values)]
    assert finite.size > 12 * 1000  # every lead shows at least 2.5 s
    assert np.abs(finite).max() < 10.0  # mV, not pixels or µV


def test_wfdb_is_readable_with_12_signals_in_mv(batch, batch_run):
    import wfdb

    rec = wfdb.rdrecord(str(batch["out"] / "page_b"))
    assert rec.n_sig == 12
    assert list(rec.sig_name) == list(LEADS)
    assert all(u == "mV" for u in rec.units)
    assert rec.fs == 500
    assert rec.sig_len == 5000
    with open(batch["out"] / "page_b.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    from_csv = np.array([[float(x) if x else np.nan for x in r[1:]] for r in rows])
    both = np.isfinite(from_csv) & np.isfinite(rec.p_signal)
    assert both.sum() > 12 * 1000
    np.testing.assert_allclose(rec.p_signal[both], from_csv[both], atol=1e-3)
    assert np.array_equal(np.isfinite(from_csv), np.isfinite(rec.p_signal))


def test_json_summary_describes_the_calibration(batch, batch_run):
    doc = json.loads((batch["out"] / "page_a.json").read_text())
    assert doc["fs"] == 500.0
    assert doc["leads"] == list(LEADS)
    assert doc["calibration"]["px_per_mm_x"] == pytest.approx(150 / 25.4, rel=0.01)
    assert doc["source"]["name"] == "page_a.png"


def test_only_bad_inputs_fail_each_one(tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    out = tmp_path / "out"
    code = main(["digitize", str(empty), str(text), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"FAILED {empty}: " in err
    assert f"FAILED {text}: " in err
    assert "internal error" not in err, err
    assert not out.exists() or not any(out.iterdir())


def test_folder_without_inputs_is_a_usage_error(tmp_path, capsys):
    code = main(["digitize", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "no input files" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["digitize", "batch"])
def test_an_out_of_range_option_is_refused_once_by_name(tmp_path, capsys, command):
    page = tmp_path / "page.png"
    page.write_bytes(b"not read: the options are checked first")
    with pytest.raises(SystemExit) as exited:  # checked while parsing: a usage error
        main([command, str(page), "--out", str(tmp_path / "out"), "--fs", "20"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.count("output sampling rate must be 50-10000 Hz, got 20.0") == 1
    assert "argument --fs: " in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))
