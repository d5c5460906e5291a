"""What the first ``mouthpiece render`` costs: in a fresh data directory and model cache, the next one, and
the first after the page cache is dropped (as after a reboot), against the one after it.

    python bench/bench_cold_start.py                  # 5 s jobs, 720p clip avatars
    sudo python bench/bench_cold_start.py --drop-caches  # also the first job after a cold page cache

Every job is a new ``mouthpiece render`` process with inputs of its own (the speech cut at another point,
the avatar drifting at another speed), so no job reuses another's cached speech timing or avatar.
``--drop-caches`` writes 3 to /proc/sys/vm/drop_caches (root only; it slows everything on the machine
for a moment). Prints wall and CPU seconds (the command and every process it ran); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo on the path
from bench.bench_render_cost import make_clip, make_speech
from pipeline.config import load_settings
from pipeline.media import ffmpeg_binary


def render(work: Path, env: dict[str, str], i: int) -> tuple[int, float, float]:
    """Job ``i``: exit status, wall seconds, CPU seconds of its process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    args = [sys.executable, "-m", "pipeline.cli", "render", str(work / f"v{i}.wav"), str(work / f"c{i}.mp4")]
    done = subprocess.run([*args, "-o", str(work / f"o{i}.mp4")], env=env, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return done.returncode, wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="speech per job")
    parser.add_argument("--height", type=int, default=720, help="avatar clip height")
    parser.add_argument(
        "--drop-caches", action="store_true", help="also measure after dropping the page cache"
    )
    args = parser.parse_args()
    ffmpeg = ffmpeg_binary(load_settings())
    jobs = [
        ("first job, fresh data directory and model cache", False),
        ("next job, same data directory", False),
    ]
    if args.drop_caches:
        jobs += [("first job after the page cache was dropped", True), ("the job after it", False)]
    with tempfile.TemporaryDirectory(prefix="mp-cold-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "MOUTHPIECE_DATA_DIR": str(work / "data"),
            "MOUTHPIECE_MODEL_CACHE_DIR": str(work / "models"),
        }
        for i in range(len(jobs)):
            make_speech(work / f"v{i}.wav", args.seconds, offset=2.3 * i)
            make_clip(ffmpeg, work / f"c{i}.mp4", args.seconds, args.height, period=1.2 + 0.2 * i)
        print(f"{args.seconds:.0f} s jobs, {args.height}p clip avatars, {os.cpu_count()} cores")
        for i, (label, drop) in enumerate(jobs):
            if drop:
                subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)
            code, wall, cpu = render(work, env, i)
            print(f"  {label}: exit {code}, {wall:.1f} s wall, {cpu:.1f} CPU s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
