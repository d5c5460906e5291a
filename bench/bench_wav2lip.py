"""Benchmark of the wav2lip renderer, with a random-init network (speed does not depend on the weights).

Prints two tables:

1. Network frames/s at each batch size: on the CPU (fp32), and on CUDA in fp32 and bf16 (fp16 where bf16
   is unsupported; autocast + channels_last, as the renderer runs) whenever a GPU is present. Inputs
   already on the device: this is the network alone.
2. Renderer end-to-end: ``Wav2LipRenderer.render`` over a synthetic ``--seconds`` clip at ``--height``
   (16:9, 25 fps; the astronaut photo on a larger canvas, 50 distinct frames cycled as the render stage
   cycles an avatar, all in memory) with speech audio: mel, cropping, network, blending. Decoding and
   encoding the video are not included.

Targets (issue): ≥ 1000 network frames/s in bf16 and ≤ 20 s end-to-end for 60 s at 1080p on one H100.

    .venv/bin/python bench/bench_wav2lip.py --seconds 60 --height 1080 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import librosa
import numpy as np
import soundfile
import torch

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions
from stages.render.base import RenderRequest
from stages.render.neural import Wav2LipRenderer
from stages.render.wav2lip import Wav2Lip

ASSETS = Path(__file__).resolve().parents[1] / "pipeline" / "assets"
FPS = 25.0
ASTRONAUT_FACE = (177, 66, 272, 161)  # the Haar cascade's box on the 512×512 photo
CYCLE = 50


def network_fps(
    model: Wav2Lip, device: str, batch: int, dtype: torch.dtype | None, min_seconds: float
) -> float:
    """Frames per second of ``model`` alone at ``batch`` (one warm-up pass, then at least ``min_seconds``)."""
    mel = torch.randn(batch, 1, 80, 16, device=device)
    face = torch.rand(batch, 6, 96, 96, device=device)
    if device == "cuda":
        face = face.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode(), amp:
        model(mel, face)
        _sync(device)
        runs, started = 0, time.perf_counter()
        while runs == 0 or time.perf_counter() - started < min_seconds:
            model(mel, face)
            runs += 1
        _sync(device)
    return runs * batch / (time.perf_counter() - started)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def network_table(batches: list[int], min_seconds: float) -> None:
    """Print frames/s for each (device, precision) and batch size."""
    rows: list[tuple[str, str, torch.dtype | None]] = [("cpu", "fp32", None)]
    if torch.cuda.is_available():
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        rows += [("cuda", "fp32", None), ("cuda", str(half).removeprefix("torch."), half)]
    print(f"network frames/s ({torch.get_num_threads()} CPU threads)")
    print(f"{'device':8}{'precision':10}" + "".join(f"{'batch ' + str(b):>12}" for b in batches))
    for device, label, dtype in rows:
        model = Wav2Lip().to(device).eval()
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        cells = [network_fps(model, device, b, dtype, min_seconds) for b in batches]
        print(f"{device:8}{label:10}" + "".join(f"{c:12.1f}" for c in cells), flush=True)


def synthetic_clip(height: int) -> tuple[list[np.ndarray], FaceFrame]:
    """``CYCLE`` distinct 16:9 RGB frames (the photo, scaled to half the height, drifting) and its face."""
    width = round(height * 16 / 9) // 2 * 2
    bgr = cv2.imread(str(ASSETS / "astronaut.png"))
    assert bgr is not None, "pipeline/assets/astronaut.png is missing"
    photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    side = height // 2
    photo = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    frames = []
    for k in range(CYCLE):
        frame = np.full((height, width, 3), 40 + k, np.uint8)
        x0, y0 = width // 3 + k, height // 4
        frame[y0 : y0 + side, x0 : x0 + side] = photo
        frames.append(frame)
    scale = side / 512
    x1, y1, x2, y2 = (v * scale for v in ASTRONAUT_FACE)
    x0, y0 = width // 3 + CYCLE // 2, height // 4
    return frames, FaceFrame(box=(x0 + x1, y0 + y1, x0 + x2, y0 + y2))


def speech(seconds: float) -> np.ndarray:
    """The JFK clip, mono 16 kHz, repeated to ``seconds``."""
    stereo, rate = soundfile.read(ASSETS / "jfk.flac", dtype="float32", always_2d=True)
    wav = librosa.resample(stereo.mean(axis=1), orig_sr=rate, target_sr=16_000)
    return np.resize(wav, round(seconds * 16_000)).astype(np.float32)


def end_to_end(checkpoint: Path, seconds: float, height: int, device: str, batch: int) -> None:
    """Print the renderer's seconds for a ``seconds``-long clip at ``height``."""
    started = time.perf_counter()
    renderer = Wav2LipRenderer(checkpoint, device=device, batch=batch)
    load = time.perf_counter() - started
    frames, face = synthetic_clip(height)
    audio = speech(seconds)
    n = int(np.ceil(seconds * FPS))
    track = FaceTrack(detector="bench", width=frames[0].shape[1], height=height, fps=FPS, frames=[face])
    request = RenderRequest(audio, FPS, n, track, options=JobOptions(renderer="wav2lip"))

    def source() -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
        return ((i, frames[i % CYCLE], face) for i in range(n))

    started = time.perf_counter()
    count = sum(1 for _ in renderer.render(request, source(), lambda _: None))
    took = time.perf_counter() - started
    assert count == n
    print(
        f"end-to-end {renderer.device} batch {batch}: {seconds:g} s clip at {frames[0].shape[1]}x{height}, "
        f"{n} frames in {took:.2f} s ({n / took:.1f} frames/s, {seconds / took:.2f}x real time; "
        f"model load + warm-up {load:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the end-to-end clip")
    parser.add_argument("--height", type=int, default=1080, help="frame height of the end-to-end clip")
    parser.add_argument("--device", default="auto", help="end-to-end device: auto, cpu, cuda")
    parser.add_argument("--batches", default="1,16,64,128", help="network batch sizes, comma-separated")
    parser.add_argument("--batch", type=int, default=64, help="renderer batch size for the end-to-end run")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timing per network cell")
    parser.add_argument("--skip-network", action="store_true", help="only the end-to-end run")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        # on a shared, busy host fewer threads than cores avoids OpenMP threads waiting on descheduled peers
        torch.set_num_threads(args.threads)
    if not args.skip_network:
        network_table([int(b) for b in args.batches.split(",")], args.min_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "random.pth"
        torch.save({"state_dict": Wav2Lip().state_dict()}, checkpoint)
        end_to_end(checkpoint, args.seconds, args.height, args.device, args.batch)


if __name__ == "__main__":
    main()
