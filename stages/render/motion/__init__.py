"""Life for a still avatar: blinks and small head motion, added to any renderer's frames.

``Animated(renderer)`` is itself a renderer: it hands the frames to the renderer it wraps, and on each
frame it yields closes the eyes per the blink plan (from that frame's eye landmarks) and moves the head
(``warps.HeadWarp``). The plan (``plan.plan_motion``) comes from the request's ``motion`` level and
``seed`` (the same job moves the same way every time) and nods on the stressed syllables of the speech
(loudness peaks inside the speech regions). Frames whose face is ``absent`` pass unchanged; blinks need
68 landmarks (tracks from Haar get head motion only).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from pipeline.contracts import FaceFrame, Motion
from stages.lib.speech.fallback import normalised_loudness, rms_envelope, speaking_weight
from stages.render.base import SAMPLE_RATE, Frames, Renderer, RenderRequest
from stages.render.motion.plan import MotionPlan, plan_motion, seed_of
from stages.render.motion.warps import HeadWarp, HeadWarps, close_eyes

__all__ = ["Animated", "MotionPlan", "animate", "plan_for", "seed_of"]


class Animated:
    """``inner`` with blinks and head motion on its output (module docstring)."""

    def __init__(self, inner: Renderer) -> None:
        self.inner = inner
        self.name = inner.name

    def render(
        self, request: RenderRequest, frames: Frames, progress: Callable[[float], None]
    ) -> Iterator[np.ndarray]:
        if request.motion == Motion.none:
            return self.inner.render(request, frames, progress)
        return self._render(request, frames, progress)

    def _render(
        self, request: RenderRequest, frames: Frames, progress: Callable[[float], None]
    ) -> Iterator[np.ndarray]:
        given: deque[tuple[np.ndarray, FaceFrame]] = deque()  # filled by the thread the renderer reads in

        def tee() -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
            for item in frames:
                given.append((item[1], item[2]))
                yield item

        plan = plan_for(request)
        warps = HeadWarps()  # a moving face's warp is built when its shape changes, else moved
        for i, frame in enumerate(self.inner.render(request, tee(), progress)):
            source, face = given.popleft()
            points = None if face.landmarks is None else np.asarray(face.landmarks, np.float64)
            warp = None if face.absent else warps.warp(face.box, frame.shape, points, source)
            # a frame the renderer made is ours to change; the avatar's own frame (often shared) is not
            yield animate(frame, face, plan, i, warp, in_place=frame is not source)


def plan_for(request: RenderRequest) -> MotionPlan:
    """The motion plan of a request: its level and seed, nods from the loudness of its speech."""
    loud = normalised_loudness(rms_envelope(request.audio, SAMPLE_RATE, request.fps, request.n_frames))
    if request.speech is not None:
        loud = loud * speaking_weight(request.speech.speech, request.fps, request.n_frames)
    return plan_motion(request.n_frames, request.fps, request.motion, request.seed, loud)


def animate(
    frame: np.ndarray,
    face: FaceFrame,
    plan: MotionPlan,
    i: int,
    warp: HeadWarp | None,
    *,
    in_place: bool = False,
) -> np.ndarray:
    """Frame ``i`` with its blink and head pose (``frame`` itself changed when ``in_place``, else a new
    array); unchanged where the face is absent."""
    if face.absent or i >= len(plan):
        return frame
    out = frame
    if plan.blink[i] > 0.01 and face.landmarks is not None:
        out = close_eyes(out, np.asarray(face.landmarks, np.float64), float(plan.blink[i]), in_place=in_place)
        in_place = True  # ``out`` is ours now
    if warp is not None:
        pose = (float(plan.roll[i]), float(plan.pitch[i]), float(plan.shift_x[i]), float(plan.shift_y[i]))
        out = warp.apply(out, *pose, in_place=in_place)
    return out
