"""A moving head: the astronaut photo turned ±10° and drifting, encoded to H.264, tracked with dlib (the
detect stage's tracker), lip-synced by the viseme renderer — the mouth drawn belongs to the moving lips."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from pipeline.config import load_settings
from pipeline.contracts import FaceTrack, JobOptions
from pipeline.media import FrameWriter, decode_frames, decode_lazily
from stages.detect.track import build_track
from stages.lib.faces.landmarks import DlibDetector
from stages.lib.faces.tracker import track_faces
from stages.lib.speech.fallback import timing_from_audio
from stages.render.base import SAMPLE_RATE, RenderRequest
from stages.render.viseme import VisemeRenderer
from stages.render.viseme.timeline import plan_from_timing

FPS = 25.0
SECONDS = 4.0
TRANSCRIPT = "And so my fellow Americans, ask not"


def turned(image: np.ndarray, t: float) -> np.ndarray:
    """The photo rolled by 10°·sin(2πt/2) about the face and drifted sideways and down (a few % of the
    frame), like a talking head."""
    angle = 10.0 * math.sin(2 * math.pi * t / 2.0)
    turn = cv2.getRotationMatrix2D((225.0, 125.0), angle, 1.0)
    turn[0, 2] += 24.0 * math.sin(2 * math.pi * t / 3.0)
    turn[1, 2] += 10.0 * math.sin(2 * math.pi * t / 2.5)
    return cv2.warpAffine(image, turn, (512, 512), borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def moving(
    tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray
) -> tuple[list[np.ndarray], FaceTrack]:
    """The clip's decoded frames and its face track."""
    folder = tmp_path_factory.mktemp("moving")
    clip = folder / "moving.mp4"
    n = int(SECONDS * FPS)
    with FrameWriter(load_settings(None, data_dir=folder), clip, 512, 512, FPS) as writer:
        for i in range(n):
            writer.write(turned(astronaut, i / FPS))
    tracked = track_faces(decode_lazily(clip), n, DlibDetector())
    track = build_track(tracked.found, width=512, height=512, fps=FPS, detector="dlib", cuts=tracked.cuts)
    return list(decode_frames(clip)), track


def change_centroid(before: np.ndarray, after: np.ndarray) -> tuple[float, float] | None:
    diff = np.abs(after.astype(np.float32) - before.astype(np.float32)).sum(axis=2)
    if diff.sum() < 500:
        return None
    ys, xs = np.indices(diff.shape)
    return float((xs * diff).sum() / diff.sum()), float((ys * diff).sum() / diff.sum())


def test_mouth_change_stays_on_the_turning_lips(
    moving: tuple[list[np.ndarray], FaceTrack], jfk: np.ndarray
) -> None:
    """On ≥ 95 % of the frames where the mouth is open, the centroid of the change the renderer made lies
    inside that frame's lip landmarks' box; the track has landmarks and a roll that follows the turn."""
    frames, track = moving
    assert all(f.landmarks is not None and f.pose is not None for f in track.frames)
    rolls = np.array([f.pose[2] for f in track.frames if f.pose is not None])
    assert rolls.max() - rolls.min() > 15.0  # ±10°, seen by the head pose
    audio = jfk[: int(SECONDS * SAMPLE_RATE)]
    timing = timing_from_audio(audio, TRANSCRIPT)
    request = RenderRequest(audio, FPS, len(frames), track, JobOptions(transcript=TRANSCRIPT), speech=timing)
    out = list(
        VisemeRenderer().render(
            request, ((i, f, track.frames[i]) for i, f in enumerate(frames)), lambda _: None
        )
    )
    opening = plan_from_timing(audio, SAMPLE_RATE, FPS, len(frames), timing).open
    speaking = [i for i in range(len(frames)) if opening[i] > 0.15]
    assert len(speaking) > 25
    inside = 0
    for i in speaking:
        lips = np.asarray(track.frames[i].landmarks)[48:68]
        centre = change_centroid(frames[i], out[i])
        (x1, y1), (x2, y2) = lips.min(axis=0), lips.max(axis=0)
        inside += centre is not None and x1 <= centre[0] <= x2 and y1 <= centre[1] <= y2
    assert inside >= 0.95 * len(speaking), f"{inside} of {len(speaking)}"
