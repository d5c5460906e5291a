"""Media I/O in one place: probing and frame decoding (PyAV, in-process) and every ffmpeg command line.

Command lines are built with ffmpeg-python and run with the configured binary (``settings.ffmpeg_path``,
else ``ffmpeg`` on PATH, else the one in the imageio-ffmpeg wheel). A failing ffmpeg raises
``FFmpegError`` with the tail of its stderr; stages turn that into ``InvalidInput`` (bad upload) or let it
retry (anything else). Numpy transforms live in the stages, not here.
"""

from __future__ import annotations

import json
import math
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar

import av
import ffmpeg
import numpy as np

from pipeline.config import Settings
from pipeline.errors import ConfigError, FFmpegError, PictureTooLarge, RetryableError

T = TypeVar("T")
IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe"}
AUDIO_RATE = 16_000


@lru_cache(maxsize=4)
def _find_ffmpeg(configured: str | None) -> str:
    if configured:
        if not Path(configured).is_file() and not shutil.which(configured):
            raise ConfigError(f"ffmpeg_path {configured} does not exist")
        return configured
    if found := shutil.which("ffmpeg"):
        return found
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise ConfigError("no ffmpeg: install imageio-ffmpeg or set MOUTHPIECE_FFMPEG_PATH") from exc


def ffmpeg_binary(settings: Settings) -> str:
    return _find_ffmpeg(settings.ffmpeg_path)


def _tail(stderr: bytes, lines: int = 4) -> str:
    text = stderr.decode(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:])


def run_ffmpeg(
    settings: Settings, stream: Any, what: str, *, flags: Sequence[str] = ("-loglevel", "error")
) -> subprocess.CompletedProcess[bytes]:
    """Run an ffmpeg-python graph (overwriting outputs); raise ``FFmpegError`` saying ``what`` failed,
    or ``RetryableError`` when ffmpeg was killed (out of memory, a stopping node: not the file's fault)."""
    args = ffmpeg.compile(stream, cmd=ffmpeg_binary(settings), overwrite_output=True)
    args[1:1] = ["-hide_banner", "-nostdin", *flags]
    proc = subprocess.run(args, capture_output=True, check=False)
    if proc.returncode < 0:
        raise RetryableError(f"{what} was interrupted: ffmpeg got signal {-proc.returncode}")
    if proc.returncode != 0:
        detail = _tail(proc.stderr)
        raise FFmpegError(f"{what} failed: {detail or 'ffmpeg exit code ' + str(proc.returncode)}", detail)
    return proc


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
    except (av.FFmpegError, UnicodeDecodeError, ValueError, IndexError, AttributeError, TypeError) as exc:
        raise FFmpegError(f"cannot read {path.name}: {exc}", str(exc)) from exc
    if info.still:
        info = _with_image_header(path, info)
    if info.has_video and 0 < info.width * info.height <= ROTATION_PROBE_PIXELS:
        info = _with_rotation(path, info)
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
    )


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


def _with_rotation(path: Path, info: Probe) -> Probe:
    """``info`` with the rotation of its first frame (FFmpeg exports EXIF orientation and a video's
    display matrix as the frame's display matrix) and the displayed size."""
    try:
        with av.open(str(path)) as container:
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


# --- decoding ---------------------------------------------------------------------------------------


