"""``mouthpiece characters add|list|remove`` and ``render --character``: the library from the command
line, refusals in one sentence, and one video per character."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import skimage.data

from tests.pipeline.test_cli import cli, refused


def _photos(tmp: Path) -> None:
    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp / "astro.jpg"), face)
    cv2.imwrite(str(tmp / "mirror.png"), face[:, ::-1].copy())
    (tmp / "notes.png").write_text("not a picture at all\n")


def test_add_list_remove_and_refusals(tmp_path: Path) -> None:
    _photos(tmp_path)
    added = cli(
        tmp_path, "characters", "add", "Captain Hook", "astro.jpg", "--style", "cartoon", "--by", "ana"
    )
    assert added.returncode == 0, added.stderr
    assert "added Captain Hook (image, from astro.jpg) to the default library" in added.stdout
    assert added.stderr == ""  # no log lines: the command says what it did
    refused(
        cli(tmp_path, "characters", "add", "captain-hook", "mirror.png"),
        "a character named 'Captain Hook' is already in the library (names are compared without case, "
        "spaces or dashes): remove it first or choose another name",
    )
    refused(
        cli(tmp_path, "characters", "add", "Notes", "notes.png"),
        "notes.png is not an image or a video (it is a text file): send a .png, .jpg or .webp photo, or an "
        ".mp4, .mov or .webm video",
    )
    refused(
        cli(tmp_path, "characters", "add", "all", "mirror.png"),
        "'all' is reserved (character:all means the whole library): choose another name",
    )
    assert cli(tmp_path, "characters", "add", "Zoë", "mirror.png").returncode == 0
    listed = cli(tmp_path, "characters", "list")
    assert listed.returncode == 0 and "2 character(s) in the default library" in listed.stdout
    assert "Captain Hook" in listed.stdout and "style=cartoon" in listed.stdout and "ana" in listed.stdout
    data = json.loads(cli(tmp_path, "characters", "list", "--json").stdout)
    assert [c["name"] for c in data] == ["Captain Hook", "Zoë"]
    assert cli(tmp_path, "characters", "--library", "guild-7", "list").stdout.startswith(
        "The guild-7 library has no characters yet"
    )
    assert cli(tmp_path, "characters", "remove", "CAPTAIN HOOK").stdout.strip() == (
        "removed Captain Hook from the default library"
    )
    refused(
        cli(tmp_path, "characters", "remove", "Captain Hook"),
        "there is no character 'Captain Hook' in the library; it has Zoë",
    )


def test_render_with_every_character_makes_one_video_each(tmp_path: Path, assets: Path) -> None:
    _photos(tmp_path)
    subprocess.run(
        [sys.executable, "-c", "import imageio_ffmpeg,subprocess;subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(),"
         f"'-v','error','-i',{str(assets / 'jfk.flac')!r},'-t','1.5',{str(tmp_path / 'v.flac')!r}],check=True)"],
        check=True,
    )  # fmt: skip
    assert cli(tmp_path, "characters", "add", "Pirate", "astro.jpg").returncode == 0
    assert cli(tmp_path, "characters", "add", "Ninja", "mirror.png").returncode == 0
    result = cli(
        tmp_path, "render", "v.flac", "--character", "all", "-o", "out/", "--renderer", "none", timeout=300
    )
    assert result.returncode == 0, result.stderr
    videos = sorted(Path(line).name for line in result.stdout.split() if line.endswith(".mp4"))
    assert videos == ["v-Ninja.mp4", "v-Pirate.mp4"]
