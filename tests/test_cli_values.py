"""CLI rough edges: option values checked with a clear message (no traceback), no silent
overwrite of one input's outputs by another's, a summary line at the end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ecgbridge.cli import main


@pytest.mark.parametrize(("command", "option", "value", "message"), [
    ("digitize", "--fs", "-1", "argument --fs: output sampling rate must be 50-10000 Hz, got -1.0"),
    ("digitize", "--fs", "nan", "argument --fs: output sampling rate must be 50-10000 Hz, got nan"),
    ("digitize", "--gain", "0", "argument --gain: gain must be 1-100 mm/mV, got 0.0"),
    ("digitize", "--paper-speed", "0",
     "argument --paper-speed: paper speed must be 5-200 mm/s, got 0.0"),
    ("digitize", "--paper-speed", "fast", "argument --paper-speed: 'fast' is not a number"),
    ("batch", "--fs", "0",
     "argument --fs: output sampling rate must be 50-10000 Hz, got 0.0"),
    ("batch", "--workers", "0", "argument --workers: must be at least 1, got 0"),
    ("batch", "--timeout", "-5", "argument --timeout: must be a number above 0, got -5"),
    ("bench", "--repeat", "0", "argument --repeat: must be at least 1, got 0"),
])
def test_bad_option_values_get_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, option: str, value: str,
    message: str,
) -> None:
    args = [command, str(tmp_path), option, value]
    if command in ("digitize", "batch"):
        args += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exited:
        main(args)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert message in err and "Traceback" not in err, err


def test_same_named_inputs_keep_their_outputs_apart(
    rendered_page: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = Image.fromarray(rendered_page("HR06004", layout="3x4+II", dpi=100).image)
    image.save(tmp_path / "dev_05.png")
    image.save(tmp_path / "dev_05.tif")
    out = tmp_path / "out"
    code = main(["digitize", str(tmp_path / "dev_05.png"), str(tmp_path / "dev_05.tif"),
                 "--out", str(out), "--format", "json", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["dev_05.json", "dev_05_tif.json"]
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"ecgbridge: 2 of 2 inputs digitized into {out} (2 files)")
    assert "dev_05.tif -> dev_05_tif.*" in summary
