"""Following one face through a clip with a landmark detector (pure: frames in, detections out).

Per frame, in order:

1. **Scene cuts.** A 32×18 grey thumbnail is compared with the previous frame's; a cut (mean change over
   ``CUT_LEVEL`` grey levels and a histogram that moved by over ``CUT_HISTOGRAM``) drops the track and
   starts a search on that frame. ``cuts`` lists those frames, so smoothing never runs across one.
2. **Tracking.** While a face is followed, its landmarks on this frame come from the box implied by its
   landmarks on the previous frame (``BoxRelation``: in the detector's own box convention), about 1 ms
   with dlib. Every ``detect_every`` frames the detector confirms the face in a crop around it
   (``detect_near``), which also re-anchors the box; when that fails the whole frame is searched and the
   followed face taken again only if it is the same one (``_same_face``), else the track is lost from
   that frame on. Landmarks that jump (the box grows or shrinks by more than a third, or moves by more
   than half its width, from one frame to the next) make the next frame a confirmation frame.
3. **Searching.** With no face followed, the whole frame is searched; the frames searched thin out while
   nothing is found (after ``SPARSE_AFTER`` misses the gap doubles up to ``SEARCH_GAP_MAX``), so a clip
   without faces costs few detector runs; a cut searches at once.

Which face: on the first acquisition the ``choice`` rule (largest, or nearest the centre); afterwards, on
each new acquisition, the face most like the one followed before — the dlib face descriptor when a
``describer`` is given (distance under ``SAME_PERSON``), else overlap with its last box — and the rule
only when none is like it. So a video keeps following one person across cuts and occlusions, not
whichever face is largest on each frame.

The result has one entry per frame: ``[detection]`` (with landmarks) for a followed face, ``[]`` for a
frame searched or tracked without one, ``None`` for a frame not searched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from pipeline.contracts import FaceChoice
from stages.lib.faces.detection import Detection
from stages.lib.faces.landmarks import BoxRelation, Landmarker, face_box

DETECT_EVERY = 5
CUT_LEVEL = 28.0
CUT_HISTOGRAM = 0.35
SEARCH_GAP_MAX = 50
SPARSE_AFTER = 10
SAME_PERSON = 0.6
"""dlib descriptors of one person are within about 0.6 of each other (its documented threshold)."""
THUMB = (32, 18)
CENTER = FaceChoice("center")


class Describer(Protocol):
    def describe(self, frame_rgb: np.ndarray, points: np.ndarray) -> np.ndarray: ...


@dataclass
class Tracked:
    """What ``track_faces`` found: per frame ``[detection]``, ``[]`` or ``None``, and the scene cuts."""

    found: list[list[Detection] | None]
    cuts: list[int] = field(default_factory=list)
    detector_runs: int = 0


@dataclass
class _State:
    face: Detection | None = None
    relation: BoxRelation | None = None
    checked_at: int = -(10**9)
    identity: np.ndarray | None = None
    last_box: tuple[float, float, float, float] | None = None
    misses: int = 0
    resume_at: int = 0


def track_faces(
    frames: Iterable[Callable[[], np.ndarray]],
    n: int,
    detector: Landmarker,
    *,
    choice: FaceChoice | str = FaceChoice.largest,
    describer: Describer | None = None,
    detect_every: int = DETECT_EVERY,
    report: Callable[[float], None] = lambda _: None,
) -> Tracked:
    """Follow one face through the first ``n`` frames of ``frames`` (lazy RGB or grey frames); see the module."""
    result = Tracked([None] * n)
    for i, step in enumerate(follow_faces(frames, n, detector, choice, describer, detect_every)):
        if i % 10 == 0:
            report(i / max(n, 1))
        result.found[i] = step.found
        if step.cut:
            result.cuts.append(i)
        result.detector_runs = step.detector_runs
    return result


@dataclass
class Followed:
    """One frame as ``follow_faces`` leaves it: the pixels, the face found, whether a shot starts here."""

    frame: np.ndarray
    found: list[Detection] | None
    cut: bool
    detector_runs: int


def follow_faces(
    frames: Iterable[Callable[[], np.ndarray]],
    n: int,
    detector: Landmarker,
    choice: FaceChoice | str = FaceChoice.largest,
    describer: Describer | None = None,
    detect_every: int = DETECT_EVERY,
) -> Iterator[Followed]:
    """``track_faces`` one frame at a time (for callers that look at the frames too)."""
    result = Tracked([])
    state = _State()
    previous: np.ndarray | None = None
    for i, pixels in enumerate(frames):
        if i >= n:
            break
        frame = pixels()
        thumb = thumbnail(frame)
        cut = previous is not None and is_cut(previous, thumb)
        if cut:
            state.face, state.resume_at = None, i
        previous = thumb
        step = _Step(frame, i, detector, choice, describer, detect_every, state, result, n > 1)
        found = step.run(i == n - 1)
        yield Followed(frame, found, cut, result.detector_runs)


@dataclass
class _Step:
    """One frame's work (kept as an object so each rule is a small method)."""

    frame: np.ndarray
    i: int
    detector: Landmarker
    choice: FaceChoice | str
    describer: Describer | None
    every: int
    state: _State
    result: Tracked
    video: bool = True

    def run(self, last: bool) -> list[Detection] | None:
        if self.state.face is not None:
            return self._follow()
        if self.i >= self.state.resume_at or last:
            return self._search()
        return None

    # -- following --------------------------------------------------------------------------------------

    def _follow(self) -> list[Detection]:
        s = self.state
        assert s.face is not None and s.face.landmarks is not None and s.relation is not None
        box = s.relation.apply(s.face.landmarks)
        if self.i - s.checked_at >= self.every:
            return self._confirm(box)
        points = self.detector.landmarks(self.frame, box)
        if _jumped(s.face.landmarks, points):
            s.checked_at = -(10**9)  # look properly on the next frame
        s.face = Detection(box, s.face.confidence, points)
        s.last_box = face_box(points)
        return [s.face]

    def _confirm(self, box: tuple[float, float, float, float]) -> list[Detection]:
        self.result.detector_runs += 1
        near = self.detector.detect_near(self.frame, box)
        if near:
            return self._take(max(near, key=lambda d: d.iou(Detection(box, 1.0))))
        return self._search()

    # -- searching --------------------------------------------------------------------------------------

    def _search(self) -> list[Detection]:
        s = self.state
        self.result.detector_runs += 1
        hits = [d for d in self.detector.detect(self.frame) if d.landmarks is not None]
        pick = self._pick(hits) if hits else None
        if pick is None:
            s.face = None
            s.misses += 1
            gap = 1 if s.misses < SPARSE_AFTER else min(SEARCH_GAP_MAX, 2 ** (s.misses - SPARSE_AFTER + 1))
            s.resume_at = self.i + gap
            return []
        return self._take(pick)

    def _pick(self, hits: Sequence[Detection]) -> Detection | None:
        """The followed person among ``hits``, or by the choice rule the first time (or if none is)."""
        s = self.state
        width, height = self.frame.shape[1], self.frame.shape[0]
        if s.identity is None and s.last_box is None:
            return choose(hits, self.choice, width, height)
        distances = [self._distance(d) for d in hits]
        best = int(np.argmin(distances))
        if distances[best] < (SAME_PERSON if self._by_identity else 0.7):
            return hits[best]
        if len(hits) == 1 or not self._by_identity:
            return choose(hits, self.choice, width, height)
        return None  # several faces, none of them the followed person

    @property
    def _by_identity(self) -> bool:
        return self.state.identity is not None and self.describer is not None

    def _distance(self, d: Detection) -> float:
        """How unlike the followed face ``d`` is: descriptor distance, else 1 − overlap with its last box."""
        s = self.state
        if self._by_identity and d.landmarks is not None:
            assert self.describer is not None
            return float(np.linalg.norm(self.describer.describe(self.frame, d.landmarks) - s.identity))
        return 1.0 if s.last_box is None else 1.0 - d.iou(Detection(s.last_box, 1.0))

    def _take(self, d: Detection) -> list[Detection]:
        s = self.state
        assert d.landmarks is not None
        if s.identity is None and self.describer is not None and self.video:
            s.identity = self.describer.describe(self.frame, d.landmarks)
        s.face, s.relation = d, BoxRelation.between(d.box, d.landmarks)
        s.checked_at, s.misses, s.last_box = self.i, 0, face_box(d.landmarks)
        return [d]