def decode_frames(path: Path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of the first video stream, in order."""
    for pixels in decode_lazily(path):
        yield pixels()


def decode_lazily(
    path: Path, size: tuple[int, int] | None = None, *, grey: bool = False
) -> Iterator[Callable[[], np.ndarray]]:
    """Per frame of the first video stream, a function giving its RGB pixels: frames nobody looks at
    are decoded (the codec needs them) but never converted, which is most of the cost. ``size``
    (width, height): pixels scaled to that size while converting (cheaper than converting, then scaling).
    ``grey``: H×W luma instead of RGB (nearly free from YUV; what landmark models look at)."""
    scaled: dict[str, Any] = {} if size is None else {"width": size[0], "height": size[1]}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if grey:
                yield partial(_luma, frame, size)
            else:
                yield partial(frame.to_ndarray, format="rgb24", **scaled)


def _luma(frame: Any, size: tuple[int, int] | None) -> np.ndarray:
    """A frame's luma: the Y plane itself for planar YUV (no conversion), else converted to grey."""
    if frame.format.name.startswith(("yuv", "yuvj")) and frame.format.is_planar:
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        luma = np.ascontiguousarray(rows[: frame.height, : frame.width])
    else:
        luma = frame.to_ndarray(format="gray")
    if size is None or (luma.shape[1], luma.shape[0]) == size:
        return luma
    import cv2  # only here: most users of this module never scale

    scaled: np.ndarray = cv2.resize(luma, size, interpolation=cv2.INTER_AREA)
    return scaled


def decode_audio(path: Path, rate: int = AUDIO_RATE) -> np.ndarray:
    """The first audio stream of any media file as mono float32 samples at ``rate`` (empty: none).
    Stream timestamps are honoured: audio that starts late (an offset in the container) is preceded
    by silence, as a player would play it."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, np.float32)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        start: float | None = None
        for frame in container.decode(stream):
            if start is None and frame.pts is not None and frame.time_base is not None:
                start = float(frame.pts * frame.time_base)
            chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
        chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    lead = max(0, round((start or 0.0) * rate))
    return np.concatenate([np.zeros(lead, np.float32), samples])


def stream_seconds(path: Path) -> tuple[float, float]:
    """(video, audio) stream durations in seconds of a media file (0 for a missing stream), from the
    streams' own durations (an MP4's edit lists included)."""
    with av.open(str(path)) as container:
        found = []
        for streams in (container.streams.video, container.streams.audio):
            stream = streams[0] if streams else None
            if stream is None or stream.duration is None or stream.time_base is None:
                found.append(0.0)
                continue
            begin = float((stream.start_time or 0) * stream.time_base)
            found.append(begin + float(stream.duration * stream.time_base))
    return found[0], found[1]


def prefetch(items: Iterable[T], depth: int = 16) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead (decode while the caller works).

    An exception in the producer is raised in the consumer; abandoning the iterator stops the producer.
    """
    buffer: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((False, None))
        except BaseException as exc:  # handed to the consumer
            buffer.put((False, exc))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            more, item = buffer.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()


def read_first_frame(path: Path) -> np.ndarray:
    for frame in decode_frames(path):
        return frame
    raise FFmpegError(f"{path.name} has no video frames")


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of a 16 kHz WAV written by ``normalize_audio``."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if rate != AUDIO_RATE:
        raise FFmpegError(f"{path.name} is {rate} Hz, expected {AUDIO_RATE} (not a normalized clip)")
    return np.ascontiguousarray(data.mean(axis=1))


# --- normalization (validate stage) -----------------------------------------------------------------


