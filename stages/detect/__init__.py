"""detect: the face track of a task's avatar (one ``FaceTrack`` per avatar, content-addressed).

Given validate's manifest (``artifacts["avatar"]``: the normalized H.264 clip of ``media.frames`` frames,
one for a still photo), it returns the manifest advanced to ``detect`` with ``artifacts["faces"]``, a
``FaceTrack`` JSON at ``cache/faces/<digest>.json``, and ``info`` ``{"detector": the detector that found
the face, "faces_found": frames on which it found one (before gaps were filled)}``.

Only the frames the video shows are looked at (``frames_shown``): a clip longer than the voice has its
first frames tracked, as many as the voice lasts (the render plays it from the start and never reaches
the rest); a shorter clip, which loops, all of them. The track still has an entry per frame of the clip
(the unseen ones absent), and its address says how many were looked at: a whole clip's track serves
any voice, a part's only a voice as long.

Detectors, in tiers: each tier runs over those frames and the next runs only when it found no face on
any frame. The first tier is ``settings.detector`` (``auto``: face-alignment when its weights are in
``settings.models``, else dlib when installed — its weights come in a package — else Haar; the fallback
is logged once per worker as ``detector_fallback``); face-alignment and dlib are followed by Haar; jobs
with style ``cartoon`` end with the cartoon-eyes detector (see ``detectors``). When every tier finds
nothing the job fails with ``NoFaceFound("no face found in <avatar>...")``.

Landmark tiers (dlib, face-alignment) follow the face through the clip (``tracker``): landmarks on every
frame from the previous frame's, the detector every ``settings.detect_every`` frames and after scene
cuts, one person kept by identity. The track (``track``) is smoothed by a One Euro filter, carries a head
pose per frame, and marks frames without a face ``absent`` (renderers leave them untouched). Box-only
tiers (Haar, cartoon eyes) are run frame by frame (``_detect_clip``).

Content address: SHA-256 over the avatar's SHA-256, the tiers up to the one that found the face, the
job's ``face`` choice, ``settings.smooth_window``, ``settings.detect_every``, ``TRACK_VERSION`` and, for a
part of the clip, the frames looked at; the
cached track of the earliest tier that has one is reused without decoding anything. Not in it: the
renderer, ``face_pads`` (not baked into boxes) and the style (a cartoon-only tier runs, and is keyed,
only where the shared tiers found nothing), so re-rendering with another renderer or style reuses the
track.

Detectors are built once per worker (``ctx.models``, names ``detector:<name>``) and shared by its
concurrent jobs, one frame at a time (a lock per detector: OpenCV, dlib and torch models are not made
for concurrent calls on one instance).

Long clips (box-only tiers): every frame is examined up to ``FULL_RATE_FRAMES`` frames (10 s at 25 fps);
beyond that every k-th frame, k = ceil(frames / ``FULL_RATE_FRAMES``) capped at ``MAX_STRIDE`` (0.2 s at
25 fps, within the smoothing window's span), and always the last frame. Frames in between are
interpolated like frames where the face was missed.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog

from pipeline.config import Settings
from pipeline.contracts import ArtifactRef, FaceTrack, JobOptions, Manifest, MediaInfo, Role, Style
from pipeline.errors import InvalidInput, NoFaceFound, PermanentError
from pipeline.keys import faces_cache_key
from pipeline.media import decode_lazily, frames_for
from pipeline.stage import ManifestStage, ModelCache, StageContext
from stages.detect.detectors import (
    FACE_ALIGNMENT_FILES,
    Detection,
    Detector,
    DetectorName,
    FaceAlignmentDetector,
    build_detector,
    resolve_kind,
)
from stages.detect.track import build_track, frames_with_faces
from stages.lib.faces.landmarks import DlibDetector, FaceDescriber, dlib_available
from stages.lib.faces.tracker import track_faces

NAME = "detect"
TRACK_VERSION = 4  # bump when detection or tracking changes what a track holds
ROI_MARGIN = 0.75  # a tracked face is looked for in its box grown by this share of its size per side
ROI_FACE_SIDE = 56  # ... in a crop scaled so the face is about this wide (pixels)
SEARCH_GAP_MAX = 50  # frames skipped at most between looks while no face has been found
SPARSE_AFTER = 10  # examined frames without a face before looks start thinning out
FULL_RATE_FRAMES = 250
MAX_STRIDE = 5
PROGRESS_EVERY = 10

__all__ = ["FULL_RATE_FRAMES", "MAX_STRIDE", "TRACK_VERSION", "detection_stride", "run", "warm_up"]


def run(ctx: StageContext, inputs: Manifest) -> list[Manifest]:
    """The avatar's face track, from the cache or detected now; ``NoFaceFound`` when it has no face."""
    avatar = _avatar_ref(inputs)
    options = ctx.spec.options
    tiers = _tiers(ctx.settings, ctx.models, ctx.log, options.style)
    shown = frames_shown(inputs.media)
    part = shown if shown < inputs.media.frames else None
    whole = [_cache_key(ctx.settings, avatar, tiers[: i + 1], options) for i in range(len(tiers))]
    keys = [_cache_key(ctx.settings, avatar, tiers[: i + 1], options, part) for i in range(len(tiers))]
    if (cached := _from_cache(ctx, inputs, list(dict.fromkeys([*whole, *keys])))) is not None:
        return [cached]  # a whole clip's track serves any voice; a part's, a voice as long
    path = ctx.fetch(avatar, "avatar.mp4")
    for index, (tier, key) in enumerate(zip(tiers, keys, strict=True)):
        report = _reporter(ctx, tier, index, len(tiers))
        found, cuts = _find_faces(ctx, tier, path, inputs, shown, options, report)
        if faces := frames_with_faces(found):
            found = [*found, *[None] * (inputs.media.frames - len(found))]  # never shown: no face looked for
            ref = _save_track(ctx, inputs, options, tier, found, key, cuts)
            ctx.log.info(
                "faces_detected",
                detector=tier,
                frames=shown,
                of=inputs.media.frames,
                faces_found=faces,
                key=key,
            )
            return [_advance(inputs, tier, faces, ref)]
        following = tiers[index + 1] if index + 1 < len(tiers) else None
        ctx.log.info("no_face_with_detector", detector=tier, next=following)
    raise NoFaceFound(_no_face_reason(inputs.avatar_name, options.style), key=avatar.key)


