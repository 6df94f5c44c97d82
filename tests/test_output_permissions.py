"""Output files get 0666 minus the umask (as any new file), or the mode a setting fixes.

Every output kind (.dcm, .fhir-r4.json, .hea/.dat, .csv, .json, overlay .png) through
``digitize``, ``convert``, ``batch`` and the daemon's outbox (issue 12, item 6).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from vector_pdf_maker import layout_3x4_plus_ii, make_pdf

from ecgbridge.cli import main
from ecgbridge.deliver.outbox import OutboxDestination
from ecgbridge.deliver.settings import OutboxSettings
from ecgbridge.fsutil import parse_file_mode

#: Every format a page can be written in, and the suffixes they give.
PAGE_FORMATS = "dicom,fhir-r4,wfdb,csv,json,overlay"
PAGE_SUFFIXES = {".dcm", ".fhir-r4.json", ".hea", ".dat", ".csv", ".json", ".overlay.png"}
#: A umask unlike the usual 022, so that following it is seen.
UMASK = 0o027


@pytest.fixture()
def umask() -> Iterator[int]:
    old = os.umask(UMASK)
    try:
        yield UMASK
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def page_pdf(record_signals, tmp_path_factory) -> Path:
    signals, fs = record_signals("HR06004")
    path = tmp_path_factory.mktemp("pages") / "cart.pdf"
    path.write_bytes(make_pdf([layout_3x4_plus_ii(signals, fs)], fs=fs))
    return path


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


def _suffixes(names: list[str]) -> set[str]:
    return {"." + name.split(".", 1)[1] for name in names}


def test_digitize_and_convert_outputs_follow_the_umask_or_the_file_mode(
    page_pdf: Path, records_dir: Path, tmp_path: Path, umask: int
) -> None:
    expected = 0o666 & ~umask
    args = ["--format", PAGE_FORMATS, "--acquired", "2021-02-05T13:39:33", "--no-progress"]
    assert main(["digitize", str(page_pdf), "--out", str(tmp_path / "d"), *args]) == 0
    assert main(["digitize", str(page_pdf), "--out", str(tmp_path / "d_fixed"), *args,
                 "--file-mode", "0604"]) == 0
    modes, fixed = _modes(tmp_path / "d"), _modes(tmp_path / "d_fixed")
    assert _suffixes(list(modes)) == PAGE_SUFFIXES
    assert set(modes.values()) == {expected}, {k: oct(v) for k, v in modes.items()}
    assert set(fixed) == set(modes) and set(fixed.values()) == {0o604}

    record = str(records_dir / "A1983.hea")
    wave_args = ["--format", "dicom,fhir-r4,wfdb,csv,json", "--acquired", "2021-02-05T13:39"]
    assert main(["convert", record, "--out", str(tmp_path / "c"), *wave_args]) == 0
    assert main(["convert", record, "--out", str(tmp_path / "c_fixed"), *wave_args,
                 "--file-mode", "604"]) == 0
    modes, fixed = _modes(tmp_path / "c"), _modes(tmp_path / "c_fixed")
    assert _suffixes(list(modes)) == PAGE_SUFFIXES - {".overlay.png"}
    assert set(modes.values()) == {expected}
    assert set(fixed) == set(modes) and set(fixed.values()) == {0o604}


def test_a_file_mode_that_is_not_octal_is_refused_while_parsing(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["convert", "x.hea", "--out", "y", "--file-mode", "0999"])
    assert "three octal digits" in capsys.readouterr().err
    assert parse_file_mode("0o640") == parse_file_mode("640") == 0o640
    assert parse_file_mode(None) is None and parse_file_mode("") is None
    with pytest.raises(ValueError, match="quoted in YAML"):
        parse_file_mode(416)  # type: ignore[arg-type]  # YAML's reading of 0640


@pytest.mark.slow
def test_batch_workers_give_outputs_the_file_mode(page_pdf: Path, tmp_path: Path,
                                                  umask: int) -> None:
    src = tmp_path / "archive"
    src.mkdir()
    (src / "cart.pdf").write_bytes(page_pdf.read_bytes())
    for out, extra, expected in ((tmp_path / "umask", [], 0o666 & ~umask),
                                 (tmp_path / "fixed", ["--file-mode", "0600"], 0o600)):
        done = subprocess.run(
            [sys.executable, "-m", "ecgbridge", "batch", str(src), "--out", str(out),
             "--format", PAGE_FORMATS, "--workers", "1", "--no-progress", *extra],
            capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        modes = {name: mode for name, mode in _modes(out).items() if name.startswith("cart")}
        assert _suffixes(list(modes)) == PAGE_SUFFIXES
        assert set(modes.values()) == {expected}, {k: oct(v) for k, v in modes.items()}


def test_the_outbox_follows_the_umask_or_its_file_mode(page_pdf: Path, tmp_path: Path,
                                                       umask: int) -> None:
    from ecgbridge.deliver.base import DeliveryItem
    from ecgbridge.jobs.worker import DigitizeRequest, run_digitization

    formats = tuple(PAGE_FORMATS.split(","))
    done = run_digitization(DigitizeRequest(
        job_id="job-7", input_path=str(page_pdf), out_dir=str(tmp_path / "job"),
        formats=formats, record_options=(("acquisition_datetime", "2021-02-05T13:39"),)))
    assert done.ok, done.reason
    item = DeliveryItem(job_id="job-7", files=done.files)
    OutboxDestination(OutboxSettings(path=tmp_path / "a", formats=list(formats))).deliver(item)
    OutboxDestination(OutboxSettings(path=tmp_path / "b", formats=list(formats),
                                     file_mode="0600")).deliver(item)
    umasked, fixed = _modes(tmp_path / "a"), _modes(tmp_path / "b")
    assert _suffixes(list(umasked)) == PAGE_SUFFIXES
    assert set(umasked.values()) == {0o666 & ~umask}
    assert set(fixed) == set(umasked) and set(fixed.values()) == {0o600}
    with pytest.raises(ValueError, match="quoted in YAML"):
        OutboxSettings(file_mode=0o640)  # type: ignore[arg-type]
