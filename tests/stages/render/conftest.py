"""Shared fixtures of the render tests: a random-init Wav2Lip checkpoint, real speech, a real face."""

from __future__ import annotations

from pathlib import Path

import cv2
import librosa
import numpy as np
import pytest
import soundfile
import torch

from pipeline.contracts import FaceFrame
from stages.render.wav2lip import Wav2Lip

ASSETS = Path(__file__).resolve().parents[3] / "pipeline" / "assets"


def upstream_checkpoint(model: torch.nn.Module) -> dict[str, object]:
    """A checkpoint laid out as upstream's training script saves it (DataParallel ``module.`` keys)."""
    return {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "global_step": 0}


@pytest.fixture(scope="session")
def seeded_model() -> Wav2Lip:
    """The deterministic random-init network (seed 0) the checkpoint fixture holds."""
    torch.manual_seed(0)
    return Wav2Lip().eval()


@pytest.fixture(scope="session")
def checkpoint_path(seeded_model: Wav2Lip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``seeded_model`` saved in upstream's checkpoint format."""
    path = tmp_path_factory.mktemp("weights") / "wav2lip_test.pth"
    torch.save(upstream_checkpoint(seeded_model), path)
    return path


@pytest.fixture(scope="session")
def lively_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Wav2Lip, Path]:
    """A seeded network whose output depends visibly on the audio, and its checkpoint file.

    A fresh network's BatchNorms (running variance 1) shrink the signal block after block, so its frames
    change by under 1e-4 with the audio — invisible after rounding. Variance 0.25 doubles each BN's
    gain and keeps the signal alive, so a test can tell which mel window a frame was given.
    """
    torch.manual_seed(1)
    model = Wav2Lip().eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d) and module.running_var is not None:
            module.running_var.fill_(0.25)
    path = tmp_path_factory.mktemp("weights") / "wav2lip_lively.pth"
    torch.save(upstream_checkpoint(model), path)
    return model, path


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """Real speech: the first 3 s of the JFK clip, mono float32 at 16 kHz."""
    stereo, rate = soundfile.read(ASSETS / "jfk.flac", dtype="float32", frames=3 * 44_100, always_2d=True)
    return librosa.resample(stereo.mean(axis=1), orig_sr=rate, target_sr=16_000).astype(np.float32)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real face photo, RGB uint8 512×512 (read-only so an in-place write fails loudly)."""
    bgr = cv2.imread(str(ASSETS / "astronaut.png"))
    assert bgr is not None
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    image.setflags(write=False)
    return image


@pytest.fixture(scope="session")
def astronaut_face(astronaut: np.ndarray) -> FaceFrame:
    """The astronaut's face box, found by OpenCV's Haar cascade."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
    found = cascade.detectMultiScale(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY), 1.1, 5)
    assert len(found) == 1, found
    x, y, w, h = (int(v) for v in found[0])
    return FaceFrame(box=(x, y, x + w, y + h))


SKIN = (222, 178, 150)
UPPER_LIP = (196, 72, 82)
LOWER_LIP = (150, 50, 120)
"""The drawn face's lower lip is purple, its upper lip red: a test can tell which lip a pixel shows."""
HAIR = (92, 60, 38)
BACKGROUND = (196, 204, 212)


@pytest.fixture(scope="session")
def astronaut_points(astronaut: np.ndarray) -> np.ndarray:
    """dlib's 68 landmarks on the astronaut (the template of the drawn face)."""
    from stages.lib.faces.landmarks import DlibDetector

    (face,) = DlibDetector().detect(astronaut)
    assert face.landmarks is not None
    return np.asarray(face.landmarks, np.float64)


def draw_face(
    points: np.ndarray,
    size: tuple[int, int] = (512, 512),
    skin: tuple[int, int, int] = SKIN,
    noise: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """A made-up face with a closed mouth on ``points`` (68 landmarks): (RGB image, the landmarks with
    the inner lips closed, the head's ellipse cx, cy, half-width, half-height). Hair over a skin oval, a
    neck, eyes with irises, brows, a red upper and a purple lower lip meeting on a dark line; a little
    noise so it reads as a photo, not a drawing."""
    p = np.asarray(points, np.float64).copy()
    seam = p[60:68, 1].mean()
    p[[61, 62, 63, 65, 66, 67], 1] = seam
    p[[60, 64], 1] = seam
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = BACKGROUND
    width = float(p[16, 0] - p[0, 0])
    cx = float(p[0, 0] + p[16, 0]) / 2
    top, chin = float(p[17:27, 1].min()) - 0.55 * width, float(p[8, 1])
    cy, half_h, half_w = (top + chin) / 2, (chin - top) / 2 + 2, 0.6 * width
    neck = np.array([[p[5, 0], p[5, 1]], [p[11, 0], p[11, 1]], [p[11, 0], h], [p[5, 0], h]], np.int32)
    cv2.fillPoly(image, [neck], skin)
    cv2.ellipse(image, (round(cx), round(cy)), (round(half_w), round(half_h)), 0, 0, 360, HAIR, -1)
    face = np.rint(np.vstack([p[0:17], p[26:16:-1] - [0, 0.25 * width]])).astype(np.int32)
    cv2.fillPoly(image, [face], skin)
    for eye in (p[36:42], p[42:48]):
        cv2.fillPoly(image, [np.rint(eye).astype(np.int32)], (240, 240, 236))
        centre = eye.mean(axis=0)
        radius = max(int(0.45 * (eye[4:6, 1].mean() - eye[1:3, 1].mean())), 2)
        cv2.circle(image, (round(centre[0]), round(centre[1])), radius, (60, 40, 30), -1)
        cv2.polylines(image, [np.rint(eye[:4]).astype(np.int32)], False, (40, 30, 30), 2)
    for brow in (p[17:22], p[22:27]):
        cv2.polylines(image, [np.rint(brow).astype(np.int32)], False, (70, 50, 40), 3)
    cv2.polylines(image, [np.rint(p[31:36]).astype(np.int32)], False, (180, 130, 110), 2)
    upper = np.vstack([p[48:55], p[64:59:-1]])
    lower = np.vstack([p[54:60], p[48:49], p[60:61], p[67:63:-1]])
    cv2.fillPoly(image, [np.rint(upper).astype(np.int32)], UPPER_LIP)
    cv2.fillPoly(image, [np.rint(lower).astype(np.int32)], LOWER_LIP)
    cv2.polylines(image, [np.rint(p[60:65]).astype(np.int32)], False, (90, 30, 40), 1)
    rng = np.random.default_rng(0)
    image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
    image.setflags(write=False)
    return image, p, (cx, cy, half_w, half_h)


@pytest.fixture(scope="session")
def drawn_face(
    astronaut_points: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """``draw_face`` on the astronaut's landmarks (512×512)."""
    return draw_face(astronaut_points)
