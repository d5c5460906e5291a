"""Benchmark of the musetalk renderer on the published architectures with random weights (speed does not
depend on the weights' values; the real files are not needed).

Prints:

1. Each network step per frame at 256 px: Whisper-tiny's encoder (per 30 s window), the VAE encode of
   one crop (masked + reference), the UNet's single step, the VAE decode; at each ``--batch``.
2. The renderer end to end (``MuseTalkRenderer.render``) over ``--frames`` frames of the astronaut photo
   at 512×512 with speech: audio features, crop, UNet, decode, blend. A photo's crop is encoded once
   (latents cached by content), so this is what a reused avatar costs.

``--config real`` (default) builds ``musetalk_seeded.REAL`` (UNet as ``musetalkV15/musetalk.json``, the
SD VAE, Whisper tiny) with torch's default initialisation; ``--config tiny`` the test models. On CUDA
the networks run in ``--dtype`` (fp16 as upstream). Issue targets: ≥ 100 frames/s at 256 px on one H100.

    python bench/bench_musetalk.py --device cpu --frames 4 --batch 1 2
    python bench/bench_musetalk.py --device cuda --frames 512 --batch 8 16 32 64
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import librosa
import numpy as np
import soundfile
import torch

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions
from stages.render import musetalk as mt
from stages.render.base import RenderRequest
from stages.render.musetalk_render import MuseTalkRenderer
from stages.render.musetalk_seeded import REAL, TINY, Configs

ASSETS = Path(__file__).resolve().parents[1] / "pipeline" / "assets"
FPS = 25.0


def build(configs: Configs) -> mt.MuseTalkModels:
    """The three networks from their configs (torch's default random init) and Whisper's extractor."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(configs.unet).eval()
    vae = AutoencoderKL.from_config(configs.vae).eval()
    whisper = WhisperModel(WhisperConfig(**configs.whisper)).eval()
    return mt.MuseTalkModels(unet, vae, whisper, WhisperFeatureExtractor(), mt.positional_encoding())


def timed(fn: object, device: torch.device, repeat: int = 2) -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs (after one warm-up), synchronising CUDA."""
    assert callable(fn)
    fn()
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def steps(renderer: MuseTalkRenderer, batches: list[int]) -> None:
    models, device = renderer.models, renderer.device
    audio = np.zeros(mt.SEGMENT_SECONDS * mt.AUDIO_RATE, np.float32)
    with torch.inference_mode():
        seconds = timed(lambda: mt.encoder_states(models, audio), device, 1)
    print(f"whisper-tiny encoder: {seconds * 1000:.0f} ms per 30 s of audio")
    print("batch | VAE encode ms/frame | UNet ms/frame | VAE decode ms/frame | UNet+decode frames/s")
    for b in batches:
        crops = torch.zeros((b, mt.FACE_SIZE, mt.FACE_SIZE, 3), dtype=torch.uint8, device=device)
        tokens = torch.zeros((b, 50, 384), device=device)
        with torch.inference_mode():
            latents = mt.encode_latents(models, crops)
            pred = mt.predict_latents(models, latents, tokens)
            enc = timed(lambda: mt.encode_latents(models, crops), device)  # noqa: B023
            unet = timed(lambda: mt.predict_latents(models, latents, tokens), device)  # noqa: B023
            dec = timed(lambda: mt.decode_faces(models, pred), device)  # noqa: B023
        print(
            f"{b:5d} | {enc / b * 1000:19.1f} | {unet / b * 1000:13.1f} | {dec / b * 1000:19.1f} | "
            f"{b / (unet + dec):.2f}"
        )


def end_to_end(renderer: MuseTalkRenderer, n: int) -> None:
    bgr = cv2.imread(str(ASSETS / "astronaut.png"))
    assert bgr is not None
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    face = FaceFrame(box=(177, 66, 272, 161))  # the Haar cascade's box on the 512×512 photo
    stereo, rate = soundfile.read(ASSETS / "jfk.flac", dtype="float32", always_2d=True)
    audio = librosa.resample(stereo.mean(axis=1), orig_sr=rate, target_sr=16_000).astype(np.float32)
    audio = audio[: int((n + 1) / FPS * 16_000)]
    track = FaceTrack(detector="bench", width=512, height=512, fps=FPS, frames=[face])
    request = RenderRequest(audio, FPS, n, track, options=JobOptions(renderer="musetalk"))
    started = time.perf_counter()
    count = sum(1 for _ in renderer.render(request, ((i, image, face) for i in range(n)), lambda _: None))
    seconds = time.perf_counter() - started
    print(
        f"renderer end to end: {count} frames at 512x512 (256 px face) in {seconds:.1f} s = "
        f"{count / seconds:.2f} frames/s (batch {renderer.batch}; crop encoded {renderer.cache_misses}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", choices=["real", "tiny"], default="real")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    models = build(REAL if args.config == "real" else TINY)
    sizes = mt.describe(models)
    renderer = MuseTalkRenderer(
        models, device=args.device, batch=max(args.batch), dtype=args.dtype, warm_up=False
    )
    print(
        f"MuseTalk 1.5 ({args.config} config: UNet {sizes['unet_parameters'] / 1e6:.0f} M, VAE "
        f"{sizes['vae_parameters'] / 1e6:.0f} M, Whisper encoder {sizes['whisper_encoder_parameters'] / 1e6:.0f} M "
        f"parameters) on {renderer.device} ({renderer.dtype}), torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}"
    )
    steps(renderer, args.batch)
    end_to_end(renderer, args.frames)


if __name__ == "__main__":
    main()
