"""The ``wav2lip`` renderer: Wav2Lip's generated mouth, feathered into each frame.

Per output frame i (as upstream's ``inference.py``): the mel window of frame i; the face box plus the
pads (top, bottom, left, right; default 0, 10, 0, 0) clipped to the frame; that crop resized to 96×96,
BGR, /255; the network input is the crop with its lower half zeroed, then the crop (6 channels). The
96×96 output (×255) is resized back to the crop box. Unlike upstream it is not pasted as a hard box but
blended with a feathered mask (``blend.feather_mask``), shaped to the lower face when the track has 68
landmarks, so no box edge shows.

Speed: the model is loaded and warmed up once, at construction (a renderer lives as long as its worker
process). ``render`` prepares crops and mel windows in a background thread (so decoding the avatar and
cropping overlap inference), runs the network in batches under ``torch.inference_mode``, and on CUDA
with bf16 (else fp16) autocast and channels_last; the next batch is launched on the GPU before the
previous one is blended (by a small thread pool) and yielded, so blending and the caller's encoding
overlap inference too.

Rest on silence: in the pauses of the request's speech timing the original frame is shown instead of the
network's mouth (no model is trained to keep still lips in silence), cross-faded over ``base.REST_FADE``
seconds at each edge of a pause; frames whose face is ``absent`` pass through untouched.

Face restoration (optional): ``restoration`` names a TorchScript file (``torch.jit.load``) mapping a
(B, 3, 512, 512) float32 RGB tensor in [−1, 1] to the same — the convention of GFPGAN / CodeFormer
exports. The generated face is upsampled to 512×512, restored (in fp32, in chunks of
``restore_batch``), then resized to the crop box and blended. It runs only for jobs whose
``options.enhance`` is true.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import cv2
import numpy as np
import structlog
import torch
import torch.nn.functional as F

from pipeline.contracts import FaceFrame
from pipeline.devices import resolve_device as resolve
from pipeline.errors import ConfigError, InvalidInput
from stages.lib.speech.fallback import speaking_weight
from stages.render.audio import MEL_STEP, N_MELS, mel_windows, melspectrogram
from stages.render.base import Frames, RenderRequest
from stages.render.blend import blend_into, feather_mask
from stages.render.wav2lip import FACE_SIZE, load_checkpoint

log = structlog.get_logger("mouthpiece.render.neural")

Box = tuple[int, int, int, int]
"""x1, y1, x2, y2 in pixels, x2/y2 exclusive."""
RESTORE_SIZE = 512
LOWER_FACE = [*range(2, 15), 29]
"""iBUG-68 points outlining the part Wav2Lip changes: the jaw from cheek to cheek, and the nose's middle."""
JAW_ROOM = 1.15
"""The lower-face outline is enlarged by this factor about its centre, so an opening jaw is not cut."""

T = TypeVar("T")


def resolve_device(device: str) -> torch.device:
    """The torch device for the ``device`` setting (``pipeline.devices.resolve_device``)."""
    return torch.device(resolve(device))


def crop_box(box: Sequence[float], height: int, width: int, pads: Sequence[int]) -> Box | None:
    """The face box grown by ``pads`` (top, bottom, left, right) and clipped to the frame; None if empty."""
    top, bottom, left, right = pads
    x1 = max(0, round(box[0]) - left)
    y1 = max(0, round(box[1]) - top)
    x2 = min(width, round(box[2]) + right)
    y2 = min(height, round(box[3]) + bottom)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def blend_mask(face: FaceFrame, box: Box, feather: float) -> np.ndarray:
    """The H×W blend mask of ``box``: 0 at its edges; shaped to the lower face when landmarks exist."""
    x1, y1, x2, y2 = box
    mask = feather_mask(y2 - y1, x2 - x1, feather)
    if face.landmarks is None or len(face.landmarks) != 68:
        return mask
    points = np.asarray(face.landmarks, np.float32)[LOWER_FACE] - np.array([x1, y1], np.float32)
    centre = points.mean(axis=0)
    outline = np.rint(centre + (points - centre) * JAW_ROOM).astype(np.int32)
    lower_face = np.zeros((y2 - y1, x2 - x1), np.float32)
    cv2.fillConvexPoly(lower_face, cv2.convexHull(outline), 1.0)
    border = max(1, round(min(y2 - y1, x2 - x1) * feather))
    soft: np.ndarray = cv2.GaussianBlur(lower_face, (2 * border + 1, 2 * border + 1), border / 2.0)
    return soft * mask


