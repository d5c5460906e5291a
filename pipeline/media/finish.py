"""The finishing pass (the enhance stage): loudness to a target, light filters, subtitles, in one ffmpeg run."""

from __future__ import annotations

import json
import math
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from pipeline.config import MediaSettings
from pipeline.errors import FFmpegError
from pipeline.media.encode import sharpened
from pipeline.media.normalize import _fps_arg
from pipeline.media.run import _tail, ffmpeg_binary, run_ffmpeg

# --- enhance stage ---


LOUDNESS_TRUE_PEAK = -1.5
"""dBTP ceiling of the normalized audio (EBU R128 streaming practice)."""
LOUDNESS_RANGE = 11.0
"""LU: loudness range loudnorm aims at (its default, right for speech)."""
SILENCE_LUFS = -70.0
"""Integrated loudness at or below which there is nothing to normalize (R128's absolute gate)."""
OUTPUT_AUDIO_RATE = 48_000


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
    sharpen (``SHARPEN_3X3``). ``copy_video``: the picture is final already (the render stage encoded it
    at the final settings, filters applied) and is copied, not re-encoded: only the sound is processed;
    it excludes looping, sharpening and burned-in subtitles. ``measured``: the audio's loudness (``measure_loudness``), for a
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
    copy_video: bool = False
    sharpen: bool = True
    loudness: float = -16.0
    measured: Loudness | None = None
    soft_subtitles: Path | None = None
    burn_subtitles: Path | None = None
    font: SubtitleFont | None = None


def measure_loudness(settings: MediaSettings, media: Path) -> Loudness | None:
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

    Re-encoded, even without filters, unless ``copy_video``: intermediate renders are fast near-lossless
    files (``intermediate_preset``), too big to publish as they are.
    """
    vin = ffmpeg.input(str(job.video), stream_loop=-1) if job.loop_video else ffmpeg.input(str(job.video))
    video = vin.video
    if not job.loop_video:  # a render a frame short of the audio must not end the picture early
        video = video.filter("tpad", stop=-1, stop_mode="clone")
    if job.sharpen:
        video = sharpened(video)
    if job.burn_subtitles is not None and job.font is not None:
        video = video.filter(
            "subtitles",
            filename=str(job.burn_subtitles),
            fontsdir=str(job.font.directory),
            force_style=subtitle_style(job.font, job.aspect),
        )
    return video.filter("format", "yuv420p")


def finish_args(settings: MediaSettings, job: FinishJob) -> list[str]:
    """The single ffmpeg command of the enhance stage: filters, subtitles, loudness, mux and faststart.

    It reports progress on stdout (``-progress pipe:1``) and logs at info level, where loudnorm prints
    its measurement of the output.
    """
    audio = ffmpeg.input(str(job.audio)).audio
    if job.measured is not None:
        audio = audio.filter("loudnorm", **_loudnorm_args(job))
    if job.copy_video and (job.loop_video or job.sharpen or job.burn_subtitles is not None):
        raise ValueError("a copied picture cannot be looped, sharpened or given burned-in subtitles")
    picture = ffmpeg.input(str(job.video)).video if job.copy_video else _finish_picture(job)
    streams = [picture, audio.filter("aresample", OUTPUT_AUDIO_RATE)]
    kwargs: dict[str, Any] = {
        "acodec": "aac",
        "audio_bitrate": "128k",
        "ar": OUTPUT_AUDIO_RATE,
        "movflags": "+faststart",
    }
    if job.copy_video:  # one H.264 encode per job: the render's is final
        kwargs["vcodec"] = "copy"
    else:
        kwargs.update(vcodec="libx264", preset=settings.x264_preset, crf=settings.crf, r=_fps_arg(job.fps))
    if job.soft_subtitles is not None:
        streams.append(ffmpeg.input(str(job.soft_subtitles)))
        kwargs.update(scodec="mov_text", **{"metadata:s:s:0": "language=eng"})
    graph = ffmpeg.output(*streams, str(job.dst), t=f"{job.duration:.3f}", **kwargs)
    args = ffmpeg.compile(graph, cmd=ffmpeg_binary(settings), overwrite_output=True)
    args[1:1] = ["-hide_banner", "-nostdin", "-nostats", "-progress", "pipe:1"]
    return args


def finish_video(
    settings: MediaSettings, job: FinishJob, progress: Callable[[float], None] | None = None
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
