"""The musetalk renderer: each step equal to upstream MuseTalk 1.5's own code, and the renderer's behaviour.

Reference values: ``tests/data/musetalk/reference.npz``, made by ``tests/data/musetalk/make_reference.py``
with upstream's code (commit in the file) on the ``TINY`` seeded models that the fixture here rebuilds.

At the published sizes (a one-off check, too big for every run: an 850 M-parameter UNet), make a
reference with ``--configs real --out PATH`` and run the step tests against it; the fixture then rebuilds
the ``REAL`` seeded models::

    MUSETALK_REFERENCE=PATH pytest tests/stages/render/test_musetalk.py -k upstream
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions, Span, SpeechTiming
from pipeline.errors import ConfigError, InvalidInput
from stages.render import musetalk as mt
from stages.render.base import RenderRequest
from stages.render.musetalk_render import MuseTalkRenderer
from stages.render.musetalk_seeded import REAL, TINY, write_models

REFERENCE = Path(
    os.environ.get("MUSETALK_REFERENCE")
    or Path(__file__).resolve().parents[2] / "data" / "musetalk" / "reference.npz"
)
FPS = 25.0
FRAMES = (0, 12, 24)


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, ref: dict[str, np.ndarray]) -> Path:
    """The seeded models in the published layout that the reference was made with (TINY unless it says
    ``real``)."""
    configs = REAL if str(ref.get("configs", "tiny")) == "real" else TINY
    return write_models(tmp_path_factory.mktemp("musetalk"), configs, seed=0)


@pytest.fixture(scope="module")
def models(model_dir: Path) -> mt.MuseTalkModels:
    return mt.load_models(model_dir)


@pytest.fixture(scope="module")
def renderer(model_dir: Path) -> MuseTalkRenderer:
    return MuseTalkRenderer(model_dir, device="cpu", batch=3)


@pytest.fixture(scope="module")
def frame(astronaut: np.ndarray) -> np.ndarray:
    return astronaut


@pytest.fixture(scope="module")
def face(ref: dict[str, np.ndarray]) -> FaceFrame:
    """The astronaut's dlib face (box and 68 landmarks) the reference was made from."""
    x1, y1, x2, y2 = (float(v) for v in ref["face_box"])
    return FaceFrame(box=(x1, y1, x2, y2), landmarks=[(float(x), float(y)) for x, y in ref["landmarks"]])


# --- step by step against upstream -------------------------------------------------------------------


def test_reference_names_upstream_commit(ref: dict[str, np.ndarray]) -> None:
    """The reference data say which upstream commit made them."""
    assert str(ref["upstream_commit"]) == "0a89dec45a0192b824e3cf4daf96c239440c5ed8"


def test_audio_windows_equal_upstream(models: mt.MuseTalkModels, ref: dict[str, np.ndarray]) -> None:
    """Whisper states → per-frame windows of 50 tokens: the frame count and the windows equal upstream's."""
    states = mt.encoder_states(models, ref["audio"])
    n = int(ref["n_windows"])
    assert n == int(len(ref["audio"]) / mt.AUDIO_RATE * FPS)
    windows = mt.audio_windows(states, FPS, 0, n)
    assert windows.shape == (n, 50, 384)
    np.testing.assert_allclose(windows[list(FRAMES)].numpy(), ref["windows"], rtol=1e-5, atol=1e-5)
    # a window past the end of the audio reads the zero padding, not an error
    assert mt.audio_windows(states, FPS, n + 1, 1).shape == (1, 50, 384)


def test_crop_box_and_crop_equal_upstream(
    frame: np.ndarray, face: FaceFrame, ref: dict[str, np.ndarray]
) -> None:
    """Upstream's v1.5 box from the landmarks (+10 px below), and its 256 px Lanczos crop, exactly."""
    box = mt.crop_box(face.box, face.landmarks, *frame.shape[:2])
    assert box == tuple(int(v) for v in ref["box"])
    assert box is not None
    np.testing.assert_array_equal(mt.face_crop(frame, box), ref["crop_bgr"][..., ::-1])


