"""The musetalk renderer on a moving avatar video: the astronaut's head drifting across a canvas (a still
start, a drift, a stretch with no face at all, a still end), encoded to H.264 with ffmpeg, tracked by the
detect stage's dlib tracker, rendered with the seeded TINY MuseTalk networks.

What must hold (as for the wav2lip and viseme renderers, tests/stages/render/test_rest.py and
test_tracking_render.py): the regenerated region follows the track on every speaking frame; frames with
no face and frames in a pause are the input frames unchanged; progress after every batch; a progress
callback that raises (a cancelled job) stops the render at that report.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_settings
from pipeline.contracts import FaceTrack, JobOptions, Span, SpeechTiming
from pipeline.media import FrameWriter, decode_frames, decode_lazily
from stages.detect.track import build_track
from stages.lib.faces.landmarks import DlibDetector
from stages.lib.faces.tracker import track_faces
from stages.lib.speech.fallback import REST_FADE, speaking_weight
from stages.render import musetalk as mt
from stages.render.base import SAMPLE_RATE, RenderRequest
from stages.render.musetalk_render import MuseTalkRenderer
from stages.render.musetalk_seeded import TINY, write_models

FPS = 25.0
SIZE = (400, 320)  # canvas width, height
STILL, DRIFT, NO_FACE, END = range(0, 15), range(15, 40), range(40, 48), range(48, 60)
N = 60
SPEECH = [Span(start=0.0, end=0.9), Span(start=1.5, end=2.4)]
"""Speaking, a 0.6 s pause in the middle of the drift, speaking again over the no-face frames and the end."""
BATCH = 8


def offset(i: int) -> tuple[int, int]:
    """Where the head picture's top-left corner is on frame ``i``: still, then 4 px right and 1 px down
    per frame, then still again at (100, 25)."""
    step = min(max(i - DRIFT.start + 1, 0), len(DRIFT))
    return 4 * step, step


def canvas_frame(head: np.ndarray, i: int) -> np.ndarray:
    """Frame ``i`` of the clip: grey canvas, the head picture at ``offset(i)``, nothing on NO_FACE frames."""
    frame = np.full((SIZE[1], SIZE[0], 3), (120, 128, 136), np.uint8)
    if i not in NO_FACE:
        x, y = offset(i)
        frame[y : y + head.shape[0], x : x + head.shape[1]] = head
    return frame


@pytest.fixture(scope="module")
def clip(
    tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray
) -> tuple[list[np.ndarray], FaceTrack]:
    """The decoded frames of the moving clip (H.264, as a user's upload would be) and its face track."""
    folder = tmp_path_factory.mktemp("moving")
    path = folder / "moving.mp4"
    head = astronaut[0:280, 90:390]  # the astronaut's head and shoulders, 300×280
    with FrameWriter(load_settings(None, data_dir=folder), path, SIZE[0], SIZE[1], FPS) as writer:
        for i in range(N):
            writer.write(canvas_frame(head, i))
    tracked = track_faces(decode_lazily(path), N, DlibDetector())
    track = build_track(
        tracked.found, width=SIZE[0], height=SIZE[1], fps=FPS, detector="dlib", cuts=tracked.cuts
    )
    return list(decode_frames(path)), track


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> MuseTalkRenderer:
    model_dir = write_models(tmp_path_factory.mktemp("musetalk"), TINY, seed=0)
    return MuseTalkRenderer(model_dir, device="cpu", batch=BATCH)


def request_for(track: FaceTrack, audio: np.ndarray) -> RenderRequest:
    timing = SpeechTiming(duration=N / FPS, source="test", speech=SPEECH)
    return RenderRequest(audio, FPS, N, track, JobOptions(renderer="musetalk"), speech=timing)


def blend_region(box: mt.Box, landmarks: list[tuple[float, float]] | None) -> np.ndarray:
    """Where upstream's blend mask for ``box`` (and our lower-face mask from ``landmarks``) is non-zero,
    in frame coordinates."""
    (sx1, sy1, sx2, sy2), mask = mt.square_mask(box, mt.lower_face_mask(box, landmarks))
    region = np.zeros((SIZE[1], SIZE[0]), bool)
    x1, y1, x2, y2 = max(sx1, 0), max(sy1, 0), min(sx2, SIZE[0]), min(sy2, SIZE[1])
    region[y1:y2, x1:x2] = mask[y1 - sy1 : y2 - sy1, x1 - sx1 : x2 - sx1] > 0
    return region


def changed_centroid(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(x, y) centroid of the pixels the renderer changed."""
    ys, xs = np.nonzero((before != after).any(axis=2))
    return np.array([xs.mean(), ys.mean()])


@pytest.fixture(scope="module")
def rendered(
    clip: tuple[list[np.ndarray], FaceTrack], renderer: MuseTalkRenderer, speech: np.ndarray
) -> tuple[list[np.ndarray], list[float]]:
    frames, track = clip
    progress: list[float] = []
    audio = speech[: int(N / FPS * SAMPLE_RATE)]
    out = list(
        renderer.render(
            request_for(track, audio),
            ((i, f, track.frames[i]) for i, f in enumerate(frames)),
            progress.append,
        )
    )
    return out, progress


def test_the_clip_is_tracked_with_a_gap(clip: tuple[list[np.ndarray], FaceTrack]) -> None:
    """Precondition: dlib finds the face with landmarks on every frame that has one, and the track marks
    the 8 frames without a face absent (longer than the tracker fills)."""
    frames, track = clip
    assert len(frames) == len(track.frames) == N
    for i, face in enumerate(track.frames):
        assert face.absent == (i in NO_FACE), i
        assert face.absent or face.landmarks is not None


def test_every_frame_with_progress_per_batch(
    clip: tuple[list[np.ndarray], FaceTrack], rendered: tuple[list[np.ndarray], list[float]]
) -> None:
    """60 frames of the clip's size come back; progress after each batch of 8, rising to 1."""
    frames, _ = clip
    out, progress = rendered
    assert len(out) == N and all(
        o.shape == f.shape and o.dtype == np.uint8 for o, f in zip(out, frames, strict=True)
    )
    assert progress == pytest.approx([min(k + BATCH, N) / N for k in range(0, N, BATCH)])


def test_the_regenerated_region_follows_the_track(
    clip: tuple[list[np.ndarray], FaceTrack], rendered: tuple[list[np.ndarray], list[float]]
) -> None:
    """On every speaking frame with a face, the changed pixels lie inside the blend square of that frame's
    crop box (upstream's box from the frame's tracked landmarks) where its blend mask is non-zero, and their
    centroid sits on the lower face; from the still start to the still end it moves with the head
    (100 px right, 25 px down)."""
    frames, track = clip
    out, _ = rendered
    speaking = speaking_weight(SPEECH, FPS, N)
    centroids: dict[int, np.ndarray] = {}
    for i in range(N):
        face = track.frames[i]
        if face.absent or speaking[i] < 0.99:
            continue
        box = mt.crop_box(face.box, face.landmarks, SIZE[1], SIZE[0])
        assert box is not None
        changed = (out[i] != frames[i]).any(axis=2)
        assert changed.sum() > 500, i
        assert not (changed & ~blend_region(box, face.landmarks)).any(), i
        centroids[i] = changed_centroid(frames[i], out[i])
        points = np.asarray(face.landmarks)
        jaw_and_nose = np.vstack([points[2:15], points[29:36]])
        (lx1, ly1), (lx2, ly2) = jaw_and_nose.min(axis=0), jaw_and_nose.max(axis=0)
        assert lx1 <= centroids[i][0] <= lx2 and ly1 <= centroids[i][1] <= ly2, (i, centroids[i])
    still, end_ = [i for i in STILL if i in centroids], [i for i in END if i in centroids]
    assert len(still) >= len(STILL) - 2 and len(end_) >= len(END) - 2  # all but the fade at the start
    start = np.mean([centroids[i] for i in still], axis=0)
    end = np.mean([centroids[i] for i in end_], axis=0)
    np.testing.assert_allclose(end - start, offset(END.start), atol=3.0)


def test_no_face_and_pause_frames_are_the_input(
    clip: tuple[list[np.ndarray], FaceTrack], rendered: tuple[list[np.ndarray], list[float]]
) -> None:
    """Rest on silence as the wav2lip renderer's test defines it: inside the pause (away from the fades)
    every frame is the input frame, mouth region included, though the head is drifting; the frames
    with no face are the input frames although the voice speaks over them."""
    frames, _ = clip
    out, _ = rendered
    t = (np.arange(N) + 0.5) / FPS
    pause = (t > SPEECH[0].end + REST_FADE) & (t < SPEECH[1].start - REST_FADE)
    assert pause.sum() >= 8 and all(i in DRIFT for i in np.flatnonzero(pause))
    for k in np.flatnonzero(pause):
        assert np.array_equal(out[k], frames[k]), k
    speaking = speaking_weight(SPEECH, FPS, N)
    assert all(speaking[i] == 1.0 for i in NO_FACE)
    for i in NO_FACE:
        assert np.array_equal(out[i], frames[i]), i


def test_cancel_at_the_next_progress_report(
    clip: tuple[list[np.ndarray], FaceTrack], renderer: MuseTalkRenderer, speech: np.ndarray
) -> None:
    """A job cancelled during the second batch: its progress callback raises at the second report, and
    no frame past that batch is made."""

    class Cancelled(Exception):
        pass

    reports: list[float] = []

    def progress(value: float) -> None:
        reports.append(value)
        if len(reports) == 2:
            raise Cancelled

    frames, track = clip
    audio = speech[: int(N / FPS * SAMPLE_RATE)]
    got = []
    with pytest.raises(Cancelled):
        for frame in renderer.render(
            request_for(track, audio), ((i, f, track.frames[i]) for i, f in enumerate(frames)), progress
        ):
            got.append(frame)
    assert reports == pytest.approx([BATCH / N, 2 * BATCH / N])
    assert len(got) == 2 * BATCH
