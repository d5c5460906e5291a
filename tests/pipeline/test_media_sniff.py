"""The one media sniffer (``pipeline.media.sniff``): real files made with ffmpeg and Pillow are taken as
what they are; text in every Unicode encoding, named as audio or as an image, is taken as nothing; MPEG
frame headers are checked field by field and two frames in a row."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest
from PIL import Image

from pipeline.media import looks_like
from pipeline.media.sniff import HEAD_BYTES, Kind, mpeg_frame, sniff, text_encoding

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
TEXT = "This is not a voice clip. Ünïcödé — ÿ 日本語 🎤 " * 40
ENCODINGS = {
    "utf-8": TEXT.encode("utf-8"),
    "utf-8 with BOM": TEXT.encode("utf-8-sig"),
    "utf-16 LE with BOM": b"\xff\xfe" + TEXT.encode("utf-16-le"),
    "utf-16 BE with BOM": b"\xfe\xff" + TEXT.encode("utf-16-be"),
    "utf-32 LE with BOM": b"\xff\xfe\x00\x00" + TEXT.encode("utf-32-le"),
    "utf-32 BE with BOM": b"\x00\x00\xfe\xff" + TEXT.encode("utf-32-be"),
    "utf-16 LE without BOM": TEXT.encode("utf-16-le"),
    "utf-16 BE without BOM": TEXT.encode("utf-16-be"),
}
AUDIO = {  # extension: (ffmpeg output options, expected extension)
    "mp3": (["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"], ".mp3"),
    "mp3 22 kHz": (["-c:a", "libmp3lame", "-ar", "22050", "-b:a", "32k", "-f", "mp3"], ".mp3"),
    "mp3 no ID3": (["-c:a", "libmp3lame", "-id3v2_version", "0", "-write_xing", "0", "-f", "mp3"], ".mp3"),
    "mp2": (["-c:a", "mp2", "-f", "mp2"], ".mp3"),
    "wav": (["-c:a", "pcm_s16le", "-f", "wav"], ".wav"),
    "flac": (["-c:a", "flac", "-f", "flac"], ".flac"),
    "ogg vorbis": (["-c:a", "libvorbis", "-f", "ogg"], ".ogg"),
    "opus": (["-c:a", "libopus", "-f", "ogg"], ".opus"),
    "m4a": (["-c:a", "aac", "-f", "ipod"], ".m4a"),
    "adts aac": (["-c:a", "aac", "-f", "adts"], ".aac"),
    "aiff": (["-c:a", "pcm_s16be", "-f", "aiff"], ".aiff"),
}
VIDEO = {
    "mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4"], ".mp4"),
    "mov": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mov"], ".mov"),
    "webm": (["-c:v", "libvpx", "-f", "webm"], ".webm"),
    "avi": (["-c:v", "mjpeg", "-f", "avi"], ".avi"),
}


def _ffmpeg(tmp: Path, source: list[str], options: list[str], name: str) -> bytes:
    out = tmp / name.replace(" ", "_")
    subprocess.run([FFMPEG, "-v", "error", "-y", *source, "-t", "1", *options, str(out)], check=True)
    return out.read_bytes()


def _head(data: bytes) -> bytes:
    return data[:HEAD_BYTES]


@pytest.mark.parametrize("name", list(AUDIO))
def test_real_audio_files_are_audio(tmp_path: Path, name: str) -> None:
    """Each audio format ffmpeg writes is audio, with its real format's extension."""
    options, ext = AUDIO[name]
    data = _ffmpeg(tmp_path, ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"], options, name)
    found = sniff(_head(data))
    assert found is not None and (found.kind, found.ext) == (Kind.audio, ext), (name, data[:16])


@pytest.mark.parametrize("name", list(VIDEO))
def test_real_video_files_are_video(tmp_path: Path, name: str) -> None:
    options, ext = VIDEO[name]
    data = _ffmpeg(tmp_path, ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=5"], options, name)
    found = sniff(_head(data))
    assert found is not None and (found.kind, found.ext) == (Kind.video, ext), (name, data[:16])


@pytest.mark.parametrize(
    "fmt,ext", [("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"), ("WEBP", ".webp"), ("BMP", ".bmp")]
)
def test_real_images_are_images(fmt: str, ext: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 120, 40)).save(out, format=fmt)
    found = sniff(out.getvalue())
    assert found is not None and (found.kind, found.ext) == (Kind.image, ext)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_text_in_every_unicode_encoding_is_not_media(encoding: str) -> None:
    """Text is refused whatever its encoding: a UTF-16 LE BOM (FF FE) is an MPEG frame sync whose
    header even decodes (MPEG-1 layer I), but no second frame follows."""
    data = ENCODINGS[encoding]
    assert sniff(_head(data)) is None
    assert sniff(data[:64]) is None
    if "without" not in encoding:
        assert text_encoding(_head(data)) is not None
        assert looks_like(_head(data)) == "a text file"


def test_the_utf16_bom_decodes_as_one_frame_header_but_not_two() -> None:
    """Why two frames are checked: FF FE 54 00 ("\\ufeffT" in UTF-16 LE) is a valid header by itself."""
    data = ENCODINGS["utf-16 LE with BOM"]
    assert mpeg_frame(data, 0) is not None
    assert sniff(data) is None


def test_mpeg_header_fields_are_each_checked(tmp_path: Path) -> None:
    """Starting from a real MP3 with no tag, flipping any one field to a reserved or invalid value (version
    01, layer 00, bitrate 0000 or 1111, sample rate 11, emphasis 10), or breaking the second frame,
    makes it not audio."""
    data = _ffmpeg(
        tmp_path,
        ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"],
        AUDIO["mp3 no ID3"][0],
        "x.mp3",
    )
    assert sniff(data[:HEAD_BYTES]) is not None
    frame = mpeg_frame(data, 0)
    assert frame is not None

    def patched(at: int, mask: int, value: int) -> bytes:
        head = bytearray(data[:HEAD_BYTES])
        head[at] = (head[at] & ~mask & 0xFF) | value
        return bytes(head)

    bad = {
        "version 01": patched(1, 0x18, 0x08),
        "layer 00": patched(1, 0x06, 0x00),
        "bitrate 0000": patched(2, 0xF0, 0x00),
        "bitrate 1111": patched(2, 0xF0, 0xF0),
        "sample rate 11": patched(2, 0x0C, 0x0C),
        "emphasis 10": patched(3, 0x03, 0x02),
    }
    for what, head in bad.items():
        assert sniff(head) is None, what
    second = bytearray(data[:HEAD_BYTES])
    second[frame.length] = 0x00
    assert sniff(bytes(second)) is None, "no second frame"
    assert sniff(data[: frame.length]) is None, "one frame only"


@pytest.mark.parametrize(
    "head",
    [
        b"ID3 is a tag, this is text",
        b"RIFF1234WAVEfmt this is text, not audio at all",
        b"fLaC is a codec name",
        b"OggS are not socks",
        b"\x89PNG\r\n\x1a\n but no IHDR chunk here......",
        b"GIF89a but nothing after it",
        b"abcdftypisom text that mentions ftyp",
        b"BM this is text",
        b"\xff\xfb not an mp3 frame after all",
    ],
)
def test_magic_numbers_alone_are_not_enough(head: bytes) -> None:
    assert sniff(head + b" " * 100) is None
