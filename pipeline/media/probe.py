"""Probing media in-process (PyAV): streams, size as displayed (rotation), still or moving, frames."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av

from pipeline.errors import FFmpegError, PictureTooLarge
from pipeline.media.sniff import text_encoding

IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe"}


# --- probing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What a media file holds. ``duration`` in seconds (0 for a still image)."""

    format: str
    duration: float
    has_audio: bool
    has_video: bool
    still: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    audio_codec: str = ""
    video_codec: str = ""
    alpha: bool = False
    pix_fmt: str = ""
    rotation: int = 0
    """Degrees the picture is turned for display (EXIF orientation, a video's display matrix): 0, 90,
    180 or 270. ``width`` and ``height`` are the displayed size, already swapped for 90 and 270."""
    video_delay: float = 0.0
    """Seconds the video stream starts after the file's first stream (an edit list or ``start_time``:
    a clip whose audio starts first); a copy of the stream would lose it (``already_normalized``)."""


ROTATION_PROBE_PIXELS = 64_000_000
"""Largest picture whose first frame probe decodes to read its rotation (bigger ones are refused
anyway: ``max_input_side``)."""


def probe(path: Path) -> Probe:
    """Open ``path`` with the FFmpeg libraries; ``FFmpegError`` if it is not a readable media file
    (``PictureTooLarge`` for an image declaring an absurd size). Sizes are as displayed (rotation applied),
    the way ffmpeg's own auto-rotation turns the frames when it converts the file."""
    try:
        with av.open(str(path)) as container:
            info = _probe_container(container)
            if info.has_video and 0 < info.width * info.height <= ROTATION_PROBE_PIXELS:
                info = _with_rotation(container, info)  # in the same opening: one read of the header
    except (av.FFmpegError, UnicodeDecodeError, ValueError, IndexError, AttributeError, TypeError) as exc:
        raise FFmpegError(f"cannot read {path.name}: {exc}", str(exc)) from exc
    if info.still:
        info = _with_image_header(path, info)
    return info


def _probe_container(container: Any) -> Probe:
    fmt = container.format.name
    audio = next((s for s in container.streams.audio if s.codec_context is not None), None)
    video = next((s for s in container.streams.video if s.codec_context is not None), None)
    duration = float(container.duration / av.time_base) if container.duration else 0.0
    if audio is not None and not duration and audio.duration and audio.time_base:
        duration = float(audio.duration * audio.time_base)
    still = video is not None and (fmt in IMAGE_FORMATS or (video.frames or 0) == 1)
    rate = video.average_rate if video is not None else None
    vc = video.codec_context if video is not None else None
    ac = audio.codec_context if audio is not None else None
    return Probe(
        format=fmt,
        duration=0.0 if still else duration,
        has_audio=ac is not None,
        has_video=vc is not None,
        still=still,
        width=vc.width if vc is not None else 0,
        height=vc.height if vc is not None else 0,
        fps=float(rate) if rate else 0.0,
        sample_rate=ac.sample_rate if ac is not None else 0,
        channels=ac.channels if ac is not None else 0,
        audio_codec=ac.name if ac is not None else "",
        video_codec=vc.name if vc is not None else "",
        alpha=vc is not None and _has_alpha(vc.pix_fmt),
        pix_fmt=(vc.pix_fmt or "") if vc is not None else "",
        video_delay=_delay(container, video),
    )


def _delay(container: Any, stream: Any) -> float:
    """Seconds ``stream`` starts after the container's first stream (0 when either is unknown)."""
    if stream is None or stream.start_time is None or stream.time_base is None:
        return 0.0
    first = float(container.start_time / av.time_base) if container.start_time is not None else 0.0
    return max(0.0, float(stream.start_time * stream.time_base) - first)


def _with_image_header(path: Path, info: Probe) -> Probe:
    """The size an image's header declares (Pillow reads headers only), for pictures FFmpeg will not
    even size (it reports 0×0 past its own limit); ``PictureTooLarge`` past Pillow's bomb limit."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
        raise PictureTooLarge(numbers[0] if numbers else 0) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return info  # not a format Pillow knows: FFmpeg's view stands
    if info.width > 0 and info.height > 0:
        return info
    return replace(info, width=width, height=height)


def _with_rotation(container: Any, info: Probe) -> Probe:
    """``info`` with the rotation of the open ``container``'s first frame (FFmpeg exports EXIF
    orientation and a video's display matrix as the frame's display matrix) and the displayed size."""
    try:
        stream = next(s for s in container.streams.video if s.codec_context is not None)
        frame = next(container.decode(stream), None)
        rotation = round(frame.rotation) % 360 if frame is not None else 0
    except (av.FFmpegError, StopIteration, ValueError, AttributeError, TypeError):
        return info  # undecodable: the conversion reports it
    if rotation not in (90, 180, 270):
        return info
    swap = rotation in (90, 270)
    return replace(
        info,
        rotation=rotation,
        width=info.height if swap else info.width,
        height=info.width if swap else info.height,
    )


def looks_like(head: bytes) -> str | None:
    """What a file that is not audio, an image or a video is, from its first bytes, for a refusal that
    says so ("an SVG drawing", "a PDF document"); None when it is not one of these."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"%pdf"):
        return "a PDF document"
    if b"<svg" in text[:2048] or (text.startswith(b"<?xml") and b"svg" in text[:2048]):
        return "an SVG drawing"
    if text.startswith((b"<!doctype html", b"<html")):
        return "a web page"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive or office document"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:512]):
        return "a text file"
    if head and text_encoding(head) is not None:  # UTF-8 beyond ASCII, UTF-16, UTF-32
        return "a text file"
    return None


def _has_alpha(pix_fmt: str | None) -> bool:
    """Whether a pixel format carries transparency (an alpha component, or a palette as in GIF/PNG8)."""
    if not pix_fmt:
        return False
    fmt = av.video.format.VideoFormat(pix_fmt)
    # components: gray=1, gray+alpha=2, colour=3, colour+alpha=4
    return fmt.has_palette or len(fmt.components) in (2, 4)


def count_frames(path: Path) -> int:
    """Frames in the first video stream, by demuxing (exact for our normalized clips)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)
