"""Pipeline benchmark: per-stage seconds and real-time factor for an avatar video with speech, against
the bare ffmpeg re-encode of the same clip (the physical baseline), timed in the same run.

    python bench/bench_pipeline.py                      # 30 s, 1280x720, 25 fps, viseme, motion subtle
    python bench/bench_pipeline.py --seconds 10 --height 480 --renderer none --motion none

The avatar is a video, so detect follows the face with landmarks on every frame (dlib, the offline tier)
and the report's quality measure runs on the final video; ``--motion subtle`` (the default here) adds
blinks and head motion as a photo would get them.

Targets on a 2-core CPU: whole pipeline ≤ 3x the bare re-encode, and at least real time.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import ASSETS_DIR
from pipeline.config import Settings, load_settings
from pipeline.contracts import JobOptions, JobStatus
from pipeline.logs import configure_logging
from pipeline.media import FrameWriter, ffmpeg_binary, load_audio, mux, normalize_audio, read_first_frame
from pipeline.stack import Stack
from pipeline.stage import get_stage
from pipeline.status import job_status
from pipeline.submit import Submission, submit


def make_clip(settings: Settings, work: Path, seconds: float, height: int) -> Path:
    """A talking-head-like video: the astronaut photo drifting slowly on a canvas, JFK's speech looped."""
    width = height * 16 // 9 // 2 * 2
    face = read_first_frame(_png_as_clip(settings, work))
    scale = height / face.shape[0]
    import cv2

    face = cv2.resize(face, (int(face.shape[1] * scale) // 2 * 2, height))
    frames = int(seconds * settings.fps)
    silent = work / "silent.mp4"
    with FrameWriter(settings, silent, width, height, settings.fps, intermediate=False) as writer:
        for i in range(frames):
            canvas = np.full((height, width, 3), 40, np.uint8)
            x = (width - face.shape[1]) // 2 + int(20 * np.sin(i / 40))
            canvas[:, x : x + face.shape[1]] = face
            writer.write(canvas)
    speech = work / "speech.wav"
    normalize_audio(settings, ASSETS_DIR / "jfk.flac", speech)
    looped = work / "looped.wav"
    audio = load_audio(speech)
    import soundfile

    reps = int(np.ceil(seconds * 16000 / len(audio)))
    soundfile.write(str(looped), np.tile(audio, reps)[: int(seconds * 16000)], 16000)
    clip = work / "clip.mp4"
    mux(settings, silent, looped, clip, seconds)
    return clip


def _png_as_clip(settings: Settings, work: Path) -> Path:
    from pipeline.media import normalize_avatar, probe

    out = work / "face.mp4"
    normalize_avatar(settings, ASSETS_DIR / "astronaut.png", out, probe(ASSETS_DIR / "astronaut.png"))
    return out


def cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its finished children (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bare_reencode(settings: Settings, clip: Path, work: Path, *, ours: bool) -> tuple[float, float]:
    """(wall, CPU) seconds for ffmpeg alone to re-encode the clip with libx264 + aac: with ffmpeg's
    defaults (preset medium, crf 23: the plain re-encode), or with our final preset and quality (``ours``)."""
    video = ["-c:v", "libx264"]
    if ours:
        video += ["-preset", settings.x264_preset, "-crf", str(settings.crf), "-pix_fmt", "yuv420p"]
    args = [
        ffmpeg_binary(settings),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(clip),
        *video,
        "-c:a",
        "aac",
        str(work / "baseline.mp4"),
    ]
    start, cpu = time.perf_counter(), cpu_seconds()
    subprocess.run(args, check=True)
    return time.perf_counter() - start, cpu_seconds() - cpu


async def run_pipeline(
    settings: Settings, clip: Path, renderer: str, motion: str
) -> tuple[JobStatus, float, float, dict[str, float]]:
    """(final status, wall seconds, CPU seconds, CPU seconds by stage) of one job through the whole
    pipeline. A stage's CPU seconds are those spent while the job's status named it (sampled every 0.1 s)."""
    stack = await Stack.open(settings)
    for name in settings.chain:  # models load before the clock starts, as on a worker that is up
        await asyncio.to_thread(get_stage(name).warm_up, settings, stack.models)
    stop = asyncio.Event()
    tasks = await stack.run_workers(list(settings.chain), stop)
    try:
        await asyncio.sleep(1.0)  # the workers subscribe
        start, cpu = time.perf_counter(), cpu_seconds()
        submitted = await asyncio.to_thread(
            submit,
            stack.store,
            settings,
            Submission(audio=clip, avatars=(clip,), options=JobOptions(renderer=renderer, motion=motion)),
        )
        by_stage: dict[str, float] = {}
        stage, mark = "validate", cpu
        while True:
            status = await asyncio.to_thread(job_status, stack.store, settings, submitted.job_id)
            now = cpu_seconds()
            if status is not None and (status.finished or (status.stage and status.stage != stage)):
                by_stage[stage] = by_stage.get(stage, 0.0) + now - mark
                stage, mark = status.stage or stage, now
            if status is not None and status.finished:
                return status, time.perf_counter() - start, now - cpu, by_stage
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await stack.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--renderer", default="viseme", choices=["viseme", "wav2lip", "none"])
    parser.add_argument("--motion", default="subtle", choices=["none", "subtle", "lively"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mp-bench-") as tmp:
        work = Path(tmp)
        settings = load_settings(data_dir=work / "data", log_level="warning", reconcile_interval=0)
        configure_logging(settings)
        clip = make_clip(settings, work, args.seconds, args.height)
        before = bare_reencode(settings, clip, work, ours=False)
        same, _ = bare_reencode(settings, clip, work, ours=True)
        status, wall, cpu, stage_cpu = asyncio.run(run_pipeline(settings, clip, args.renderer, args.motion))
        after = bare_reencode(settings, clip, work, ours=False)  # again: the machine may be shared
    plain, plain_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    if status.state.value != "done":
        print(f"pipeline failed: {status.reason}", file=sys.stderr)
        return 1
    print(
        f"clip: {args.seconds:.0f} s, {args.height}p, {settings.fps:g} fps, renderer {args.renderer}, "
        f"motion {args.motion}, detector {settings.detector}"
    )
    print(f"{'stage':10} {'seconds':>8} {'x real time':>12} {'CPU s':>7} {'cores busy':>11}")
    for stage, seconds in status.timings.items():
        used = stage_cpu.get(stage, 0.0)
        print(f"{stage:10} {seconds:8.2f} {args.seconds / seconds:12.2f} {used:7.2f} {used / seconds:11.2f}")
    print(f"{'pipeline':10} {wall:8.2f} {args.seconds / wall:12.2f}   (submit to done, wall clock)")
    print(
        f"{'ffmpeg':10} {plain:8.2f} {args.seconds / plain:12.2f}   (bare re-encode: libx264 + aac, defaults;"
        f" mean of {before[0]:.2f} before and {after[0]:.2f} after)"
    )
    ours = f"libx264 {settings.x264_preset} crf {settings.crf} + aac"
    print(f"{'ffmpeg':10} {same:8.2f} {args.seconds / same:12.2f}   ({ours}: our final settings)")
    print(f"ratio pipeline / bare re-encode: {wall / plain:.2f}  (target ≤ 3)")
    print(f"ratio pipeline / re-encode at our final settings: {wall / same:.2f}")
    print(f"real-time factor: {wall / args.seconds:.2f}  (target ≤ 1)")
    print(
        f"CPU seconds: pipeline {cpu:.1f}, bare re-encode {plain_cpu:.1f}, ratio {cpu / plain_cpu:.2f}"
        "  (less sensitive to other load on a shared machine)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
