"""The wav2lip renderer: upstream's inference math, feathered blending, batching, restoration, errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import GeneratorType

import cv2
import numpy as np
import pytest
import torch

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions
from pipeline.errors import ConfigError, InvalidInput
from stages.render.audio import mel_windows, melspectrogram
from stages.render.base import RenderRequest
from stages.render.blend import feather_mask
from stages.render.neural import Wav2LipRenderer, blend_mask, crop_box
from stages.render.wav2lip import Wav2Lip

FPS = 25.0
PADS = (0, 10, 0, 0)


@pytest.fixture(scope="module")
def renderer(lively_checkpoint: tuple[Wav2Lip, Path]) -> Wav2LipRenderer:
    """A CPU renderer of the audio-sensitive network, batch 4, so a few frames span several batches."""
    return Wav2LipRenderer(lively_checkpoint[1], device="cpu", batch=4, pads=PADS)


def _request(audio: np.ndarray, n_frames: int, face: FaceFrame, enhance: bool = True) -> RenderRequest:
    track = FaceTrack(detector="test", width=512, height=512, fps=FPS, frames=[face])
    return RenderRequest(audio, FPS, n_frames, track, options=JobOptions(renderer="wav2lip", enhance=enhance))


def _still(image: np.ndarray, face: FaceFrame, n: int) -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
    return ((i, image, face) for i in range(n))


def _render(renderer: Wav2LipRenderer, request: RenderRequest, image: np.ndarray) -> list[np.ndarray]:
    face = request.track.frames[0]
    return list(renderer.render(request, _still(image, face, request.n_frames), lambda _: None))


def test_yields_every_frame_in_order(
    renderer: Wav2LipRenderer, speech: np.ndarray, astronaut: np.ndarray, astronaut_face: FaceFrame
) -> None:
    """6 frames in batches of 4: exactly 6 RGB uint8 frames of the input size, progress rising to 1."""
    seen: list[float] = []
    request = _request(speech[:6400], 6, astronaut_face)
    out = list(renderer.render(request, _still(astronaut, astronaut_face, 6), seen.append))
    assert len(out) == 6
    assert all(f.shape == astronaut.shape and f.dtype == np.uint8 for f in out)
    assert seen == sorted(seen) and seen[0] == pytest.approx(4 / 6) and seen[-1] == 1.0
    assert not np.array_equal(out[0], out[5])  # different audio windows, different mouths


def test_seeded_upstream_checkpoint_renders(
    checkpoint_path: Path, speech: np.ndarray, astronaut: np.ndarray, astronaut_face: FaceFrame
) -> None:
    """The seed-0 checkpoint in upstream's format drives the renderer: 2 frames, face region replaced."""
    renderer = Wav2LipRenderer(checkpoint_path, device="cpu", batch=2)
    out = _render(renderer, _request(speech, 2, astronaut_face), astronaut)
    assert len(out) == 2
    x1, y1, x2, y2 = (round(v) for v in astronaut_face.box)
    assert all(np.any(f[(y1 + y2) // 2, x1:x2] != astronaut[(y1 + y2) // 2, x1:x2]) for f in out)


def _upstream_patch(
    model: Wav2Lip, image: np.ndarray, box: tuple[int, int, int, int], mel: np.ndarray
) -> np.ndarray:
    """Upstream's inference.py for one RGB frame: BGR crop, masked half first, /255, ×255, resized, RGB."""
    x1, y1, x2, y2 = box
    bgr = cv2.resize(cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_RGB2BGR), (96, 96))
    masked = bgr.copy()
    masked[48:] = 0
    face = np.concatenate((masked, bgr), axis=2).transpose(2, 0, 1)[None] / 255.0
    with torch.inference_mode():
        pred = model(torch.from_numpy(mel[None, None]), torch.from_numpy(face).float())
    patch = np.clip(np.rint(pred[0].numpy().transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.resize(patch, (x2 - x1, y2 - y1)), cv2.COLOR_BGR2RGB)


def test_matches_upstream_inference(
    renderer: Wav2LipRenderer,
    lively_checkpoint: tuple[Wav2Lip, Path],
    speech: np.ndarray,
    astronaut: np.ndarray,
    astronaut_face: FaceFrame,
) -> None:
    """Where the mask is 1, frame 1 is upstream's prediction for mel window 1 (and not window 2's)."""
    model = lively_checkpoint[0]
    out = _render(renderer, _request(speech, 2, astronaut_face), astronaut)[1]
    x1, y1, x2, y2 = (round(v) for v in astronaut_face.box)
    box = (x1, y1, x2, y2 + 10)  # the default bottom pad
    windows = mel_windows(melspectrogram(speech), 3, FPS)
    inner = feather_mask(box[3] - y1, x2 - x1) >= 0.999
    assert inner.sum() > 1000
    got = out[y1 : box[3], x1:x2].astype(int)[inner]
    expected = _upstream_patch(model, astronaut, box, windows[1]).astype(int)[inner]
    assert np.abs(got - expected).max() <= 1
    neighbour = _upstream_patch(model, astronaut, box, windows[2]).astype(int)[inner]
    assert np.abs(got - neighbour).max() > 1  # the check can tell one window from the next


def test_only_the_face_changes_with_no_hard_edge(
    renderer: Wav2LipRenderer, speech: np.ndarray, astronaut: np.ndarray, astronaut_face: FaceFrame
) -> None:
    """Outside the padded box the frame is untouched, its border barely changes (no edge), its middle does."""
    out = _render(renderer, _request(speech, 1, astronaut_face), astronaut)[0]
    x1, y1, x2, y2 = (round(v) for v in astronaut_face.box)
    y2 += 10
    changed = np.any(out != astronaut, axis=2)
    outside = np.ones_like(changed)
    outside[y1:y2, x1:x2] = False
    assert not changed[outside].any()
    diff = np.abs(out.astype(int) - astronaut.astype(int)).max(axis=2)
    border = np.concatenate((diff[y1, x1:x2], diff[y2 - 1, x1:x2], diff[y1:y2, x1], diff[y1:y2, x2 - 1]))
    assert border.max() <= 3  # the feathered mask is ~0 on the box edge
    assert changed[(y1 + y2) // 2 - 5 : (y1 + y2) // 2 + 5, (x1 + x2) // 2].all()


def test_input_frames_never_modified(
    renderer: Wav2LipRenderer, speech: np.ndarray, astronaut: np.ndarray, astronaut_face: FaceFrame
) -> None:
    """A writable shared still frame is the same after rendering (outputs are new arrays)."""
    image = astronaut.copy()
    out = _render(renderer, _request(speech, 2, astronaut_face), image)
    assert np.array_equal(image, astronaut)
    assert all(not np.shares_memory(f, image) for f in out)


def test_face_outside_the_frame_passes_through(
    renderer: Wav2LipRenderer, speech: np.ndarray, astronaut: np.ndarray
) -> None:
    """A face box wholly outside the frame leaves that frame as it was."""
    away = FaceFrame(box=(600.0, 600.0, 700.0, 700.0))
    out = _render(renderer, _request(speech, 2, away), astronaut)
    assert all(np.array_equal(f, astronaut) for f in out)


def test_frames_ending_early(
    renderer: Wav2LipRenderer, speech: np.ndarray, astronaut: np.ndarray, astronaut_face: FaceFrame
) -> None:
    """Fewer frames than n_frames raises InvalidInput (after the frames that could be made)."""
    request = _request(speech, 9, astronaut_face)
    with pytest.raises(InvalidInput, match="ended after 5 of 9"):
        list(renderer.render(request, _still(astronaut, astronaut_face, 5), lambda _: None))


def test_frame_source_errors_propagate(
    renderer: Wav2LipRenderer, speech: np.ndarray, astronaut: np.ndarray, astronaut_face: FaceFrame
) -> None:
    """An exception raised by the frames iterator (in the prefetch thread) reaches the caller."""

    def broken() -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
        yield 0, astronaut, astronaut_face
        raise OSError("decoder died")

    with pytest.raises(OSError, match="decoder died"):
        list(renderer.render(_request(speech, 4, astronaut_face), broken(), lambda _: None))


def test_closing_early_stops_the_prefetch_thread(
    renderer: Wav2LipRenderer, speech: np.ndarray, astronaut: np.ndarray, astronaut_face: FaceFrame
) -> None:
    """A consumer that stops after one frame leaves no preparation or blending thread behind."""
    frames = renderer.render(
        _request(speech, 40, astronaut_face), _still(astronaut, astronaut_face, 40), print
    )
    assert isinstance(frames, GeneratorType)
    next(frames)
    frames.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("wav2lip")]


def test_zero_frames(renderer: Wav2LipRenderer, speech: np.ndarray, astronaut_face: FaceFrame) -> None:
    """n_frames 0 yields nothing and reports completion."""
    seen: list[float] = []
    assert list(renderer.render(_request(speech, 0, astronaut_face), iter([]), seen.append)) == []
    assert seen == [1.0]


def test_crop_box_pads_and_clips() -> None:
    """Pads grow the box (top, bottom, left, right) and the frame clips it; an empty box is None."""
    assert crop_box((10.4, 20, 50, 60), 100, 100, (1, 10, 2, 3)) == (8, 19, 53, 70)
    assert crop_box((-5, -5, 120, 95), 100, 100, (0, 10, 0, 0)) == (0, 0, 100, 100)
    assert crop_box((150, 10, 180, 40), 100, 100, (0, 10, 0, 0)) is None


def _landmarks(box: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    """Plausible iBUG-68 points for a frontal face in ``box`` (jaw from y≈40%, nose to 62%, mouth at 78%)."""
    x1, y1, x2, y2 = box
    w, h, cx = x2 - x1, y2 - y1, (x1 + x2) / 2
    angles = np.linspace(np.pi, 0, 17)
    jaw = [(cx + 0.45 * w * np.cos(a), y1 + 0.4 * h + 0.55 * h * np.sin(np.pi - a) ** 1.5) for a in angles]
    brows = [(x1 + w * (0.2 + 0.06 * i), y1 + 0.25 * h) for i in range(10)]
    nose = [(cx, y1 + h * (0.35 + 0.07 * i)) for i in range(4)] + [
        (cx + d, y1 + 0.62 * h) for d in (-8, -4, 0, 4, 8)
    ]
    eyes = [(x1 + w * (0.3 + 0.03 * i), y1 + 0.35 * h) for i in range(12)]
    mouth = [
        (cx + 0.2 * w * np.cos(a), y1 + 0.78 * h + 0.06 * h * np.sin(a))
        for a in np.linspace(0, 2 * np.pi, 20)
    ]
    points = jaw + brows + nose + eyes + mouth
    assert len(points) == 68
    return [(float(x), float(y)) for x, y in points]


def test_landmark_mask_covers_the_lower_face() -> None:
    """With landmarks the mask is 0 over the eyes, about 1 over the mouth, and never above the box mask."""
    box = (100, 100, 300, 320)
    face = FaceFrame(box=box, landmarks=_landmarks(box))
    mask = blend_mask(face, box, 0.15)
    plain = blend_mask(FaceFrame(box=box), box, 0.15)
    assert mask.shape == plain.shape == (220, 200)
    assert mask[: int(0.3 * 220)].max() == 0.0  # eyes and brows keep their original pixels
    assert mask[int(0.78 * 220), 100] > 0.85
    assert np.all(mask <= plain + 1e-6)


def test_landmarks_keep_the_eyes(
    renderer: Wav2LipRenderer, speech: np.ndarray, astronaut: np.ndarray, astronaut_face: FaceFrame
) -> None:
    """Rendering with landmarks changes the mouth region but not the upper face."""
    x1, y1, x2, y2 = (round(v) for v in astronaut_face.box)
    face = FaceFrame(box=astronaut_face.box, landmarks=_landmarks((x1, y1, x2, y2)))
    out = _render(renderer, _request(speech, 1, face), astronaut)[0]
    changed = np.any(out != astronaut, axis=2)
    assert not changed[: y1 + int(0.3 * (y2 - y1))].any()
    assert changed[y1 + int(0.75 * (y2 - y1)), (x1 + x2) // 2]


class _Darken(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, -1.0)


class _Shrink(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :256, :256]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_face_restoration_applied_when_enhancing(
    checkpoint_path: Path,
    tmp_path: Path,
    speech: np.ndarray,
    astronaut: np.ndarray,
    astronaut_face: FaceFrame,
) -> None:
    """A TorchScript restorer's output (here: all black) replaces the face, only for jobs that enhance."""
    path = tmp_path / "restore.pt"
    torch.jit.script(_Darken()).save(str(path))
    renderer = Wav2LipRenderer(checkpoint_path, device="cpu", batch=2, restoration=path, restore_batch=1)
    x1, y1, x2, y2 = (round(v) for v in astronaut_face.box)
    centre = ((y1 + y2) // 2, (x1 + x2) // 2)
    enhanced = _render(renderer, _request(speech, 2, astronaut_face, enhance=True), astronaut)
    plain = _render(renderer, _request(speech, 2, astronaut_face, enhance=False), astronaut)
    assert all(f[centre].max() == 0 for f in enhanced)
    assert all(f[centre].max() > 0 for f in plain)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_bad_restoration_model(checkpoint_path: Path, tmp_path: Path) -> None:
    """A restorer that changes the shape, a non-TorchScript file, or a missing file is a ConfigError."""
    shrink = tmp_path / "shrink.pt"
    torch.jit.script(_Shrink()).save(str(shrink))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    for path, says in [
        (shrink, "must keep the shape"),
        (junk, "not a TorchScript"),
        (tmp_path / "no.pt", "exist"),
    ]:
        with pytest.raises(ConfigError, match=says):
            Wav2LipRenderer(checkpoint_path, device="cpu", batch=1, restoration=path, warm_up=False)


def test_configuration_errors(checkpoint_path: Path, tmp_path: Path) -> None:
    """A missing checkpoint, bad batch or pads are ConfigErrors; so is CUDA without a GPU."""
    with pytest.raises(ConfigError, match="does not exist"):
        Wav2LipRenderer(tmp_path / "missing.pth", device="cpu")
    with pytest.raises(ConfigError, match="at least 1"):
        Wav2LipRenderer(checkpoint_path, device="cpu", batch=0)
    with pytest.raises(ConfigError, match="four numbers"):
        Wav2LipRenderer(checkpoint_path, device="cpu", pads=(0, 10))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            Wav2LipRenderer(checkpoint_path, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(
    renderer: Wav2LipRenderer,
    checkpoint_path: Path,
    speech: np.ndarray,
    astronaut: np.ndarray,
    astronaut_face: FaceFrame,
) -> None:
    """On CUDA (bf16/fp16 autocast, channels_last, async copies) the frames match the CPU's within a few levels."""
    gpu = Wav2LipRenderer(checkpoint_path, device="cuda", batch=16, pads=PADS)
    assert gpu.amp_dtype in (torch.bfloat16, torch.float16)
    request = _request(speech, 40, astronaut_face)
    on_gpu, on_cpu = _render(gpu, request, astronaut), _render(renderer, request, astronaut)
    assert len(on_gpu) == 40
    diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(on_gpu, on_cpu, strict=True)]
    assert max(d.mean() for d in diffs) < 1.0 and max(d.max() for d in diffs) <= 16
