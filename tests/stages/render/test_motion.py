"""Stills come alive: the astronaut photo speaking JFK blinks (eyes fully shut) and moves her head a
little, the background stays where it was (a line beside a drawn head stays straight), and a job always
moves the same way (checked on the frames with dlib's landmarks)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions, Motion, Style
from stages.lib.faces.landmarks import DlibDetector, face_box
from stages.lib.speech.fallback import timing_from_audio
from stages.render.base import SAMPLE_RATE, RenderRequest
from stages.render.motion import Animated, plan_for, seed_of
from stages.render.motion.plan import BLINK_HOLD, BLINK_SECONDS, LEVELS, plan_motion
from stages.render.motion.warps import HeadOutlines, HeadWarp, HeadWarps, close_eyes, head_mask
from stages.render.viseme import VisemeRenderer

FPS = 25.0
TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return DlibDetector()


@pytest.fixture(scope="module")
def face(detector: DlibDetector, astronaut: np.ndarray) -> FaceFrame:
    """The astronaut's face as the detect stage stores it (dlib landmarks, landmark box)."""
    (found,) = detector.detect(astronaut)
    assert found.landmarks is not None
    points = [(float(x), float(y)) for x, y in found.landmarks]
    return FaceFrame(box=face_box(found.landmarks), landmarks=points)


def request_for(
    audio: np.ndarray, face: FaceFrame, motion: Motion, seed: int, phones: bool = True
) -> RenderRequest:
    n = math.ceil(len(audio) / SAMPLE_RATE * FPS)
    track = FaceTrack(detector="dlib", width=512, height=512, fps=FPS, frames=[face])
    timing = timing_from_audio(audio, TRANSCRIPT if phones else None, phones=phones)
    options = JobOptions(transcript=TRANSCRIPT)
    return RenderRequest(audio, FPS, n, track, options, speech=timing, motion=motion, seed=seed, still=True)


@pytest.fixture(scope="module")
def alive(jfk: np.ndarray, astronaut: np.ndarray, face: FaceFrame) -> list[np.ndarray]:
    """The default for a photo: viseme renderer with subtle motion, seeded from a job id."""
    request = request_for(jfk, face, Motion.subtle, seed_of("j0123456789abcdef012", "a0"))
    frames = Animated(VisemeRenderer()).render(
        request, ((i, astronaut, face) for i in range(request.n_frames)), lambda _: None
    )
    return list(frames)


def eye_aspect(points: np.ndarray) -> float:
    """Eye aspect ratio (lid gap over eye width, both eyes): falls when the eyes close."""

    def one(eye: np.ndarray) -> float:
        gap = np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])
        return float(gap / (2 * np.linalg.norm(eye[0] - eye[3])))

    return (one(points[36:42]) + one(points[42:48])) / 2


def landmarks_on(detector: DlibDetector, frame: np.ndarray, near: FaceFrame) -> np.ndarray:
    found = detector.detect_near(frame, near.box)
    assert found and found[0].landmarks is not None
    return found[0].landmarks


def roll_of(points: np.ndarray) -> float:
    line = points[42:48].mean(axis=0) - points[36:42].mean(axis=0)
    return math.degrees(math.atan2(line[1], line[0]))


def test_photo_blinks_at_least_every_six_seconds(
    alive: list[np.ndarray], face: FaceFrame, detector: DlibDetector
) -> None:
    """dlib sees the eyes close (eye aspect ratio under 70 % of its median) at least once in every 6 s of
    output, and at those frames the eye region changes far more than the slow head motion changes it."""
    ear = np.array([eye_aspect(landmarks_on(detector, f, face)) for f in alive])
    closed = ear < 0.7 * np.median(ear)
    starts = [i for i in range(len(closed)) if closed[i] and (i == 0 or not closed[i - 1])]
    assert starts, "no blink seen"
    moments = [0.0, *(i / FPS for i in starts), len(alive) / FPS]
    assert max(b - a for a, b in itertools.pairwise(moments)) <= 6.0, moments
    assert all(closed[i : i + round(0.4 * FPS)].sum() <= round(0.3 * FPS) for i in starts)  # ~250 ms each
    eyes = np.asarray(face.landmarks)[36:48]
    (x1, y1), (x2, y2) = eyes.min(axis=0).astype(int) - 4, eyes.max(axis=0).astype(int) + 4
    eye = [f[y1:y2, x1:x2].astype(float) for f in alive]
    # against 8 frames earlier: before the blink began (a blink lasts about 6 frames)
    change = np.array([np.abs(eye[i] - eye[max(0, i - 8)]).mean() for i in range(len(eye))])
    assert change[closed].min() > 3 * np.median(change)