def normalize_audio(settings: Settings, src: Path, dst: Path) -> None:
    """Any audio (or the audio of a video) → 16 kHz mono 16-bit WAV."""
    # bit-exact: a plain 44-byte header, so the length follows from the size alone
    stream = ffmpeg.input(str(src)).output(
        str(dst),
        vn=None,
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


def normalize_avatar(settings: Settings, src: Path, dst: Path, info: Probe) -> None:
    """A photo or video → H.264 (yuv420p) at constant ``settings.fps``, bounded size, no audio.

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
    w, h = bounded_size(info.width, info.height, settings.max_side)
    # a still is looped (and cut to one frame below) so that filters with a time base get a stream
    source = ffmpeg.input(str(src), loop=1) if info.still else ffmpeg.input(str(src))
    video = source.video.filter("scale", w, h, flags="lanczos")
    if info.alpha:  # transparent avatars (cartoons, stickers): flatten onto white, not onto garbage
        background = ffmpeg.input(f"color=c=white:s={w}x{h}:r={_fps_arg(settings.fps)}", f="lavfi")
        video = ffmpeg.filter([background, video], "overlay", shortest=1, format="auto")
    video = video.filter("fps", fps=_fps_arg(settings.fps)).filter("format", "yuv420p")
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


def already_normalized(settings: Settings, info: Probe) -> bool:
    """Whether a video is already constant-rate H.264 yuv420p at our fps and within our size bound, and
    upright (a copy would keep a display rotation that frame decoding ignores)."""
    return (
        not info.still
        and info.rotation == 0
        and info.video_codec == "h264"
        and info.pix_fmt == "yuv420p"
        and abs(info.fps - settings.fps) < 1e-3
        and bounded_size(info.width, info.height, settings.max_side) == (info.width, info.height)
    )


def intermediate_crf(settings: Settings) -> int:
    """Quality of files a later stage re-encodes: well above the final's, so that re-encoding them adds
    little noise (static backgrounds otherwise 'pulse' at keyframes)."""
    return max(0, settings.crf - 6)


def _fps_arg(fps: float) -> str:
    frac = Fraction(fps).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


# --- encoding ---------------------------------------------------------------------------------------


class FrameWriter:
    """Encode RGB frames to H.264 through an ffmpeg pipe; ``write`` returns at once (a thread feeds ffmpeg).

    Use as a context manager; leaving it normally waits for the encoder, leaving by exception kills it.
    """

    def __init__(
        self, settings: Settings, dst: Path, width: int, height: int, fps: float, *, intermediate: bool = True
    ) -> None:
        """``intermediate``: a file a later stage re-encodes anyway — encode fast, near-lossless."""
        self.width, self.height = width, height
        preset = settings.intermediate_preset if intermediate else settings.x264_preset
        crf = intermediate_crf(settings) if intermediate else settings.crf
        stream = ffmpeg.input(
            "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=_fps_arg(fps)
        ).output(
            str(dst),
            vcodec="libx264",
            pix_fmt="yuv420p",
            preset=preset,
            crf=crf,
            r=_fps_arg(fps),
        )
        args = ffmpeg.compile(stream, cmd=ffmpeg_binary(settings), overwrite_output=True)
        args[1:1] = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=32)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._feed, name="frame-writer", daemon=True)
        self._thread.start()
        self.frames = 0

    def _feed(self) -> None:
        assert self._proc.stdin is not None
        try:
            while (frame := self._queue.get()) is not None:
                self._proc.stdin.write(frame.data)
        except BaseException as exc:  # broken pipe: ffmpeg died; reported on close
            self._error = exc
            while self._queue.get() is not None:  # keep draining so write() never blocks forever
                pass
        finally:
            self._proc.stdin.close()

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} is not {self.height}x{self.width}x3 uint8")
        # no copy: the caller hands the frame over and must not change it afterwards
        self._queue.put(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        assert self._proc.stderr is not None
        stderr = self._proc.stderr.read()
        if self._proc.wait() != 0 or self._error is not None:
            raise FFmpegError(f"encoding video failed: {_tail(stderr) or self._error}", _tail(stderr))

    def abort(self) -> None:
        self._proc.kill()
        self._queue.put(None)
        self._thread.join()
        self._proc.wait()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def mux(
    settings: Settings,
    video: Path,
    audio: Path,
    dst: Path,
    duration: float,
    *,
    loop_video: bool = False,
    reencode_video: bool = False,
    subtitles: Path | None = None,
) -> None:
    """Video + audio → MP4 (H.264 + AAC, faststart) exactly ``duration`` seconds long.

    ``loop_video`` repeats a short clip (a still avatar) to the audio's length, which needs a re-encode;
    ``subtitles`` adds a soft (mov_text) subtitle track.
    """
    vin = ffmpeg.input(str(video), stream_loop=-1) if loop_video else ffmpeg.input(str(video))
    streams = [vin.video, ffmpeg.input(str(audio)).audio]
    kwargs: dict[str, Any] = {"acodec": "aac", "audio_bitrate": "128k", "ar": 48000, "movflags": "+faststart"}
    if loop_video or reencode_video:
        kwargs.update(vcodec="libx264", pix_fmt="yuv420p", preset=settings.x264_preset, crf=settings.crf)
        kwargs["r"] = _fps_arg(settings.fps)
    else:
        kwargs["vcodec"] = "copy"
    if subtitles is not None:
        streams.append(ffmpeg.input(str(subtitles)))
        kwargs.update(scodec="mov_text", **{"metadata:s:s:0": "language=eng"})
    stream = ffmpeg.output(*streams, str(dst), t=f"{duration:.3f}", **kwargs)
    run_ffmpeg(settings, stream, "muxing video and audio")


def frames_for(duration: float, fps: float) -> int:
    """Output frames for ``duration`` seconds of audio: enough to cover it."""
    return max(1, math.ceil(duration * fps - 1e-6))


def cycle_indices(n_out: int, n_src: int) -> Sequence[int]:
    """Source frame for each output frame: forward then backward (ping-pong), as a natural loop."""
    if n_src <= 1:
        return [0] * n_out
    period = 2 * n_src - 2
    return [i % period if i % period < n_src else period - i % period for i in range(n_out)]


def reencode_to_bitrate(
    settings: Settings,
    src: Path,
    dst: Path,
    video_kbps: int,
    audio_kbps: int = 96,
    max_side: int | None = None,
) -> None:
    """Re-encode an MP4 at a target bitrate (to fit an attachment limit), optionally scaling it down.

    Two-pass is not worth it here: a capped one-pass x264 (maxrate/bufsize) lands within a few percent.
    """
    inp = ffmpeg.input(str(src))
    video = inp.video
    if max_side is not None:
        video = video.filter(
            "scale", f"if(gt(iw,ih),min(iw,{max_side}),-2)", f"if(gt(iw,ih),-2,min(ih,{max_side}))"
        )
    stream = ffmpeg.output(
        video,
        inp.audio,
        str(dst),
        vcodec="libx264",
        pix_fmt="yuv420p",
        preset=settings.x264_preset,
        video_bitrate=f"{video_kbps}k",
        maxrate=f"{video_kbps}k",
        bufsize=f"{video_kbps * 2}k",
        acodec="aac",
        audio_bitrate=f"{audio_kbps}k",
        movflags="+faststart",
    )
    run_ffmpeg(settings, stream, f"re-encoding {src.name} at {video_kbps} kb/s")


# --- enhance stage ---


LOUDNESS_TRUE_PEAK = -1.5
"""dBTP ceiling of the normalized audio (EBU R128 streaming practice)."""
LOUDNESS_RANGE = 11.0
"""LU: loudness range loudnorm aims at (its default, right for speech)."""
SILENCE_LUFS = -70.0
"""Integrated loudness at or below which there is nothing to normalize (R128's absolute gate)."""
OUTPUT_AUDIO_RATE = 48_000
SHARPEN_3X3 = {
    "0m": "-1 -1 -1 -1 24 -1 -1 -1 -1",
    "0rdiv": "0.0625",
    "1m": "0 0 0 0 1 0 0 0 0",
    "2m": "0 0 0 0 1 0 0 0 0",
}
"""Mild luma sharpen, x + (x - mean of its 8 neighbours) / 2 (about ``unsharp=3:3:0.5``); chroma is
copied (an identity kernel). The light denoise before it is ``removegrain`` mode 1, which only clips a
pixel into the range of its neighbours (specks), so edges stay. Chosen for cost: on 2 cores, 750 frames
of 720p take ~2 s of CPU for both, against ~11 s for ``hqdn3d`` + ``unsharp=5:5`` (and far more for
``nlmeans``), next to ~7 s for decoding and encoding, which the enhance stage pays anyway."""


@dataclass(frozen=True)
class Loudness:
    """An EBU R128 measurement: integrated loudness and its gate threshold (LUFS), true peak (dBTP),
    loudness range (LU)."""

    integrated: float
    true_peak: float
    lra: float
    threshold: float


@dataclass(frozen=True)
class SubtitleFont:
    """A font libass can load without fontconfig: the folder holding it and its family name."""

    directory: Path
    family: str


@dataclass(frozen=True)
class FinishJob:
    """What ``finish_video`` makes: ``video`` (looped when ``loop_video``) + ``audio`` → ``dst``.

    ``aspect``: the picture's width / height (sizes burned-in text). ``sharpen``: light denoise and mild
    sharpen (``SHARPEN_3X3``). ``measured``: the audio's loudness (``measure_loudness``), for a
    linear normalization to ``loudness`` LUFS; None leaves the level alone (silence). ``soft_subtitles``
    adds an SRT file as a mov_text track; ``burn_subtitles`` renders one into the picture with ``font``.
    """

    video: Path
    audio: Path
    dst: Path
    duration: float
    fps: float
    aspect: float = 16 / 9
    loop_video: bool = False
    sharpen: bool = True
    loudness: float = -16.0
    measured: Loudness | None = None
    soft_subtitles: Path | None = None
    burn_subtitles: Path | None = None
    font: SubtitleFont | None = None


def measure_loudness(settings: Settings, media: Path) -> Loudness | None:
    """EBU R128 loudness of the first audio stream of ``media`` (ffmpeg's ``ebur128``, true peak on);
    None when it is silence (at or under the -70 LUFS gate)."""
    graph = ffmpeg.input(str(media)).audio.filter("ebur128", peak="true", framelog="quiet")
    # info level (no -loglevel error): ebur128 logs its summary there
    proc = run_ffmpeg(
        settings,
        graph.output("-", format="null"),
        f"measuring the loudness of {media.name}",
        flags=["-nostats"],
    )
    found = _ebur128_summary(proc.stderr.decode(errors="replace"))
    if found is None:
        raise FFmpegError(f"ebur128 printed no summary for {media.name}")
    return found if math.isfinite(found.true_peak) and found.integrated > SILENCE_LUFS else None


def _ebur128_summary(stderr: str) -> Loudness | None:
    """The figures of the summary ``ebur128`` logs when it closes."""
    _, found, summary = stderr.rpartition("Summary:")
    number = r"\s*(-?(?:[0-9.]+|inf))"
    fields = {
        name: re.search(pattern + number, summary, re.DOTALL)
        for name, pattern in (
            ("i", r"I:"),
            ("thresh", r"I:.*?Threshold:"),
            ("lra", r"LRA:"),
            ("tp", r"Peak:"),
        )
    }
    if not found or any(match is None for match in fields.values()):
        return None
    value = {name: float(match.group(1)) for name, match in fields.items() if match is not None}
    return Loudness(integrated=value["i"], true_peak=value["tp"], lra=value["lra"], threshold=value["thresh"])


def _loudnorm_target(target: float) -> dict[str, Any]:
    return {"I": f"{target:.1f}", "TP": f"{LOUDNESS_TRUE_PEAK:.1f}", "LRA": f"{LOUDNESS_RANGE:.1f}"}


def _loudnorm_output(stderr: str) -> Loudness | None:
    """loudnorm's measurement of what it output (the ``output_*`` figures of its JSON), if it printed one."""
    blocks = [b for b in re.findall(r"\{[^{}]*\}", stderr) if '"output_i"' in b]
    if not blocks:
        return None
    data = json.loads(blocks[-1])
    return Loudness(
        integrated=float(data["output_i"]),
        true_peak=float(data["output_tp"]),
        lra=float(data["output_lra"]),
        threshold=float(data["output_thresh"]),
    )


def _loudnorm_args(job: FinishJob) -> dict[str, Any]:
    """loudnorm with the measured figures: a linear gain to the target (loudnorm switches itself to
    dynamic compression when that gain would push the true peak over the ceiling)."""
    assert job.measured is not None
    m = job.measured
    return {
        **_loudnorm_target(job.loudness),
        "measured_I": f"{m.integrated:.2f}",
        "measured_TP": f"{m.true_peak:.2f}",
        "measured_LRA": f"{m.lra:.2f}",
        "measured_thresh": f"{m.threshold:.2f}",
        "linear": "true",
        "print_format": "json",
    }


def subtitle_style(font: SubtitleFont, aspect: float) -> str:
    """libass ``force_style`` for burned-in subtitles: white with a dark outline, low in the frame.

    Sizes are in the 288-line script space ffmpeg gives SRT files, which libass scales with the video's
    height; the font shrinks on narrow pictures (``aspect`` = width / height) so that a 42-character line
    still fits across the width (a character is ~0.6 em wide: 42 of them take ~25 em, plus margins).
    """
    size = min(16.0, 288 * aspect / 28)
    return (
        f"FontName={font.family},FontSize={size:.1f},PrimaryColour=&H00FFFFFF,OutlineColour=&H00000000,"
        "BackColour=&H80000000,BorderStyle=1,Outline=1.2,Shadow=0.6,MarginV=14"
    )


def _finish_picture(job: FinishJob) -> Any:
    """The video stream of ``finish_video``: the input (looped), its filters and burned-in subtitles.

    Always re-encoded, even without filters: renders are fast near-lossless intermediates
    (``intermediate_preset``), too big to publish as they are.
    """
    vin = ffmpeg.input(str(job.video), stream_loop=-1) if job.loop_video else ffmpeg.input(str(job.video))
    video = vin.video
    if not job.loop_video:  # a render a frame short of the audio must not end the picture early
        video = video.filter("tpad", stop=-1, stop_mode="clone")
    if job.sharpen:
        video = video.filter("removegrain", 1, 0, 0).filter("convolution", **SHARPEN_3X3)
    if job.burn_subtitles is not None and job.font is not None:
        video = video.filter(
            "subtitles",
            filename=str(job.burn_subtitles),
            fontsdir=str(job.font.directory),
            force_style=subtitle_style(job.font, job.aspect),
        )
    return video.filter("format", "yuv420p")


def finish_args(settings: Settings, job: FinishJob) -> list[str]:
    """The single ffmpeg command of the enhance stage: filters, subtitles, loudness, mux and faststart.

    It reports progress on stdout (``-progress pipe:1``) and logs at info level, where loudnorm prints
    its measurement of the output.
    """
    audio = ffmpeg.input(str(job.audio)).audio
    if job.measured is not None:
        audio = audio.filter("loudnorm", **_loudnorm_args(job))
    streams = [_finish_picture(job), audio.filter("aresample", OUTPUT_AUDIO_RATE)]
    kwargs: dict[str, Any] = {
        "acodec": "aac",
        "audio_bitrate": "128k",
        "ar": OUTPUT_AUDIO_RATE,
        "movflags": "+faststart",
        "vcodec": "libx264",
        "preset": settings.x264_preset,
        "crf": settings.crf,
        "r": _fps_arg(job.fps),
    }
    if job.soft_subtitles is not None:
        streams.append(ffmpeg.input(str(job.soft_subtitles)))
        kwargs.update(scodec="mov_text", **{"metadata:s:s:0": "language=eng"})
    graph = ffmpeg.output(*streams, str(job.dst), t=f"{job.duration:.3f}", **kwargs)
    args = ffmpeg.compile(graph, cmd=ffmpeg_binary(settings), overwrite_output=True)
    args[1:1] = ["-hide_banner", "-nostdin", "-nostats", "-progress", "pipe:1"]
    return args


def finish_video(
    settings: Settings, job: FinishJob, progress: Callable[[float], None] | None = None
) -> Loudness | None:
    """Run ``finish_args``; ``progress(fraction)`` as ffmpeg reports it. Returns loudnorm's measurement
    of the output audio (None when the level was left alone). ``FFmpegError`` when ffmpeg fails."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(finish_args(settings, job), stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        for line in proc.stdout:
            fraction = _progress_fraction(line, job.duration)
            if fraction is not None and progress is not None:
                progress(fraction)
        code = proc.wait()
        errors.seek(0)
        stderr = errors.read()
    if code != 0:
        detail = _tail(stderr)
        raise FFmpegError(f"enhancing the video failed: {detail or 'ffmpeg exit code ' + str(code)}", detail)
    return _loudnorm_output(stderr.decode(errors="replace")) if job.measured is not None else None


def _progress_fraction(line: bytes, duration: float) -> float | None:
    """The fraction done from one ``-progress`` line (``out_time_us=…``; ``progress=end`` is 1)."""
    key, _, value = line.decode(errors="replace").strip().partition("=")
    if key == "progress" and value == "end":
        return 1.0
    if key == "out_time_us" and value.lstrip("-").isdigit() and duration > 0:
        return min(1.0, max(0.0, int(value) / 1e6 / duration))
    return None


PINGPONG_BUDGET = 1536 * 1024 * 1024
"""Avatar clips up to this many bytes of decoded frames loop forward-and-back; longer ones loop forward."""


def loops_forward(n_out: int, n_src: int, width: int, height: int) -> bool:
    """Whether the clip loops forward (long enough, or too big to hold) rather than back and forth."""
    return n_src >= n_out or n_src * width * height * 3 > PINGPONG_BUDGET


def source_indices(n_out: int, n_src: int, width: int, height: int) -> Sequence[int]:
    """Which avatar frame each of ``n_out`` output frames shows (as ``_frames`` plays the clip)."""
    if loops_forward(n_out, n_src, width, height):
        return [i % n_src for i in range(n_out)]
    return cycle_indices(n_out, n_src)
