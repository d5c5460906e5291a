"""The offline landmark tier: dlib's HOG face detector and its 68-point iBUG shape predictor.

Weights come from PyPI, nothing is downloaded at run time: ``dlib-bin`` (prebuilt dlib; the HOG detector
is built into it) and ``face-recognition-models`` (``shape_predictor_68_face_landmarks.dat``, 99.7 MB,
and ``dlib_face_recognition_resnet_model_v1.dat``, the face descriptor used to tell people apart). The
68-point model is trained on iBUG 300-W, whose terms exclude commercial use: ``runbooks/models.md`` says
which tiers avoid it (set ``detector`` to ``haar``).

Files are located with ``importlib`` without importing ``face_recognition_models`` (its ``__init__``
imports ``pkg_resources``, which Python 3.12+ environments lack unless setuptools is installed).

Also here, shared by every landmark tier (pure numpy):

* ``face_box(points)``: the box a track stores for 68 landmarks — jaw to jaw across, chin at the bottom,
  and a forehead above the brows (a quarter of the brow-to-chin height), like the S3FD boxes Wav2Lip was
  trained on.
* ``BoxRelation``: how a detector's own box relates to ``face_box`` of the landmarks it gave, so the
  tracker can hand the landmark model a box in the convention it was trained on, from the previous
  frame's landmarks.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from pipeline.errors import ConfigError
from stages.lib.faces.detection import Detection

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
DESCRIBER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_MAX_SIDE = 640
"""Whole frames are searched scaled so no side exceeds this (HOG ~30–40 ms at 640×360)."""
MIN_SCORE = 0.2
"""HOG scores below this are not faces when searching a whole frame (drawn faces score ~0.1)."""
NEAR_SCORE = -0.3
"""... and when confirming a tracked face in a crop around where it was (a weaker hit is enough there)."""
ROI_FACE_SIDE = 100
"""A crop around a tracked face is scaled so the face is about this wide (HOG's window is 80 px)."""
FOREHEAD = 0.25


class Landmarker(Protocol):
    """A detector that can also place 68 landmarks given a box, and build its own box from landmarks."""

    name: str

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]: ...

    def detect_near(self, frame_rgb: np.ndarray, box: tuple[float, float, float, float]) -> list[Detection]:
        """Faces overlapping ``box``, looked for in a crop around it (cheaper than the whole frame)."""
        ...

    def landmarks(self, frame_rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(68, 2) points of the face in ``box`` (a box in this detector's own convention)."""
        ...


def face_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """The track box of 68 iBUG points: jaw (0–16) across and down to the chin, brows (17–26) plus a
    forehead of ``FOREHEAD`` × (chin − brows) at the top."""
    jaw, brows = points[0:17], points[17:27]
    top, bottom = float(brows[:, 1].min()), float(jaw[:, 1].max())
    x1, x2 = float(points[:, 0].min()), float(points[:, 0].max())
    return x1, top - FOREHEAD * (bottom - top), x2, bottom


@dataclass(frozen=True)
class BoxRelation:
    """A detector box as offsets from ``face_box``, in units of its width and height."""

    left: float
    top: float
    right: float
    bottom: float

    @classmethod
    def between(cls, detector_box: tuple[float, float, float, float], points: np.ndarray) -> BoxRelation:
        x1, y1, x2, y2 = face_box(points)
        w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        d = detector_box
        return cls((d[0] - x1) / w, (d[1] - y1) / h, (d[2] - x2) / w, (d[3] - y2) / h)

    def apply(self, points: np.ndarray) -> tuple[float, float, float, float]:
        """The detector box of a face whose landmarks are ``points``."""
        x1, y1, x2, y2 = face_box(points)
        w, h = x2 - x1, y2 - y1
        return x1 + self.left * w, y1 + self.top * h, x2 + self.right * w, y2 + self.bottom * h


# --- dlib ---------------------------------------------------------------------------------------------


def dlib_available() -> bool:
    """Whether dlib and the packaged 68-point model are installed (the offline landmark tier)."""
    return importlib.util.find_spec("dlib") is not None and _models_dir() is not None


def _models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if (folder / PREDICTOR_FILE).is_file() else None


def dlib_model(name: str) -> Path:
    """The path of a file of ``face-recognition-models``; ``ConfigError`` when it is not installed."""
    folder = _models_dir()
    if folder is None or not (folder / name).is_file():
        raise ConfigError(
            f"the dlib landmark model {name} is missing: install dlib-bin and face-recognition-models "
            "(pip install dlib-bin face-recognition-models), or set detector to haar"
        )
    return folder / name


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise ConfigError("dlib is not installed: pip install dlib-bin (or set detector to haar)") from exc
    return dlib


class DlibDetector:
    """dlib's HOG frontal-face detector with the 68-point shape predictor (about 1 ms a face)."""

    name = "dlib"

    def __init__(self, max_side: int = DLIB_MAX_SIDE, retry_upsampled: bool = True) -> None:
        dlib = _import_dlib()
        self._dlib = dlib
        self.max_side = max_side
        self.retry_upsampled = retry_upsampled
        self._hog = dlib.get_frontal_face_detector()
        try:
            self._predictor = dlib.shape_predictor(str(dlib_model(PREDICTOR_FILE)))
        except RuntimeError as exc:  # dlib's own error for a truncated or foreign file
            raise ConfigError(f"cannot load the dlib landmark model: {exc}") from exc

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        """Faces in the whole frame (scaled to ``max_side``), with landmarks; small faces are searched for
        again at twice the size when the first pass finds nothing."""
        grey = _grey(frame_rgb)
        scale = min(1.0, self.max_side / max(grey.shape))
        small = (
            cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else grey
        )
        boxes = self._hog_boxes(small, 0, MIN_SCORE)
        if not boxes and self.retry_upsampled:
            boxes = self._hog_boxes(small, 1, MIN_SCORE)
        return [self._with_landmarks(grey, _scale_box(b, 1.0 / scale), s) for b, s in boxes]

    def detect_near(self, frame_rgb: np.ndarray, box: tuple[float, float, float, float]) -> list[Detection]:
        grey = _grey(frame_rgb)
        crop, (x0, y0), scale = _crop_around(grey, box, ROI_FACE_SIDE)
        found = []
        for b, s in self._hog_boxes(crop, 0, NEAR_SCORE):
            x1, y1, x2, y2 = _scale_box(b, 1.0 / scale)
            found.append(self._with_landmarks(grey, (x1 + x0, y1 + y0, x2 + x0, y2 + y0), s))
        return [d for d in found if d.iou(Detection(box, 1.0)) > 0.0]

    def landmarks(self, frame_rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        return self._points(_grey(frame_rgb), box)

    def _hog_boxes(self, grey: np.ndarray, upsample: int, threshold: float) -> list[tuple[Any, float]]:
        rects, scores, _ = self._hog.run(grey, upsample, threshold)
        return [
            ((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores, strict=True)
        ]

    def _with_landmarks(
        self, grey: np.ndarray, box: tuple[float, float, float, float], score: float
    ) -> Detection:
        confidence = float(1.0 / (1.0 + np.exp(-2.0 * score)))  # HOG margin → 0..1 (0.5 at the boundary)
        return Detection(box, confidence, self._points(grey, box))

    def _points(self, grey: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        rect = self._dlib.rectangle(*(round(v) for v in box))
        shape = self._predictor(grey, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


class FaceDescriber:
    """dlib's ResNet face descriptor (128 numbers; the same person is within ~0.6): who a face is,
    to find the followed person again after a scene cut among several faces."""

    def __init__(self) -> None:
        dlib = _import_dlib()
        self._dlib = dlib
        try:
            self._net = dlib.face_recognition_model_v1(str(dlib_model(DESCRIBER_FILE)))
        except RuntimeError as exc:
            raise ConfigError(f"cannot load the dlib face descriptor model: {exc}") from exc

    def describe(self, frame_rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The descriptor of the face whose 68 landmarks are ``points``."""
        x1, y1, x2, y2 = (round(v) for v in face_box(points))
        rect = self._dlib.rectangle(x1, y1, x2, y2)
        parts = [self._dlib.point(round(x), round(y)) for x, y in points]
        shape = self._dlib.full_object_detection(rect, parts)
        rgb = cv2.cvtColor(frame_rgb, cv2.COLOR_GRAY2RGB) if frame_rgb.ndim == 2 else frame_rgb
        return np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(rgb), shape))


# --- helpers ------------------------------------------------------------------------------------------


def _grey(frame_rgb: np.ndarray) -> np.ndarray:
    return frame_rgb if frame_rgb.ndim == 2 else cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)


def _scale_box(box: Any, factor: float) -> tuple[float, float, float, float]:
    return (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)


def _crop_around(
    grey: np.ndarray, box: tuple[float, float, float, float], face_side: int, margin: float = 0.6
) -> tuple[np.ndarray, tuple[int, int], float]:
    """(crop of ``box`` grown by ``margin`` of its size per side, scaled so the face is ``face_side``
    wide; its origin in the frame; the scale)."""
    h, w = grey.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x1, y1 = max(0, int(box[0] - margin * bw)), max(0, int(box[1] - margin * bh))
    x2, y2 = min(w, int(box[2] + margin * bw)), min(h, int(box[3] + margin * bh))
    crop = grey[y1:y2, x1:x2]
    scale = min(2.0, face_side / max(bw, 1.0))  # small faces are enlarged: HOG finds none under 80 px
    if scale != 1.0 and crop.size:
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=interpolation)
    return np.ascontiguousarray(crop), (x1, y1), scale
