"""What an upload really is, from its first bytes: the one media sniffer for console uploads and Discord
attachments (and the console's served inputs).

A file is taken only when its first bytes are a real header of a format we read, checked in full, not a
magic number alone:

- MPEG audio (MP3): two consecutive frame headers, each with a valid version (not the reserved one),
  layer, bitrate index (not free, not bad), sample-rate index and emphasis, the second at the offset the
  first one's length says, with the same version, layer and sample rate. After an ID3v2 tag (its
  version, flags and sync-safe size checked) the first frame is checked where the tag ends, when that
  lies within the bytes given. ADTS (AAC) the same way: two frames, valid sample-rate index and length.
- WAV: ``RIFF``/``WAVE`` and a ``fmt `` chunk with a plausible size, channel count and sample rate;
  FLAC: ``fLaC`` then a STREAMINFO block of 34 bytes with sane block sizes and rate; Ogg: a first page (version 0, begin-of-stream)
  whose packet is Vorbis, Opus, FLAC or Speex; AIFF: ``FORM`` and a ``COMM`` chunk.
- MP4/MOV/M4A: a whole ``ftyp`` box of a plausible size with printable brands, and the next box a
  printable type; Matroska/WebM: the EBML magic and a ``webm``/``matroska`` DocType; AVI: ``RIFF``/``AVI `` and
  a ``LIST`` chunk.
- PNG: the signature and an ``IHDR`` chunk; JPEG: SOI and a real marker with a segment length; GIF: the signature, a size
  and a first block that is an extension or an image; WebP: ``RIFF``/``WEBP`` and a ``VP8`` chunk;
  BMP: ``BM``, zero reserved bytes and a known DIB header size.

Text in any Unicode encoding (UTF-8 with or without a BOM, UTF-16 and UTF-32 in either byte order)
matches none of these: a UTF-16 BOM ``FF FE`` looks like an MPEG frame sync, but the frame that would
follow is not there. Give ``sniff`` at least ``HEAD_BYTES`` (or the whole file when it is shorter).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

AUDIO_HINT = "send .mp3, .wav, .ogg, .m4a or .flac"
"""What to send instead of a file that is not audio (every refusal of a voice says it)."""
IMAGE_HINT = "send a .png, .jpg or .webp photo, or an .mp4, .mov or .webm video"
"""What to send instead of a file that is not a picture or a video."""

HEAD_BYTES = 8192
"""How many first bytes ``sniff`` wants: two MPEG frames of the largest kind fit in 4 KB."""


class Kind(StrEnum):
    audio = "audio"
    image = "image"
    video = "video"


@dataclass(frozen=True)
class Sniffed:
    kind: Kind
    ext: str


def sniff(head: bytes) -> Sniffed | None:
    """The media format of a file from its first bytes, or None if it is not one we take."""
    for check in (_image, _container, _audio):
        found = check(head)
        if found is not None:
            return found
    return None


# --- images -------------------------------------------------------------------------------------------------


def _image(head: bytes) -> Sniffed | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[8:16] == b"\x00\x00\x00\x0dIHDR":
        return Sniffed(Kind.image, ".png")
    if head[:3] == b"\xff\xd8\xff" and _jpeg_marker_ok(head):
        return Sniffed(Kind.image, ".jpg")
    if head[:6] in (b"GIF87a", b"GIF89a") and _gif_ok(head):
        return Sniffed(Kind.image, ".gif")
    if _riff(head, b"WEBP") and head[12:15] == b"VP8" and head[15:16] in (b" ", b"L", b"X"):
        return Sniffed(Kind.image, ".webp")
    if head[:2] == b"BM" and head[6:10] == b"\0\0\0\0" and _u32le(head, 14) in (12, 40, 52, 56, 64, 108, 124):
        return Sniffed(Kind.image, ".bmp")
    return None


def _jpeg_marker_ok(head: bytes) -> bool:
    """The marker after SOI is a segment (not SOI or EOI again) whose length counts its own two bytes."""
    return len(head) > 5 and 0xC0 <= head[3] <= 0xFE and head[3] not in (0xD8, 0xD9) and _u16be(head, 4) >= 2


def _gif_ok(head: bytes) -> bool:
    """A non-empty logical screen, then (after the global colour table) an extension or an image."""
    if len(head) < 14 or _u16le(head, 6) == 0 or _u16le(head, 8) == 0:
        return False
    flags = head[10]
    table = 3 * (2 ** ((flags & 0x07) + 1)) if flags & 0x80 else 0
    first = 13 + table
    return first < len(head) and head[first] in (0x21, 0x2C)


# --- containers (video, and audio in video containers) ---------------------------------------------


def _container(head: bytes) -> Sniffed | None:
    if head[4:8] == b"ftyp" and _ftyp_ok(head):
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return Sniffed(Kind.audio, ".m4a")
        return Sniffed(Kind.video, ".mov" if brand == b"qt  " else ".mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3") and _ebml_doctype(head) in (b"webm", b"matroska"):
        return Sniffed(Kind.video, ".webm" if _ebml_doctype(head) == b"webm" else ".mkv")
    if _riff(head, b"AVI ") and head[12:16] == b"LIST":
        return Sniffed(Kind.video, ".avi")
    return None


def _ftyp_ok(head: bytes) -> bool:
    """An ftyp box: 16..1024 bytes, a whole number of brands, printable brands; the next box (when it
    starts within ``head``) has a printable type."""
    size = _u32be(head, 0)
    if not 16 <= size <= min(1024, len(head)) or size % 4 or not _printable(head[8:12]):
        return False
    if size + 8 > len(head) and len(head) < HEAD_BYTES:
        return False  # the whole file is an ftyp box and nothing else
    brands = head[16 : min(size, len(head))]
    if any(not _printable(brands[i : i + 4]) for i in range(0, len(brands) - 3, 4)):
        return False
    if size + 8 <= len(head):
        return _u32be(head, size) in (0, 1) or (
            _u32be(head, size) >= 8 and _printable(head[size + 4 : size + 8])
        )
    return True


def _ebml_doctype(head: bytes) -> bytes | None:
    """The DocType of an EBML header (element 0x4282 with a one-byte size), from the first 64 bytes."""
    at = head.find(b"\x42\x82", 4, 64)
    if at < 0 or at + 3 > len(head) or not head[at + 2] & 0x80:
        return None
    length = head[at + 2] & 0x7F
    return head[at + 3 : at + 3 + length]


# --- audio ----------------------------------------------------------------------------------------------


def _audio(head: bytes) -> Sniffed | None:
    if _riff(head, b"WAVE") and _wave_fmt_ok(head):
        return Sniffed(Kind.audio, ".wav")
    if (
        head[:4] == b"fLaC"
        and head[4:5] in (b"\x00", b"\x80")
        and head[5:8] == b"\x00\x00\x22"
        and _streaminfo_ok(head)
    ):
        return Sniffed(Kind.audio, ".flac")
    if head[:4] == b"OggS":
        return _ogg(head)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC") and _aiff_ok(head):
        return Sniffed(Kind.audio, ".aiff")
    if head[:3] == b"ID3":
        return _after_id3(head)
    return _frames(head, 0)


def _riff(head: bytes, form: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == form and _u32le(head, 4) >= 4


def _wave_fmt_ok(head: bytes) -> bool:
    """The ``fmt `` chunk (found by walking the chunks within ``head``): 16..40 bytes, 1..32 channels,
    1 kHz..768 kHz."""
    at = 12
    while at + 8 <= len(head):
        chunk, size = head[at : at + 4], _u32le(head, at + 4)
        if not _printable(chunk):
            return False
        if chunk == b"fmt ":
            if not 16 <= size <= 40 or at + 16 > len(head):
                return False
            channels, rate = _u16le(head, at + 10), _u32le(head, at + 12)
            return _u16le(head, at + 8) != 0 and 1 <= channels <= 32 and 1000 <= rate <= 768_000
        at += 8 + size + (size & 1)
    return False


def _streaminfo_ok(head: bytes) -> bool:
    """FLAC's STREAMINFO: block sizes 16..65535 (min <= max), a sample rate of 1 Hz..655 kHz."""
    low, high = _u16be(head, 8), _u16be(head, 10)
    rate = (head[18] << 12 | head[19] << 4 | head[20] >> 4) if len(head) >= 21 else 0
    return 16 <= low <= high and 0 < rate <= 655_350


