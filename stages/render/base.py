"""The renderer interface: what every lip-sync renderer (viseme, wav2lip, ...) is given and returns.

The render stage decodes the avatar, cycles its frames to the audio's length, hands them to a renderer
with the face track, and encodes what the renderer yields. Renderers are pure frame transforms: no
storage, no ffmpeg, no bus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions, Motion, SpeechTiming, Style
from pipeline.media import AUDIO_RATE

SAMPLE_RATE = AUDIO_RATE  # the one rate of normalized voices: pipeline.media.AUDIO_RATE


@dataclass
class RenderRequest:
    """Everything a renderer needs besides the frames.

    audio: mono float32 samples in [-1, 1] at ``SAMPLE_RATE`` (the validated voice clip).
    fps: output frame rate. n_frames: frames to produce (``ceil(len(audio) / SAMPLE_RATE * fps)``).
    track: the face track of the avatar clip (one FaceFrame per *avatar* frame; the frames iterator
    already pairs each output frame with its FaceFrame).
    speech: when what is said (visemes) and where the pauses are; None: the renderer times the audio
    itself (``stages.lib.speech.fallback``). motion: blinks and head motion to add (already resolved from the
    job's option and the avatar kind). seed: makes that motion the same on every run of the job.
    still: the avatar is one photo.
    """

    audio: np.ndarray
    fps: float
    n_frames: int
    track: FaceTrack
    options: JobOptions = field(default_factory=JobOptions)
    style: Style = Style.auto
    speech: SpeechTiming | None = None
    motion: Motion = Motion.none
    seed: int = 0
    still: bool = False

    @property
    def transcript(self) -> str | None:
        return self.options.transcript


Frames = Iterable[tuple[int, np.ndarray, FaceFrame]]
"""(output index i, RGB uint8 frame H×W×3, its face) for i = 0 .. n_frames-1, in order.
A still avatar yields the same array every time: renderers must not modify input frames in place."""


class Renderer(Protocol):
    """A lip-sync renderer. Instances are built once per worker process and reused across jobs."""

    name: str

    def render(
        self, request: RenderRequest, frames: Frames, progress: Callable[[float], None]
    ) -> Iterator[np.ndarray]:
        """Yield exactly ``request.n_frames`` RGB uint8 frames, same size as the input, in order.

        ``progress(fraction)`` may be called with 0..1 as work advances. Raise
        ``pipeline.errors.InvalidInput`` for input the renderer cannot use (with a reason a person
        understands) and ``ConfigError`` for missing weights.
        """
        ...
