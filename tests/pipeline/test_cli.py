"""The command line with careless and hostile arguments: every refusal one sentence, no traceback, and
``-o`` never overwrites an input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MOUTHPIECE_DATA_DIR": str(tmp / "data")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def refused(result: subprocess.CompletedProcess[str], sentence: str) -> None:
    """Exit 2, and stderr is one line: the sentence, no traceback."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"mouthpiece: {sentence}"]


@pytest.fixture
def files(tmp_path: Path, assets: Path) -> Path:
    (tmp_path / "voice.flac").write_bytes((assets / "jfk.flac").read_bytes())
    (tmp_path / "face.png").write_bytes((assets / "astronaut.png").read_bytes())
    (tmp_path / "folder.flac").mkdir()
    os.mkfifo(tmp_path / "pipe.flac")
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (
            ["folder.flac", "face.png"],
            "folder.flac is a folder, not a file: give the voice clip or picture file itself",
        ),
        (
            ["pipe.flac", "face.png"],
            "pipe.flac is a named pipe, not a file: give the voice clip or picture file itself",
        ),
        (
            ["voice.flac", "/dev/null"],
            "/dev/null is a device, not a file: give the voice clip or picture file itself",
        ),
        (["voice.flac", "nope.png"], "nope.png does not exist: check the path"),
        (["voice.flac", "empty.png"], "empty.png is empty: send the file again once it is completely saved"),
    ],
)
def test_render_says_what_a_non_file_is(files: Path, args: list[str], sentence: str) -> None:
    """A folder, a FIFO, a device, a missing or an empty file: named, said what it is, no traceback, and
    the FIFO is never opened (the command returns)."""
    refused(cli(files, "render", *args, "-o", "out.mp4"), sentence)


def test_output_pointing_at_an_input_is_refused(files: Path) -> None:
    """-o naming the voice clip, the photo, or a hard link to the photo is refused before any work; the
    inputs are unchanged."""
    digest = hashlib.sha256((files / "voice.flac").read_bytes()).hexdigest()
    os.link(files / "face.png", files / "alias.mp4")
    for output in ("voice.flac", "./face.png", "alias.mp4"):
        result = cli(files, "render", "voice.flac", "face.png", "-o", output)
        shown = os.path.normpath(output)
        refused(
            result, f"-o {shown} is one of the input files; it would be overwritten: give another output name"
        )
    assert hashlib.sha256((files / "voice.flac").read_bytes()).hexdigest() == digest


@pytest.mark.parametrize(
    ("option", "length", "limit"),
    [("--name", 121, 120), ("--transcript", 20_001, 20_000), ("--checkpoint", 256, 255)],
)
def test_over_long_options_are_refused_in_a_sentence(
    files: Path, option: str, length: int, limit: int
) -> None:
    """render and submit: an option over its limit is one sentence, not a validation traceback."""
    sentence = f"{option} is {length} characters long; the limit is {limit}: give a shorter one"
    for command in (
        ["render", "voice.flac", "face.png", "-o", "o.mp4"],
        ["submit", "voice.flac", "face.png"],
    ):
        refused(cli(files, *command, option, "x" * length), sentence)


@pytest.mark.slow
@pytest.mark.integration
def test_output_folder_beside_the_inputs_never_overwrites_them(tmp_path: Path, assets: Path) -> None:
    """render v.flac v.mp4 -o . would publish v.mp4 over the avatar video: it is written under another name,
    and the avatar is unchanged."""
    import cv2

    from pipeline.media import FrameWriter
    from tests.conftest import make_settings

    subprocess.run(
        [sys.executable, "-c", "import imageio_ffmpeg,subprocess,sys;subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(),"
         f"'-v','error','-i',{str(assets / 'jfk.flac')!r},'-t','1.5',{str(tmp_path / 'v.flac')!r}],check=True)"],
        check=True,
    )  # fmt: skip
    face = cv2.cvtColor(cv2.imread(str(assets / "astronaut.png")), cv2.COLOR_BGR2RGB)
    with FrameWriter(make_settings(tmp_path / "s"), tmp_path / "v.mp4", 512, 512, 25.0) as writer:
        for _ in range(10):
            writer.write(face)
    before = (tmp_path / "v.mp4").read_bytes()
    result = cli(tmp_path, "render", "v.flac", "v.mp4", "-o", ".", "--renderer", "none", timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "v.mp4").read_bytes() == before
    [written] = [tmp_path / line for line in result.stdout.split() if line.endswith(".mp4")]  # and its report
    assert written.name.startswith("v-") and written.name.endswith(".mp4") and written.stat().st_size > 0
