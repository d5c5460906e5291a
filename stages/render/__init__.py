"""lip-sync render: the avatar's frames, cycled to the voice's length, through a renderer, to H.264.

The renderer comes from the job's options (``viseme`` needs no weights; ``wav2lip`` loads a checkpoint;
``musetalk`` loads MuseTalk 1.5's files from the model directory; ``none`` passes the avatar through untouched) and is built once per worker process. Decoding, rendering
and encoding overlap: frames are decoded lazily, the renderer may batch and prefetch, and the encoder
runs in its own thread. The output is a silent video (``video``); enhance adds the sound.

What a renderer is given besides frames (``RenderRequest``): the voice, the face track, the speech
timing (the job's ``speech`` artifact when validate stored one, else made here from the audio:
``stages.lib.speech.fallback``), and the motion to add (``options.motion``; unset: ``subtle`` for a photo,
``none`` for a video) with a seed from the job id and task, so a job always moves the same way. Motion
is added to any renderer's frames by ``stages.render.motion.Animated``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.config import Settings
from pipeline.contracts import (
    FaceFrame,
    FaceTrack,
    JobOptions,
    JobSpec,
    Manifest,
    Motion,
    Role,
    SpeechTiming,
    SubtitleMode,
)
from pipeline.errors import ConfigError, InvalidInput
from pipeline.media import (
    PICTURE_FINAL,
    FrameWriter,
    cycle_indices,
    decode_frames,
    frames_for,
    frames_within,
    load_audio,
    loops_forward,
    prefetch,
)
from pipeline.modelfiles import MUSETALK_MODULES, missing_neural, model_path, musetalk_present, require_neural
from pipeline.stage import ManifestStage, ModelCache, StageContext
from stages.lib.speech.fallback import timing_from_audio
from stages.render.base import Frames, Renderer, RenderRequest
from stages.render.motion import Animated, seed_of

NAME = "render"


def run(ctx: StageContext, manifest: Manifest) -> list[Manifest]:
    """Render one task's lip-synced (silent) video."""
    spec = ctx.spec
    options = spec.options
    if options.renderer == "none":
        return [manifest.advance(NAME, {"renderer": "none"})]
    renderer = get_renderer(ctx.settings, ctx.models, options)
    request = _request(ctx, manifest, spec)
    animated = Animated(renderer)
    avatar = ctx.fetch(manifest.artifacts["avatar"], "avatar.mp4")
    out = ctx.workdir / "rendered.mp4"
    media = manifest.media
    ctx.log.info(
        "render_started",
        renderer=renderer.name,
        frames=request.n_frames,
        size=f"{media.width}x{media.height}",
        motion=request.motion.value,
        timing=request.speech.source if request.speech else None,
    )
    final = picture_is_final(options)
    sharpen = final and options.enhance and ctx.settings.denoise
    size = (media.width, media.height)
    with FrameWriter(ctx.settings, out, *size, media.fps, intermediate=not final, sharpen=sharpen) as writer:
        frames = prefetch(_frames(avatar, request.track, request.n_frames), depth=frames_within(*size))
        for frame in animated.render(request, frames, ctx.progress):
            writer.write(frame)
    if writer.frames != request.n_frames:
        raise RuntimeError(f"renderer {renderer.name} produced {writer.frames} of {request.n_frames} frames")
    ref = ctx.save(out, "rendered.mp4", "video/mp4")
    info = {
        "renderer": renderer.name,
        "frames": request.n_frames,
        "picture": PICTURE_FINAL if final else None,
    }
    return [manifest.advance(NAME, info, video=ref)]


def picture_is_final(options: JobOptions) -> bool:
    """Whether the render can be the published picture: yes unless subtitles are to be burned in (only
    the enhance stage knows the cues and fonts, and burning them in needs an encode anyway)."""
    return options.subtitles is not SubtitleMode.burn


def warm_up(settings: Settings, models: ModelCache) -> None:
    """Build the renderers this worker can build before the first job (the neural one only if its
    checkpoint is present), so the first job does not pay for loading."""
    get_renderer(settings, models, JobOptions(renderer="viseme"))
    if _checkpoint_path(settings, None).is_file() and not missing_neural():
        get_renderer(settings, models, JobOptions(renderer="wav2lip"))
    if musetalk_present(settings) and not missing_neural(MUSETALK_MODULES):
        get_renderer(settings, models, JobOptions(renderer="musetalk"))


def _request(ctx: StageContext, manifest: Manifest, spec: JobSpec) -> RenderRequest:
    options = spec.options
    audio = load_audio(ctx.fetch(manifest.artifacts["audio"], "audio.wav"))
    track = ctx.load(manifest.artifacts["faces"], FaceTrack)
    if len(track.frames) != manifest.media.frames:
        raise InvalidInput(f"the face track of {manifest.avatar_name} does not match its frames")
    n_frames = frames_for(manifest.media.audio_seconds, manifest.media.fps)
    return RenderRequest(
        audio=audio,
        fps=manifest.media.fps,
        n_frames=n_frames,
        track=track,
        options=options,
        style=options.style,
        speech=speech_timing_of(ctx, manifest, spec, audio),
        motion=motion_of(options, manifest.media.still),
        seed=seed_of(ctx.job_id, ctx.task),
        still=manifest.media.still,
    )


