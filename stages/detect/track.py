"""From per-frame detections to one smoothed face track (pure numpy; no I/O).

``build_track`` takes one entry per frame of the avatar clip: ``None`` (frame not examined), ``[]``
(examined, no face) or the frame's detections, and the scene cuts, and returns a ``FaceTrack`` with
exactly one ``FaceFrame`` per entry:

* which face: on the first frame with faces, the largest (box area) or the one nearest the frame centre
  (``choice``); on later frames the detection overlapping the face chosen last (IoU ≥ ``MIN_IOU``), so a
  video keeps following one person, and the rule again when none overlaps (the landmark tracker hands
  over one face per frame, already chosen by identity);
* runs of frames without a face up to ``MAX_FILL_SECONDS`` inside one shot get box, landmarks and
  confidence interpolated between the frames around them (copied at a shot's ends), marked
  ``interpolated``; longer runs, and shots without any face, are marked ``absent`` (no landmarks, the
  nearest box kept only so every frame has one) — renderers leave those frames untouched;
* landmarks are smoothed by a One Euro filter (``filters``) per continuous run of frames with a face,
  in face widths, and the box is derived from them (``landmarks.face_box``); box-only tracks are
  smoothed by a centred moving average over ``smooth_window`` frames (Wav2Lip's
  ``get_smoothened_boxes`` averages the next 5 frames, which makes the box lead the face; centred does
  not); nothing is smoothed across a cut; confidences are not smoothed;
* each frame with landmarks gets a head pose (yaw, pitch, roll; ``pose``);
* landmarks are kept only when every chosen detection has 68 of them, so a track never mixes sources;
* boxes are clipped to the frame and carry **no padding**: renderers add ``settings.face_pads`` (the
  chin margin) themselves, so a stored track does not depend on the pads. Coordinates are rounded to
  0.01 px.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from pipeline.contracts import FaceChoice, FaceFrame, FaceTrack
from stages.lib.faces.detection import Detection
from stages.lib.faces.filters import one_euro
from stages.lib.faces.landmarks import face_box
from stages.lib.faces.pose import head_pose

MIN_IOU = 0.3
MAX_FILL_SECONDS = 0.2
"""Runs without a face up to this long are filled from the frames around them; longer ones are absent."""
CENTER = FaceChoice("center")  # by value: the member's name has changed (str.center shadowed it)
LANDMARKS = 68
Found = Sequence[Detection] | None


def frames_with_faces(detections: Sequence[Found]) -> int:
    """How many frames have at least one detection."""
    return sum(1 for found in detections if found)


def choose_faces(
    detections: Sequence[Found], choice: FaceChoice | str, width: int, height: int
) -> list[Detection | None]:
    """The face followed on each frame (None where there is none); see the module docstring."""
    chosen: list[Detection | None] = []
    previous: Detection | None = None
    for found in detections:
        pick = _pick(found or [], previous, FaceChoice(choice), (width / 2, height / 2))
        chosen.append(pick)
        previous = pick or previous
    return chosen


def _pick(
    found: Sequence[Detection], previous: Detection | None, choice: FaceChoice, centre: tuple[float, float]
) -> Detection | None:
    if not found:
        return None
    if previous is not None:
        best = max(found, key=previous.iou)
        if best.iou(previous) >= MIN_IOU:
            return best
    if choice == CENTER:
        return min(found, key=lambda d: np.hypot(d.center[0] - centre[0], d.center[1] - centre[1]))
    return max(found, key=lambda d: d.area)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Rows holding NaN replaced by linear interpolation between the nearest full rows (ends copied)."""
    known = ~np.isnan(values).any(axis=1)
    if not known.any():
        raise ValueError("no row to fill from")
    index = np.arange(len(values))
    columns = [np.interp(index, index[known], values[known, c]) for c in range(values.shape[1])]
    return np.stack(columns, axis=1)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` rows, the window shortened where it runs off an end."""
    n = len(values)
    if window <= 1 or n <= 1:
        return values.astype(np.float64, copy=True)
    index = np.arange(n)
    lo = np.clip(index - (window - 1) // 2, 0, n)
    hi = np.clip(index + window // 2 + 1, 0, n)
    sums = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    return (sums[hi] - sums[lo]) / (hi - lo)[:, None]


def _series(chosen: Sequence[Detection | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(boxes (n, 4), confidences (n, 1), landmarks (n, 136) or None), NaN where no face was chosen."""
    n = len(chosen)
    faces = [d for d in chosen if d is not None]
    has_marks = bool(faces) and all(
        d.landmarks is not None and d.landmarks.shape == (LANDMARKS, 2) for d in faces
    )
    boxes, conf = np.full((n, 4), np.nan), np.full((n, 1), np.nan)
    marks = np.full((n, 2 * LANDMARKS), np.nan) if has_marks else None
    for i, d in enumerate(chosen):
        if d is None:
            continue
        boxes[i], conf[i, 0] = d.box, d.confidence
        if marks is not None and d.landmarks is not None:
            marks[i] = d.landmarks.reshape(-1)
    return boxes, conf, marks


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    limits = np.array([width, height, width, height], dtype=np.float64)
    return np.clip(boxes, 0.0, limits)


def shots(n: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """Frame ranges [start, end) between scene cuts (a cut frame starts a shot)."""
    edges = [0, *sorted(c for c in set(cuts) if 0 < c < n), n]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def absent_frames(present: np.ndarray, cuts: Sequence[int], max_fill: int) -> np.ndarray:
    """Frames to leave without a face: runs without one longer than ``max_fill`` frames, and whole shots
    without one. Shorter runs inside a shot are filled from that shot's faces (never across a cut)."""
    absent = np.zeros(len(present), bool)
    spans = shots(len(present), cuts)
    starts, ends = {a for a, _ in spans}, {b for _, b in spans}
    for s, e in _runs(~np.asarray(present, bool), cuts):  # runs never cross a cut: whole shot = both edges
        if e - s > max_fill or (s in starts and e in ends):
            absent[s:e] = True
    return absent


def _fill_per_shot(values: np.ndarray, usable: np.ndarray, cuts: Sequence[int]) -> np.ndarray:
    """``fill_gaps`` within each shot over the rows marked ``usable`` (other rows: the nearest shot's)."""
    out = values.copy()
    out[~usable] = np.nan
    for a, b in shots(len(values), cuts):
        if not np.isnan(out[a:b]).all(axis=1).all():
            out[a:b] = fill_gaps(out[a:b])
    if np.isnan(out).any():  # shots without any face: keep a box there (they are marked absent)
        out = fill_gaps(out)
    return out


def _runs(mask: np.ndarray, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal ranges of True in ``mask`` that do not cross a cut."""
    runs = []
    for a, b in shots(len(mask), cuts):
        i = a
        while i < b:
            if not mask[i]:
                i += 1
                continue
            j = i
            while j < b and mask[j]:
                j += 1
            runs.append((i, j))
            i = j
    return runs


def _smooth_landmarks(marks: np.ndarray, keep: np.ndarray, cuts: Sequence[int], fps: float) -> np.ndarray:
    """One Euro filter over each continuous run of frames with a face, in face widths (scale-free)."""
    out = marks.copy()
    for a, b in _runs(keep, cuts):
        points = marks[a:b].reshape(b - a, LANDMARKS, 2)
        scale = float(np.median(points[:, :, 0].max(axis=1) - points[:, :, 0].min(axis=1))) or 1.0
        out[a:b] = (one_euro(points / scale, fps) * scale).reshape(b - a, -1)
    return out


def _smooth_boxes(boxes: np.ndarray, keep: np.ndarray, cuts: Sequence[int], window: int) -> np.ndarray:
    out = boxes.copy()
    for a, b in _runs(keep, cuts):
        out[a:b] = smooth(boxes[a:b], window)
    return out


def build_track(
    detections: Sequence[Found],
    *,
    width: int,
    height: int,
    fps: float,
    detector: str,
    choice: FaceChoice | str = FaceChoice.largest,
    smooth_window: int = 5,
    cuts: Sequence[int] = (),
    max_fill: int | None = None,
) -> FaceTrack:
    """One ``FaceFrame`` per entry of ``detections``; ``ValueError`` when no frame has a face.

    ``cuts``: frames that start a new shot (no filling or smoothing across them). ``max_fill``: longest
    run of frames without a face that is filled (default ``MAX_FILL_SECONDS`` of frames); longer runs,
    and shots without a face, are marked ``absent``.
    """
    chosen = choose_faces(detections, choice, width, height)
    if not any(d is not None for d in chosen):
        raise ValueError("no frame has a face")
    limit = max_fill if max_fill is not None else max(1, round(MAX_FILL_SECONDS * fps))
    boxes, conf, marks = _series(chosen)
    present = ~np.isnan(boxes).any(axis=1)
    absent = absent_frames(present, cuts, limit)
    keep = ~absent
    conf = _fill_per_shot(conf, keep & present, cuts)
    if marks is not None:
        marks = _smooth_landmarks(_fill_per_shot(marks, keep & present, cuts), keep, cuts, fps)
        boxes = np.array([face_box(m.reshape(LANDMARKS, 2)) for m in marks])
    else:
        boxes = _smooth_boxes(_fill_per_shot(boxes, keep & present, cuts), keep, cuts, smooth_window)
    boxes = _clip_boxes(boxes, width, height)
    frames = [
        _frame(i, boxes, conf, marks, not present[i], bool(absent[i]), (width, height))
        for i in range(len(chosen))
    ]
    return FaceTrack(detector=detector, width=width, height=height, fps=fps, frames=frames)


def _frame(
    i: int,
    boxes: np.ndarray,
    conf: np.ndarray,
    marks: np.ndarray | None,
    interpolated: bool,
    absent: bool,
    size: tuple[int, int],
) -> FaceFrame:
    x1, y1, x2, y2 = (round(float(v), 2) for v in boxes[i])
    points, pose = None, None
    if marks is not None and not absent:
        grid = marks[i].reshape(LANDMARKS, 2)
        points = [(round(float(x), 2), round(float(y), 2)) for x, y in grid]
        pose = head_pose(grid, *size)
    return FaceFrame(
        box=(x1, y1, x2, y2),
        landmarks=points,
        confidence=round(float(conf[i, 0]), 4),
        interpolated=interpolated,
        absent=absent,
        pose=pose,
    )
