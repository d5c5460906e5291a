"""Rest on silence, every renderer: real speech with a 1.5 s pause in the middle; during the pause the
mouth region is still (the photo's own), for the viseme renderer and for wav2lip (deterministic test
checkpoint); while speaking it moves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions, Span, SpeechTiming
from stages.lib.speech.fallback import REST_FADE, speaking_weight, speech_regions, timing_from_audio
from stages.render.base import SAMPLE_RATE, RenderRequest
from stages.render.neural import Wav2LipRenderer
from stages.render.viseme import VisemeRenderer
from stages.render.wav2lip import Wav2Lip

FPS = 25.0
PAUSE = (1.3, 2.8)


@pytest.fixture(scope="module")
def paused(jfk: np.ndarray) -> np.ndarray:
    """JFK's "...fellow Americans," then 1.5 s of the recording's own room noise, then "ask not what
    your..." (3.8 s in all)."""
    noise = jfk[int(2.3 * SAMPLE_RATE) : int(3.1 * SAMPLE_RATE)]
    gap = np.tile(noise, 2)[: int(1.5 * SAMPLE_RATE)]
    speech = (
        jfk[int(0.9 * SAMPLE_RATE) : int(2.2 * SAMPLE_RATE)],
        jfk[int(3.2 * SAMPLE_RATE) : int(4.2 * SAMPLE_RATE)],
    )
    return np.concatenate([speech[0], gap, speech[1]])


def request_for(audio: np.ndarray, image: np.ndarray, face: FaceFrame, speech: SpeechTiming) -> RenderRequest:
    n = math.ceil(len(audio) / SAMPLE_RATE * FPS)
    track = FaceTrack(detector="test", width=image.shape[1], height=image.shape[0], fps=FPS, frames=[face])
    return RenderRequest(audio, FPS, n, track, JobOptions(renderer="wav2lip"), speech=speech)


def mouth_changes(frames: list[np.ndarray], image: np.ndarray, face: FaceFrame) -> np.ndarray:
    """Per frame, the mean absolute change from the photo in the lower half of the face box and below."""
    x1, y1, x2, y2 = (int(v) for v in face.box)
    rows, cols = slice((y1 + y2) // 2, min(image.shape[0], y2 + 20)), slice(x1, x2)
    return np.array([np.abs(f[rows, cols].astype(float) - image[rows, cols]).mean() for f in frames])


def in_pause(n: int) -> np.ndarray:
    t = (np.arange(n) + 0.5) / FPS
    return (t > PAUSE[0] + REST_FADE) & (t < PAUSE[1] - REST_FADE)


def test_the_pause_is_found(paused: np.ndarray) -> None:
    """The energy split puts the 1.5 s of room noise between two speech regions."""
    spans = speech_regions(paused)
    assert any(abs(s.end - PAUSE[0]) < 0.15 for s in spans) and any(
        abs(s.start - PAUSE[1]) < 0.25 for s in spans
    )
    assert not any(s.start < 2.0 < s.end for s in spans)


def test_viseme_mouth_rests_in_the_pause(
    paused: np.ndarray, astronaut: np.ndarray, astronaut_face: FaceFrame
) -> None:
    """Viseme renderer: every frame inside the pause is the photo itself; speech frames move the mouth."""
    request = request_for(paused, astronaut, astronaut_face, timing_from_audio(paused, None))
    frames = list(
        VisemeRenderer().render(
            request, ((i, astronaut, astronaut_face) for i in range(request.n_frames)), lambda _: None
        )
    )
    change = mouth_changes(frames, astronaut, astronaut_face)
    pause = in_pause(len(frames))
    assert pause.sum() >= 30 and change[pause].max() == 0.0
    assert change[~pause].max() > 3.0


@pytest.mark.slow
def test_wav2lip_shows_the_original_frame_in_the_pause(
    paused: np.ndarray,
    astronaut: np.ndarray,
    astronaut_face: FaceFrame,
    lively_checkpoint: tuple[Wav2Lip, Path],
) -> None:
    """wav2lip (seeded test network): the pause shows the photo unchanged, cross-faded in and out; the
    network's mouth is there while speaking."""
    renderer = Wav2LipRenderer(lively_checkpoint[1], device="cpu", batch=16)
    request = request_for(paused, astronaut, astronaut_face, timing_from_audio(paused, None, phones=False))
    frames = list(
        renderer.render(
            request, ((i, astronaut, astronaut_face) for i in range(request.n_frames)), lambda _: None
        )
    )
    change = mouth_changes(frames, astronaut, astronaut_face)
    pause = in_pause(len(frames))
    assert pause.sum() >= 30 and change[pause].max() == 0.0
    speaking = speaking_weight(request.speech.speech if request.speech else [], FPS, len(frames))
    assert change[speaking > 0.99].min() > 1.0
    edge = np.flatnonzero((speaking > 0.05) & (speaking < 0.95))
    assert len(edge) and all(0.0 < change[i] < change[speaking > 0.99].max() for i in edge)


def test_speaking_weight_cross_fades() -> None:
    """1 inside speech, 0 in the pause, a raised-cosine ramp of REST_FADE centred on each edge."""
    weight = speaking_weight([Span(start=0.0, end=1.0), Span(start=2.0, end=3.0)], FPS, 75)
    t = (np.arange(75) + 0.5) / FPS
    steady = (t > REST_FADE / 2) & (t < 1.0 - REST_FADE / 2)
    assert np.all(weight[steady] == 1.0) and np.all(weight[(t > 1.1) & (t < 1.9)] == 0.0)
    ramp = weight[(t > 1.0 - REST_FADE / 2) & (t < 1.0 + REST_FADE / 2)]
    assert len(ramp) >= 2 and np.all(np.diff(ramp) < 0) and np.all((ramp > 0) & (ramp < 1))


def test_frames_without_a_face_pass_through_every_renderer(
    paused: np.ndarray,
    astronaut: np.ndarray,
    astronaut_face: FaceFrame,
    lively_checkpoint: tuple[Wav2Lip, Path],
) -> None:
    """A face marked absent (no face on the frame) is left untouched, by viseme and by wav2lip."""
    gone = astronaut_face.model_copy(update={"absent": True})
    audio = paused[:SAMPLE_RATE]
    request = request_for(audio, astronaut, gone, timing_from_audio(audio, None, phones=False))
    renderers = (
        VisemeRenderer(use_alignment=False),
        Wav2LipRenderer(lively_checkpoint[1], device="cpu", batch=8),
    )
    for renderer in renderers:
        frames = list(
            renderer.render(request, ((i, astronaut, gone) for i in range(request.n_frames)), lambda _: None)
        )
        assert len(frames) == request.n_frames and all(np.array_equal(f, astronaut) for f in frames)
