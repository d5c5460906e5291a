"""The detectors on real images: Haar, cartoon eyes, face-alignment with weights made here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.errors import ConfigError
from stages.detect.detectors import (
    FACE_ALIGNMENT_FILES,
    FAN_FILE,
    HAAR_CHAIN,
    S3FD_FILE,
    CartoonEyesDetector,
    Cascade,
    Detection,
    FaceAlignmentDetector,
    HaarDetector,
    build_detector,
    ensure_weights,
    resolve_device,
    resolve_kind,
)

Region = tuple[float, float, float, float]


def inside(det: Detection, region: Region) -> bool:
    x1, y1, x2, y2 = region
    return x1 <= det.box[0] < det.box[2] <= x2 and y1 <= det.box[1] < det.box[3] <= y2


def test_haar_finds_the_astronaut(astronaut: np.ndarray, face_region: Region) -> None:
    """Haar finds exactly one face in the astronaut photo, inside her face region, with no landmarks."""
    found = HaarDetector().detect(astronaut)
    assert len(found) == 1
    face = found[0]
    assert inside(face, face_region), face.box
    assert face.width > 70 and face.height > 70
    assert 0 < face.confidence <= 1 and face.landmarks is None


def test_haar_boxes_are_in_frame_pixels_when_downscaled(astronaut: np.ndarray, face_region: Region) -> None:
    """A frame larger than HAAR_MAX_SIDE is searched scaled down; boxes come back in the frame's pixels."""
    big = np.zeros((720, 1280, 3), np.uint8)
    big[100:612, 400:912] = astronaut
    found = HaarDetector().detect(big)
    assert len(found) == 1
    x1, y1, x2, y2 = face_region
    assert inside(found[0], (x1 + 400, y1 + 100, x2 + 400, y2 + 100)), found[0].box


def test_haar_finds_nothing_in_photos_without_a_face(astronaut: np.ndarray, coffee: np.ndarray) -> None:
    """Photos with no face (a cup of coffee; the astronaut's suit below her face) give no detection."""
    detector = HaarDetector()
    assert detector.detect(coffee) == []
    assert detector.detect(np.ascontiguousarray(astronaut[260:])) == []


def test_haar_finds_the_drawn_cartoon_face(cartoon: np.ndarray) -> None:
    """The drawn face in tests/data/cartoon_face.png is found by Haar (a realistic-proportion cartoon)."""
    found = HaarDetector().detect(cartoon)
    assert len(found) == 1
    assert inside(found[0], (20, 30, 240, 250)) and found[0].width > 120


def test_haar_misses_the_anime_face(anime: np.ndarray) -> None:
    """Haar's cascades (all four) do not find the anime face: why the cartoon-eyes tier exists."""
    assert HaarDetector().detect(anime) == []


def test_haar_chain_falls_through_to_the_next_cascade(astronaut: np.ndarray, face_region: Region) -> None:
    """A cascade that finds nothing hands the frame to the next; its hits carry that cascade's trust."""
    hopeless = Cascade("haarcascade_frontalface_default.xml", 10_000, 1.0)
    found = HaarDetector(chain=(hopeless, HAAR_CHAIN[1])).detect(astronaut)
    assert len(found) == 1 and inside(found[0], face_region)
    assert found[0].confidence <= HAAR_CHAIN[1].trust


def test_missing_cascade_is_a_config_error() -> None:
    """A cascade file that is not there is a ConfigError naming it, not a silent empty detector."""
    with pytest.raises(ConfigError, match=r"no_such_cascade\.xml"):
        HaarDetector(chain=(Cascade("no_such_cascade.xml", 3, 1.0),))


def test_cartoon_eyes_find_drawn_faces(anime: np.ndarray, cartoon: np.ndarray) -> None:
    """Cartoon eyes find the anime face and the cartoon face; the box holds both eyes and the mouth."""
    (face,) = CartoonEyesDetector().detect(anime)
    for x, y in ((94, 144), (162, 144), (128, 196)):
        assert face.box[0] < x < face.box[2] and face.box[1] < y < face.box[3]
    assert 0 < face.confidence <= 0.3
    (drawn,) = CartoonEyesDetector().detect(cartoon)
    for x, y in ((98, 121), (158, 121), (128, 182)):
        assert drawn.box[0] < x < drawn.box[2] and drawn.box[1] < y < drawn.box[3]


def test_cartoon_eyes_ignore_real_photos(astronaut: np.ndarray, coffee: np.ndarray) -> None:
    """Cartoon eyes find nothing in the astronaut photo or the coffee photo (textured, no flat skin)."""
    detector = CartoonEyesDetector()
    assert detector.detect(astronaut) == []
    assert detector.detect(coffee) == []


