"""The detect stage end to end: real clips made by validate's normalizer, a real local store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import cv2
import numpy as np
import pytest

import stages.detect as detect
from pipeline.config import load_settings
from pipeline.contracts import FaceTrack, JobOptions, Manifest
from pipeline.errors import ConfigError, NoFaceFound
from pipeline.media import FrameWriter
from pipeline.stage import ModelCache
from stages.detect.detectors import FACE_ALIGNMENT_FILES, FaceAlignmentDetector, HaarDetector
from stages.lib.faces.detection import Detection

if TYPE_CHECKING:
    from conftest import StageEnv

T = TypeVar("T")
Image = np.ndarray
Region = tuple[float, float, float, float]

PAN_FRAMES, PAN_SIDE, PAN_X0, PAN_Y0 = 50, 256, 80, 20
BLANK = range(20, 23)
"""The pan clip: a 256×256 window over the astronaut photo moving 1 px right per frame (the face moves
left), with frames 20–22 replaced by a flat grey frame (no face)."""


@dataclass
class RecordingLog:
    """A stand-in for the structlog logger that keeps (event, fields) pairs."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def _record(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning = error = debug = _record

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name == event]


class RecordingModels(ModelCache):
    """A ModelCache that remembers which names were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, name: str, factory: Callable[[], T]) -> T:
        self.asked.append(name)
        return super().get(name, factory)


class CountingDetector:
    """Haar, counting the frames it is asked about."""

    name = "haar"

    def __init__(self) -> None:
        self.inner = HaarDetector()
        self.calls = 0

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        self.calls += 1
        return self.inner.detect(frame_rgb)


@pytest.fixture(scope="module")
def pan_clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Iterator[Path]:
    """A 2 s H.264 clip at 25 fps (PAN_* above), written with pipeline.media.FrameWriter."""
    folder = tmp_path_factory.mktemp("pan")
    settings = load_settings(None, data_dir=folder)
    clip = folder / "pan.mp4"
    with FrameWriter(settings, clip, PAN_SIDE, PAN_SIDE, settings.fps) as writer:
        for i in range(PAN_FRAMES):
            x0 = PAN_X0 + i
            frame = astronaut[PAN_Y0 : PAN_Y0 + PAN_SIDE, x0 : x0 + PAN_SIDE]
            writer.write(np.full_like(frame, 128) if i in BLANK else np.ascontiguousarray(frame))
    yield clip


def track_of(env: StageEnv, manifest: Manifest) -> FaceTrack:
    """The FaceTrack the manifest's ``faces`` artifact holds, read back from the store."""
    ref = manifest.artifacts["faces"]
    return FaceTrack.model_validate_json(env.store.get(ref.bucket, ref.key))


def test_astronaut_photo_gives_a_one_frame_track(
    env: StageEnv, astronaut: Image, face_region: Region
) -> None:
    """A still photo: one FaceFrame whose box covers the astronaut's face, with 68 landmarks (dlib, the
    offline tier) and a head pose; manifest and progress as promised."""
    ctx = env.context()
    manifest = env.manifest(ctx, env.normalized(astronaut, "astronaut.png"), "astronaut.png")
    (out,) = detect.run(ctx, manifest)
    assert out.stage == "detect" and out.artifacts["avatar"] == manifest.artifacts["avatar"]
    assert out.info["detector"] == "dlib" and out.info["faces_found"] == 1
    assert out.artifacts["faces"].key.startswith("cache/faces/")
    track = track_of(env, out)
    assert len(track.frames) == manifest.media.frames == 1
    x1, y1, x2, y2 = track.frames[0].box
    fx1, fy1, fx2, fy2 = face_region
    assert fx1 <= x1 < x2 <= fx2 and fy1 <= y1 < y2 <= fy2, track.frames[0].box
    assert x2 - x1 > 70 and not track.frames[0].interpolated
    assert track.frames[0].landmarks is not None and len(track.frames[0].landmarks) == 68
    assert track.frames[0].pose is not None and abs(track.frames[0].pose[2]) < 5  # roll: she is upright
    assert (track.width, track.height) == (512, 512)
    assert env.progress[-1] == 1.0 and env.progress == sorted(env.progress)


