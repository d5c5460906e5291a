"""Encoding: frames to H.264 as they come, muxing with the voice, re-encoding to fit a size, looping clips."""

from __future__ import annotations

import math
import queue
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from pipeline.config import MediaSettings
from pipeline.errors import FFmpegError
from pipeline.media.decode import frames_within
from pipeline.media.normalize import _fps_arg, intermediate_crf
from pipeline.media.run import _tail, ffmpeg_binary, run_ffmpeg

# --- encoding ---------------------------------------------------------------------------------------

PICTURE_FINAL = "final"
"""A manifest's ``info["picture"]`` when its ``video`` was encoded at the final settings with the
finishing filters applied: the enhance stage copies that picture and processes only the sound, so a job
pays for one H.264 encode."""


class FrameWriter:
    """Encode RGB frames to H.264 through an ffmpeg pipe; ``write`` returns at once (a thread feeds ffmpeg).

    Frames go down the pipe as YUV 4:2:0, converted by OpenCV in the feeding thread (BT.601 limited
    range, what ffmpeg's own conversion gives): about 0.4 ms a 720p frame against 3.4 ms for ffmpeg's
    single-threaded converter, and half the bytes through the pipe. Width and height must be even (4:2:0
    H.264 has no odd sizes; normalized avatars never have them): ``ValueError`` otherwise.

    Use as a context manager; leaving it normally waits for the encoder, leaving by exception kills it.
    """

    def __init__(
        self,
        settings: MediaSettings,
        dst: Path,
        width: int,
        height: int,
        fps: float,
        *,
        intermediate: bool = True,
        sharpen: bool = False,
    ) -> None:
        """``intermediate``: a file a later stage re-encodes anyway — encode fast, near-lossless; else
        the final picture at the final preset and quality, which a later stage may copy as it is.
        ``sharpen``: the finishing pass's light denoise and sharpen (``SHARPEN_3X3``), applied
        here so that the picture needs no second encode."""
        if width % 2 or height % 2:
            raise ValueError(
                f"frames of {width}x{height} cannot be encoded as 4:2:0 H.264: sizes must be even"
            )
        self.width, self.height = width, height
        preset = settings.intermediate_preset if intermediate else settings.x264_preset
        crf = intermediate_crf(settings) if intermediate else settings.crf
        picture = ffmpeg.input(
            "pipe:",
            format="rawvideo",
            pix_fmt="yuv420p",
            s=f"{width}x{height}",
            framerate=_fps_arg(fps),
        )
        if sharpen:
            picture = sharpened(picture)
        stream = picture.output(
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
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=frames_within(width, height))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._feed, name="frame-writer", daemon=True)
        self._thread.start()
        self.frames = 0

    def _feed(self) -> None:
        assert self._proc.stdin is not None
        try:
            while (frame := self._queue.get()) is not None:
                self._proc.stdin.write(rgb_to_i420(frame).data)
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


def sharpened(video: Any) -> Any:
    """``video`` with the finishing pass's light denoise and mild luma sharpen (``SHARPEN_3X3``)."""
    return video.filter("removegrain", 1, 0, 0).filter("convolution", **SHARPEN_3X3)


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
``nlmeans``), next to ~7 s for decoding and encoding."""


def rgb_to_i420(frame: np.ndarray) -> np.ndarray:
    """An even-sized RGB frame as planar YUV 4:2:0 bytes (Y, then U, then V), ffmpeg's ``yuv420p``."""
    import cv2  # here, not at import: most users of this module never encode frames

    i420: np.ndarray = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
    return i420


def mux(
    settings: MediaSettings,
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
    settings: MediaSettings,
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


def shifted_sound(settings: MediaSettings, src: Path, dst: Path, seconds: float, *, baked: bool) -> None:
    """A copy of an MP4 with its sound ``seconds`` later than its picture (negative: earlier), for
    checking sync measures against a known truth (``bench/bench_quality.py``, the quality tests).

    ``baked``: re-encoded, both streams starting at 0 (the sound delayed with silence, or its start cut
    off); else a stream copy with the sound's start moved in the container (``-itsoffset``: an edit
    list, as phones and editors write)."""
    if not baked:
        picture, sound = ffmpeg.input(str(src)), ffmpeg.input(str(src), itsoffset=f"{seconds:.3f}")
        stream = ffmpeg.output(picture.video, sound.audio, str(dst), c="copy", movflags="+faststart")
    else:
        source = ffmpeg.input(str(src))
        if seconds >= 0:
            audio = source.audio.filter("adelay", f"{round(seconds * 1000)}", all=1)
        else:
            audio = source.audio.filter("atrim", start=-seconds).filter("asetpts", "PTS-STARTPTS")
        stream = ffmpeg.output(
            source.video,
            audio,
            str(dst),
            vcodec="libx264",
            pix_fmt="yuv420p",
            preset=settings.x264_preset,
            crf=settings.crf,
            acodec="aac",
            audio_bitrate="128k",
            movflags="+faststart",
        )
    run_ffmpeg(settings, stream, f"shifting the sound of {src.name}")
