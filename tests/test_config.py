"""Configuration of ``ecgbridge serve``: defaults, YAML, environment, flags, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from ecgbridge.cli import main
from ecgbridge.config import (
    DEFAULT_AE_TITLE,
    DEFAULT_DICOM_PORT,
    RetrySettings,
    Settings,
    env_overrides,
    load_settings,
)
from ecgbridge.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "ecgbridge.example.yaml"


def test_embedded_defaults_match_the_issue() -> None:
    s = load_settings(None, environ={})
    assert s.inbox.path == Path("inbox")
    assert s.deliver.outbox.path == Path("outbox")
    assert s.state.path == Path("state")
    assert s.dicom.port == DEFAULT_DICOM_PORT == 11112
    assert s.dicom.host == "127.0.0.1"
    assert s.dicom.ae_title == DEFAULT_AE_TITLE == "ECGBRIDGE"
    assert s.http.host == "127.0.0.1"
    assert s.logging.include_patient_ids is False
    assert s.encode_formats() == ["dicom", "fhir-r4", "json"]


def test_yaml_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "dicom:\n  port: 2000\n  ae_title: FROMFILE\ninbox:\n  path: /data/in\n"
        "retry:\n  max_attempts: 3\n",
        encoding="utf-8",
    )
    env = {
        "ECGBRIDGE_DICOM__PORT": "3000",
        "ECGBRIDGE_DICOM__REQUIRE_CALLING_AET": "[CART1, CART2]",
    }
    s = load_settings(cfg, environ=env)
    assert s.dicom.port == 3000  # environment beats the file
    assert s.dicom.ae_title == "FROMFILE"
    assert s.dicom.require_calling_aet == ["CART1", "CART2"]
    assert s.inbox.path == Path("/data/in")
    assert s.retry.max_attempts == 3
    s2 = load_settings(cfg, environ=env, overrides={"dicom.port": 4000, "dicom.host": None})
    assert s2.dicom.port == 4000  # a flag beats the environment
    assert s2.dicom.host == "127.0.0.1"  # None = flag not given


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("http:\n  port: 9999\n", encoding="utf-8")
    assert load_settings(None, environ={"ECGBRIDGE_CONFIG": str(cfg)}).http.port == 9999


@pytest.mark.parametrize(
    ("yaml_text", "env", "expected"),
    [
        ("dicom:\n  port: 70000\n", {}, r"dicom\.port: .*65535 .*got 70000.*file"),
        ("dicom:\n  prot: 1\n", {}, r"dicom\.prot: unknown key"),
        ("", {"ECGBRIDGE_DICOM__PORT": "abc"}, r"dicom\.port: .*ECGBRIDGE_DICOM__PORT"),
        ("dicom:\n  ae_title: WAY_TOO_LONG_AE_TITLE\n", {}, r"dicom\.ae_title: .*16"),
        ("retry:\n  base_seconds: 10\n  max_seconds: 1\n", {}, r"retry: max_seconds"),
        ("dicom:\n  tls:\n    enabled: true\n", {}, r"dicom\.tls: cert_file and key_file"),
        ("deliver:\n  outbox:\n    formats: [dicom, gif]\n", {}, r"deliver\.outbox\.formats"),
        ("digitize:\n  layout: 5x5\n", {}, r"digitize\.layout: unknown layout"),
        ("- a list\n", {}, r"must hold a mapping"),
        ("dicom: [\n", {}, r"not valid YAML"),
    ],
)
def test_validation_errors_name_the_key(
    tmp_path: Path, yaml_text: str, env: dict[str, str], expected: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        load_settings(cfg, environ=env)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_env_values_are_parsed_as_yaml() -> None:
    parsed = env_overrides(
        {"ECGBRIDGE_INBOX__ENABLED": "false", "ECGBRIDGE_WORKERS__PROCESSES": "3", "HOME": "/x"}
    )
    assert parsed == {"inbox": {"enabled": False}, "workers": {"processes": 3}}


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann.model_fields:
            # nested sections documented inline; optional sub-models (tls: null) are leaves
            keys.extend(_leaf_keys(ann, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted} missing from the example"
        node = node[part]
    return node


def test_example_file_documents_every_key_with_its_default() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    defaults = Settings().model_dump(mode="json")
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = _leaf_keys(Settings)
    assert len(keys) > 50
    for key in keys:
        value = _lookup(data, key)
        assert value == _lookup(defaults, key) or str(value).lstrip("./") == str(
            _lookup(defaults, key)
        ), key
    # every key has a comment line somewhere above it in its section
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            j = i - 1
            while j >= 0 and lines[j].strip() and not lines[j].strip().startswith("#"):
                j -= 1
            assert j >= 0 and lines[j].strip().startswith("#"), f"undocumented: {stripped}"
    # and the example loads as a configuration
    assert load_settings(EXAMPLE, environ={}).dicom.port == 11112


def test_retry_delay_is_exponential_and_capped() -> None:
    r = RetrySettings(base_seconds=2.0, max_seconds=30.0, max_attempts=5)
    assert [r.delay(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_serve_print_config_applies_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECGBRIDGE_HTTP__PORT", "8999")
    rc = main(["serve", "--print-config", "--dicom-port", "11200", "--ae-title", "MYAE",
               "--inbox", str(tmp_path / "in"), "--outbox", str(tmp_path / "out"),
               "--state", str(tmp_path / "st")])
    assert rc == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["dicom"]["port"] == 11200
    assert printed["dicom"]["ae_title"] == "MYAE"
    assert printed["http"]["port"] == 8999
    assert printed["inbox"]["path"] == str(tmp_path / "in")
    assert printed["deliver"]["outbox"]["path"] == str(tmp_path / "out")
    assert printed["state"]["path"] == str(tmp_path / "st")


def test_serve_reports_bad_flag_value_by_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--print-config", "--dicom-port", "99999"]) == 1
    err = capsys.readouterr().err
    assert "dicom.port" in err and "command line" in err


def test_digitize_settings_are_the_digitizer_options_with_one_set_of_ranges(tmp_path: Path) -> None:
    from dataclasses import fields

    from ecgbridge.config import DigitizeSettings
    from ecgbridge.digitizer.options import FS_RANGE_HZ, DigitizeOptions

    assert list(DigitizeSettings.model_fields) == [f.name for f in fields(DigitizeOptions)]
    assert DigitizeSettings().to_options() == DigitizeOptions()
    low, high = FS_RANGE_HZ
    assert DigitizeSettings(fs=low, gain=20.0).to_options() == DigitizeOptions(fs=low, gain=20.0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"digitize:\n  fs: {high * 2}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"digitize\.fs: output sampling rate must be"):
        load_settings(cfg)
