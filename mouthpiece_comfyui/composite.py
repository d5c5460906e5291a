"""Background's I/O: decode the take's finished picture, composite it (``background``), store it as the
take's rendered clip, and finish it again (voice, loudness, subtitles as the take asks)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from mouthpiece_comfyui import runtime
from mouthpiece_comfyui.background import Box, replace_background
from mouthpiece_comfyui.engine import Engine, NodeError, Take
from pipeline.contracts import FaceTrack
from pipeline.media import FrameWriter, decode_frames


def face_box(engine: Engine, take: Take, width: int, height: int) -> Box:
    """The face's median box over the take's track, in ``width``×``height`` pixels."""
    ref = take.manifest.artifacts.get("faces")
    if ref is None or not take.has_face:
        raise NodeError(
            f"no face found in {take.manifest.avatar_name}, so there is no person to keep in front"
        )
    track = FaceTrack.model_validate_json(engine.env.store.get(ref.bucket, ref.key))
    boxes = np.array([f.box for f in track.frames if not f.absent])
    if len(boxes) == 0:
        raise NodeError(
            f"no face found in {take.manifest.avatar_name}, so there is no person to keep in front"
        )
    x1, y1, x2, y2 = np.median(boxes, axis=0)
    sx, sy = width / track.width, height / track.height
    return float(x1 * sx), float(y1 * sy), float(x2 * sx), float(y2 * sy)


def composite_take(
    engine: Engine, take: Take, mode: str, strength: int, picture: Any, progress: runtime.Progress
) -> Take:
    """The take with its background blurred or replaced, finished again."""
    rendered = take.manifest.artifacts.get("video")  # the picture before finishing (no burned subtitles)
    source = engine.local(rendered) if rendered is not None else take.video
    if source is None:
        raise NodeError("this video has no picture to composite; connect Lip-sync's output")
    media = take.manifest.media
    total = max(1, round(media.audio_seconds * media.fps))
    width, height = media.width, media.height
    face = face_box(engine, take, width, height)
    behind = None
    if picture is not None:
        behind = (
            (np.clip(picture[0].detach().cpu().float().numpy()[..., :3], 0, 1) * 255).round().astype(np.uint8)
        )
    scratch = engine.files / f"background-{take.job_id}-{take.manifest.task}.mp4"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    with FrameWriter(engine.settings, scratch, width, height, media.fps) as writer:
        frames = replace_background(decode_frames(source), face, mode=mode, strength=strength, picture=behind)
        for index, frame in enumerate(frames):
            writer.write(frame)
            if index % 5 == 0:
                progress.set(0.5 + 0.35 * min(1.0, index / total))
    ref = engine.save_artifact(take, scratch, "background.mp4", "video/mp4")
    scratch.unlink(missing_ok=True)
    manifest = take.manifest.advance("render", {"background": mode}, video=ref)
    return engine.finish(replace(take, manifest=manifest), progress.part(0.85, 1.0))