def test_detection_geometry() -> None:
    """Scaling multiplies box and landmarks; IoU is 1 for the same box, 0 for disjoint ones."""
    det = Detection((10.0, 20.0, 30.0, 60.0), 0.5, np.ones((68, 2)))
    double = det.scaled(2.0)
    assert double.box == (20.0, 40.0, 60.0, 120.0) and double.landmarks is not None
    assert double.landmarks[0, 0] == 2.0
    assert det.iou(det) == 1.0
    assert det.iou(Detection((100.0, 100.0, 120.0, 120.0), 1.0)) == 0.0
    assert det.center == (20.0, 40.0) and det.area == 800.0


def test_auto_uses_face_alignment_only_when_both_files_exist(tmp_path: Path) -> None:
    """auto means face_alignment when both weight files are in the model dir, else dlib (installed here)."""
    assert resolve_kind("auto", tmp_path) == "dlib"
    (tmp_path / S3FD_FILE).write_bytes(b"x")
    assert resolve_kind("auto", tmp_path) == "dlib"
    (tmp_path / FAN_FILE).write_bytes(b"x")
    assert resolve_kind("auto", tmp_path) == "face_alignment"
    assert resolve_kind("haar", tmp_path) == "haar"


def test_build_auto_without_weights_is_dlib_else_haar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_detector('auto') with an empty model dir gives dlib (its model ships in a package) and
    downloads nothing; where dlib is not installed it gives Haar."""
    detector = build_detector("auto", "cpu", tmp_path)
    assert detector.name == "dlib" and list(tmp_path.iterdir()) == []
    monkeypatch.setattr("stages.lib.faces.landmarks.dlib_available", lambda: False)
    detector = build_detector("auto", "cpu", tmp_path)
    assert isinstance(detector, HaarDetector) and detector.name == "haar"
    assert list(tmp_path.iterdir()) == []


def test_face_alignment_without_weights_is_a_config_error(tmp_path: Path) -> None:
    """Explicit face_alignment, no files and no way to download: ConfigError naming both files and the dir."""
    unreachable = {name: (tmp_path / "nowhere" / name).as_uri() for name in FACE_ALIGNMENT_FILES}
    with pytest.raises(ConfigError) as failed:
        build_detector("face_alignment", "cpu", tmp_path / "models", unreachable)
    for text in (S3FD_FILE, FAN_FILE, str(tmp_path / "models")):
        assert text in failed.value.reason


def test_missing_weights_are_downloaded_into_the_model_dir(fake_weights: Path, tmp_path: Path) -> None:
    """Missing files are fetched from their URLs (here file:// URLs) into the model dir, byte for byte."""
    urls = {name: (fake_weights / name).as_uri() for name in FACE_ALIGNMENT_FILES}
    models = tmp_path / "models"
    ensure_weights(models, urls)
    for name in FACE_ALIGNMENT_FILES:
        assert (models / name).read_bytes() == (fake_weights / name).read_bytes()


def test_corrupt_weights_are_a_config_error(tmp_path: Path) -> None:
    """Files that are not weights fail with a ConfigError naming the model dir (not a torch traceback)."""
    for name in FACE_ALIGNMENT_FILES:
        (tmp_path / name).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=str(tmp_path)):
        build_detector("face_alignment", "cpu", tmp_path)


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    """device 'cuda' on a machine where torch sees no GPU is a ConfigError; 'auto' picks the CPU there."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="cuda"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


@pytest.mark.slow
@pytest.mark.usefixtures("eager_landmarks")
def test_face_alignment_loads_local_weights_and_runs(
    fa_build: tuple[FaceAlignmentDetector, Path], astronaut: np.ndarray
) -> None:
    """With the two files in the model dir, face_alignment loads them (not the torch hub) and runs.

    The weights are random (made here), so only shapes are checked: boxes with 68 (x, y) landmarks.
    """
    detector, torch_home = fa_build
    assert isinstance(detector, FaceAlignmentDetector) and detector.name == "face_alignment"
    found = detector.detect(cv2.resize(astronaut, (128, 128)))
    assert 1 <= len(found) <= detector.max_faces
    for det in found:
        assert det.landmarks is not None and det.landmarks.shape == (68, 2)
        assert np.isfinite(det.landmarks).all() and 0 <= det.confidence <= 1
        assert det.box[0] < det.box[2] and det.box[1] < det.box[3]
    assert not torch_home.exists()  # nothing was looked up in or fetched into the hub cache
