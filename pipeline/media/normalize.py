"""Normalizing uploads (the validate stage): voices to 16 kHz mono WAV, avatars to constant-fps H.264."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from pipeline.config import MediaSettings
from pipeline.media.decode import AUDIO_RATE
from pipeline.media.probe import Probe
from pipeline.media.run import run_ffmpeg

# --- normalization (validate stage) -----------------------------------------------------------------


def normalize_audio(settings: MediaSettings, src: Path, dst: Path) -> None:
    """Any audio (or the audio of a video) → 16 kHz mono 16-bit WAV.

    Time 0 of the WAV is the file's first stream's start: audio that starts later in its container
    (an edit list, ``start_time``: a phone video whose sound starts 0.18 s after its picture) is
    preceded by that much silence, so it keeps its place against the picture (``aresample``'s
    ``first_pts``; without it ffmpeg starts the WAV at the first sample)."""
    # bit-exact: a plain 44-byte header, so the length follows from the size alone
    audio = ffmpeg.input(str(src)).audio.filter("aresample", first_pts=0)
    stream = audio.output(
        str(dst),
        ac=1,
        ar=AUDIO_RATE,
        acodec="pcm_s16le",
        f="wav",
        map_metadata=-1,
        fflags="+bitexact",
        flags="+bitexact",
    )
    run_ffmpeg(settings, stream, f"decoding the audio of {src.name}")


def bounded_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so no side exceeds ``max_side``, keeping aspect, both even (x264 needs it)."""
    scale = min(1.0, max_side / max(width, height))
    w = max(2, round(width * scale / 2) * 2)
    h = max(2, round(height * scale / 2) * 2)
    return w, h


def avatar_size(width: int, height: int, max_side: int, min_height: int = 0) -> tuple[int, int]:
    """(w, h) of a normalized avatar: no side over ``max_side``, and at least ``min_height`` tall where
    ``max_side`` allows (a small picture is enlarged, so the mouth and the subtitles have pixels to be
    drawn with); aspect kept, both even."""
    scale = min(1.0, max_side / max(width, height))
    if height * scale < min_height:
        scale = min(min_height / height, max_side / max(width, height))
    w = max(2, round(width * scale / 2) * 2)
    h = max(2, round(height * scale / 2) * 2)
    return w, h


def normalize_avatar(settings: MediaSettings, src: Path, dst: Path, info: Probe) -> None:
    """A photo or video → H.264 (yuv420p) at constant ``settings.fps``, bounded size (``avatar_size``:
    enlarged with Lanczos when shorter than ``settings.min_height``), no audio.

    A still photo becomes a one-frame clip; the renderer repeats it for the length of the audio. A video
    that already is such a clip is copied, not re-encoded (the common case of screen and phone exports
    is not, but pipeline-made clips are). Rotation (EXIF orientation, a phone video's display matrix) is
    applied here, once, by ffmpeg's auto-rotation: the clip is upright with no rotation left in it, and
    ``info`` (from ``probe``) gives the displayed size, so a portrait stays a portrait.
    """
    if already_normalized(settings, info):
        stream = ffmpeg.input(str(src)).output(str(dst), an=None, vcodec="copy", movflags="+faststart")
        run_ffmpeg(settings, stream, f"copying the video of {src.name}")
        return
    w, h = avatar_size(info.width, info.height, settings.max_side, settings.min_height)
    # a still is looped (and cut to one frame below) so that filters with a time base get a stream
    source = ffmpeg.input(str(src), loop=1) if info.still else ffmpeg.input(str(src))
    video = source.video.filter("scale", w, h, flags="lanczos")
    if info.alpha:  # transparent avatars (cartoons, stickers): flatten onto white, not onto garbage
        background = ffmpeg.input(f"color=c=white:s={w}x{h}:r={_fps_arg(settings.fps)}", f="lavfi")
        video = ffmpeg.filter([background, video], "overlay", shortest=1, format="auto")
    # start_time 0: a video stream that starts after the file's audio (an edit list) gets its first
    # frame repeated until then, so frame i is still the picture shown at i / fps
    video = video.filter("fps", fps=_fps_arg(settings.fps), start_time=0).filter("format", "yuv420p")
    extra: dict[str, Any] = {"frames:v": 1} if info.still else {}
    stream = ffmpeg.output(
        video,
        str(dst),
        an=None,
        vcodec="libx264",
        preset=settings.intermediate_preset,
        crf=intermediate_crf(settings),
        r=_fps_arg(settings.fps),
        movflags="+faststart",
        **extra,
    )
    run_ffmpeg(settings, stream, f"converting {src.name} to video")


def already_normalized(settings: MediaSettings, info: Probe) -> bool:
    """Whether a video is already constant-rate H.264 yuv420p at our fps and at its normalized size, and
    upright and starting with the file (a copy would keep a display rotation or a start offset that
    frame decoding ignores)."""
    return (
        not info.still
        and info.rotation == 0
        and info.video_delay < 0.001
        and info.video_codec == "h264"
        and info.pix_fmt == "yuv420p"
        and abs(info.fps - settings.fps) < 1e-3
        and avatar_size(info.width, info.height, settings.max_side, settings.min_height)
        == (info.width, info.height)
    )


def intermediate_crf(settings: MediaSettings) -> int:
    """Quality of files a later stage re-encodes: well above the final's, so that re-encoding them adds
    little noise (static backgrounds otherwise 'pulse' at keyframes)."""
    return max(0, settings.crf - 6)


def _fps_arg(fps: float) -> str:
    frac = Fraction(fps).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"