def warm_up(settings: Settings, models: ModelCache) -> None:
    """Build (and run once) this worker's detectors now; ``ConfigError`` (missing weights) stops the worker."""
    log = structlog.get_logger("mouthpiece.detect")
    for tier in _tiers(settings, models, log, Style.auto):
        detector = _detector(settings, models, tier)
        if isinstance(detector, FaceAlignmentDetector):
            detector.warm()


def detection_stride(frames: int) -> int:
    """Examine every k-th frame: 1 up to ``FULL_RATE_FRAMES`` frames, then ceil(frames / it), ≤ ``MAX_STRIDE``."""
    return max(1, min(MAX_STRIDE, math.ceil(frames / FULL_RATE_FRAMES)))


# --- inputs -----------------------------------------------------------------------------------------


def _avatar_ref(inputs: Manifest) -> ArtifactRef:
    if "avatar" not in inputs.artifacts:
        raise PermanentError(f"the {inputs.stage} manifest of task {inputs.task} has no avatar artifact")
    if inputs.media.frames < 1:
        raise InvalidInput(f"{inputs.avatar_name} has no video frames")
    return inputs.artifacts["avatar"]


# --- detectors --------------------------------------------------------------------------------------


def _tiers(settings: Settings, models: ModelCache, log: Any, style: Style) -> list[DetectorName]:
    """Detector names in the order they are tried (module docstring)."""
    primary = resolve_kind(settings.detector, settings.models)
    if settings.detector == "auto" and primary != "face_alignment":
        models.get("detect:fallback-noted", lambda: _note_fallback(settings, log, primary))
    tiers: list[DetectorName] = [primary, "haar"] if primary != "haar" else [primary]
    return [*tiers, "cartoon_eyes"] if style == Style.cartoon else tiers