def test_second_run_reuses_the_track_without_detecting(env: StageEnv, astronaut: Image) -> None:
    """Another job on the same avatar — even with another renderer or style — reuses the cached track.

    Proof without timing: the second job's ModelCache is never asked for a detector.
    """
    clip = env.normalized(astronaut, "astronaut.png")
    first_ctx = env.context()
    (first,) = detect.run(first_ctx, env.manifest(first_ctx, clip, "astronaut.png"))
    models = RecordingModels()
    ctx = env.context(models=models)
    other = JobOptions(renderer="wav2lip", style="photo")
    (second,) = detect.run(ctx, env.manifest(ctx, clip, "astronaut.png", other))
    assert not [name for name in models.asked if name.startswith("detector:")]
    assert second.artifacts["faces"] == first.artifacts["faces"]
    assert second.info["faces_found"] == 1 and second.info["detector"] == "dlib"


def test_face_choice_is_part_of_the_address(env: StageEnv, astronaut: Image) -> None:
    """A different face choice is a different track: it is detected again and stored under another key."""
    clip = env.normalized(astronaut, "astronaut.png")
    ctx = env.context()
    (largest,) = detect.run(ctx, env.manifest(ctx, clip, "astronaut.png"))
    models = RecordingModels()
    ctx = env.context(models=models)
    (central,) = detect.run(ctx, env.manifest(ctx, clip, "astronaut.png", JobOptions(face="center")))
    assert "detector:dlib" in models.asked
    assert central.artifacts["faces"].key != largest.artifacts["faces"].key


def test_photo_without_a_face_fails_naming_the_file(env: StageEnv, coffee: Image) -> None:
    """No face anywhere: NoFaceFound whose reason names the avatar; nothing is cached."""
    ctx = env.context()
    manifest = env.manifest(ctx, env.normalized(coffee, "coffee.png"), "coffee.png")
    with pytest.raises(NoFaceFound) as failed:
        detect.run(ctx, manifest)
    assert failed.value.reason.startswith("no face found in coffee.png")
    assert failed.value.key == manifest.artifacts["avatar"].key
    assert list(env.store.list(env.settings.bucket_work, "cache/faces/")) == []


def test_anime_face_needs_style_cartoon(env: StageEnv, anime: Image) -> None:
    """An anime face dlib and Haar miss fails with a hint by default and is found by cartoon eyes with
    style cartoon, after the other tiers found nothing."""
    clip = env.normalized(anime, "anime.png")
    ctx = env.context()
    with pytest.raises(NoFaceFound, match="cartoon") as failed:
        detect.run(ctx, env.manifest(ctx, clip, "anime.png"))
    assert failed.value.reason.startswith("no face found in anime.png")
    log = RecordingLog()
    ctx = env.context(log=log)
    (out,) = detect.run(ctx, env.manifest(ctx, clip, "anime.png", JobOptions(style="cartoon")))
    assert out.info["detector"] == "cartoon_eyes"
    x1, y1, x2, y2 = track_of(env, out).frames[0].box
    assert x1 < 94 and x2 > 162 and y1 < 144 and y2 > 196
    assert log.named("no_face_with_detector") == [
        {"detector": "dlib", "next": "haar"},
        {"detector": "haar", "next": "cartoon_eyes"},
    ]


def test_auto_fallback_to_dlib_is_logged_once(env: StageEnv, astronaut: Image, cartoon: Image) -> None:
    """With detector auto and no face-alignment weights, the worker says once that it uses dlib, naming
    dir and files (the plain drawn face gets dlib landmarks too)."""
    log, models = RecordingLog(), ModelCache()
    for image, name in ((astronaut, "astronaut.png"), (cartoon, "cartoon.png")):
        ctx = env.context(models=models, log=log)
        (out,) = detect.run(ctx, env.manifest(ctx, env.normalized(image, name), name))
        assert out.info["detector"] == "dlib"
    (notice,) = log.named("detector_fallback")
    assert notice["model_dir"] == str(env.settings.models) and notice["files"] == list(FACE_ALIGNMENT_FILES)
    assert notice["using"] == "dlib"


