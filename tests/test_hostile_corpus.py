"""A corpus of bad, hostile and everyday inputs through the real command line and one running `up`.

Each kind must be refused with a reason that names the file as the user named it and carries no ffmpeg,
validation-library or traceback text (and no server path); the watcher must take the good job dropped
after all of them. The CLI half uses only cases the CLI refuses before starting anything (fast); the
inbox half drops everything into one `up` at once.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BANNED = (
    "Traceback", "pydantic", "ValidationError", "Value error", "Input should", "String should",
    "instance of", "after validation", "@ 0x", "error code", "Invalid data found", "AttributeError",
    "internal error", "worker-", "Errno",
)  # fmt: skip
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _clean(text: str, tmp: Path) -> list[str]:
    """The banned words (tool output, library wording, tracebacks, our server paths) found in ``text``."""
    found = [word for word in BANNED if word.lower() in text.lower()]
    return found + ([str(tmp)] if str(tmp) in text else [])


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MOUTHPIECE_DATA_DIR": str(tmp / "data"),
        "MOUTHPIECE_LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


def _ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 512))
        + chunk(b"IEND", b"")
    )


@dataclass
class Media:
    """Real files the cases are made of."""

    voice: Path  # 2 s of speech (FLAC)
    long_voice: Path  # the 11 s clip
    face: Path
    blip: Path  # 0.1 s
    wide: Path  # 5000×100 PNG
    svg: bytes = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle r="9"/></svg>\n'


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Media:
    from PIL import Image

    folder = tmp_path_factory.mktemp("media")
    voice, blip, wide = folder / "voice.flac", folder / "blip.wav", folder / "wide.png"
    _ffmpeg("-i", str(assets / "jfk.flac"), "-t", "2", str(voice))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=0.1", str(blip))
    Image.new("RGB", (5000, 100), "white").save(wide)
    return Media(voice, assets / "jfk.flac", assets / "astronaut.png", blip, wide)


# --- the CLI half -------------------------------------------------------------------------------------


def _cli_cases(tmp: Path, m: Media) -> list[tuple[str, list[str], str, dict[str, str]]]:
    """(kind, arguments, a text the refusal must contain, extra environment)."""
    (tmp / "voice.flac").write_bytes(m.voice.read_bytes())
    (tmp / "face.png").write_bytes(m.face.read_bytes())
    (tmp / "a folder").mkdir()
    os.mkfifo(tmp / "pipe.flac")
    os.mkfifo(tmp / "pipe.png")
    (tmp / "empty.flac").write_bytes(b"")
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "dirlink.flac").symlink_to(tmp / "a folder", target_is_directory=True)
    os.link(tmp / "voice.flac", tmp / "hard.mp4")
    ok = ["voice.flac", "face.png"]
    render = ["render"]
    return [
        (
            "audio is a folder",
            [*render, "a folder", "face.png", "-o", "o.mp4"],
            "a folder is a folder, not a file",
            {},
        ),
        (
            "avatar is a folder",
            [*render, "voice.flac", "a folder", "-o", "o.mp4"],
            "a folder is a folder",
            {},
        ),
        (
            "audio is a FIFO",
            [*render, "pipe.flac", "face.png", "-o", "o.mp4"],
            "pipe.flac is a named pipe",
            {},
        ),
        (
            "avatar is a FIFO",
            [*render, "voice.flac", "pipe.png", "-o", "o.mp4"],
            "pipe.png is a named pipe",
            {},
        ),
        (
            "audio is /dev/zero",
            [*render, "/dev/zero", "face.png", "-o", "o.mp4"],
            "/dev/zero is a device",
            {},
        ),
        (
            "avatar is /dev/null",
            [*render, "voice.flac", "/dev/null", "-o", "o.mp4"],
            "/dev/null is a device",
            {},
        ),
        ("audio missing", [*render, "gone.flac", "face.png", "-o", "o.mp4"], "gone.flac does not exist", {}),
        ("avatar missing", [*render, "voice.flac", "gone.png", "-o", "o.mp4"], "gone.png does not exist", {}),
        ("audio empty", [*render, "empty.flac", "face.png", "-o", "o.mp4"], "empty.flac is empty", {}),
        ("avatar empty", [*render, "voice.flac", "empty.png", "-o", "o.mp4"], "empty.png is empty", {}),
        (
            "link to a folder",
            [*render, "dirlink.flac", "face.png", "-o", "o.mp4"],
            "dirlink.flac is a folder",
            {},
        ),
        (
            "audio over the size limit",
            [*render, *ok, "-o", "o.mp4"],
            "voice.flac is 0.2 MB; the limit is 0.1 MB",
            {"MOUTHPIECE_MAX_INPUT_BYTES": "100000"},
        ),
        (
            "-o is the voice",
            [*render, *ok, "-o", "voice.flac"],
            "-o voice.flac is one of the input files",
            {},
        ),
        ("-o is the photo", [*render, *ok, "-o", "face.png"], "-o face.png is one of the input files", {}),
        ("-o is a hard link", [*render, *ok, "-o", "hard.mp4"], "-o hard.mp4 is one of the input files", {}),
        (
            "--name too long",
            [*render, *ok, "-o", "o.mp4", "--name", "n" * 121],
            "--name is 121 characters",
            {},
        ),
        (
            "--transcript too long",
            [*render, *ok, "-o", "o.mp4", "--transcript", "t" * 20_001],
            "--transcript is",
            {},
        ),
        (
            "--checkpoint too long",
            [*render, *ok, "-o", "o.mp4", "--checkpoint", "c" * 300],
            "--checkpoint is 300",
            {},
        ),
        (
            "33 avatars",
            [*render, "voice.flac", *["face.png"] * 33, "-o", "out/"],
            "33 avatars were given",
            {},
        ),
        ("submit a FIFO", ["submit", "pipe.flac", "face.png"], "pipe.flac is a named pipe", {}),
        ("submit a long name", ["submit", *ok, "--name", "x" * 500], "--name is 500 characters", {}),
        ("submit a folder", ["submit", "voice.flac", "a folder"], "a folder is a folder", {}),
    ]


def test_cli_refuses_bad_input_in_one_sentence(tmp_path: Path, media: Media) -> None:
    """Each CLI case: exit 2, one line on stderr naming the file or option, no tool or library text."""
    cases = _cli_cases(tmp_path, media)
    problems = []
    for kind, args, expected, env in cases:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=tmp_path, env=_env(tmp_path, **env), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        lines = result.stderr.strip().splitlines()
        if (
            result.returncode != 2
            or len(lines) != 1
            or expected not in lines[0]
            or _clean(lines[0], tmp_path)
        ):
            problems.append(f"{kind}: rc={result.returncode} {result.stderr.strip()[:300]!r}")
    assert problems == []
    assert len(cases) >= 20


# --- the inbox half: one running `up` ------------------------------------------------------------------


Build = Callable[[Path], None]


def _inbox_cases(m: Media, outside: Path) -> list[tuple[str, str, Build]]:
    """(kind, the note's file stem in the outbox, a function that makes the entry in a staging folder).
    Every entry's note must name the file as it was dropped (the stem's file, or the text given)."""

    def write(name: str, data: bytes) -> Build:
        return lambda d: (d / name).write_bytes(data)

    def copy(name: str, src: Path) -> Build:
        return lambda d: (d / name).write_bytes(src.read_bytes())

    def both(*builds: Build) -> Build:
        return lambda d: [b(d) for b in builds] and None

    def fifo(name: str) -> Build:
        return lambda d: os.mkfifo(d / name)

    def link(name: str, target: Path | str) -> Build:
        return lambda d: (d / name).symlink_to(target)

    def folder(name: str, *builds: Build) -> Build:
        def make(d: Path) -> None:
            (d / name).mkdir()
            for b in builds:
                b(d / name)

        return make

    voice, face = m.voice.read_bytes(), m.face.read_bytes()
    hook = "http://127.0.0.1:9/api/webhooks/1/internal"
    long_name = "L" * 236
    bomb = b'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + b"".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n".encode() for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ) + b"audio: v.flac\navatars: *i\n"  # fmt: skip
    return [
        ("a FIFO named .flac", "fifo", fifo("fifo.flac")),
        ("a link to /etc/passwd", "passwd", link("passwd.flac", "/etc/passwd")),
        ("a link to /dev/zero", "zero", link("zero.flac", "/dev/zero")),
        ("a link to a voice outside", "outside", link("outside.flac", outside / "voice.flac")),
        ("a link to a folder outside", "linkdir", link("linkdir", outside)),
        ("an unsupported file", "notes", write("notes.docx", b"PK\x03\x04 a document")),
        ("broken YAML", "broken", write("broken.yaml", b"audio: [unclosed\n")),
        ("a misspelled field", "typo", write("typo.yaml", b"audio: x.flac\navatar: y.png\n")),
        (
            "a 500-character name",
            "longname",
            write("longname.yaml", b"audio: x.flac\nname: " + b"n" * 500 + b"\n"),
        ),
        (
            "a loopback webhook",
            "hook",
            both(
                copy("hookvoice.flac", m.voice),
                write(
                    "hook.yaml",
                    f"audio: hookvoice.flac\ndestinations: [{{kind: discord_webhook, url: '{hook}'}}]\n".encode(),
                ),
            ),
        ),
        (
            "a ../ application id",
            "inject",
            write(
                "inject.yaml",
                b"audio: x.flac\ndestinations: [{kind: discord_interaction, application_id: '../../../../../admin/users', token: '../../delete-all'}]\n",
            ),
        ),
        (
            "a folder destination /etc",
            "etc",
            write("etc.yaml", b"audio: x.flac\ndestinations: [{kind: folder, path: /etc}]\n"),
        ),
        ("a spec naming ../", "escape", write("escape.yaml", b"audio: ../../voice.flac\n")),
        ("a spec naming a missing file", "missing", write("missing.yaml", b"audio: not-here.flac\n")),
        ("a YAML bomb", "bomb", write("bomb.yaml", bomb)),
        ("a JSON list", "list", write("list.json", b'["audio", "x.flac"]')),
        (
            "a folder with two voices",
            "twovoices",
            folder("twovoices", write("a.flac", voice), write("b.flac", voice)),
        ),
        (
            "a folder with a link inside",
            "linkinside",
            folder("linkinside", write("v.flac", voice), link("f.png", m.face)),
        ),
        ("a lone photo", "lonely", copy("lonely.png", m.face)),
        ("an empty voice", "empty", write("empty.flac", b"")),
        ("a voice over the size limit", "big", write("big.flac", os.urandom(4 * 1024 * 1024))),
        ("a FIFO companion", "pipecomp", both(write("pipecomp.flac", voice), fifo("pipecomp.png"))),
        (
            "an empty companion",
            "emptycomp",
            both(write("emptycomp.flac", voice), write("emptycomp.png", b"")),
        ),
        ("an SVG named .png", "svg", both(write("svg.flac", voice), write("svg.png", m.svg))),
        ("a text file named .flac", "text", write("text.flac", b"hello, this is not a recording\n" * 20)),
        ("a PDF named .mp3", "pdf", write("pdf.mp3", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n" + b"x" * 500)),
        ("a FLAC cut short", "cut", write("cut.flac", voice[:3000])),
        ("a 0.1 s clip", "blip", copy("blip.wav", m.blip)),
        (
            "a 40000×40000 PNG",
            "huge",
            both(write("huge.flac", voice), write("huge.png", _png_header(40_000, 40_000))),
        ),
        ("a 5000×100 PNG", "wide", both(write("wide.flac", voice), copy("wide.png", m.wide))),
        ("a photo named .flac", "photo", write("photo.flac", face)),
        ("an 11 s voice over an 8 s limit", "long", copy("long.flac", m.long_voice)),
        ("noise named .mp4", "noise", both(write("noise.flac", voice), write("noise.mp4", os.urandom(5000)))),
        (
            "a web page named .jpg",
            "page",
            both(
                write("page.flac", voice), write("page.jpg", b"<!DOCTYPE html><html><body>hi</body></html>")
            ),
        ),
        (
            "a broken photo with a non-ASCII name",
            "gruesse",
            folder(
                "gruesse",
                write("voice.flac", voice),
                write("Grüße Foto.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 300),
            ),
        ),
        (
            "a 240-character name on a text file",
            long_name,
            write(long_name + ".flac", b"not audio at all\n" * 10),
        ),
    ]


EXPECTED_NAME = {"linkinside": "linkinside/f.png", "gruesse": "Grüße Foto.png", "pipecomp": "pipecomp.png"}
EXPECTED_NAME |= {"emptycomp": "emptycomp.png", "svg": "svg.png", "huge": "huge.png", "wide": "wide.png"}
EXPECTED_NAME |= {"noise": "noise.mp4", "page": "page.jpg", "inject": "inject.yaml"}
EXPECTED_WORDS = {
    "fifo": "is a named pipe, not a file",
    "passwd": "is a link",
    "zero": "is a link",
    "outside": "is a link",
    "linkdir": "is a link",
    "linkinside": "is a link",
    "hook": "which is not Discord",
    "inject": "the application id is not a Discord id",
    "etc": "not an allowed output folder",
    "lonely": "seconds for a voice clip and none came",  # the wait said is measured: 2 s or more
    "big": "the limit is 3.0 MB",
    "svg": "is an SVG drawing",
    "text": "is a text file, not a voice clip",
    "pdf": "is a PDF document",
    "page": "is a web page",
    "huge": "is too large",
    "wide": "5000×100 pixels",
    "blip": "is too short",
    "long": "the limit is 8 s",
    "photo": "has no sound in it",
    "escape": "outside its folder",
    "bomb": "is not valid",
}
"""What some refusals must say (beyond naming the file): the right reason, not a generic one."""


def _note_for(outbox: Path, stem: str) -> Path | None:
    """``<stem>.failed.txt``; for a long stem, the note whose (shortened) name starts like it."""
    exact = outbox / f"{stem}.failed.txt"
    if exact.exists() or len(stem) < 60:
        return exact if exact.exists() else None
    return next((p for p in outbox.glob("*.failed.txt") if p.name.startswith(stem[:60])), None)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def test_inbox_refuses_every_bad_drop_and_still_takes_the_good_one(tmp_path: Path, media: Media) -> None:
    """Dropped at once into a running `up`: every bad entry ends with a note (in .failed/ or as a failed
    job) naming the file, in plain words; links are never followed (no /etc/passwd in any bucket); the
    JSON log stays JSON; and the good drop among them becomes a video."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "voice.flac").write_bytes(media.voice.read_bytes())
    cases = _inbox_cases(media, outside)
    env = _env(
        tmp_path,
        MOUTHPIECE_SETTLE_SECONDS="0.3", MOUTHPIECE_AVATAR_WAIT_SECONDS="2", MOUTHPIECE_MAX_AUDIO_SECONDS="8",
        MOUTHPIECE_MAX_INPUT_BYTES=str(3 * 1024 * 1024), MOUTHPIECE_RECONCILE_INTERVAL="0",
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "up", "--no-ingress"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    inbox, outbox = tmp_path / "data" / "inbox", tmp_path / "data" / "outbox"
    try:
        deadline = time.monotonic() + 60
        while not (inbox / ".failed").is_dir() and time.monotonic() < deadline:
            assert proc.poll() is None, _stop(proc)
            time.sleep(0.2)
        staging = tmp_path / "staging"
        staging.mkdir()
        for _, _, build in cases:
            build(staging)
        (staging / "zz-good.flac").write_bytes(media.voice.read_bytes())
        (staging / "zz-good.png").write_bytes(media.face.read_bytes())
        for entry in sorted(staging.iterdir()):
            os.rename(entry, inbox / entry.name)  # atomic moves: whole files appear at once
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            done = (outbox / "zz-good.mp4").exists()
            if done and all(_note_for(outbox, stem) for _, stem, _ in cases):
                break
            assert proc.poll() is None, _stop(proc)
            time.sleep(0.5)
    finally:
        log = _stop(proc)
    problems = []
    for kind, stem, _ in cases:
        note = _note_for(outbox, stem)
        if note is None:
            problems.append(f"{kind}: no note")
            continue
        text = note.read_text()
        name = EXPECTED_NAME.get(stem, stem[:50])
        if name not in text or EXPECTED_WORDS.get(stem, "") not in text or _clean(text, tmp_path):
            problems.append(f"{kind}: {text.strip()[:400]!r}")
    assert problems == []
    assert (outbox / "zz-good.mp4").stat().st_size > 10_000
    assert len(cases) >= 30
    buckets = tmp_path / "data"
    leaked = [
        p
        for p in buckets.rglob("*")
        if p.is_file() and not p.is_symlink() and b"root:x:0:0" in p.read_bytes()[:100_000]
    ]
    assert leaked == []
    assert not (outside / "voice.flac").is_symlink() and (outside / "voice.flac").exists()
    raw = [line for line in log.splitlines() if line.strip() and not line.startswith("{")]
    assert all(not any(w in line for w in ("Warning", "Traceback", "Error")) for line in raw), raw
    for line in log.splitlines():
        if line.startswith("{"):
            json.loads(line)