# --- choosing and scene cuts -------------------------------------------------------------------------


def choose(hits: Sequence[Detection], choice: FaceChoice | str, width: int, height: int) -> Detection:
    """The face the job asked for among ``hits``: the largest, or the one nearest the frame centre."""
    if FaceChoice(choice) == CENTER:
        return min(hits, key=lambda d: np.hypot(d.center[0] - width / 2, d.center[1] - height / 2))
    return max(hits, key=lambda d: d.area)


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """A tiny grey copy of ``frame`` for cut detection."""
    grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def is_cut(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether two consecutive thumbnails belong to different shots: most pixels changed a lot *and*
    the grey histogram moved (a fast pan changes pixels but keeps the histogram)."""
    if float(np.abs(after - before).mean()) < CUT_LEVEL:
        return False
    bins = [np.histogram(t, bins=16, range=(0, 256))[0] / t.size for t in (before, after)]
    return float(0.5 * np.abs(bins[0] - bins[1]).sum()) > CUT_HISTOGRAM


def _jumped(before: np.ndarray, after: np.ndarray) -> bool:
    """Landmarks that moved implausibly far in one frame (the face was lost between checks)."""
    b, a = face_box(before), face_box(after)
    wb, wa = b[2] - b[0], a[2] - a[0]
    moved = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    return not (0.75 < wa / max(wb, 1e-6) < 1.33) or moved > 0.5 * wb
