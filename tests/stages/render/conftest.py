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