def test_sampled_latents_equal_upstream(models: mt.MuseTalkModels, ref: dict[str, np.ndarray]) -> None:
    """Masked + reference latents, sampled as upstream's inference does (same seed), equal upstream's."""
    crop = torch.from_numpy(ref["crop_bgr"][..., ::-1].copy())[None]
    with torch.inference_mode():
        latents = mt.encode_latents(models, crop, generator=torch.Generator().manual_seed(7))
    assert latents.shape == (1, 8, 32, 32)
    np.testing.assert_allclose(latents.numpy(), ref["latents_sampled"], rtol=1e-4, atol=1e-5)


def test_unet_step_equal_upstream(models: mt.MuseTalkModels, ref: dict[str, np.ndarray]) -> None:
    """The single UNet step at t=0 on upstream's latents and windows (positional encoding added) equals
    upstream's output; each frame's audio window changes it."""
    latents = torch.from_numpy(ref["latents_sampled"]).repeat(2, 1, 1, 1)
    tokens = torch.from_numpy(ref["windows"][:2])
    with torch.inference_mode():
        out = mt.predict_latents(models, latents, tokens)
    np.testing.assert_allclose(out.numpy(), ref["unet_out"], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out[0], out[1])


def test_decoded_face_equals_upstream(models: mt.MuseTalkModels, ref: dict[str, np.ndarray]) -> None:
    """VAE decode of upstream's UNet output → the same 256×256 uint8 faces (within one level of rounding)."""
    with torch.inference_mode():
        faces = mt.decode_faces(models, torch.from_numpy(ref["unet_out"])).numpy()
    diff = np.abs(faces.astype(int) - ref["decoded_bgr"][..., ::-1].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001


def test_blend_equals_upstream_get_image(
    frame: np.ndarray, face: FaceFrame, ref: dict[str, np.ndarray]
) -> None:
    """Our blend (square, upper boundary, blur, PIL's integer paste) equals upstream's ``get_image``
    given the same parsing mask; outside the square the photo is untouched."""
    box = tuple(int(v) for v in ref["box"])
    x1, y1, x2, y2 = box
    face_rgb = cv2.resize(ref["decoded_bgr"][0][..., ::-1], (x2 - x1, y2 - y1))
    _, mask = mt.square_mask(box, mt.lower_face_mask(box, face.landmarks))  # type: ignore[arg-type]
    out = mt.blend_face(frame, face_rgb, box, mask)  # type: ignore[arg-type]
    sx1, sy1, sx2, sy2 = (max(0, v) for v in mt.blend_square(box))  # type: ignore[arg-type]
    np.testing.assert_array_equal(out[sy1:sy2, sx1:sx2], ref["final_bgr"][..., ::-1])
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out[outside], frame[outside])


