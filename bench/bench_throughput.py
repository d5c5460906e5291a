"""Four jobs at once against four one after another, on one ``mouthpiece up``: what a server that takes
several requests together gives, and whether both cores are busy while it does.

    python bench/bench_throughput.py                 # 4 jobs of 15 s speech, 720p clip avatars
    python bench/bench_throughput.py --jobs 4 --seconds 20 --height 1080

One ``mouthpiece up --no-ingress --no-watch`` runs in a fresh data directory (its workers loaded once, as
on a server); a short job warms it. Then ``--jobs`` jobs run one after another (each a ``mouthpiece
render`` that submits to the running stack and waits), then ``--jobs`` other jobs are submitted together.
Every job has its own inputs (the speech cut at another point, the avatar drifting at another speed), so
no cache is shared between them. Figures: wall seconds of each batch, the server's CPU seconds in each
(its whole process tree, from /proc), the share of both cores that was busy (CPU / wall / cores), and
the ratio together / one after another (≤ 1 is the target). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo on the path
from bench.bench_render_cost import make_clip, make_speech, tree_sum
from pipeline.config import load_settings
from pipeline.media import ffmpeg_binary

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its living descendants, plus their waited-for
    children (fields 14–17 of /proc/PID/stat)."""
    return tree_sum(root, lambda _, fields: sum(int(v) for v in fields[11:15]) / TICK)


def wait_for_stack(data: Path, server: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    """Until the server has written its stack file (its NATS is up and its workers are starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit("mouthpiece up exited")
        if any(data.rglob("stack.json")):
            return
        time.sleep(0.5)
    sys.exit("mouthpiece up did not start")


def run_jobs(jobs: list[tuple[Path, Path]], env: dict[str, str], work: Path, together: bool) -> float:
    """Run ``mouthpiece render`` for each (voice, clip); wall seconds of the whole batch."""
    start = time.perf_counter()
    procs = []
    for i, (voice, clip) in enumerate(jobs):
        args = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "render",
            str(voice),
            str(clip),
            "-o",
            str(work / f"o{i}.mp4"),
        ]
        proc = subprocess.Popen([*args, "--motion", "subtle"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)  # fmt: skip
        procs.append(proc)
        if not together:
            _, err = proc.communicate()
            if proc.returncode not in (0, 3):  # 3: made, and flagged by the quality report
                sys.exit(f"a job failed:\n{err.decode(errors='replace')[-2000:]}")
    for proc in procs if together else []:
        _, err = proc.communicate()
        if proc.returncode not in (0, 3):
            sys.exit(f"a job failed:\n{err.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0, help="speech per job")
    parser.add_argument("--height", type=int, default=720, help="avatar clip height")
    args = parser.parse_args()
    ffmpeg = ffmpeg_binary(load_settings())
    with tempfile.TemporaryDirectory(prefix="mp-throughput-") as tmp:
        work = Path(tmp)
        data = work / "data"
        env = {
            **os.environ,
            "MOUTHPIECE_DATA_DIR": str(data),
            "MOUTHPIECE_MODEL_CACHE_DIR": str(work / "models"),
            "MOUTHPIECE_LOG_FORMAT": "json",
        }
        inputs = []
        for i in range(2 * args.jobs + 1):  # the warm-up job, then two batches, no two alike
            voice, clip = work / f"v{i}.wav", work / f"c{i}.mp4"
            make_speech(voice, 5.0 if i == 0 else args.seconds, offset=1.7 * i)
            make_clip(ffmpeg, clip, 5.0 if i == 0 else args.seconds, args.height, period=1.1 + 0.13 * i)
            inputs.append((voice, clip))
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "up", "--no-ingress", "--no-watch"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_stack(data, server)
            run_jobs(inputs[:1], env, work, together=False)
            cpu0 = tree_cpu(server.pid)
            apart = run_jobs(inputs[1 : 1 + args.jobs], env, work, together=False)
            cpu1 = tree_cpu(server.pid)
            together = run_jobs(inputs[1 + args.jobs :], env, work, together=True)
            cpu2 = tree_cpu(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=180)
    cores = os.cpu_count() or 1
    print(
        f"{args.jobs} jobs of {args.seconds:.0f} s speech, {args.height}p clip avatars, one `mouthpiece up`, {cores} cores"
    )
    print("| jobs | wall s | server CPU s | cores busy | video s per wall s |")
    print("|---|---|---|---|---|")
    for name, wall, cpu in (("one after another", apart, cpu1 - cpu0), ("together", together, cpu2 - cpu1)):
        print(
            f"| {name} | {wall:.1f} | {cpu:.1f} | {cpu / wall / cores:.0%} | {args.jobs * args.seconds / wall:.2f} |"
        )
    print(f"together / one after another: {together / apart:.2f}×  (≤ 1 is the target)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
