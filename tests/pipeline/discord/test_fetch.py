"""Safe attachment downloads: allow-list, manual redirects, byte cap, content sniffing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pipeline.discord.fetch import AllowList, Fetcher, Kind, sniff
from pipeline.errors import InvalidInput
from tests.pipeline.discord.conftest import FakeCdn
from tests.pipeline.test_media_sniff import ENCODINGS

VOICE = frozenset({Kind.audio, Kind.video})
FACE = frozenset({Kind.image, Kind.video})


def _fetcher(cdn_origin: str, max_bytes: int = 5 * 1024 * 1024) -> Fetcher:
    return Fetcher(AllowList.parse(["cdn.discordapp.com", cdn_origin]), max_bytes)


def test_allow_list_takes_https_hosts_and_exact_origins() -> None:
    """Bare host entries allow https on port 443 only; origin entries allow exactly that origin."""
    allow = AllowList.parse(["cdn.discordapp.com", "media.discordapp.net", "http://127.0.0.1:9000"])
    ok = ["https://cdn.discordapp.com/attachments/1/2/a.mp3", "https://MEDIA.discordapp.net./x.png"]
    ok.append("http://127.0.0.1:9000/a.wav")
    refused = [
        "http://cdn.discordapp.com/a.mp3",  # not https
        "https://cdn.discordapp.com:8443/a.mp3",  # another port
        "https://evil.example/a.mp3",
        "https://cdn.discordapp.com.evil.example/a.mp3",
        "https://user:pw@cdn.discordapp.com/a.mp3",  # credentials
        "http://127.0.0.1:9001/a.wav",  # same host, other port
        "https://127.0.0.1:9000/a.wav",  # same host and port, other scheme
        "http://localhost:9000/a.wav",
    ]
    assert all(allow.allows(httpx.URL(u)) for u in ok)
    assert not any(allow.allows(httpx.URL(u)) for u in refused)


@pytest.mark.parametrize(
    ("head", "kind", "ext"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, Kind.image, ".png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 20, Kind.image, ".jpg"),
        (b"GIF89a" + b"\0" * 20, Kind.image, ".gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", Kind.image, ".webp"),
        (b"RIFF\0\0\0\0WAVEfmt ", Kind.audio, ".wav"),
        (b"fLaC\0\0\0\x22" + b"\0" * 10, Kind.audio, ".flac"),
        (b"OggS\0\x02" + b"\0" * 20, Kind.audio, ".ogg"),
        (b"ID3\x04\0\0" + b"\0" * 20, Kind.audio, ".mp3"),
        (b"\xff\xfb\x90\x64" + b"\0" * 20, Kind.audio, ".mp3"),
        (b"\xff\xf1\x50\x80" + b"\0" * 20, Kind.audio, ".aac"),
        (b"\0\0\0\x20ftypM4A \0\0\0\0", Kind.audio, ".m4a"),
        (b"\0\0\0\x20ftypisom\0\0\0\0", Kind.video, ".mp4"),
        (b"\0\0\0\x14ftypqt  \0\0\0\0", Kind.video, ".mov"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", Kind.video, ".webm"),
    ],
)
def test_a_magic_number_alone_is_not_media(head: bytes, kind: Kind, ext: str) -> None:
    """A format's first bytes followed by nothing that format has (no chunk, no second frame, no box)
    are not taken: the sniffer checks real headers (``tests/pipeline/test_media_sniff.py`` has real
    files of each format)."""
    assert sniff(head) is None, (kind, ext)


@pytest.mark.parametrize(
    "head", [b"<!DOCTYPE html><html>", b"hello, I am a text file", b"", b"PK\x03\x04zip"]
)
def test_sniff_rejects_non_media(head: bytes) -> None:
    """HTML, text, empty files and archives are not media."""
    assert sniff(head) is None


def test_download_keeps_real_format_whatever_the_name(
    cdn: FakeCdn, cdn_origin: str, short_voice: Path, tmp_path: Path
) -> None:
    """A FLAC served as 'my voice.mp3' with a wrong Content-Type is saved as .flac, bytes intact."""
    cdn.files["/attachments/1/voice.mp3"] = (short_voice.read_bytes(), "text/plain")
    got = _fetcher(cdn_origin).download(
        f"{cdn_origin}/attachments/1/voice.mp3", tmp_path, what="audio", accept=VOICE, name="my voice.mp3"
    )
    assert got.kind == Kind.audio and got.path.suffix == ".flac" and got.path.name == "my-voice.flac"
    assert got.path.read_bytes() == short_voice.read_bytes()
    assert not list(tmp_path.glob(".*.part"))


def test_link_on_another_host_is_refused_without_a_request(tmp_path: Path, cdn_origin: str) -> None:
    """A URL outside the allow-list is refused with a message naming the allowed hosts."""
    with pytest.raises(InvalidInput, match=r"not a Discord attachment.*cdn\.discordapp\.com"):
        _fetcher(cdn_origin).download(
            "https://evil.example/a.mp3", tmp_path, what="audio", accept=VOICE, name="a.mp3"
        )


def test_redirect_off_the_list_is_refused(
    cdn: FakeCdn, cdn_origin: str, tmp_path: Path, discord_origin: str, short_voice: Path
) -> None:
    """A redirect to 127.0.0.1 on another port (not allow-listed) is refused and never requested."""
    cdn.redirects["/attachments/evil.mp3"] = f"{discord_origin}/internal/secret.mp3"
    with pytest.raises(InvalidInput, match="redirected somewhere that is not allowed"):
        _fetcher(cdn_origin).download(
            f"{cdn_origin}/attachments/evil.mp3", tmp_path, what="audio", accept=VOICE, name="evil.mp3"
        )
    assert cdn.hits == ["/attachments/evil.mp3"]


def test_redirect_within_the_list_is_followed(
    cdn: FakeCdn, cdn_origin: str, tmp_path: Path, short_voice: Path
) -> None:
    """Relative and absolute redirects on allowed origins are followed, each hop checked."""
    cdn.redirects["/a"] = "/b"
    cdn.redirects["/b"] = f"{cdn_origin}/real.flac"
    cdn.files["/real.flac"] = (short_voice.read_bytes(), "audio/flac")
    got = _fetcher(cdn_origin).download(f"{cdn_origin}/a", tmp_path, what="audio", accept=VOICE, name="a")
    assert got.path.suffix == ".flac" and cdn.hits == ["/a", "/b", "/real.flac"]


def test_redirect_loop_is_refused(cdn: FakeCdn, cdn_origin: str, tmp_path: Path) -> None:
    """More than a few redirects are refused."""
    cdn.redirects["/loop"] = "/loop"
    with pytest.raises(InvalidInput, match="redirects too many times"):
        _fetcher(cdn_origin).download(f"{cdn_origin}/loop", tmp_path, what="audio", accept=VOICE, name="x")


def test_declared_and_streamed_sizes_are_capped(cdn: FakeCdn, cdn_origin: str, tmp_path: Path) -> None:
    """A body over the cap is refused, whether announced by Content-Length or only streamed."""
    big = b"RIFF\0\0\0\0WAVE" + b"\0" * 300_000
    cdn.files["/declared.wav"] = (big, "audio/wav")
    cdn.streamed["/streamed.wav"] = big
    fetcher = _fetcher(cdn_origin, max_bytes=200_000)
    for path in ("/declared.wav", "/streamed.wav"):
        with pytest.raises(InvalidInput, match=r"the audio is (0\.3 MB; the limit is|over the) 0\.2 MB"):
            fetcher.download(f"{cdn_origin}{path}", tmp_path, what="audio", accept=VOICE, name="big.wav")
    assert not [p for p in tmp_path.iterdir() if p.is_file()]


def test_html_or_text_pretending_to_be_media_is_refused(
    cdn: FakeCdn, cdn_origin: str, tmp_path: Path
) -> None:
    """Content sniffing refuses a web page named .mp3 and text named .png, saying what they are."""
    cdn.files["/page.mp3"] = (b"<!DOCTYPE html><html><body>hi</body></html>", "audio/mpeg")
    cdn.files["/note.png"] = (b"just some words, honestly", "image/png")
    fetcher = _fetcher(cdn_origin)
    with pytest.raises(
        InvalidInput, match=r"^That file is not audio \(it is a web page or markup\): send \.mp3"
    ):
        fetcher.download(f"{cdn_origin}/page.mp3", tmp_path, what="audio", accept=VOICE, name="page.mp3")
    with pytest.raises(InvalidInput, match=r"avatar is not an image or a video \(it is text\)"):
        fetcher.download(f"{cdn_origin}/note.png", tmp_path, what="avatar", accept=FACE, name="note.png")


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_text_in_every_unicode_encoding_named_as_media_is_refused(
    cdn: FakeCdn, cdn_origin: str, tmp_path: Path, encoding: str
) -> None:
    """Text in UTF-8 (with and without a BOM), UTF-16 and UTF-32 (LE and BE, with a BOM), served as
    audio/mpeg named .mp3 and as image/png named .png, is refused at download (a UTF-16 LE BOM looks
    like an MPEG frame sync), saying it is text; nothing is left on disk."""
    body = ENCODINGS[encoding]
    cdn.files["/note.mp3"] = (body, "audio/mpeg")
    cdn.files["/note.png"] = (body, "image/png")
    fetcher = _fetcher(cdn_origin)
    said = r" \(it is text\)" if "without" not in encoding else ""
    with pytest.raises(InvalidInput, match=rf"^That file is not audio{said}: send \.mp3"):
        fetcher.download(f"{cdn_origin}/note.mp3", tmp_path, what="audio", accept=VOICE, name="note.mp3")
    with pytest.raises(InvalidInput, match=rf"avatar is not an image or a video{said}"):
        fetcher.download(f"{cdn_origin}/note.png", tmp_path, what="avatar", accept=FACE, name="note.png")
    assert list(tmp_path.iterdir()) == []


def test_audio_where_a_face_is_expected_is_refused(
    cdn: FakeCdn, cdn_origin: str, tmp_path: Path, short_voice: Path
) -> None:
    """A real audio file given as the avatar is refused: the accepted kinds are enforced."""
    cdn.files["/face.png"] = (short_voice.read_bytes(), "image/png")
    with pytest.raises(InvalidInput, match="not an image or a video"):
        _fetcher(cdn_origin).download(
            f"{cdn_origin}/face.png", tmp_path, what="avatar", accept=FACE, name="f"
        )


def test_missing_file_says_so(cdn_origin: str, tmp_path: Path, cdn: FakeCdn) -> None:
    """A 404 from the CDN becomes a message with the status."""
    with pytest.raises(InvalidInput, match=r"could not be downloaded \(HTTP 404\)"):
        _fetcher(cdn_origin).download(
            f"{cdn_origin}/gone.mp3", tmp_path, what="audio", accept=VOICE, name="g"
        )