def test_head_moves_a_little_and_the_background_not_at_all(
    alive: list[np.ndarray], astronaut: np.ndarray, face: FaceFrame, detector: DlibDetector
) -> None:
    """Head motion is there but under 4° of roll and 3 % of the face width; pixels farther than half a
    face width from the face box are unchanged (mean absolute difference under 2/255)."""
    source = np.asarray(face.landmarks)
    width = face.box[2] - face.box[0]
    rolls, shifts = [], []
    for frame in alive[::5]:
        points = landmarks_on(detector, frame, face)
        rolls.append(roll_of(points) - roll_of(source))
        shifts.append(float(np.linalg.norm(points[27:36].mean(axis=0) - source[27:36].mean(axis=0))) / width)
    assert 0.3 < max(np.abs(rolls)) < 4.0, rolls
    assert 0.002 < max(shifts) < 0.03, shifts
    x1, y1, x2, y2 = face.box
    margin = 0.5 * width
    far = np.ones(astronaut.shape[:2], bool)
    far[max(0, int(y1 - margin)) : int(y2 + margin) + 1, max(0, int(x1 - margin)) : int(x2 + margin) + 1] = (
        False
    )
    worst = max(float(np.abs(f.astype(float) - astronaut)[far].mean()) for f in alive)
    assert worst < 2.0


def test_same_job_moves_the_same_way(jfk: np.ndarray, face: FaceFrame) -> None:
    """The plan is a function of the job: the same seed gives the same blinks and pose, another job
    another; ``none`` is still; ``lively`` moves more, within its caps."""
    audio = jfk[: 6 * SAMPLE_RATE]
    seed = seed_of("j0123456789abcdef012", "a0")
    first = plan_for(request_for(audio, face, Motion.subtle, seed, phones=False))
    again = plan_for(request_for(audio, face, Motion.subtle, seed, phones=False))
    other = plan_for(request_for(audio, face, Motion.subtle, seed_of("jffff", "a0"), phones=False))
    assert np.array_equal(first.roll, again.roll) and np.array_equal(first.blink, again.blink)
    assert not np.array_equal(first.roll, other.roll)
    still = plan_for(request_for(audio, face, Motion.none, seed, phones=False))
    assert not any(np.any(getattr(still, k)) for k in ("roll", "pitch", "shift_x", "shift_y", "blink"))
    lively = plan_for(request_for(audio, face, Motion.lively, seed, phones=False))
    assert np.abs(lively.roll).max() > np.abs(first.roll).max()
    assert np.abs(lively.roll).max() <= LEVELS[Motion.lively].max_roll < 4.0


def test_blinks_are_spaced_naturally() -> None:
    """Over two minutes: blinks 1.8–5 s apart (first within 2.2 s), each fully shut on one or two frames
    (``BLINK_HOLD``) and lasting about 250 ms."""
    plan = plan_motion(3000, FPS, Motion.subtle, seed=7)
    shut_frames = np.flatnonzero(plan.blink >= 0.999)
    runs = np.split(shut_frames, np.flatnonzero(np.diff(shut_frames) > 1) + 1)
    assert all(1 <= len(run) <= math.ceil(BLINK_HOLD * FPS) + 1 for run in runs)
    shut = np.array([run[0] for run in runs])
    assert shut[0] / FPS <= 2.25
    gaps = np.diff(shut) / FPS
    assert gaps.min() >= 1.8 - 1e-6 and gaps.max() <= 5.0 + 1 / FPS
    assert 22 <= len(shut) <= 50
    around = plan.blink[shut[3] - 4 : shut[3] + 8]
    assert (around > 0.05).sum() <= math.ceil(BLINK_SECONDS * FPS) + 1


def test_nods_follow_stressed_syllables(jfk: np.ndarray, face: FaceFrame) -> None:
    """Pitch dips come during speech and not in the pauses' middle (the idle sway is small)."""
    request = request_for(jfk, face, Motion.subtle, seed=3, phones=False)
    plan = plan_for(request)
    assert request.speech is not None
    t = np.arange(len(plan)) / FPS
    pause = (t > 2.4) & (t < 3.0)  # JFK pauses after "fellow Americans"
    assert plan.pitch.max() > 1.2 and np.abs(plan.pitch[pause]).max() < 0.8


def test_a_shut_eye_reads_as_shut(astronaut: np.ndarray, face: FaceFrame, detector: DlibDetector) -> None:
    """At a blink's lowest frame (closure 1) dlib's eye aspect ratio is under half its open value, and the
    plan does reach closure 1 and holds it for ``BLINK_HOLD``."""
    points = np.asarray(face.landmarks)
    open_ear = eye_aspect(landmarks_on(detector, astronaut, face))
    shut = close_eyes(astronaut, points, 1.0)
    assert eye_aspect(landmarks_on(detector, shut, face)) < 0.5 * open_ear
    plan = plan_motion(500, FPS, Motion.subtle, seed=11)
    assert plan.blink.max() >= 0.999