def face_input(crops: torch.Tensor) -> torch.Tensor:
    """(B, 96, 96, 3) uint8 BGR crops → the network's (B, 6, 96, 96) float input (masked, reference)."""
    # contiguous: a permuted view would carry channels-last strides into the CPU convolutions (6x slower)
    reference = crops.permute(0, 3, 1, 2).contiguous().float() / 255.0
    masked = reference.clone()
    masked[:, :, FACE_SIZE // 2 :] = 0.0
    return torch.cat((masked, reference), dim=1)


def _resize(patch: np.ndarray, width: int, height: int) -> np.ndarray:
    """``patch`` at width × height: area averaging when shrinking, bilinear (upstream's) when growing."""
    shrinking = width < patch.shape[1] and height < patch.shape[0]
    return cv2.resize(patch, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


@dataclass
class _Batch:
    """Consecutive output frames, prepared on the CPU: network inputs plus what blending needs."""

    frames: list[np.ndarray]
    boxes: list[Box | None]
    masks: list[np.ndarray | None]  # already scaled by the frame's speaking weight
    crops: torch.Tensor  # (A, 96, 96, 3) uint8 BGR, for the A frames that change (``active``)
    mels: torch.Tensor  # (A, 1, 80, 16) float32
    active: list[int]  # indices into ``frames`` of the frames the network runs on (a face, not at rest)


@dataclass
class _Launched:
    """A batch whose network output is on its way to ``patches`` (ready once ``ready`` has fired)."""

    batch: _Batch
    patches: torch.Tensor  # (B, S, S, 3) uint8 RGB on the CPU
    ready: torch.cuda.Event | None


def overlapped(
    batches: Iterable[Any],
    launch: Callable[[Any], Any],
    finish: Callable[[Any], Iterator[np.ndarray]],
    progress: Callable[[float], None],
    total: int,
) -> Iterator[np.ndarray]:
    """The frames of ``batches`` in order, each batch launched before the previous one is finished (on
    CUDA the GPU works on the next batch while the CPU blends this one); ``progress`` after each
    finished batch (a launched batch has ``.batch.frames``), and 1.0 at the end."""
    done, pending = 0, None
    for batch in batches:
        launched = launch(batch)
        if pending is not None:
            yield from finish(pending)
            done += len(pending.batch.frames)
            progress(done / total)
        pending = launched
    if pending is not None:
        yield from finish(pending)
    progress(1.0)


def host_copy(images: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """``images`` (uint8) on the CPU: on CUDA copied asynchronously into page-locked memory, with the event
    that fires once the copy is done (wait on it before reading); elsewhere at once, and no event."""
    if device.type != "cuda":
        return images.contiguous(), None
    host = torch.empty(images.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(images, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(device))
    return host, ready


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class _Prefetcher(Generic[T]):
    """Runs an iterator in a daemon thread, ``depth`` items ahead of the consumer.

    Use as a context manager: leaving it (also early, or by an exception) stops the thread. An
    exception in the thread is re-raised in the consumer.
    """

    def __init__(self, source: Iterator[T], depth: int) -> None:
        self._source = source
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wav2lip-prepare", daemon=True)

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._items()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # unblock a producer waiting on a full queue
                self._queue.get_nowait()
        self._thread.join(timeout=10)

    def _items(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def _run(self) -> None:
        try:
            for item in self._source:
                if self._stop.is_set() or not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:
            self._put(_Failure(exc))

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class Wav2LipRenderer:
    """The ``wav2lip`` renderer (see the module docstring). Build once per worker process; reuse.

    checkpoint: a Wav2Lip checkpoint file (ConfigError if missing or not one). device: "auto", "cpu",
    "cuda" or "cuda:N". batch: frames per network batch. pads: top, bottom, left, right pixels added to
    the face box. restoration: optional TorchScript face-restoration file. feather: blend falloff as a
    fraction of the crop's smaller side. prefetch: prepared batches kept ahead of the network.
    restore_batch: faces per restoration pass. blend_workers: threads blending frames (default: cores, ≤ 8).
    """

    name = "wav2lip"

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str = "auto",
        batch: int = 64,
        pads: Sequence[int] = (0, 10, 0, 0),
        restoration: str | Path | None = None,
        feather: float = 0.15,
        prefetch: int = 2,
        restore_batch: int = 8,
        blend_workers: int | None = None,
        warm_up: bool = True,
    ) -> None:
        if batch < 1 or restore_batch < 1:
            raise ConfigError(f"the wav2lip batch sizes must be at least 1, got {batch} and {restore_batch}")
        if len(pads) != 4:
            raise ConfigError(f"face pads are four numbers (top, bottom, left, right), got {list(pads)}")
        started = time.perf_counter()
        self.device = resolve_device(device)
        self.batch, self.pads, self.feather = batch, tuple(pads), feather
        self.prefetch, self.restore_batch = prefetch, restore_batch
        self.blend_workers = blend_workers or min(8, os.cpu_count() or 1)
        self.model = load_checkpoint(checkpoint, self.device)
        self.amp_dtype = self._setup_cuda()
        self.restorer = _load_restorer(Path(restoration), self.device) if restoration else None
        if warm_up:
            self.warm_up()
        log.info(
            "wav2lip_ready",
            device=str(self.device),
            amp=str(self.amp_dtype),
            batch=batch,
            restoration=str(restoration) if restoration else None,
            seconds=round(time.perf_counter() - started, 3),
        )

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def _setup_cuda(self) -> torch.dtype | None:
        """On CUDA: channels_last weights, cuDNN autotuning; the autocast dtype (None on CPU)."""
        if not self.cuda:
            return None
        torch.backends.cudnn.benchmark = True
        self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def warm_up(self) -> None:
        """Run the network once (a full batch on CUDA, for cuDNN's autotuner; one frame on the CPU)."""
        n = self.batch if self.cuda else 1
        crops = torch.zeros((n, FACE_SIZE, FACE_SIZE, 3), dtype=torch.uint8)
        mels = torch.zeros((n, 1, N_MELS, MEL_STEP))
        self._launch(_Batch([], [], [], crops, mels, list(range(n))), restore=self.restorer is not None)
        if self.cuda:
            torch.cuda.synchronize(self.device)

    # --- rendering --------------------------------------------------------------------------------

    def render(
        self, request: RenderRequest, frames: Frames, progress: Callable[[float], None]
    ) -> Iterator[np.ndarray]:
        """Yield ``request.n_frames`` RGB frames with the mouth re-generated for ``request.audio``.

        ``frames`` is consumed in a background thread, up to ``prefetch`` batches ahead.
        """
        n = request.n_frames
        if n <= 0:
            progress(1.0)
            return
        mel = melspectrogram(request.audio)
        speaking = (
            speaking_weight(request.speech.speech, request.fps, n)
            if request.speech is not None
            else np.ones(n, np.float32)
        )
        restore = self.restorer is not None and request.options.enhance
        with (
            ThreadPoolExecutor(self.blend_workers, thread_name_prefix="wav2lip-blend") as pool,
            _Prefetcher(self._batches(request, frames, mel, speaking), self.prefetch) as batches,
        ):
            yield from overlapped(
                batches,
                lambda b: self._launch(b, restore),
                lambda launched: self._finish(launched, pool),
                progress,
                n,
            )

    def _batches(
        self, request: RenderRequest, frames: Frames, mel: np.ndarray, speaking: np.ndarray
    ) -> Iterator[_Batch]:
        """Cut ``frames`` into prepared batches (runs in the prefetch thread)."""
        source = iter(frames)
        for first in range(0, request.n_frames, self.batch):
            count = min(self.batch, request.n_frames - first)
            items = list(islice(source, count))
            if len(items) < count:
                raise InvalidInput(
                    f"the avatar frames ended after {first + len(items)} of {request.n_frames} frames"
                )
            weights = speaking[first : first + count]
            yield self._prepare(items, mel_windows(mel, count, request.fps, first), weights)

    def _prepare(
        self, items: list[tuple[int, np.ndarray, FaceFrame]], mels: np.ndarray, weights: np.ndarray
    ) -> _Batch:
        """Crop, resize and colour-convert each frame's face; the blend mask of each, scaled by the
        frame's speaking weight (no box, so no change, where the face is absent or at rest)."""
        frames, boxes, masks = [], [], []
        crops = np.zeros((len(items), FACE_SIZE, FACE_SIZE, 3), np.uint8)
        for k, (_, frame, face) in enumerate(items):
            box = None
            if not face.absent and weights[k] > 0.0:
                box = crop_box(face.box, frame.shape[0], frame.shape[1], self.pads)
            if box is not None:
                x1, y1, x2, y2 = box
                crop = cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE))
                crops[k] = crop[..., ::-1]  # RGB → BGR: the network was trained on OpenCV's order
            frames.append(frame)
            boxes.append(box)
            masks.append(
                _weighted(blend_mask(face, box, self.feather), weights[k]) if box is not None else None
            )
        active = [k for k, box in enumerate(boxes) if box is not None]  # the rest need no network
        return _Batch(frames, boxes, masks, self._host(crops[active]), self._host(mels[active, None]), active)

    def _host(self, array: np.ndarray) -> torch.Tensor:
        """A CPU tensor of ``array``, page-locked on CUDA so the copy to the GPU is asynchronous."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor.pin_memory() if self.cuda else tensor

    def _launch(self, batch: _Batch, restore: bool) -> _Launched:
        """Start the network on ``batch``; on CUDA this returns before the GPU is done."""
        if not batch.active:
            return _Launched(batch, torch.zeros((0, 1, 1, 3), dtype=torch.uint8), None)
        with torch.inference_mode():
            crops = batch.crops.to(self.device, non_blocking=True)
            mels = batch.mels.to(self.device, non_blocking=True)
            faces = face_input(crops)
            if self.cuda:
                faces = faces.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                bgr = self.model(mels, faces)
            rgb = bgr.float().flip(1)
            if restore:
                rgb = self._restore(rgb)
            patches = (rgb * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            return self._to_host(batch, patches)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _restore(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, 96, 96) RGB [0, 1] → restored (B, 3, 512, 512) RGB [0, 1], in fp32 chunks."""
        assert self.restorer is not None
        big = F.interpolate(rgb, size=(RESTORE_SIZE, RESTORE_SIZE), mode="bilinear", align_corners=False)
        chunks = [self.restorer(part * 2.0 - 1.0) for part in big.split(self.restore_batch)]
        return ((torch.cat(chunks).float() + 1.0) / 2.0).clamp_(0.0, 1.0)

    def _to_host(self, batch: _Batch, patches: torch.Tensor) -> _Launched:
        """Copy ``patches`` to the CPU, asynchronously on CUDA (``host_copy``)."""
        return _Launched(batch, *host_copy(patches, self.device))

    def _finish(self, launched: _Launched, pool: ThreadPoolExecutor) -> Iterator[np.ndarray]:
        """Wait for ``launched``'s output; yield its frames, the new faces blended in by ``pool``, in order."""
        if launched.ready is not None:
            launched.ready.synchronize()
        batch, out = launched.batch, launched.patches.numpy()
        patches: list[np.ndarray | None] = [None] * len(batch.frames)
        for j, k in enumerate(batch.active):
            patches[k] = out[j]
        # blending a large frame costs milliseconds of numpy, which releases the GIL: spread it over cores,
        # a few frames at a time so finished frames waiting for the caller stay few (memory)
        step = 2 * self.blend_workers
        for k in range(0, len(batch.frames), step):
            part = slice(k, k + step)
            yield from pool.map(
                _compose, batch.frames[part], batch.boxes[part], batch.masks[part], patches[part]
            )


def _weighted(mask: np.ndarray, weight: float) -> np.ndarray:
    """``mask`` scaled by ``weight`` (a new array; cached masks are read-only and shared)."""
    return mask if weight >= 1.0 else mask * np.float32(weight)


def _compose(
    frame: np.ndarray, box: Box | None, mask: np.ndarray | None, patch: np.ndarray | None
) -> np.ndarray:
    """``frame`` with ``patch`` resized to ``box`` and blended in by ``mask``; ``frame`` itself if no box."""
    if box is None or mask is None or patch is None:
        return frame  # no face in this frame: nothing to change
    x1, y1, x2, y2 = box
    return blend_into(frame, _resize(patch, x2 - x1, y2 - y1), box, mask)


def _load_restorer(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    """The TorchScript face-restoration model at ``path``, checked to map (1, 3, 512, 512) to itself."""
    if not path.is_file():
        raise ConfigError(f"the face restoration model {path} does not exist (see `mouthpiece models`)")
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, but it is what GFPGAN/CodeFormer export to
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
            model = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # torch.jit.load fails in many ways on foreign files
        raise ConfigError(f"{path.name} is not a TorchScript face restoration model ({exc})") from exc
    probe = torch.zeros((1, 3, RESTORE_SIZE, RESTORE_SIZE), device=device)
    with torch.inference_mode():
        out = model(probe)
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{path.name} maps (1, 3, 512, 512) to {got}; a face restorer must keep the shape")
    return model