def _aiff_ok(head: bytes) -> bool:
    at = 12
    while at + 8 <= len(head):
        chunk, size = head[at : at + 4], _u32be(head, at + 4)
        if not _printable(chunk):
            return False
        if chunk == b"COMM":
            return size in (18,) or (head[8:12] == b"AIFC" and 22 <= size <= 280)
        at += 8 + size + (size & 1)
    return False


_OGG_CODECS = {
    b"\x01vorbis": Sniffed(Kind.audio, ".ogg"),
    b"OpusHead": Sniffed(Kind.audio, ".opus"),
    b"\x7fFLAC": Sniffed(Kind.audio, ".oga"),
    b"Speex   ": Sniffed(Kind.audio, ".ogg"),
}


def _ogg(head: bytes) -> Sniffed | None:
    """The first page of an Ogg stream (version 0, begin-of-stream) and the codec of its packet."""
    if len(head) < 28 or head[4] != 0 or head[5] & 0x02 == 0 or head[5] & 0xF8:
        return None
    payload = 27 + head[26]
    for magic, found in _OGG_CODECS.items():
        if head[payload : payload + len(magic)] == magic:
            return found
    return None


def _after_id3(head: bytes) -> Sniffed | None:
    """An ID3v2 tag (version 2..4, no undefined flags, a sync-safe size), then MPEG or ADTS frames where
    the tag ends, when that lies within ``head``; the tag alone when it does not."""
    if len(head) < 10 or head[3] not in (2, 3, 4) or head[4] == 0xFF:
        return None
    undefined = {2: 0x3F, 3: 0x1F, 4: 0x0F}[head[3]]
    if head[5] & undefined or any(b & 0x80 for b in head[6:10]):
        return None
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    end = 10 + size + (10 if head[3] == 4 and head[5] & 0x10 else 0)
    while end < len(head) and head[end] == 0:  # padding some taggers add after the tag
        end += 1
    if end + 4 > len(head):  # the tag goes on past the bytes given (a file that short ends inside it)
        return Sniffed(Kind.audio, ".mp3") if len(head) >= HEAD_BYTES else None
    return _frames(head, end, partial=len(head) >= HEAD_BYTES)