def _note_fallback(settings: Settings, log: Any, using: str) -> bool:
    # debug: without face-alignment's weights dlib is the default path, not a degradation to warn about
    log.debug(
        "detector_fallback",
        wanted="face_alignment",
        using=using,
        reason="face-alignment weights are not in the model directory",
        model_dir=str(settings.models),
        files=list(FACE_ALIGNMENT_FILES),
    )
    return True


def _build(settings: Settings, tier: DetectorName) -> Detector:
    return build_detector(tier, settings.device, settings.models, settings.model_urls)


def _detector(settings: Settings, models: ModelCache, tier: DetectorName) -> Detector:
    """The worker's detector ``tier``, built on first use."""
    return models.get(f"detector:{tier}", partial(_build, settings, tier))


# --- detecting --------------------------------------------------------------------------------------


def _reporter(ctx: StageContext, tier: DetectorName, index: int, tiers: int) -> Callable[[float], None]:
    """Progress of one tier as a share of the whole stage (later tiers run only after earlier ones)."""
    return lambda fraction: ctx.progress((index + fraction) / tiers, f"looking for faces ({tier})")


def _find_faces(
    ctx: StageContext,
    tier: DetectorName,
    path: Path,
    inputs: Manifest,
    shown: int,
    options: JobOptions,
    report: Callable[[float], None],
) -> tuple[list[list[Detection] | None], list[int]]:
    """Detections for the clip's first ``shown`` frames and scene cuts: landmark detectors follow the
    face frame by frame (``tracker``), box-only ones (Haar, cartoon eyes) are run on the frames
    ``_detect_clip`` picks."""
    detector = _detector(ctx.settings, ctx.models, tier)
    if not isinstance(detector, DlibDetector | FaceAlignmentDetector):
        return _detect_clip(ctx, tier, path, inputs, shown, report), []
    lock = ctx.models.get(f"detector-lock:{tier}", threading.Lock)  # jobs of one worker share it
    describer = _describer(ctx.models)
    with lock:
        tracked = track_faces(
            # dlib looks at luma only, the Y plane as stored: what its tiers were tuned on (stretched to
            # full range, an enlarged drawn face was missed by dlib and found only by Haar)
            decode_lazily(path, grey=isinstance(detector, DlibDetector), full_range=False),
            shown,
            detector,
            choice=options.face,
            describer=describer,
            detect_every=ctx.settings.detect_every,
            report=report,
        )
    ctx.log.info("faces_tracked", detector=tier, cuts=len(tracked.cuts), detector_runs=tracked.detector_runs)
    return tracked.found, tracked.cuts


def _describer(models: ModelCache) -> FaceDescriber | None:
    """The worker's dlib face descriptor (to tell people apart), None where dlib is not installed."""
    if not dlib_available():
        return None
    return models.get("describer:dlib", FaceDescriber)


