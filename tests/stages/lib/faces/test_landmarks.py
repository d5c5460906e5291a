"""The offline landmark tier with its real packaged weights (dlib-bin + face-recognition-models), the One
Euro filter and the head pose."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.errors import ConfigError
from stages.lib.faces import landmarks as lm
from stages.lib.faces.filters import one_euro
from stages.lib.faces.landmarks import (
    PREDICTOR_FILE,
    BoxRelation,
    DlibDetector,
    FaceDescriber,
    dlib_model,
    face_box,
)
from stages.lib.faces.pose import head_pose


@pytest.fixture(scope="module")
def dlib_detector() -> DlibDetector:
    return DlibDetector()


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    """``image`` turned ``degrees`` counter-clockwise (as shown) about the astronaut's face."""
    turn = cv2.getRotationMatrix2D((225, 125), degrees, 1.0)
    return cv2.warpAffine(image, turn, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


def test_packaged_68_point_model_is_found_without_a_download() -> None:
    """The 68-point predictor is the 99.7 MB file inside the installed face_recognition_models package."""
    path = dlib_model(PREDICTOR_FILE)
    assert path.parent.name == "models" and path.parent.parent.name == "face_recognition_models"
    assert path.stat().st_size > 90_000_000


def test_dlib_places_68_landmarks_on_the_astronaut(
    dlib_detector: DlibDetector, astronaut: np.ndarray
) -> None:
    """The real weights put the eyes, nose and mouth where they are in the photo (iBUG order)."""
    (face,) = dlib_detector.detect(astronaut)
    points = face.landmarks
    assert points is not None and points.shape == (68, 2) and face.confidence > 0.7
    eyes, nose_tip, mouth, chin = points[36:48], points[30], points[48:68], points[8]
    assert 90 < eyes[:, 1].mean() < 112 and eyes[:, 0].min() > 185 and eyes[:, 0].max() < 265
    assert eyes[:, 1].max() < nose_tip[1] < mouth[:, 1].min() < mouth[:, 1].max() < chin[1]
    assert 200 < mouth[:, 0].mean() < 240 and 135 < mouth[:, 1].mean() < 158
    assert points[36, 0] < points[45, 0] and points[48, 0] < points[54, 0]  # left to right as shown


def test_landmarks_from_a_box_and_a_search_near_it(
    dlib_detector: DlibDetector, astronaut: np.ndarray
) -> None:
    """Given its own box, the predictor reproduces the detection's landmarks; a search in a crop around
    the box finds the same face (frame coordinates)."""
    (face,) = dlib_detector.detect(astronaut)
    assert face.landmarks is not None
    again = dlib_detector.landmarks(astronaut, face.box)
    assert np.abs(again - face.landmarks).max() <= 1.0
    (near,) = dlib_detector.detect_near(astronaut, face.box)
    assert near.iou(face) > 0.6 and near.landmarks is not None
    assert np.abs(near.landmarks - face.landmarks).mean() < 3.0


def test_no_face_in_a_photo_without_one(dlib_detector: DlibDetector, coffee: np.ndarray) -> None:
    """The cup of coffee has no face for dlib either."""
    assert dlib_detector.detect(coffee) == []


def test_descriptor_tells_the_same_person(dlib_detector: DlibDetector, astronaut: np.ndarray) -> None:
    """dlib's face descriptor: the astronaut mirrored and shrunk stays within 0.6 of herself; a drawn
    face does not."""
    describer = FaceDescriber()

    def descriptor(image: np.ndarray) -> np.ndarray:
        (face,) = dlib_detector.detect(image)
        assert face.landmarks is not None
        return describer.describe(image, face.landmarks)

    reference = descriptor(astronaut)
    mirrored = descriptor(np.ascontiguousarray(astronaut[:, ::-1]))
    small = descriptor(cv2.resize(astronaut, None, fx=0.7, fy=0.7))
    drawn = descriptor(cv2.cvtColor(cv2.imread(str(lm_cartoon())), cv2.COLOR_BGR2RGB))
    assert np.linalg.norm(reference - mirrored) < 0.6 and np.linalg.norm(reference - small) < 0.6
    assert np.linalg.norm(reference - drawn) > 0.6


def lm_cartoon() -> Path:
    return Path(__file__).resolve().parents[3] / "data" / "cartoon_face.png"


def test_missing_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without face-recognition-models the tier says what to install (or to use Haar)."""
    monkeypatch.setattr(lm, "_models_dir", lambda: None)
    assert not lm.dlib_available()
    with pytest.raises(ConfigError, match="pip install dlib-bin face-recognition-models"):
        DlibDetector()


def test_box_relation_round_trips(dlib_detector: DlibDetector, astronaut: np.ndarray) -> None:
    """A detector box stored relative to the landmarks' face box comes back from the same landmarks, and
    moves with them."""
    (face,) = dlib_detector.detect(astronaut)
    assert face.landmarks is not None
    relation = BoxRelation.between(face.box, face.landmarks)
    assert relation.apply(face.landmarks) == pytest.approx(face.box)
    moved = relation.apply(face.landmarks + np.array([10.0, -5.0]))
    assert moved == pytest.approx((face.box[0] + 10, face.box[1] - 5, face.box[2] + 10, face.box[3] - 5))
    _x1, y1, _x2, y2 = face_box(face.landmarks)
    assert y1 < face.landmarks[17:27, 1].min() and y2 == face.landmarks[:, 1].max()


# --- One Euro ---------------------------------------------------------------------------------------------


def test_one_euro_removes_jitter_at_rest() -> None:
    """A still point with detector jitter (σ = 0.5 % of a face width, dlib's on video) comes out at least
    2.5× steadier."""
    rng = np.random.default_rng(0)
    noisy = 1.0 + 0.005 * rng.standard_normal((300, 1, 2))
    out = one_euro(noisy, 25.0)
    assert out[50:].std() < noisy[50:].std() / 2.5


def test_one_euro_keeps_up_with_motion() -> None:
    """A point moving at one face width a second trails by under one frame's motion once under way
    (a trailing 5-frame average trails by two frames)."""
    fps, speed = 25.0, 1.0
    t = np.arange(100) / fps
    moving = np.stack([speed * t, np.zeros_like(t)], axis=1)[:, None, :]
    out = one_euro(moving, fps)
    lag = float(np.abs(out[20:, 0, 0] - moving[20:, 0, 0]).max())
    assert lag < speed / fps
    assert np.array_equal(out[0], moving[0])


# --- head pose ----------------------------------------------------------------------------------------------


def test_head_roll_follows_the_picture(dlib_detector: DlibDetector, astronaut: np.ndarray) -> None:
    """Turning the photo by ±10° changes the estimated roll by about ∓10° (clockwise positive) and leaves
    yaw and pitch within a few degrees."""
    poses = {}
    for degrees in (0, 10, -10):
        (face,) = dlib_detector.detect(rotated(astronaut, degrees))
        assert face.landmarks is not None
        pose = head_pose(face.landmarks, 512, 512)
        assert pose is not None
        poses[degrees] = pose
    for degrees in (10, -10):
        yaw, pitch, roll = (a - b for a, b in zip(poses[degrees], poses[0], strict=True))
        assert roll == pytest.approx(-degrees, abs=3.0)
        assert abs(yaw) < 6 and abs(pitch) < 6


def test_head_pose_of_a_frontal_model_is_zero() -> None:
    """Landmarks made by projecting the 3-D model straight on give zero angles; a 20° turn gives yaw 20."""
    from stages.lib.faces.pose import MODEL_POINTS

    def project(yaw: float) -> np.ndarray:
        points = np.zeros((68, 2))
        c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
        for i, (x, y, z) in MODEL_POINTS.items():
            xr, zr = c * x + s * z, -s * x + c * z
            depth = 600.0 + zr
            points[i] = (320 + 640 * xr / depth, 240 + 640 * y / depth)
        return points

    assert head_pose(project(0.0), 640, 480) == pytest.approx((0.0, 0.0, 0.0), abs=0.5)
    yaw, pitch, roll = head_pose(project(20.0), 640, 480) or (0.0, 0.0, 0.0)
    assert abs(yaw) == pytest.approx(20.0, abs=1.0) and abs(pitch) < 1 and abs(roll) < 1