# --- MPEG audio and ADTS frames ------------------------------------------------------------------------------

_BITRATES = {  # kbps by (MPEG-1?, layer); index 0 (free format) and 15 (bad) are refused
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_ADTS_RATES = 13  # sampling-frequency indexes 0..12 are defined


@dataclass(frozen=True)
class _Frame:
    kind: str  # "mpeg" or "adts"
    family: tuple[int, ...]  # what the next frame must share
    length: int


def mpeg_frame(head: bytes, at: int) -> _Frame | None:
    """The MPEG audio frame header at ``at``, every field checked, or None."""
    if at + 4 > len(head) or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return None
    b1, b2, b3 = head[at + 1], head[at + 2], head[at + 3]
    version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3 or b3 & 3 == 2:
        return None
    layer = 4 - layer_bits  # bits 11 = layer I, 10 = II, 01 = III
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    elif layer == 3 and not mpeg1:
        length = 72 * bitrate // rate + padding
    else:
        length = 144 * bitrate // rate + padding
    return _Frame("mpeg", (version, layer, rate_index), length)


def adts_frame(head: bytes, at: int) -> _Frame | None:
    """The ADTS (AAC) frame header at ``at``, checked, or None."""
    if at + 7 > len(head) or head[at] != 0xFF or head[at + 1] & 0xF6 != 0xF0:
        return None
    rate_index = (head[at + 2] >> 2) & 0x0F
    channels = ((head[at + 2] & 1) << 2) | (head[at + 3] >> 6)
    length = ((head[at + 3] & 3) << 11) | (head[at + 4] << 3) | (head[at + 5] >> 5)
    header = 7 if head[at + 1] & 1 else 9
    if rate_index >= _ADTS_RATES or length <= header:
        return None
    return _Frame("adts", (rate_index, channels), length)


def _frames(head: bytes, at: int, *, partial: bool = False) -> Sniffed | None:
    """Two consecutive frames of one stream at ``at`` (MPEG audio or ADTS). With ``partial`` (after an
    ID3 tag, in a ``head`` of ``HEAD_BYTES`` that may end inside the first frame) one fully checked
    header is enough when the second would start beyond ``head``."""
    for read, ext in ((adts_frame, ".aac"), (mpeg_frame, ".mp3")):
        first = read(head, at)
        if first is None:
            continue
        after = at + first.length
        second = read(head, after)
        if second is not None and second.family == first.family:
            return Sniffed(Kind.audio, ext)
        if partial and after + 4 > len(head):
            return Sniffed(Kind.audio, ext)
    return None


# --- bytes -------------------------------------------------------------------------------------------------


def _printable(data: bytes) -> bool:
    return len(data) == 4 and all(0x20 <= b < 0x7F for b in data)


def _u16le(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "little") if at + 2 <= len(data) else 0


def _u32le(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little") if at + 4 <= len(data) else 0


def _u16be(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big") if at + 2 <= len(data) else 0


def _u32be(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big") if at + 4 <= len(data) else 0


_BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)


def text_encoding(head: bytes) -> str | None:
    """The encoding ``head`` reads as text in (by its byte-order mark, else UTF-8), or None when it is
    not text. A cut in the middle of a character at the end of ``head`` is allowed."""
    encoding, body = "utf-8", head
    for bom, name in _BOMS:
        if head.startswith(bom):
            encoding, body = name, head[len(bom) :]
            break
    width = 4 if "32" in encoding else 2 if "16" in encoding else 1
    body = body[: len(body) - len(body) % width]
    for trim in range(4 if width == 1 else 1):
        try:
            text = body[: len(body) - trim].decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding if all(c.isprintable() or c in "\t\r\n\f" for c in text) else None
    return None