def test_renderer_frame_equals_upstream_mean_path(
    renderer: MuseTalkRenderer, frame: np.ndarray, face: FaceFrame, ref: dict[str, np.ndarray]
) -> None:
    """End to end, frame 0 of the renderer (mean latents) equals upstream's ``get_image_pred`` face
    blended by ``get_image``, within one level where rounding differs."""
    request = _request(ref["audio"], 1, face)
    (out,) = list(renderer.render(request, _still(frame, face, 1), lambda _: None))
    sx1, sy1, sx2, sy2 = (max(0, v) for v in mt.blend_square(tuple(int(v) for v in ref["box"])))  # type: ignore[arg-type]
    diff = np.abs(out[sy1:sy2, sx1:sx2].astype(int) - ref["mean_final_bgr"][..., ::-1].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001
    assert (out != frame).any()


# --- box rule ---------------------------------------------------------------------------------------------


def test_crop_box_without_landmarks_uses_the_detector_box() -> None:
    """No landmarks (Haar): the detector's box, 10 px lower at the bottom, clipped to the frame."""
    assert mt.crop_box((10.7, 20.2, 50.9, 60.0), None, 100, 100) == (10, 20, 50, 70)
    assert mt.crop_box((10, 20, 50, 95), None, 100, 100) == (10, 20, 50, 100)
    assert mt.crop_box((120, 20, 150, 60), None, 100, 100) is None


def test_crop_box_unusable_landmarks_fall_back() -> None:
    """Landmarks left of the frame (x < 0) make upstream use the detector's box; so do we."""
    points = np.tile([[-5.0, 40.0]], (68, 1))
    points[:, 0] += np.arange(68)
    points[:, 1] += np.arange(68) % 7
    assert mt.crop_box((10, 20, 50, 60), points, 100, 100) == (10, 20, 50, 70)


def test_positional_encoding_values() -> None:
    """sin at even channels, cos at odd, frequency 10000^(-2i/d)."""
    pe = mt.positional_encoding(384, 60)[0]
    assert pe.shape == (60, 384)
    assert pe[0, 0] == 0.0 and pe[0, 1] == 1.0
    assert float(pe[7, 2]) == pytest.approx(np.sin(7 * 10000 ** (-2 / 384)), abs=1e-6)
    assert float(pe[7, 3]) == pytest.approx(np.cos(7 * 10000 ** (-2 / 384)), abs=1e-6)


# --- renderer behaviour ---------------------------------------------------------------------------------


def _request(audio: np.ndarray, n: int, face: FaceFrame, speech: SpeechTiming | None = None) -> RenderRequest:
    track = FaceTrack(detector="test", width=512, height=512, fps=FPS, frames=[face])
    return RenderRequest(audio, FPS, n, track, options=JobOptions(renderer="musetalk"), speech=speech)


def _still(image: np.ndarray, face: FaceFrame, n: int) -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
    return ((i, image, face) for i in range(n))


def test_every_frame_in_order_with_progress_per_batch(
    renderer: MuseTalkRenderer, speech: np.ndarray, frame: np.ndarray, face: FaceFrame
) -> None:
    """7 frames in batches of 3: 7 frames of the input size, progress after each batch up to 1; the
    still avatar's crop is encoded once (cached by content), later frames hit the cache."""
    seen: list[float] = []
    misses = renderer.cache_misses
    out = list(renderer.render(_request(speech, 7, face), _still(frame, face, 7), seen.append))
    assert len(out) == 7 and all(f.shape == frame.shape and f.dtype == np.uint8 for f in out)
    assert seen == pytest.approx([3 / 7, 6 / 7, 1.0])
    assert renderer.cache_misses - misses <= 1
    assert not np.array_equal(out[0], out[6])  # different audio, different mouth


def test_absent_faces_and_silence_pass_frames_through(
    renderer: MuseTalkRenderer, speech: np.ndarray, frame: np.ndarray, face: FaceFrame
) -> None:
    """A frame with no face, and frames in a pause of the speech, are the input frames unchanged."""
    timing = SpeechTiming(duration=1.0, source="test", speech=[Span(start=0.0, end=0.12)])
    absent = face.model_copy(update={"absent": True})
    items = [(0, frame, face), (1, frame, absent), *((i, frame, face) for i in range(2, 12))]
    out = list(renderer.render(_request(speech, 12, face, timing), iter(items), lambda _: None))
    assert (out[0] != frame).any()
    assert out[1] is frame
    assert all(o is frame for o in out[9:])  # well after the speech ended (0.12 s + fade)


def test_cancel_stops_at_the_next_progress_report(
    renderer: MuseTalkRenderer, speech: np.ndarray, frame: np.ndarray, face: FaceFrame
) -> None:
    """A progress callback that raises (a cancelled job) stops the render after that batch."""

    class Cancelled(Exception):
        pass

    def cancel(_: float) -> None:
        raise Cancelled

    got = []
    with pytest.raises(Cancelled):
        for out in renderer.render(_request(speech, 9, face), _still(frame, face, 9), cancel):
            got.append(out)
    assert len(got) == 3


def test_frames_ending_early(
    renderer: MuseTalkRenderer, speech: np.ndarray, frame: np.ndarray, face: FaceFrame
) -> None:
    with pytest.raises(InvalidInput, match="ended after 2 of 5"):
        list(renderer.render(_request(speech, 5, face), _still(frame, face, 2), lambda _: None))


def test_missing_model_files(tmp_path: Path) -> None:
    """An empty model directory: a ConfigError naming the file and the fetch command."""
    with pytest.raises(ConfigError, match=r"musetalkV15/musetalk.json.*--fetch musetalk"):
        mt.load_models(tmp_path)


def test_foreign_weights(tmp_path: Path, model_dir: Path) -> None:
    """A unet.pth that is not MuseTalk's UNet: a ConfigError, not a traceback."""
    import shutil

    shutil.copytree(model_dir, tmp_path / "m")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "m" / mt.UNET_DIR / mt.UNET_WEIGHTS)
    with pytest.raises(ConfigError, match="do not load"):
        mt.load_models(tmp_path / "m")