def _detect_clip(
    ctx: StageContext,
    tier: DetectorName,
    path: Path,
    inputs: Manifest,
    shown: int,
    report: Callable[[float], None],
) -> list[list[Detection] | None]:
    """Detections per frame (None: not examined) of the clip's first ``shown`` frames.

    Once a face is found, the next examined frame is searched around it first (``ROI_MARGIN``), the
    whole frame only when it is not there: most frames cost a small crop. While no face is found, the
    frames examined thin out (the gap doubles up to ``SEARCH_GAP_MAX``), so a clip without faces does
    not run every detector on every frame (after ``SPARSE_AFTER`` misses in a row: short occlusions are
    still examined frame by frame).
    """
    detector = _detector(ctx.settings, ctx.models, tier)
    lock = ctx.models.get(f"detector-lock:{tier}", threading.Lock)  # jobs of one worker share it
    n, every = shown, detection_stride(shown)
    shrink = _source_scale(inputs)
    found: list[list[Detection] | None] = [None] * n
    tracked: Detection | None = None
    resume_at, misses, decoded = 0, 0, 0
    for i, pixels in enumerate(decode_lazily(path)):
        if i >= n:
            break
        decoded = i + 1
        if i % PROGRESS_EVERY == 0:
            report(i / n)
        if not ((i % every == 0 and i >= resume_at) or i == n - 1):
            continue
        frame = pixels()
        with lock:
            hits = _detect_at_source_size(detector, frame, tracked, shrink)
        found[i] = hits
        tracked = _follow(hits, tracked) if hits else None
        misses = 0 if hits else misses + 1
        resume_at = (
            i + 1 if misses < SPARSE_AFTER else i + min(SEARCH_GAP_MAX, every * 2 ** (misses - SPARSE_AFTER))
        )
    if decoded < n:  # the gap is filled from the last frames like any frame without a face
        ctx.log.warning("avatar_short", expected=n, decoded=decoded, avatar=inputs.avatar_name)
    return found


def frames_shown(media: MediaInfo) -> int:
    """How many of the avatar clip's first frames the video shows: all of them when the voice is longer
    (the clip loops), else as many as the voice lasts (the rest are never seen, nor detected)."""
    return min(media.frames, max(1, frames_for(media.audio_seconds, media.fps)))


def _source_scale(inputs: Manifest) -> float:
    """How much smaller the avatar was before validate enlarged it (``upscaled_from``; 1.0: not)."""
    before = inputs.media.upscaled_from
    return min(1.0, before[1] / inputs.media.height) if before and inputs.media.height else 1.0