def speech_timing_of(ctx: StageContext, manifest: Manifest, spec: JobSpec, audio: np.ndarray) -> SpeechTiming:
    """The job's ``speech`` artifact, or (before validate stores one) a timing made from the audio:
    with phones for the viseme renderer, speech regions only for the others."""
    if "speech" in manifest.artifacts:
        return ctx.load(manifest.artifacts["speech"], SpeechTiming)
    transcript = spec.options.transcript or spec.speech  # a synthesized job says exactly its text
    return timing_from_audio(audio, transcript, phones=spec.options.renderer == "viseme")


def motion_of(options: JobOptions, still: bool) -> Motion:
    """The job's motion option; unset: subtle for a photo, none for a video (it moves by itself)."""
    if options.motion is not None:
        return options.motion
    return Motion.subtle if still else Motion.none


# --- renderers ---------------------------------------------------------------------------------------


def get_renderer(settings: Settings, models: ModelCache, options: JobOptions) -> Renderer:
    """The renderer the options ask for, built once per process (``ModelCache``)."""
    if options.renderer == "viseme":
        from stages.render.viseme import VisemeRenderer

        return models.get("renderer:viseme", VisemeRenderer)
    if options.renderer == "wav2lip":
        path = _checkpoint_path(settings, options.checkpoint)
        return models.get(f"renderer:wav2lip:{path}", lambda: _build_wav2lip(settings, path))
    if options.renderer == "musetalk":
        return models.get("renderer:musetalk", lambda: _build_musetalk(settings))
    raise ConfigError(f"no renderer called {options.renderer!r}")


def _build_musetalk(settings: Settings) -> Renderer:
    require_neural("the musetalk renderer", MUSETALK_MODULES)
    from stages.render.musetalk_render import MuseTalkRenderer

    return MuseTalkRenderer(
        settings.models, device=settings.device, batch=settings.musetalk_batch, dtype=settings.musetalk_dtype
    )


def _build_wav2lip(settings: Settings, checkpoint: Path) -> Renderer:
    require_neural("the wav2lip renderer")  # torch is in the neural extra, not the core install
    from stages.render.neural import Wav2LipRenderer

    if not checkpoint.is_file():
        raise ConfigError(
            f"the wav2lip renderer needs {checkpoint.name} in {checkpoint.parent} (see `mouthpiece models`)"
        )
    return Wav2LipRenderer(
        checkpoint,
        device=settings.device,
        batch=settings.wav2lip_batch,
        pads=settings.face_pads,
        restoration=model_path(settings, settings.face_restore_model)
        if settings.face_restore_model
        else None,
    )


def _checkpoint_path(settings: Settings, requested: str | None) -> Path:
    """A job may only name a file in the model directory; the operator's setting may be any path.
    Resolved as ``mouthpiece models`` resolves it, so both name the same file."""
    if requested is not None and ("/" in requested or "\\" in requested or requested.startswith(".")):
        raise InvalidInput(f"checkpoint {requested!r} must be a file name in the model directory")
    return model_path(settings, requested or settings.wav2lip_checkpoint)


# --- frames ------------------------------------------------------------------------------------------


def _frames(avatar: Path, track: FaceTrack, n_out: int) -> Frames:
    """Each output frame's avatar frame and face, cycling the clip to ``n_out`` frames."""
    if loops_forward(n_out, len(track.frames), track.width, track.height):
        return _looping(avatar, track, n_out)
    return _pingpong(avatar, track, n_out)


def _pingpong(avatar: Path, track: FaceTrack, n_out: int) -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
    clip = list(decode_frames(avatar))
    if len(clip) != len(track.frames):
        raise InvalidInput(f"the avatar clip has {len(clip)} frames but its face track {len(track.frames)}")
    for i, src in enumerate(cycle_indices(n_out, len(clip))):
        yield i, clip[src], track.frames[src]


def _looping(avatar: Path, track: FaceTrack, n_out: int) -> Iterator[tuple[int, np.ndarray, FaceFrame]]:
    i = 0
    while i < n_out:
        for src, frame in enumerate(decode_frames(avatar)):
            if i >= n_out:
                return
            yield i, frame, track.frames[min(src, len(track.frames) - 1)]
            i += 1


class Render(ManifestStage):
    """Lip-sync render: the silent video of the face speaking (viseme, neural or none)."""

    name = NAME
    requires = frozenset({Role.audio, Role.avatar, Role.faces})  # and speech, when there
    may_provide = frozenset({Role.video})  # not with the renderer none

    def warm_up(self, settings: Settings, models: ModelCache) -> None:
        warm_up(settings, models)

    def run(self, ctx: StageContext, inputs: Manifest) -> list[Manifest]:
        return run(ctx, inputs)


STAGE = Render()
