"""The ``musetalk`` renderer: MuseTalk 1.5's regenerated lower face, blended into each frame.

The math is ``stages.render.musetalk`` (upstream's 1.5 inference, step by step). Here: batching,
caching, devices, rest on silence and progress, shaped like the ``wav2lip`` renderer.

- Batches: ``batch`` output frames per UNet and VAE-decode call; crops, boxes and masks of the next
  batch are prepared in a background thread while the networks run (``neural._Prefetcher``). On CUDA the
  next batch is launched before the previous one is blended (faces copied to page-locked memory behind
  an event), and blending runs in a small thread pool, as the wav2lip renderer does.
- Avatar latents cached by content: the 8×32×32 VAE latents of a face crop are kept under the SHA-1 of
  the 256×256 crop's pixels (LRU, ``latent_cache`` entries, on the device). A photo avatar is encoded
  once; a video avatar reused across jobs in this worker pays only the UNet and the decode.
- Audio: Whisper-tiny's encoder runs once per request over the whole voice (30 s segments); each batch
  takes its windows from those states.
- Devices: fp32 on the CPU; on CUDA the networks are converted to fp16 (upstream's ``--use_float16``;
  ``dtype="bfloat16"`` for bf16).
- Streaming: frames are consumed and yielded batch by batch; memory does not grow with the video.
- Rest on silence: in the pauses of the speech timing the original frame is shown (cross-faded over
  ``base.REST_FADE`` at each edge, by scaling the blend mask); frames whose face is ``absent``, or whose
  box is empty, pass through untouched and cost no network time.
- Progress: ``progress(done / n)`` after each batch; a cancelled job's progress callback raises, which
  stops the render there.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import structlog
import torch

from pipeline.contracts import FaceFrame
from pipeline.errors import ConfigError, InvalidInput
from stages.lib.speech.fallback import speaking_weight
from stages.render import musetalk as mt
from stages.render.base import Frames, RenderRequest
from stages.render.neural import _Prefetcher, host_copy, overlapped, resolve_device

log = structlog.get_logger("mouthpiece.render.musetalk")

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class _Batch:
    """Consecutive output frames prepared on the CPU; ``active`` are those the networks run on."""

    first: int
    frames: list[np.ndarray]
    boxes: list[mt.Box | None]
    masks: list[np.ndarray | None]  # uint8 square masks (upstream's blend mask, our parsing stand-in)
    weights: np.ndarray  # speaking weight per frame (0 at rest)
    crops: np.ndarray  # (A, 256, 256, 3) uint8 RGB of the active frames
    active: list[int]


@dataclass
class _Launched:
    """A batch whose faces are on their way (ready once ``ready`` has fired; None on the CPU)."""

    batch: _Batch
    faces: np.ndarray | torch.Tensor  # (A, 256, 256, 3) uint8 RGB, host memory
    ready: torch.cuda.Event | None


def _compose(
    frame: np.ndarray, box: mt.Box | None, mask: np.ndarray | None, face: np.ndarray | None, weight: float
) -> np.ndarray:
    """``frame`` with ``face`` resized (bilinear, as upstream) to ``box`` and blended; itself if no box."""
    if box is None or mask is None or face is None:
        return frame
    x1, y1, x2, y2 = box
    return mt.blend_face(frame, cv2.resize(face, (x2 - x1, y2 - y1)), box, mask, float(weight))


class MuseTalkRenderer:
    """The ``musetalk`` renderer (see the module docstring). Build once per worker process; reuse.

    models_dir: the model directory holding ``musetalkV15/``, ``sd-vae-ft-mse/``, ``whisper-tiny/``
    (or networks already loaded: benchmarks build them in memory).
    device: "auto", "cpu", "cuda" or "cuda:N". batch: frames per UNet call. dtype: on CUDA, "float16"
    (default, upstream's) or "bfloat16" or "float32"; always float32 on the CPU. latent_cache: face
    crops whose latents are kept. extra_margin: pixels added below the face box (upstream: 10).
    blend_workers: threads blending frames (default: cores, ≤ 8).
    """

    name = "musetalk"

    def __init__(
        self,
        models_dir: str | Path | mt.MuseTalkModels,
        *,
        device: str = "auto",
        batch: int = 32,
        dtype: str = "float16",
        latent_cache: int = 4096,
        extra_margin: int = mt.EXTRA_MARGIN,
        prefetch: int = 2,
        blend_workers: int | None = None,
        warm_up: bool = True,
    ) -> None:
        if batch < 1:
            raise ConfigError(f"the musetalk batch size must be at least 1, got {batch}")
        if dtype not in DTYPES:
            raise ConfigError(f"musetalk dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        started = time.perf_counter()
        self.device = resolve_device(device)
        self.dtype = DTYPES[dtype] if self.device.type == "cuda" else torch.float32
        self.batch, self.extra_margin, self.prefetch = batch, extra_margin, prefetch
        self.blend_workers = blend_workers or min(8, os.cpu_count() or 1)
        models = models_dir if isinstance(models_dir, mt.MuseTalkModels) else mt.load_models(Path(models_dir))
        self.models = models.to(self.device, self.dtype)
        self.cache_size = latent_cache
        self._latents: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.cache_hits = self.cache_misses = 0
        if warm_up:
            self.warm_up()
        log.info(
            "musetalk_ready",
            device=str(self.device),
            dtype=str(self.dtype),
            batch=batch,
            seconds=round(time.perf_counter() - started, 3),
            **mt.describe(self.models),
        )

    def warm_up(self) -> None:
        """One frame through every network (allocations, kernels), then forget its latents."""
        crops = np.zeros((1, mt.FACE_SIZE, mt.FACE_SIZE, 3), np.uint8)
        states = mt.encoder_states(self.models, np.zeros(mt.AUDIO_RATE // 5, np.float32))
        with torch.inference_mode():
            latents = mt.encode_latents(self.models, torch.from_numpy(crops).to(self.device))
            tokens = mt.audio_windows(states, 25.0, 0, 1)
            mt.decode_faces(self.models, mt.predict_latents(self.models, latents, tokens))

    # --- rendering --------------------------------------------------------------------------------

    def render(
        self, request: RenderRequest, frames: Frames, progress: Callable[[float], None]
    ) -> Iterator[np.ndarray]:
        """Yield ``request.n_frames`` RGB frames with the lower face regenerated for ``request.audio``."""
        n = request.n_frames
        if n <= 0:
            progress(1.0)
            return
        states = mt.encoder_states(self.models, request.audio)
        speaking = (
            speaking_weight(request.speech.speech, request.fps, n)
            if request.speech is not None
            else np.ones(n, np.float32)
        )
        with (
            ThreadPoolExecutor(self.blend_workers, thread_name_prefix="musetalk-blend") as pool,
            _Prefetcher(self._batches(request, frames, speaking), self.prefetch) as batches,
        ):
            yield from overlapped(
                batches,
                lambda b: self._launch(b, states, request.fps),  # on CUDA: queued, not yet done
                lambda launched: self._finish(launched, pool),
                progress,
                n,
            )

    def _batches(self, request: RenderRequest, frames: Frames, speaking: np.ndarray) -> Iterator[_Batch]:
        """Cut ``frames`` into prepared batches (runs in the prefetch thread)."""
        source = iter(frames)
        for first in range(0, request.n_frames, self.batch):
            count = min(self.batch, request.n_frames - first)
            items = list(islice(source, count))
            if len(items) < count:
                raise InvalidInput(
                    f"the avatar frames ended after {first + len(items)} of {request.n_frames} frames"
                )
            yield self._prepare(first, items, speaking[first : first + count])

    def _prepare(
        self, first: int, items: list[tuple[int, np.ndarray, FaceFrame]], weights: np.ndarray
    ) -> _Batch:
        frames, boxes, masks, crops = [], [], [], []
        for k, (_, frame, face) in enumerate(items):
            box = None
            if not face.absent and weights[k] > 0.0:
                box = mt.crop_box(face.box, face.landmarks, frame.shape[0], frame.shape[1], self.extra_margin)
            mask = None
            if box is not None:
                crops.append(mt.face_crop(frame, box))
                _, mask = mt.square_mask(box, mt.lower_face_mask(box, face.landmarks))
            frames.append(frame)
            boxes.append(box)
            masks.append(mask)
        active = [k for k, box in enumerate(boxes) if box is not None]
        stack = np.stack(crops) if crops else np.zeros((0, mt.FACE_SIZE, mt.FACE_SIZE, 3), np.uint8)
        return _Batch(first, frames, boxes, masks, weights, stack, active)

    def _launch(self, batch: _Batch, states: torch.Tensor, fps: float) -> _Launched:
        """Start the networks on ``batch``'s active frames; on CUDA this returns before the GPU is done
        (the faces are copied to page-locked memory behind an event), so the previous batch is blended
        while this one runs."""
        if not batch.active:
            return _Launched(batch, np.zeros((0, 1, 1, 3), np.uint8), None)
        with torch.inference_mode():
            latents = self._avatar_latents(batch.crops)
            tokens = mt.audio_windows(states, fps, batch.first, len(batch.frames))[batch.active]
            faces = mt.decode_faces(self.models, mt.predict_latents(self.models, latents, tokens))
            return _Launched(batch, *host_copy(faces, self.device))

    def _finish(self, launched: _Launched, pool: ThreadPoolExecutor) -> Iterator[np.ndarray]:
        """Wait for ``launched``'s faces; yield its frames in order, blended by ``pool`` a few at a time."""
        if launched.ready is not None:
            launched.ready.synchronize()
        batch = launched.batch
        out = launched.faces.numpy() if isinstance(launched.faces, torch.Tensor) else launched.faces
        faces: list[np.ndarray | None] = [None] * len(batch.frames)
        for j, k in enumerate(batch.active):
            faces[k] = out[j]
        step = 2 * self.blend_workers  # few finished frames waiting for the caller (memory)
        for k in range(0, len(batch.frames), step):
            part = slice(k, k + step)
            yield from pool.map(
                _compose,
                batch.frames[part],
                batch.boxes[part],
                batch.masks[part],
                faces[part],
                batch.weights[part],
            )

    def _avatar_latents(self, crops: np.ndarray) -> torch.Tensor:
        """The (A, 8, 32, 32) latents of ``crops``: from the cache by content, the rest encoded in one call."""
        keys = [hashlib.sha1(crop.tobytes()).digest() for crop in crops]
        missing = [j for j, key in enumerate(keys) if key not in self._latents]
        unique = list(dict.fromkeys(keys[j] for j in missing))
        if unique:
            first_of = {key: next(j for j in missing if keys[j] == key) for key in unique}
            new = torch.from_numpy(np.stack([crops[first_of[key]] for key in unique])).to(self.device)
            encoded = mt.encode_latents(self.models, new)
            for key, latent in zip(unique, encoded, strict=True):
                self._latents[key] = latent
        self.cache_misses += len(unique)
        self.cache_hits += len(keys) - len(unique)
        for key in keys:
            self._latents.move_to_end(key)
        latents = torch.stack([self._latents[key] for key in keys])
        while len(self._latents) > self.cache_size:  # least recently used first
            self._latents.popitem(last=False)
        return latents
