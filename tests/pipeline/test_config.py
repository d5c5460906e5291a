"""Settings: sources in order (flags > environment > TOML file > defaults), and secrets stay masked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import structlog

from pipeline.cli import main
from pipeline.config import Settings, data_dir_origin, load_settings


def test_environment_beats_file_and_flags_beat_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TOML file sets values, MOUTHPIECE_* overrides it, explicit overrides (CLI flags) win."""
    toml = tmp_path / "mouthpiece.toml"
    toml.write_text('max_side = 720\ncrf = 22\nlog_level = "debug"\nconcurrency = {render = 2}\n')
    monkeypatch.setenv("MOUTHPIECE_CRF", "19")
    settings = load_settings(toml, log_level="warning")
    assert settings.max_side == 720 and settings.crf == 19 and settings.log_level == "warning"
    assert settings.concurrency_of("render") == 2 and settings.concurrency == {"render": 2}


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    """``main`` points logging at this test's captured stderr: later tests must not log into it."""
    yield None
    structlog.reset_defaults()


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No data directory set, a per-user data directory under ``tmp_path``; returns a project folder."""
    monkeypatch.delenv("MOUTHPIECE_DATA_DIR", raising=False)
    monkeypatch.delenv("MOUTHPIECE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    project = tmp_path / "project"
    (project / "videos" / "drafts").mkdir(parents=True)
    return project


def test_data_dir_is_the_nearest_mouthpiece_folder_holding_state(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a project's subfolder every command finds the project's .mouthpiece/ (where `up` keeps its
    state), and says so."""
    (nowhere / ".mouthpiece" / "inbox").mkdir(parents=True)
    monkeypatch.chdir(nowhere / "videos" / "drafts")
    settings = load_settings()
    assert settings.data_dir == nowhere / ".mouthpiece"
    assert "nearest .mouthpiece/" in data_dir_origin(settings)


