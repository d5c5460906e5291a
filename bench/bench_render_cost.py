"""What one ``mouthpiece render`` costs, as a person runs it: the public command in a child process, on
inputs made here, against a bare ``ffmpeg -c:v libx264 -c:a aac`` re-encode of the same output.

    python bench/bench_render_cost.py                    # 30 s speech, 720p clip avatar
    python bench/bench_render_cost.py --height 720 1080  # both sizes
    python bench/bench_render_cost.py --long             # also 10 minutes of speech
    python bench/bench_render_cost.py --repeat 3         # each job 3 times on new inputs (a drifting machine)

Inputs: an avatar video (the bundled astronaut photo drifting on a grey canvas, made with ffmpeg) and
speech built from ``jfk.flac`` (11 s) repeated with 1.5 s pauses to the length. Each size runs in one
fresh data directory: first a short job (the cold start: model files joined, caches made; reported),
then the measured job (process start and model loads included, as people wait for them). The model
cache is fresh too, so the cold job includes joining the packaged Whisper model (once per machine). Whisper (no
transcript), landmarks on every frame, ``--motion subtle`` and the quality report are on.

Figures: wall seconds; CPU seconds of the whole process tree (``wait4`` of the command: itself and every
ffmpeg it ran); CPU seconds by stage (the ``stage_done`` log events: process + finished children while
the stage ran); peak RSS of the process tree (the sum over the command and its descendants, sampled every
50 ms from /proc); the bare re-encode of the output (same length and size), its ratio and the
real-time factor (video seconds / wall seconds, ≥ 2 is the target). On a shared machine wall time
follows the load; CPU seconds and memory barely do — compare those. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from pipeline import ASSETS_DIR
from pipeline.config import load_settings
from pipeline.media import ffmpeg_binary

SPEECH = ASSETS_DIR / "jfk.flac"
PAUSE_SECONDS = 1.5
RENDER_TIMEOUT = 3600.0
"""A render still running after this long is killed and reported as failed."""
MAX_CLIP_SECONDS = 60.0
"""Longer voices loop the avatar clip (as people's short clips are): the clip need not be 10 minutes."""


@dataclass
class Run:
    """One measured command: wall and CPU seconds, peak RSS of its process tree (MiB), its log events."""

    wall: float
    cpu: float
    peak_mib: float
    code: int
    events: list[dict[str, object]] = field(default_factory=list)
    stderr: str = ""

    def stage_peaks(self) -> dict[str, int]:
        """The render process's own peak RSS (MiB) when each stage finished (``stage_done``'s peak_mib)."""
        return {
            str(e.get("stage")): int(str(e.get("peak_mib", 0)))
            for e in self.events
            if e.get("event") == "stage_done"
        }

    def stage_cpu(self) -> dict[str, tuple[float, float]]:
        """(wall, CPU) seconds by stage, from the ``stage_done`` events."""
        out: dict[str, tuple[float, float]] = {}
        for e in self.events:
            if e.get("event") == "stage_done":
                stage = str(e.get("stage"))
                wall, cpu = out.get(stage, (0.0, 0.0))
                out[stage] = (wall + float(e["seconds"]), cpu + float(e.get("cpu_seconds", 0.0)))  # type: ignore[arg-type]
        return out


def tree_sum(root: int, value: Callable[[str, list[str]], float]) -> float:
    """The sum of ``value(pid, fields of /proc/PID/stat after the name)`` over ``root`` and its living
    descendants (processes that just left count 0)."""
    children: dict[int, list[int]] = {}
    values: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            values[int(entry)] = value(entry, fields)
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += values.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _rss_kib(pid: str, _: list[str]) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def _tree_rss_kib(root: int) -> int:
    """Resident KiB of ``root`` and all its descendants."""
    return int(tree_sum(root, _rss_kib))


def measure(args: list[str], env: dict[str, str] | None = None, timeout: float | None = None) -> Run:
    """Run ``args``; wall, CPU of the whole tree (wait4) and peak tree RSS; killed after ``timeout`` s."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stderr is not None
    killer = threading.Timer(timeout, proc.kill) if timeout else None
    if killer is not None:  # a job that never finishes (a lost message) must not hang the bench
        killer.start()
    stderr = proc.stderr.read().decode(errors="replace")
    if killer is not None:
        killer.cancel()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, cpu, peak[0] / 1024, proc.returncode, events, stderr)


def make_speech(dst: Path, seconds: float, offset: float = 0.0) -> None:
    """``seconds`` of speech: jfk.flac, a pause, jfk.flac again... starting ``offset`` seconds in."""
    speech, rate = soundfile.read(str(SPEECH), dtype="float32", always_2d=True)
    unit = np.concatenate([speech[:, 0], np.zeros(int(PAUSE_SECONDS * rate), np.float32)])
    start = int(offset * rate) % len(unit)
    reps = int(np.ceil((seconds * rate + start) / len(unit)))
    soundfile.write(str(dst), np.tile(unit, reps)[start : start + int(seconds * rate)], rate)


def make_clip(ffmpeg: str, dst: Path, seconds: float, height: int, period: float = 1.6) -> None:
    """A moving avatar video: the astronaut photo (face at the picture's height) drifting sideways on a
    grey 16:9 canvas at 25 fps (one sway every ``period`` × 2π seconds), H.264 from a phone-like encoder
    (crf 20), no audio."""
    width = height * 16 // 9 // 2 * 2
    graph = (
        f"[1:v]scale=-2:{height}[face];"
        f"[0:v][face]overlay=x='(W-w)/2+{height // 36}*sin(t/{period:.3f})':y=0:shortest=1,format=yuv420p"
    )
    subprocess.run(
        [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"color=c=0x282828:s={width}x{height}:r=25:d={seconds}",
            "-loop", "1", "-i", str(ASSETS_DIR / "astronaut.png"),
            "-filter_complex", graph, "-t", f"{seconds}", "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "20", str(dst),
        ],
        check=True,
    )  # fmt: skip


def render(data: Path, voice: Path, clip: Path, out: Path) -> Run:
    """The public command, as a person types it (its own process, this data directory, and a model cache
    of its own beside it, so the first job also joins the packaged Whisper model as a fresh install does).
    ``PYTHONDONTWRITEBYTECODE`` (set on some build machines, never by the project) is dropped: with it,
    every command compiles the project's own modules again, which a person's install does once."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "MOUTHPIECE_DATA_DIR": str(data),
        "MOUTHPIECE_MODEL_CACHE_DIR": str(data.with_name(data.name + "-models")),
        "MOUTHPIECE_LOG_FORMAT": "json",
        "MOUTHPIECE_LOG_LEVEL": "info",
    }
    args = [sys.executable, "-m", "pipeline.cli", "render", str(voice), str(clip), "-o", str(out)]
    return measure([*args, "--motion", "subtle"], env, timeout=RENDER_TIMEOUT)


def bare_reencode(ffmpeg: str, video: Path, dst: Path) -> Run:
    """ffmpeg alone re-encoding the output with libx264 + aac at its defaults (the physical baseline)."""
    args = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(video),
        "-c:v",
        "libx264",
        "-c:a",
        "aac",
    ]
    return measure([*args, str(dst)])


