"""The default renderer, ``viseme``: mouth shapes from the speech, drawn by warping the avatar's mouth.

No weights. The shapes come from the request's speech timing (visemes and pauses; without one it is made
from the audio: pocketsphinx phones forced to the transcript, or recognized, loudness alone when both
fail); ``timeline`` turns it into per-frame open/wide/round/tongue values, at rest in every pause.

Drawing: with 68 landmarks (dlib, face-alignment) ``lips.LipRig`` opens the lips from their real inner
lines, in the mouth's own axes frame by frame (so the mouth follows head roll, size and position),
rounds and pouts them for o/u/w, tucks the lower lip under the upper teeth for f/v; the opening shows
an interior (``interior``): for a video avatar its own open-mouth pixels (banked by opening class as its
frames go by), else teeth, gums, tongue and cavity painted in the face's tones (the avatar's own upper
teeth when it shows them at rest); with a box only, ``warp.MouthRig`` places the mouth by the box's
proportions. Frames whose face is ``absent`` are passed through untouched.

Style: ``photo`` is subtle (small opening, dark gradient interior with teeth); ``cartoon`` opens wider
with a flat interior, tongue and drawn outline, centred on the drawn mouth line (``warp.find_drawn_mouth``;
on a still drawing the old line is inpainted away as the new mouth opens), its chin bending as one
smooth curve; ``auto`` picks cartoon when the first frame's face is
mostly flat colour (``warp.looks_like_cartoon``) and photo otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import structlog

from pipeline.contracts import FaceFrame, Style
from pipeline.errors import InvalidInput
from stages.lib.speech.fallback import timing_from_audio
from stages.render.base import SAMPLE_RATE, Frames, RenderRequest
from stages.render.viseme.interior import MouthBank, Tones
from stages.render.viseme.lips import LipRig, teeth_showing
from stages.render.viseme.shapes import MouthTrack, ShapeParams
from stages.render.viseme.timeline import plan_from_timing
from stages.render.viseme.warp import (
    CARTOON,
    PHOTO,
    BoxLayout,
    DrawnMouth,
    MouthGeometry,
    MouthRig,
    WarpStyle,
    find_drawn_mouth,
    find_seam,
    locate_mouth,
    looks_like_cartoon,
    shows_teeth,
)

__all__ = ["CARTOON", "PHOTO", "BoxLayout", "ShapeParams", "VisemeRenderer", "WarpStyle"]

log = structlog.get_logger("mouthpiece.render.viseme")

LIP_OPEN = 0.7
"""Landmarks give the true mouth width (corner to corner, wider than a box's guess): open this much less."""
MIN_FACE_PIXELS = 24
"""Faces narrower than this are left as they are: there is no mouth to speak of."""


@dataclass(frozen=True)
class _Look:
    """The resolved style of one job: how to draw and how much to move."""

    style: Style
    warp: WarpStyle
    motion: ShapeParams


class VisemeRenderer:
    """Lip-sync without weights (see the module docstring).

    The instance holds only settings; each ``render`` call keeps its own state, so one instance serves
    any number of jobs, also concurrently.
    """

    name = "viseme"

    def __init__(
        self,
        *,
        layout: BoxLayout | None = None,
        photo: WarpStyle = PHOTO,
        cartoon: WarpStyle = CARTOON,
        motion: ShapeParams | None = None,
        cartoon_motion: ShapeParams | None = None,
        use_alignment: bool = True,
        refine_seam: bool = True,
    ) -> None:
        """``layout``: mouth position within a face box without landmarks. ``photo``/``cartoon``: drawing
        styles. ``motion``/``cartoon_motion``: timing and gain of the mouth per style.
        ``use_alignment=False`` skips pocketsphinx (loudness only). ``refine_seam`` looks for the lip
        line in the first frame when the track has no landmarks."""
        self.layout = layout or BoxLayout()
        self.photo, self.cartoon = photo, cartoon
        self.motion = motion or ShapeParams()
        self.cartoon_motion = cartoon_motion or ShapeParams(motion=1.15, attack=0.02, release=0.045)
        self.use_alignment = use_alignment
        self.refine_seam = refine_seam

    # -- planning ------------------------------------------------------------------------------------

    def plan(self, request: RenderRequest, motion: ShapeParams | None = None) -> MouthTrack:
        """The mouth track of ``request`` (visemes and pauses of its speech timing, loudness, smoothing);
        ``request.n_frames`` long. Without a timing in the request one is made from the audio."""
        _check(request)
        timing = request.speech
        if timing is None:
            timing = timing_from_audio(request.audio, request.transcript, phones=self.use_alignment)
        elif not self.use_alignment:
            timing = timing.model_copy(update={"visemes": [], "phones": []})
        track = plan_from_timing(
            request.audio, SAMPLE_RATE, request.fps, request.n_frames, timing, motion or self.motion
        )
        log.info("viseme.planned", source=timing.source, visemes=len(timing.visemes),
                 pauses=len(timing.speech), frames=request.n_frames)  # fmt: skip
        return track

    def _look(self, request: RenderRequest, frame: np.ndarray, face: FaceFrame) -> _Look:
        """The job's style: asked for by the request (or its options), else guessed from the frame."""
        style = request.style if request.style != Style.auto else request.options.style
        if style == Style.auto:
            style = Style.cartoon if looks_like_cartoon(frame, _int_box(face, frame)) else Style.photo
        if style == Style.cartoon:
            return _Look(style, self.cartoon, self.cartoon_motion)
        return _Look(style, self.photo, self.motion)

    # -- rendering -----------------------------------------------------------------------------------

    def render(
        self, request: RenderRequest, frames: Frames, progress: Callable[[float], None]
    ) -> Iterator[np.ndarray]:
        """Yield ``request.n_frames`` frames with the mouth moving to the audio (see ``Renderer``).

        Raises ``InvalidInput`` for unusable audio or fps and when ``frames`` runs out early.
        """
        _check(request)
        return self._render(request, iter(frames), progress)

    def _render(
        self,
        request: RenderRequest,
        frames: Iterator[tuple[int, np.ndarray, FaceFrame]],
        progress: Callable[[float], None],
    ) -> Iterator[np.ndarray]:
        first = next(frames, None)
        if first is None:
            if request.n_frames:
                raise InvalidInput(f"the avatar gave no frames; {request.n_frames} were needed")
            return
        look = self._look(request, first[1], first[2])
        started = time.perf_counter()
        track = self.plan(request, look.motion)
        progress(0.1)
        drawer = _Drawer(
            self.layout, look.warp, self.refine_seam, bank=not request.still, still=request.still
        )
        done = 0
        for _, frame, face in _chain(first, frames):
            if done >= request.n_frames:
                break
            yield drawer.draw(frame, face, track.at(done), track.tongue_at(done), track.tuck_at(done))
            done += 1
            if done % 25 == 0:
                progress(0.1 + 0.9 * done / request.n_frames)
        if done < request.n_frames:
            raise InvalidInput(f"the avatar gave {done} frames; {request.n_frames} were needed")
        progress(1.0)
        log.info("viseme.rendered", style=look.style.value, frames=done,
                 seconds=round(time.perf_counter() - started, 2))  # fmt: skip


class _Drawer:
    """Draws shapes on successive frames, reusing the warp rig while the face stays put.

    ``bank``: collect the avatar's own open-mouth interiors as its frames go by (a video; a photo has
    only the one frame, whose mouth is what is being opened). ``still``: the same picture every frame
    (a drawing's old mouth line can be erased once)."""

    def __init__(
        self,
        layout: BoxLayout,
        style: WarpStyle,
        refine_seam: bool,
        *,
        bank: bool = False,
        still: bool = False,
    ) -> None:
        self.layout, self.style, self.refine_seam = layout, style, refine_seam
        self.still = still
        self.drawn: DrawnMouth | None = None
        self.origin_box: tuple[float, float, float, float] | None = None
        self.seam: float | None = None
        self.rig: MouthRig | None = None
        self.key: tuple[object, ...] | None = None
        self.teeth: bool | None = None
        self.tones: Tones | None = None
        self.seed = 0
        self.bank = MouthBank() if bank else None

    def draw(
        self,
        frame: np.ndarray,
        face: FaceFrame,
        shape: tuple[float, float, float],
        tongue: float = 0.0,
        tuck: float = 0.0,
    ) -> np.ndarray:
        """``frame`` with the mouth in ``shape`` (a new array), or ``frame`` itself where the mouth is at
        rest, the face absent, too small or off-frame."""
        if face.absent:
            return frame
        box = _int_box(face, frame)
        if box[2] - box[0] < MIN_FACE_PIXELS or box[3] - box[1] < MIN_FACE_PIXELS:
            return frame
        if face.landmarks is not None and len(face.landmarks) == 68:
            return self._draw_lips(frame, np.asarray(face.landmarks, np.float64), shape, tongue, tuck)
        if self.seam is None and self.refine_seam:
            # the lip line's place in the box is a property of the face: find it once, then follow the box
            self.seam = find_seam(frame, face.box, self.layout)
            if self.style.outline is not None:  # a drawing: centre the new mouth on the drawn one
                self.drawn = find_drawn_mouth(frame, face.box, self.layout)
                self.origin_box = face.box
        geometry = locate_mouth(face, self.layout, self.seam)
        if self.drawn is not None and self.origin_box is not None:
            geometry = _on_drawn_mouth(geometry, self.drawn, face.box, self.origin_box)
        geometry = geometry.rounded()
        if self.teeth is None:  # decided once per job, on the first frame
            self.teeth = shows_teeth(frame, geometry)
            if self.teeth:
                self.style = replace(self.style, teeth=None)
        key = (geometry, (frame.shape[0], frame.shape[1]))
        if self.rig is None or key != self.key:
            self.rig, self.key = MouthRig(geometry, key[1], self.style), key
            if self.drawn is not None and self.still:
                self.rig.erase(frame, self.drawn.mask)
        return self.rig.apply(frame, shape)

    def _draw_lips(
        self,
        frame: np.ndarray,
        points: np.ndarray,
        shape: tuple[float, float, float],
        tongue: float,
        tuck: float,
    ) -> np.ndarray:
        """The landmark-driven mouth (``lips.LipRig``); no painted upper teeth when the first frame shows
        the avatar's own (they move with the lips). The interior's tones and the teeth's variation are
        the first frame's, so they hold still over the job."""
        if self.teeth is None:
            self.teeth = teeth_showing(frame, points)
            self.style = replace(self.style, max_open=LIP_OPEN * self.style.max_open)
            if self.teeth:
                self.style = replace(self.style, teeth=None)
            self.tones = Tones.of_face(frame, points)
            self.seed = int(
                np.sum(np.round(points[48:68]).astype(np.int64) * np.arange(1, 41).reshape(20, 2))
            )
        if self.bank is not None:
            self.bank.offer(frame, points)
        key = (tuple(np.round(points * 2).astype(int).ravel()), frame.shape[0], frame.shape[1])
        if not isinstance(self.rig, LipRig) or key != self.key:
            size = (frame.shape[0], frame.shape[1])
            self.rig = LipRig(points, size, self.style, tones=self.tones, bank=self.bank, seed=self.seed)
            self.key = key
        return self.rig.apply(frame, shape, tongue, tuck)


def _on_drawn_mouth(
    geometry: MouthGeometry,
    drawn: DrawnMouth,
    box: tuple[float, float, float, float],
    origin: tuple[float, float, float, float],
) -> MouthGeometry:
    """``geometry`` moved onto a drawn mouth found in the ``origin`` box (the first frame's; the mouth
    keeps its place in the box as the box moves), at least as wide as most of the drawn line."""
    ox1, oy1, ox2, oy2 = origin
    rel_x = (drawn.cx - (ox1 + ox2) / 2) / max(ox2 - ox1, 1.0)
    rel_y = (drawn.cy - oy1) / max(oy2 - oy1, 1.0)
    x1, y1, x2, y2 = box
    scale = (x2 - x1) / max(ox2 - ox1, 1.0)
    return replace(
        geometry,
        chin_offset=-rel_x * (x2 - x1),  # the chin stays in the face's middle
        cx=(x1 + x2) / 2 + rel_x * (x2 - x1),
        cy=y1 + rel_y * (y2 - y1),
        half_width=max(geometry.half_width, 0.8 * drawn.half_width * scale),
    )


def _chain(
    first: tuple[int, np.ndarray, FaceFrame], rest: Iterator[tuple[int, np.ndarray, FaceFrame]]
) -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
    yield first
    yield from rest


def _int_box(face: FaceFrame, frame: np.ndarray) -> tuple[int, int, int, int]:
    """The face box in whole pixels, clipped to the frame."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = face.box
    return (int(np.clip(x1, 0, w)), int(np.clip(y1, 0, h)), int(np.clip(x2, 0, w)), int(np.clip(y2, 0, h)))


def _check(request: RenderRequest) -> None:
    """Reject requests no renderer could honour, with a reason a person understands."""
    if request.audio.ndim != 1:
        raise InvalidInput(f"the voice clip must be mono audio; got samples shaped {request.audio.shape}")
    if not request.fps > 0:
        raise InvalidInput(f"the frame rate must be positive; got {request.fps}")
    if request.n_frames < 0:
        raise InvalidInput(f"the frame count cannot be negative; got {request.n_frames}")