def test_face_alignment_without_weights_stops_the_worker(tmp_path: Path) -> None:
    """detector=face_alignment, no weights, no download: warm_up raises ConfigError naming the files."""
    urls = {name: (tmp_path / "absent" / name).as_uri() for name in FACE_ALIGNMENT_FILES}
    settings = load_settings(None, data_dir=tmp_path / "fa", detector="face_alignment", model_urls=urls)
    with pytest.raises(ConfigError) as failed:
        detect.warm_up(settings, ModelCache())
    assert all(name in failed.value.reason for name in FACE_ALIGNMENT_FILES)
    assert str(settings.models) in failed.value.reason


def test_pan_clip_track_follows_the_face(env: StageEnv, pan_clip: Path) -> None:
    """A 2 s panning clip: one entry per frame, the box moving 1 px/frame left; the grey frames are a
    shot of their own without a face, marked absent (renderers leave them alone), not filled in."""
    ctx = env.context()
    manifest = env.manifest(ctx, pan_clip, "pan.mp4")
    assert manifest.media.frames == PAN_FRAMES
    (out,) = detect.run(ctx, manifest)
    track = track_of(env, out)
    assert len(track.frames) == PAN_FRAMES
    assert out.info["faces_found"] == PAN_FRAMES - len(BLANK)
    assert [i for i, f in enumerate(track.frames) if f.absent] == list(BLANK)
    assert all(f.landmarks is None for f in track.frames if f.absent)
    assert all(f.landmarks is not None and f.pose is not None for f in track.frames if not f.absent)
    track.frames = [f for i, f in enumerate(track.frames) if i not in BLANK]
    kept = np.array([i for i in range(PAN_FRAMES) if i not in BLANK])
    centres = np.array([(f.box[0] + f.box[2]) / 2 for f in track.frames])
    expected = (177 + 270) / 2 - PAN_X0 - kept
    assert np.abs(centres - expected).max() < 4, np.round(centres - expected, 1)
    slope = np.polyfit(kept, centres, 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.15)