def output_size(ffmpeg: str, video: Path) -> str:
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(video)], capture_output=True, text=True)
    for line in probe.stderr.splitlines():
        if "Video:" in line:
            found = re.search(r" (\d{2,5}x\d{2,5})[ ,]", line)
            return found.group(1) if found else "?"
    return "?"


def one_size(ffmpeg: str, work: Path, height: int, lengths: list[float], repeat: int = 1) -> list[str]:
    """Cold job, then each length measured in the same data directory (``repeat`` times, each a new
    job on new inputs; the fastest is shown, with the spread); the table's rows."""
    data = work / f"data{height}"
    rows = []
    warm_voice, warm_clip = work / "warm.wav", work / f"warm{height}.mp4"
    make_speech(warm_voice, 5.0)
    make_clip(ffmpeg, warm_clip, 5.0, height)
    cold = render(data, warm_voice, warm_clip, work / "cold.mp4")
    if cold.code:
        sys.exit(f"the cold job failed:\n{cold.stderr[-3000:]}")
    rows.append(f"cold start: first job (5 s, {height}p) in a fresh data directory: {cold.wall:.1f} s wall, "
                f"{cold.cpu:.1f} CPU s, peak {cold.peak_mib:.0f} MiB")  # fmt: skip
    for seconds in lengths:
        tries = [_measured(ffmpeg, work, data, height, seconds, attempt) for attempt in range(repeat)]
        run, bare, size = min(tries, key=lambda t: t[0].wall)
        if repeat > 1:
            walls = sorted(t[0].wall for t in tries)
            rows.append(f"{seconds:.0f} s at {height}p, {repeat} runs: render wall "
                        + " ".join(f"{w:.1f}" for w in walls) + " s (the fastest is in the table)")  # fmt: skip
        print(
            f"\n{seconds:.0f} s speech, {height}p clip → {size}: by stage (wall s / CPU s / CPU s per frame / "
            "the render process's peak MiB when it finished)"
        )
        frames = seconds * 25
        peaks = run.stage_peaks()
        for stage, (wall, cpu) in run.stage_cpu().items():
            print(
                f"  {stage:10} {wall:8.2f} {cpu:8.2f} {1000 * cpu / frames:8.1f} ms {peaks.get(stage, 0):8d}"
            )
        staged = sum(cpu for _, cpu in run.stage_cpu().values())
        print(
            f"  {'outside':10} {'':8} {run.cpu - staged:8.2f}   (process start, imports, model loads, store)"
        )
        rows.append(
            f"| {seconds:.0f} s | {height}p → {size} | {run.wall:.1f} | {run.cpu:.1f} | {bare.wall:.1f} | "
            f"{bare.cpu:.1f} | {run.wall / bare.wall:.2f}× | {run.cpu / bare.cpu:.2f}× | "
            f"{seconds / run.wall:.2f}× | {run.peak_mib:.0f} |"
        )
    return rows