def test_data_dir_elsewhere_is_the_per_user_one(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no .mouthpiece/ holding state here or above (an empty one does not count), the data
    directory is $XDG_DATA_HOME/mouthpiece, and nothing is created by looking."""
    (nowhere / ".mouthpiece").mkdir()
    monkeypatch.chdir(nowhere / "videos")
    settings = load_settings()
    assert settings.data_dir == nowhere.parent / "xdg" / "mouthpiece"
    assert "per-user default" in data_dir_origin(settings)
    assert not settings.data_dir.exists()


def test_a_data_dir_setting_wins(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MOUTHPIECE_DATA_DIR (relative to the working directory) beats a project's .mouthpiece/."""
    (nowhere / ".mouthpiece" / "inbox").mkdir(parents=True)
    monkeypatch.chdir(nowhere)
    monkeypatch.setenv("MOUTHPIECE_DATA_DIR", "state")
    settings = load_settings()
    assert settings.data_dir == nowhere / "state" and "set by" in data_dir_origin(settings)


@pytest.mark.parametrize(
    ("variable", "value", "sentence"),
    [
        (
            "MOUTHPIECE_CHAIN",
            "validate,publish",
            'MOUTHPIECE_CHAIN must be a JSON list, e.g. ["validate","publish"]',
        ),
        (
            "MOUTHPIECE_CONCURRENCY",
            "render=2",
            'MOUTHPIECE_CONCURRENCY must be a JSON object, e.g. {"render":2}',
        ),
        (
            "MOUTHPIECE_CRF",
            "high",
            "MOUTHPIECE_CRF (crf): input should be a valid integer, unable to parse string as an integer; got 'high'",
        ),
        (
            "MOUTHPIECE_CHAIN",
            '["validate","paint","publish"]',
            "MOUTHPIECE_CHAIN (chain): unknown stage(s) paint in the chain; the stages are validate, detect, "
            "render, enhance, publish; got ['validate', 'paint', 'publish']",
        ),
    ],
)
def test_a_bad_setting_says_what_is_expected(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    sentence: str,
) -> None:
    """A malformed variable: exit 2 and one line naming the variable and the expected format."""
    monkeypatch.setenv(variable, value)
    assert main(["config"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"mouthpiece: bad settings: {sentence}"]


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
    assert "MOUTHPIECE_S3_SECRET_KEY=**********" in out.splitlines()
    assert main(["config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (
        shown["MOUTHPIECE_S3_SECRET_KEY"] == "**********"
        and shown["MOUTHPIECE_INGRESS_TOKEN"] == "**********"
    )


def test_config_lines_name_the_variables_people_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`config` prints MOUTHPIECE_NAME=value lines, values written as the environment takes them (lists
    as JSON, unset as nothing): a line pasted back into the environment gives the same setting."""
    monkeypatch.setenv("MOUTHPIECE_CHAIN", '["validate","detect","render","enhance","publish"]')
    monkeypatch.setenv("MOUTHPIECE_WATCH_POLLING", "true")
    assert main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("MOUTHPIECE_") and "=" in line for line in lines)
    values = dict(line.split("=", 1) for line in lines)
    assert values["MOUTHPIECE_CHAIN"] == '["validate","detect","render","enhance","publish"]'
    assert values["MOUTHPIECE_WATCH_POLLING"] == "true" and "MOUTHPIECE_S3_ENDPOINT" in values
    assert values["MOUTHPIECE_PIPER_MODEL"] == ""


def test_config_shows_the_log_level_up_runs_at(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`config` logs quietly itself, yet shows the level `up` runs at (info by default), and the
    folders that are left unset where they really are."""
    monkeypatch.delenv("MOUTHPIECE_LOG_LEVEL", raising=False)
    monkeypatch.setenv("MOUTHPIECE_DATA_DIR", "/srv/mouthpiece")
    assert main(["config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["MOUTHPIECE_LOG_LEVEL"] == "info"
    assert shown["MOUTHPIECE_INBOX_DIR"] == "/srv/mouthpiece/inbox"
    assert shown["MOUTHPIECE_MODEL_DIR"] == "/srv/mouthpiece/models"


def test_config_warns_about_default_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A credential left at a well-known default is shown as it is (it hides nothing) with a warning;
    S3 and NATS left without credentials (the defaults) are said to be unauthenticated."""
    monkeypatch.setenv("MOUTHPIECE_STORE", "s3")
    monkeypatch.setenv("MOUTHPIECE_S3_SECRET_KEY", "minioadmin")
    monkeypatch.setenv("MOUTHPIECE_NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("MOUTHPIECE_INGRESS_TOKEN", "a-real-random-token-789")
    assert main(["config", "--json"]) == 0
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    assert (
        shown["MOUTHPIECE_S3_SECRET_KEY"] == "minioadmin"
        and shown["MOUTHPIECE_INGRESS_TOKEN"] == "**********"
    )
    warnings = [line for line in captured.err.splitlines() if line.startswith("mouthpiece: warning: ")]
    assert len(warnings) == 3, captured.err
    assert "s3_secret_key is 'minioadmin', MinIO's default" in warnings[0]
    assert "s3_access_key is not set (the default)" in warnings[1]
    assert "nats://nats:4222 is used without authentication" in warnings[2]
    assert "a-real-random-token-789" not in captured.out + captured.err


def test_settings_is_its_parts_and_is_frozen() -> None:
    """Every setting belongs to exactly one part (what functions take), a Settings is every part, and
    a loaded Settings cannot be changed (a changed copy is made with model_copy)."""
    from pydantic import ValidationError

    from pipeline.config import PARTS, MediaSettings

    names = [name for part in PARTS for name in part.model_fields]
    assert sorted(names) == sorted(Settings.model_fields) and len(names) == len(set(names))
    settings = Settings()
    assert all(isinstance(settings, part) for part in PARTS)
    with pytest.raises(ValidationError):
        settings.fps = 30.0
    assert settings.model_copy(update={"fps": 30.0}).fps == 30.0 and isinstance(settings, MediaSettings)


@pytest.mark.parametrize(
    ("cores", "stage", "served", "device", "slots"),
    [
        (2, "detect", ("detect",), "cpu", 1),  # this machine: one run per stage
        (16, "detect", ("detect",), "cpu", 8),  # `mouthpiece worker detect` on a big node
        (16, "detect", ("validate", "detect", "render", "enhance", "publish"), "cpu", 2),  # `up`: shared
        (16, "render", ("render",), "cpu", 8),
        (16, "render", ("render",), "auto", 1),  # a neural render may take the GPU
        (16, "publish", ("publish",), "cpu", 2),  # waits on the network, not the CPU
        (1, "validate", ("validate",), "cpu", 1),
    ],
)
def test_a_stage_left_out_of_concurrency_gets_runs_from_the_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, stage: str, served: tuple[str, ...], device: str, slots: int
) -> None:
    """Without a ``concurrency`` entry a worker takes one run per two usable cores, shared among the CPU
    stages its process serves; an entry always wins."""
    import pipeline.config

    monkeypatch.setattr(pipeline.config, "_torch_installed", lambda: True)  # the neural extra
    settings = load_settings(device=device)
    assert settings.concurrency_of(stage, served, cores) == slots
    pinned = settings.model_copy(update={"concurrency": {stage: 3}})
    assert pinned.concurrency_of(stage, served, cores) == 3


def test_usable_cores_follow_a_container_s_cpu_limit(tmp_path: Path) -> None:
    """A cgroup quota (a Kubernetes CPU limit) caps the cores, v2 and v1 layouts; none means no cap."""
    from pipeline.devices import cgroup_cpu_quota, usable_cores

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert cgroup_cpu_quota(tmp_path / "absent") is None
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