def test_bad_settings(model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="batch"):
        MuseTalkRenderer(model_dir, device="cpu", batch=0)
    with pytest.raises(ConfigError, match="dtype"):
        MuseTalkRenderer(model_dir, device="cpu", dtype="int8")


def test_render_stage_builds_musetalk_from_the_model_directory(tmp_path: Path, model_dir: Path) -> None:
    """``renderer: musetalk`` gives the MuseTalk renderer, loaded once per worker from the model
    directory; warm_up builds it when its files are there; without them a job fails naming the fetch."""
    import shutil

    from pipeline.config import Settings
    from pipeline.stage import ModelCache
    from stages.render import get_renderer, warm_up

    settings = Settings(data_dir=tmp_path, device="cpu")
    with pytest.raises(ConfigError, match="--fetch musetalk"):
        get_renderer(settings, ModelCache(), JobOptions(renderer="musetalk"))
    shutil.copytree(model_dir, settings.models)
    cache = ModelCache()
    warm_up(settings, cache)
    renderer = get_renderer(settings, cache, JobOptions(renderer="musetalk"))
    assert isinstance(renderer, MuseTalkRenderer)
    assert get_renderer(settings, cache, JobOptions(renderer="musetalk")) is renderer


def test_lower_face_mask_covers_the_mouth_not_the_eyes(face: FaceFrame, ref: dict[str, np.ndarray]) -> None:
    """Our stand-in for upstream's face parsing, measured on the astronaut: after upstream's upper
    boundary and blur, the blend weight is full on every mouth landmark and zero on every eye landmark."""
    box = tuple(int(v) for v in ref["box"])
    square, mask = mt.square_mask(box, mt.lower_face_mask(box, face.landmarks))  # type: ignore[arg-type]
    points = np.rint(np.asarray(face.landmarks) - square[:2]).astype(int)
    weight = mask[points[:, 1], points[:, 0]]
    assert (weight[48:68] >= 250).all()  # the mouth (iBUG 48..67)
    assert (weight[36:48] == 0).all() and (weight[17:27] == 0).all()  # the eyes and brows stay the photo's


def test_moving_face_is_followed_frame_by_frame(
    renderer: MuseTalkRenderer, speech: np.ndarray, frame: np.ndarray, face: FaceFrame
) -> None:
    """A face that moves (the photo shifted 16 px right, its landmarks with it) is regenerated where it is
    on each frame: the changed region moves by the same 16 px. The moved crop holds the same pixels, so
    its latents come from the cache (keyed by content, not position)."""
    shift = 16
    moved_frame = np.roll(frame, shift, axis=1)
    x1, y1, x2, y2 = face.box
    moved = FaceFrame(
        box=(x1 + shift, y1, x2 + shift, y2),
        landmarks=[(x + shift, y) for x, y in face.landmarks or []],
    )
    misses = renderer.cache_misses
    items = [(0, frame, face), (1, moved_frame, moved)]
    out = list(renderer.render(_request(speech, 2, face), iter(items), lambda _: None))
    changed = [np.argwhere((o != f).any(axis=2)) for o, f in zip(out, (frame, moved_frame), strict=True)]
    assert len(changed[0]) > 1000
    # centroids, not edges: where the blurred mask is faint, whether a pixel changes depends on the face
    moved_by = changed[1].mean(axis=0) - changed[0].mean(axis=0)
    np.testing.assert_allclose(moved_by, [0, shift], atol=1.0)
    assert renderer.cache_misses - misses <= 1
