"""The command line explains itself: help for every command and argument, global options anywhere, the
data directory found from anywhere in a project (and said when it is not), read-only commands that
create nothing, empty lists that say so, and file system trouble in one line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli.parser import _parser

ROOT = Path(__file__).resolve().parents[2]


def as_user(cwd: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`mouthpiece ARGS` run in ``cwd`` with no data directory set; the per-user one is under ``home``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_DATA_HOME": str(home), "MOUTHPIECE_LOG_FORMAT": "json"}
    env.pop("MOUTHPIECE_DATA_DIR", None)
    env.pop("MOUTHPIECE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser, by its full name (``discord register``)."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found.update(commands(sub, f"{prefix}{name} "))
    return found


def test_every_command_and_argument_has_help() -> None:
    """Each command has a help line in the list and a description of its own; each of its arguments
    (positional or option) says what it is."""
    parser = _parser()
    found = commands(parser)
    assert {"up", "render", "demo", "status", "models", "config", "dead-letters", "discord register"} <= set(
        found
    )
    listed = {
        a.dest: a.help
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for a in action._choices_actions
    }
    problems = []
    for name, sub in found.items():
        if " " not in name and not listed.get(name):
            problems.append(f"{name}: no help line in the command list")
        if not (sub.description or "").strip():
            problems.append(f"{name}: no description")
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                problems.append(f"{name} {'/'.join(action.option_strings) or action.dest}: no help")
    assert problems == []


def test_help_runs_for_every_command() -> None:
    """`mouthpiece COMMAND --help` prints its description and exits 0, for every command."""
    for name, sub in commands(_parser()).items():
        text = sub.format_help()
        assert (sub.description or "").split(".")[0][:30] in " ".join(text.split()), name
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "status", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and "Show a job, or the recent jobs and failed drops." in result.stdout


def test_global_options_work_after_the_command_too() -> None:
    """--data-dir, --log-level, --log-format and --config are taken before or after the command; after
    it they win, and leaving them out after it keeps what came before."""
    parser = _parser()
    after = parser.parse_args(["status", "--data-dir", "B", "--log-level", "debug", "--log-format", "json"])
    assert (after.data_dir, after.log_level, after.log_format) == (Path("B"), "debug", "json")
    before = parser.parse_args(["--data-dir", "A", "--log-level", "error", "status", "--json"])
    assert (before.data_dir, before.log_level, before.json) == (Path("A"), "error", True)
    both = parser.parse_args(["--data-dir", "A", "status", "--data-dir", "B"])
    assert both.data_dir == Path("B")
    nested = parser.parse_args(["discord", "register", "--config", "x.toml"])
    assert nested.config == Path("x.toml")


@pytest.mark.slow
@pytest.mark.integration
def test_status_from_anywhere_in_a_project_finds_its_jobs(tmp_path: Path, assets: Path) -> None:
    """A job made in a project (its .mouthpiece/) is listed by `status` from a subfolder; from a folder
    outside any project, `status` says which data directory it looked at and why, and creates nothing."""
    project, home, elsewhere = tmp_path / "project", tmp_path / "home", tmp_path / "elsewhere"
    (project / "clips").mkdir(parents=True)
    elsewhere.mkdir()
    short_clip(assets / "jfk.flac", project / "voice.flac", seconds=1.5)
    (project / "face.png").write_bytes((assets / "astronaut.png").read_bytes())
    made = as_user(
        project, "--data-dir", ".mouthpiece", "render", "voice.flac", "face.png", "-o", "out.mp4",
        "--renderer", "none", "--name", "greeting", home=home,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    found = as_user(project / "clips", "status", home=home)
    assert found.returncode == 0 and "greeting" in found.stdout, found.stderr
    lost = as_user(elsewhere, "status", "--json", home=home)
    assert lost.returncode == 0 and json.loads(lost.stdout) == {"jobs": [], "total": 0, "failed_drops": []}
    assert lost.stderr.strip().splitlines() == [
        f"mouthpiece: no mouthpiece data in {home / 'mouthpiece'} (the per-user default: no .mouthpiece/ "
        "folder holding state in the working directory or above; use --data-dir or MOUTHPIECE_DATA_DIR "
        "for another)"
    ]
    assert not (home / "mouthpiece").exists() and list(elsewhere.iterdir()) == []


def short_clip(source: Path, target: Path, seconds: float) -> None:
    """The first ``seconds`` of ``source`` (real speech), cut with the bundled ffmpeg."""
    import imageio_ffmpeg

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(source), "-t", str(seconds), str(target)],
        check=True,
    )


def test_read_only_commands_create_nothing_and_say_when_empty(tmp_path: Path) -> None:
    """status, dead-letters and models on a data directory that does not exist: nothing is created,
    the empty list says it is empty, and models says the default job needs none of its files."""
    data = tmp_path / "data"
    letters = as_user(tmp_path, "dead-letters", "--data-dir", str(data), home=tmp_path / "home")
    assert letters.returncode == 0 and letters.stdout.strip() == (
        "no dead letters: the runner has given up on nothing"
    )
    status = as_user(tmp_path, "status", "--data-dir", str(data), home=tmp_path / "home")
    assert status.returncode == 0 and f"no mouthpiece data in {data}" in status.stderr
    models = as_user(tmp_path, "models", "--data-dir", str(data), home=tmp_path / "home")
    assert models.returncode == 0, models.stderr
    assert "None of these files is needed by the default job" in models.stdout
    block = models.stdout.split("\nwav2lip_gan.pth: missing\n")[1].split("\n\n")[0]
    assert "needed by:  the wav2lip renderer" in block
    assert "without it: jobs asking for the wav2lip renderer fail; the default viseme renderer" in block
    assert not data.exists()


@pytest.mark.parametrize(
    "command", [["submit", "voice.flac"], ["render", "voice.flac", "face.png", "-o", "out.mp4"], ["up"]]
)
def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path, assets: Path, command: list[str]) -> None:
    """A data directory under a regular file (refused to root too): exit 2 and one line naming the
    folder and what to do, no traceback."""
    (tmp_path / "voice.flac").write_bytes((assets / "jfk.flac").read_bytes())
    (tmp_path / "face.png").write_bytes((assets / "astronaut.png").read_bytes())
    (tmp_path / "a-file").write_text("not a folder\n")
    data = tmp_path / "a-file" / "data"
    result = as_user(tmp_path, *command, "--data-dir", str(data), home=tmp_path / "home")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("mouthpiece: cannot use ") and str(data) in line and "Not a directory" in line
    assert "--data-dir" in line


def test_what_demo_and_say_write_by_default_is_ignored_by_git() -> None:
    """`mouthpiece demo` and `mouthpiece say` write into the working directory (the clone, in the quick
    start): git ignores those files there."""
    import shutil

    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    names = [
        "mouthpiece-demo.mp4",
        "mouthpiece-demo.quality.json",
        "mouthpiece-say.mp4",
        "mouthpiece-say.srt",
    ]
    result = subprocess.run(["git", "check-ignore", *names], cwd=root, capture_output=True, text=True)
    assert result.stdout.split() == names
