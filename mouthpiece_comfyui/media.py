"""ComfyUI's native values ↔ files the pipeline reads: ``AUDIO`` dicts, ``IMAGE`` tensors, media files.

``AUDIO`` is ``{"waveform": tensor[B, C, T] float -1..1, "sample_rate": int}``; ``IMAGE`` is a tensor
``[B, H, W, C]`` float 0..1 (RGB). Files are named by their content's SHA-256, so the same voice or
photo always becomes the same file (and the pipeline's content-addressed caches find it again).
"""

from __future__ import annotations

import hashlib
import wave
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import MediaSettings
from pipeline.media import FrameWriter, decode_audio

VOICE_RATE = 48_000
"""Sample rate voices are read at for ``AUDIO`` (ComfyUI's own loader and savers use 44.1/48 kHz)."""


def _named(folder: Path, data: bytes, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
    if not path.exists():
        tmp = path.with_suffix(suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def audio_to_wav(audio: dict[str, Any], folder: Path, item: int = 0) -> Path:
    """Item ``item`` of an ``AUDIO`` batch as a 16-bit WAV file (channels kept)."""
    waveform = audio["waveform"]
    rate = int(audio["sample_rate"])
    samples = np.asarray(waveform[min(item, waveform.shape[0] - 1)].detach().cpu().float().numpy())
    if samples.ndim != 2 or samples.shape[1] == 0:
        raise ValueError("the voice is empty: connect an AUDIO output with sound in it")
    pcm = (np.clip(samples.T, -1.0, 1.0) * 32767.0).round().astype("<i2")
    return _named(folder, _wav_bytes(pcm, rate), ".wav")


def _wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    import io

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(pcm.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def audio_from_file(path: Path, rate: int = VOICE_RATE) -> dict[str, Any]:
    """An ``AUDIO`` value (mono) holding the first audio stream of any media file."""
    import torch

    samples = decode_audio(path, rate)
    return {"waveform": torch.from_numpy(samples.copy()).reshape(1, 1, -1), "sample_rate": rate}


def images_to_files(images: Any, folder: Path) -> list[Path]:
    """Each picture of an ``IMAGE`` batch as a PNG file (RGB; sizes made even for H.264)."""
    from PIL import Image

    batch = images.detach().cpu().float().numpy() if hasattr(images, "detach") else np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] not in (3, 4):
        raise ValueError(
            f"an IMAGE must be [batch, height, width, channels]; this one is {list(batch.shape)}"
        )
    paths = []
    for picture in batch:
        pixels = (np.clip(picture[..., :3], 0.0, 1.0) * 255.0).round().astype(np.uint8)
        import io

        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        paths.append(_named(folder, buffer.getvalue(), ".png"))
    return paths


def frames_to_video(images: Any, folder: Path, fps: float, settings: MediaSettings) -> Path:
    """An ``IMAGE`` batch taken as the frames of one clip: an H.264 file at ``fps`` (sizes cropped to even),
    named by the frames' content."""
    batch = images.detach().cpu().float().numpy() if hasattr(images, "detach") else np.asarray(images)
    if batch.ndim != 4 or batch.shape[-1] not in (3, 4) or batch.shape[1] < 2 or batch.shape[2] < 2:
        raise ValueError(
            f"frames must be an IMAGE batch [frames, height, width, channels]; got {list(batch.shape)}"
        )
    height, width = batch.shape[1] // 2 * 2, batch.shape[2] // 2 * 2
    pixels = (np.clip(batch[:, :height, :width, :3], 0.0, 1.0) * 255.0).round().astype(np.uint8)
    digest = hashlib.sha256(pixels.tobytes() + f"{fps:.3f}".encode()).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"frames-{digest}.mp4"
    if not dst.exists():
        part = folder / f"frames-{digest}.part.mp4"
        with FrameWriter(settings, part, width, height, fps, intermediate=False) as writer:
            for frame in pixels:
                writer.write(frame)
        part.replace(dst)
    return dst


def image_tensor(pixels: np.ndarray) -> Any:
    """An ``IMAGE`` batch of one from RGB uint8 pixels."""
    import torch

    return torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]


def silence_wav(folder: Path, seconds: float = 1.0, rate: int = 16_000) -> Path:
    """A silent mono WAV (a voice for finding faces when no voice was connected)."""
    pcm = np.zeros((round(seconds * rate), 1), "<i2")
    return _named(folder, _wav_bytes(pcm, rate), ".wav")
