"""Settings: sources in order (flags > environment > TOML file > defaults), and secrets stay masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import load_settings


def test_environment_beats_file_and_flags_beat_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TOML file sets values, MOUTHPIECE_* overrides it, explicit overrides (CLI flags) win."""
    toml = tmp_path / "mouthpiece.toml"
    toml.write_text('max_side = 720\ncrf = 22\nlog_level = "debug"\nconcurrency = {render = 2}\n')
    monkeypatch.setenv("MOUTHPIECE_CRF", "19")
    settings = load_settings(toml, log_level="warning")
    assert settings.max_side == 720 and settings.crf == 19 and settings.log_level == "warning"
    assert settings.concurrency_of("render") == 2 and settings.concurrency_of("detect") == 1


def test_data_dir_defaults_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs in two directories never share state: the data dir is .mouthpiece/ under the cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MOUTHPIECE_DATA_DIR", raising=False)
    assert load_settings().data_dir == tmp_path / ".mouthpiece"


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    """Naming a config file that does not exist is refused, not silently ignored."""
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.toml")


def test_config_command_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mouthpiece config` prints every setting, with secret values replaced."""
    monkeypatch.setenv("MOUTHPIECE_S3_SECRET_KEY", "very-secret-key-123")
    monkeypatch.setenv("MOUTHPIECE_INGRESS_TOKEN", "relay-token-456")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "very-secret-key-123" not in out and "relay-token-456" not in out
    shown = json.loads(out)
    assert shown["s3_secret_key"] == "**********" and shown["ingress_token"] == "**********"