def _measured(
    ffmpeg: str, work: Path, data: Path, height: int, seconds: float, attempt: int
) -> tuple[Run, Run, str]:
    """One measured job on inputs of its own (``attempt`` shifts the speech and the clip's motion, so
    nothing is reused from an earlier job's cache), its bare re-encode, and the output's size."""
    voice, clip, out = (
        work / f"v{seconds:.0f}-{attempt}.wav",
        work / f"c{height}_{seconds:.0f}-{attempt}.mp4",
        work / "out.mp4",
    )
    make_speech(voice, seconds, offset=0.37 * attempt)
    make_clip(ffmpeg, clip, min(seconds, MAX_CLIP_SECONDS), height, period=1.6 + 0.1 * attempt)
    run = render(data, voice, clip, out)
    if run.code:
        sys.exit(f"render failed:\n{run.stderr[-3000:]}")
    return run, bare_reencode(ffmpeg, out, work / "bare.mp4"), output_size(ffmpeg, out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--height", type=int, nargs="+", default=[720], help="avatar clip heights")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the short job")
    parser.add_argument("--long", action="store_true", help="also a 10-minute job")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each job this many times (on a machine whose speed "
        "varies: the fastest is shown, with the spread)",
    )
    args = parser.parse_args()
    ffmpeg = ffmpeg_binary(load_settings())
    lengths = [args.seconds, 600.0] if args.long else [args.seconds]
    header = (
        "| speech | avatar → output | render wall s | render CPU s | bare wall s | bare CPU s | ratio wall | "
        "ratio CPU | real time | peak MiB |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mp-cost-") as tmp:
        for height in args.height:
            rows += one_size(ffmpeg, Path(tmp), height, lengths, args.repeat)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("\n".join(r for r in rows if not r.startswith("|")))
    print(header)
    print("\n".join(r for r in rows if r.startswith("|")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
