"""Following a face through clips made from the real astronaut photo: landmarks on every frame with few
detector runs, scene cuts, frames without a face, one person kept among two; then the stored track."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import pytest

from pipeline.contracts import FaceChoice
from stages.detect.track import absent_frames, build_track
from stages.lib.faces.detection import Detection
from stages.lib.faces.landmarks import DlibDetector
from stages.lib.faces.tracker import is_cut, thumbnail, track_faces

W, H = 480, 360


class Counting:
    """The real dlib detector, counting whole-frame and near searches and landmark calls."""

    name = "dlib"

    def __init__(self, inner: DlibDetector) -> None:
        self.inner = inner
        self.full = self.near = self.marks = 0

    def detect(self, frame: np.ndarray) -> list[Detection]:
        self.full += 1
        return self.inner.detect(frame)

    def detect_near(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> list[Detection]:
        self.near += 1
        return self.inner.detect_near(frame, box)

    def landmarks(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        self.marks += 1
        return self.inner.landmarks(frame, box)


@pytest.fixture(scope="module")
def dlib_detector() -> DlibDetector:
    return DlibDetector()


@pytest.fixture(scope="module")
def head(astronaut: np.ndarray) -> np.ndarray:
    """The astronaut's head and shoulders, 180×200."""
    return np.ascontiguousarray(astronaut[20:220, 135:315])


def canvas(*placed: tuple[np.ndarray, float, float, float]) -> np.ndarray:
    """A grey frame with each (image, x, y, scale) pasted in."""
    frame = np.full((H, W, 3), 70, np.uint8)
    for image, x, y, scale in placed:
        part = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = part.shape[:2]
        frame[int(y) : int(y) + h, int(x) : int(x) + w] = part
    return frame


def lazy(frames: Sequence[np.ndarray]) -> Iterator[Callable[[], np.ndarray]]:
    return (lambda f=f: f for f in frames)


def centre_x(found: list[Detection] | None) -> float:
    assert found, "no face on this frame"
    assert found[0].landmarks is not None
    return float(found[0].landmarks[:, 0].mean())


def test_landmarks_every_frame_detector_every_k(dlib_detector: DlibDetector, head: np.ndarray) -> None:
    """A head drifting 3 px a frame: landmarks on all 30 frames, whole-frame search once, confirmations
    every 5th frame; the landmarks follow the head as closely as a fresh detection on each frame."""
    frames = [canvas((head, 100 + 3 * i, 60, 1.0)) for i in range(30)]
    counting = Counting(dlib_detector)
    tracked = track_faces(lazy(frames), len(frames), counting, detect_every=5)
    assert all(f for f in tracked.found) and tracked.cuts == []
    assert counting.full == 1 and counting.near == 5 and counting.marks == 24
    for i in (7, 18, 29):
        (fresh,) = dlib_detector.detect(frames[i])
        assert abs(centre_x(tracked.found[i]) - centre_x([fresh])) < 2.5


def test_cut_resets_and_faceless_shot_has_no_face(
    dlib_detector: DlibDetector, head: np.ndarray, coffee: np.ndarray
) -> None:
    """Face, then a cut to the coffee photo for 12 frames, then the face elsewhere: two cuts found, no face
    in the middle shot, and the face found again at once at its new place."""
    cup = np.ascontiguousarray(cv2.resize(coffee, (W, H)))
    frames = [canvas((head, 60, 60, 1.0))] * 8 + [cup] * 12 + [canvas((head, 260, 100, 1.0))] * 8
    tracked = track_faces(lazy(frames), len(frames), dlib_detector)
    assert tracked.cuts == [8, 20]
    assert all(tracked.found[i] == [] for i in range(8, 20) if tracked.found[i] is not None)
    assert centre_x(tracked.found[7]) < 200 and centre_x(tracked.found[20]) > 300
    track = build_track(tracked.found, width=W, height=H, fps=25.0, detector="dlib", cuts=tracked.cuts)
    assert [i for i, f in enumerate(track.frames) if f.absent] == list(range(8, 20))


def test_the_chosen_person_is_kept_when_another_grows_larger(
    dlib_detector: DlibDetector, head: np.ndarray
) -> None:
    """Two faces; the one on the left is larger at first (face: largest), then shrinks while the right one
    grows past it: the track stays on the left face, by continuity."""
    frames = []
    for i in range(20):
        left, right = 1.0 - 0.012 * i, 0.9 + 0.015 * i
        frames.append(canvas((head, 20, 60, left), (head, 250, 50, right)))
    tracked = track_faces(lazy(frames), len(frames), dlib_detector, choice=FaceChoice.largest)
    assert all(centre_x(f) < W / 2 for f in tracked.found)
    centred = track_faces(lazy(frames[:1]), 1, dlib_detector, choice=FaceChoice("center"))
    assert centre_x(centred.found[0]) > W / 2  # the right face is nearer the centre


def test_scene_cut_rule() -> None:
    """Different shots differ in pixels and histogram; a small pan does not count."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 120, (H, W, 3), dtype=np.uint8)
    b = rng.integers(130, 255, (H, W, 3), dtype=np.uint8)
    assert is_cut(thumbnail(a), thumbnail(b))
    assert not is_cut(thumbnail(a), thumbnail(np.roll(a, 8, axis=1)))


def test_long_gaps_are_absent_short_ones_filled() -> None:
    """Runs without a face longer than the limit, and shots without any face, are absent; a short run
    inside a shot is not."""
    present = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0], bool)
    absent = absent_frames(present, cuts=[14], max_fill=3)
    assert [i for i, a in enumerate(absent) if a] == [6, 7, 8, 9, 10, 11, 14, 15, 16]