def _detect_at_source_size(
    detector: Detector, frame: np.ndarray, near: Detection | None, shrink: float
) -> list[Detection]:
    """Box-only detectors look at an enlarged avatar at the size it was given: enlarging adds no face,
    only scales where Haar finds faces that are not there (a coffee cup, enlarged, read as a face)."""
    if shrink >= 1.0:
        return _detect_frame(detector, frame, near)
    small = cv2.resize(frame, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    found = _detect_frame(detector, small, near.scaled(shrink) if near is not None else None)
    return [d.scaled(1.0 / shrink) for d in found]


def _detect_frame(detector: Detector, frame: np.ndarray, near: Detection | None) -> list[Detection]:
    """Faces in ``frame``: around ``near`` first, else anywhere.

    The crop around ``near`` is ``ROI_MARGIN`` larger on each side and scaled so the face is about
    ``ROI_FACE_SIDE`` pixels wide: a detector then searches a small image at few scales.
    """
    if near is not None and (hits := _detect_near(detector, frame, near)):
        return hits
    return detector.detect(frame)


def _detect_near(detector: Detector, frame: np.ndarray, near: Detection) -> list[Detection]:
    height, width = frame.shape[:2]
    mx, my = near.width * ROI_MARGIN, near.height * ROI_MARGIN
    x1, y1 = max(0, int(near.box[0] - mx)), max(0, int(near.box[1] - my))
    x2, y2 = min(width, int(near.box[2] + mx)), min(height, int(near.box[3] + my))
    crop = frame[y1:y2, x1:x2]
    scale = min(1.0, ROI_FACE_SIDE / max(1.0, near.width))
    if scale < 1.0:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    found = [d.scaled(1.0 / scale).shifted(x1, y1) for d in detector.detect(np.ascontiguousarray(crop))]
    return [d for d in found if d.iou(near) > 0.0]


def _follow(hits: Sequence[Detection], previous: Detection | None) -> Detection:
    """The detection to search around next: the one overlapping the last, else the largest."""
    if previous is not None and (best := max(hits, key=previous.iou)).iou(previous) > 0:
        return best
    return max(hits, key=lambda d: d.area)


# --- the track --------------------------------------------------------------------------------------


def _cache_key(
    settings: Settings,
    avatar: ArtifactRef,
    tiers: Sequence[str],
    options: JobOptions,
    shown: int | None = None,
) -> str:
    """The track's address; ``shown``: a track of the clip's first ``shown`` frames only."""
    address: dict[str, object] = {
        "version": TRACK_VERSION,
        "avatar": avatar.sha256,
        "detectors": list(tiers),
        "face": options.face.value,
        "smooth_window": settings.smooth_window,
        "detect_every": settings.detect_every,
    }
    if shown is not None:
        address["shown"] = shown
    return faces_cache_key(hashlib.sha256(json.dumps(address, sort_keys=True).encode()).hexdigest())


def _from_cache(ctx: StageContext, inputs: Manifest, keys: Sequence[str]) -> Manifest | None:
    """The manifest for the first cached track among ``keys`` (earliest tier first), or None."""
    for key in keys:
        if (hit := _cached_track(ctx, key, inputs.media.frames)) is not None:
            ref, track = hit
            ctx.log.info("faces_cached", key=key, detector=track.detector)
            ctx.progress(1.0, "face track reused")
            return _advance(inputs, track.detector, sum(not f.interpolated for f in track.frames), ref)
    return None


def _cached_track(ctx: StageContext, key: str, frames: int) -> tuple[ArtifactRef, FaceTrack] | None:
    ref = ctx.cached(key, "application/json")
    if ref is None:
        return None
    try:
        track = ctx.load(ref, FaceTrack)
    except PermanentError as exc:  # unreadable cache entry: detect again and overwrite it
        ctx.log.warning("faces_cache_unreadable", key=key, reason=exc.reason)
        return None
    if len(track.frames) != frames:
        ctx.log.warning("faces_cache_mismatch", key=key, frames=len(track.frames), expected=frames)
        return None
    return ref, track


def _save_track(
    ctx: StageContext,
    inputs: Manifest,
    options: JobOptions,
    tier: DetectorName,
    found: Sequence[Sequence[Detection] | None],
    key: str,
    cuts: Sequence[int],
) -> ArtifactRef:
    media = inputs.media
    track = build_track(
        found,
        width=media.width,
        height=media.height,
        fps=media.fps,
        detector=tier,
        choice=options.face,
        smooth_window=ctx.settings.smooth_window,
        cuts=cuts,
    )
    ref = ctx.save_bytes(track.model_dump_json().encode(), "faces.json", "application/json", key=key)
    ctx.progress(1.0, "face track saved")
    return ref


def _advance(inputs: Manifest, detector: str, faces_found: int, ref: ArtifactRef) -> Manifest:
    return inputs.advance(NAME, {"detector": detector, "faces_found": faces_found}, faces=ref)


def _no_face_reason(avatar_name: str, style: Style) -> str:
    reason = f"no face found in {avatar_name}"
    if style != Style.cartoon:
        return f"{reason} (use a photo or video where a face is clearly visible; for a drawn face, set style to cartoon)"
    return f"{reason} (for a drawn face, make the eyes and mouth clearly visible on a plain face)"


class Detect(ManifestStage):
    """Face detect: the avatar's face track (boxes, landmarks), content-addressed."""

    name = NAME
    requires = frozenset({Role.avatar})
    provides = frozenset({Role.faces})

    def warm_up(self, settings: Settings, models: ModelCache) -> None:
        warm_up(settings, models)

    def run(self, ctx: StageContext, inputs: Manifest) -> list[Manifest]:
        return run(ctx, inputs)


STAGE = Detect()