def test_a_line_beside_the_head_stays_straight(
    jfk: np.ndarray, drawn_face: tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]
) -> None:
    """A vertical line 4 px right of a drawn head stays in the same column (within 1 px) on every frame
    of a ``lively`` render, while the head itself moves."""
    image, points, (cx, cy, half_w, half_h) = drawn_face
    framed = image.copy()
    x = math.ceil(cx + half_w) + 4
    framed[:, x : x + 2] = (20, 20, 230)
    framed.setflags(write=False)
    clip = jfk[: 4 * SAMPLE_RATE]
    n = math.ceil(len(clip) / SAMPLE_RATE * FPS)
    still = FaceFrame(box=face_box(points), landmarks=[(float(a), float(b)) for a, b in points])
    track = FaceTrack(detector="dlib", width=512, height=512, fps=FPS, frames=[still])
    request = RenderRequest(
        clip, FPS, n, track, JobOptions(), style=Style.photo, speech=timing_from_audio(clip, None, phones=False),
        motion=Motion.lively, seed=seed_of("j-line", "a0"), still=True,
    )  # fmt: skip
    out = list(
        Animated(VisemeRenderer()).render(request, ((i, framed, still) for i in range(n)), lambda _: None)
    )
    band = slice(x - 6, x + 8)
    rows = slice(int(cy - half_h), int(cy + half_h))
    columns = []
    for frame in out:
        blue = frame[rows, band].astype(int)
        weight = np.clip(blue[..., 2] - blue[..., 0] - 100, 0, None).astype(float)
        columns.append(
            (weight * np.arange(weight.shape[1])).sum(axis=1) / np.maximum(weight.sum(axis=1), 1e-6)
        )
    spread = np.ptp(np.array(columns), axis=0)
    assert spread.max() <= 1.0, spread.max()
    eyes = slice(int(points[37:47, 1].min()) - 6, int(points[40:48, 1].max()) + 6)
    assert max(np.abs(f[eyes].astype(int) - framed[eyes]).mean() for f in out) > 2.0  # the head moved


def _shifted(image: np.ndarray, dx: int) -> np.ndarray:
    """``image`` moved ``dx`` px right on a canvas of its edge colour (a face drifting in a video)."""
    out = np.empty_like(image)
    out[:] = image[:, :1]
    out[:, dx:] = image[:, : image.shape[1] - dx]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero((a > 0) & (b > 0)) / max(np.count_nonzero((a > 0) | (b > 0)), 1))


def test_a_moving_head_is_segmented_when_its_shape_changes_not_every_frame(
    astronaut: np.ndarray, face: FaceFrame
) -> None:
    """A face drifting 1 px a frame for 40 frames is segmented (GrabCut) once, the outline carried along
    with it; the carried outline of the last frame matches that frame's own segmentation (IoU ≥ 0.95),
    and the same face 10 % larger is segmented again."""
    points = np.asarray(face.landmarks, np.float64)
    outlines = HeadOutlines()
    for dx in range(40):
        carried, _ = head_mask(points + np.array([dx, 0]), astronaut.shape, _shifted(astronaut, dx), outlines)
    assert outlines.segmented == 1
    own, _ = head_mask(points + np.array([39, 0]), astronaut.shape, _shifted(astronaut, 39))
    assert _iou(carried, own) >= 0.95, _iou(carried, own)
    centre = points.mean(axis=0)
    head_mask(centre + (points - centre) * 1.1, astronaut.shape, astronaut, outlines)
    assert outlines.segmented == 2


def test_a_drifting_head_moves_its_warp_instead_of_building_one_per_frame(
    astronaut: np.ndarray, face: FaceFrame
) -> None:
    """Over 40 frames of a face drifting 1 px a frame one warp is built and then moved; on the last frame
    the moved warp turns the head as a warp built for that frame does (mean difference under 1 level),
    and a face 10 % larger gets a warp of its own."""
    points = np.asarray(face.landmarks, np.float64)
    warps = HeadWarps()
    for dx in range(40):
        frame = _shifted(astronaut, dx)
        moved = warps.warp(
            face_box(points + np.array([dx, 0])), frame.shape, points + np.array([dx, 0]), frame
        )
    assert warps.built == 1
    own = HeadWarp(face_box(points + np.array([39, 0])), frame.shape, points + np.array([39, 0]), frame)
    pose = (4.0, 3.0, 0.02, -0.01)
    difference = np.abs(moved.apply(frame, *pose).astype(int) - own.apply(frame, *pose).astype(int))
    assert difference.mean() < 1.0, difference.mean()
    assert np.abs(moved.apply(frame, *pose).astype(int) - frame).mean() > 1.0  # it did turn the head
    centre = points.mean(axis=0)
    larger = centre + (points - centre) * 1.1
    warps.warp(face_box(larger), astronaut.shape, larger, astronaut)
    assert warps.built == 2