def test_only_the_frames_a_shorter_voice_shows_are_detected(
    env: StageEnv, pan_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 0.8 s voice over the 2 s pan clip shows its first 20 frames: only those are tracked, the track
    still has an entry per frame (the unseen ones absent), and its faces are where a whole-clip track
    puts them. That part is not reused for a longer voice (detected again, whole), and the whole track
    serves a short voice after it."""
    tracked: list[int] = []
    real = detect.track_faces

    def counting(frames: Any, n: int, *args: Any, **kwargs: Any) -> Any:
        tracked.append(n)
        return real(frames, n, *args, **kwargs)

    monkeypatch.setattr(detect, "track_faces", counting)
    ctx = env.context()
    (short,) = detect.run(ctx, env.manifest(ctx, pan_clip, "pan.mp4", audio_seconds=0.8))
    assert tracked == [20]
    part = track_of(env, short)
    assert len(part.frames) == PAN_FRAMES and all(f.absent for f in part.frames[20:])
    ctx = env.context()
    (long,) = detect.run(ctx, env.manifest(ctx, pan_clip, "pan.mp4", audio_seconds=2.0))
    assert tracked == [20, PAN_FRAMES] and long.artifacts["faces"] != short.artifacts["faces"]
    whole = track_of(env, long)
    for a, b in zip(part.frames[:20], whole.frames[:20], strict=True):
        assert a.absent == b.absent
        assert a.absent or np.abs(np.subtract(a.box, b.box)).max() < 4
    models = RecordingModels()
    ctx = env.context(models=models)
    (again,) = detect.run(ctx, env.manifest(ctx, pan_clip, "pan.mp4", audio_seconds=0.8))
    assert tracked == [20, PAN_FRAMES] and again.artifacts["faces"] == long.artifacts["faces"]
    assert not [name for name in models.asked if name.startswith("detector:")]


def test_long_clips_are_sampled_and_interpolated(
    env: StageEnv, pan_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Box-only detectors (Haar): beyond FULL_RATE_FRAMES, every k-th frame (and the last) is examined;
    the rest are interpolated (runs without a face up to 0.2 s are filled)."""
    env.settings = load_settings(None, data_dir=env.root / "haar-data", detector="haar")
    monkeypatch.setattr(detect, "FULL_RATE_FRAMES", 10)
    assert detect.detection_stride(PAN_FRAMES) == 5
    counting = CountingDetector()
    models = ModelCache()
    models.get("detector:haar", lambda: counting)
    ctx = env.context(models=models)
    (out,) = detect.run(ctx, env.manifest(ctx, pan_clip, "pan.mp4"))
    examined = [*range(0, PAN_FRAMES, 5), PAN_FRAMES - 1]
    # a face found is looked for around its last box first; where it is gone (a blank frame) the
    # crop search is followed by a search of the whole frame
    assert counting.calls == len(examined) + len([i for i in examined if i in BLANK])
    track = track_of(env, out)
    assert len(track.frames) == PAN_FRAMES
    detected = [i for i, f in enumerate(track.frames) if not f.interpolated]
    assert detected == [i for i in examined if i not in BLANK]


def test_stride_rule() -> None:
    """Every frame up to 250 frames; then ceil(frames / 250), never more than 5."""
    assert [detect.detection_stride(n) for n in (1, 250, 251, 500, 1000, 1250, 1251, 15_000)] == [
        1,
        1,
        2,
        2,
        4,
        5,
        5,
        5,
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("eager_landmarks")
def test_face_alignment_track_has_landmarks(
    env: StageEnv, fa_build: tuple[FaceAlignmentDetector, Path], fake_weights: Path, astronaut: Image
) -> None:
    """With weights in the model dir, auto picks face-alignment (warm_up too): 68 landmarks per frame.

    The worker's detector is the one built from those weights by the ``fa_build`` fixture (loading is
    tested in test_detectors); the stage is asked for it under its name.
    """
    detector, _ = fa_build
    env.settings = load_settings(None, data_dir=env.root / "fa-data", model_dir=fake_weights)
    models, log = RecordingModels(), RecordingLog()
    models.get("detector:face_alignment", lambda: detector)
    detect.warm_up(env.settings, models)  # runs the landmark path once on a blank crop
    ctx = env.context(models=models, log=log)
    small = cv2.resize(astronaut, (128, 128))
    (out,) = detect.run(ctx, env.manifest(ctx, env.normalized(small, "small.png"), "small.png"))
    assert out.info["detector"] == "face_alignment"
    assert models.asked.count("detector:face_alignment") == 3  # put there, warm_up, the job
    frame = track_of(env, out).frames[0]
    assert frame.landmarks is not None and len(frame.landmarks) == 68
    assert log.named("detector_fallback") == []


def test_a_clip_without_faces_is_searched_sparsely(env: StageEnv, tmp_path: Path) -> None:
    """A long clip with no face fails with NoFaceFound after looking at far fewer frames than it has
    (looks thin out after repeated misses), so a faceless video cannot tie a worker up for minutes."""
    settings = load_settings(None, data_dir=tmp_path)
    env.settings = load_settings(None, data_dir=env.root / "haar-data", detector="haar")
    clip = tmp_path / "empty.mp4"
    rng = np.random.default_rng(0)
    with FrameWriter(settings, clip, 128, 128, settings.fps) as writer:
        for _ in range(200):
            writer.write(rng.integers(90, 110, (128, 128, 3), dtype=np.uint8))
    counting = CountingDetector()
    models = ModelCache()
    models.get("detector:haar", lambda: counting)
    ctx = env.context(models=models)
    with pytest.raises(NoFaceFound, match=r"no face found in empty\.mp4"):
        detect.run(ctx, env.manifest(ctx, clip, "empty.mp4"))
    assert 10 <= counting.calls < 40
