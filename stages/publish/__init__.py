"""publish: the last stage. Puts the finished video where the job's people will find it.

Always: the outputs bucket (``<job>/<name>.mp4``, subtitles and the quality report
``<name>.quality.json`` beside it, ``<job>/status.json``). Then each
destination of the job spec through its target (``pipeline.destinations.targets``: a folder, Discord),
each exactly once (an intent before anything is sent, a marker after). When a job fails the runner tells
the same destinations (``pipeline.destinations.targets.tell_failure``); the stage has no part in that.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import structlog

from pipeline.config import Settings
from pipeline.contracts import ArtifactRef, JobSpec, Manifest, Role
from pipeline.destinations import check_destinations
from pipeline.destinations.base import Delivery
from pipeline.destinations.targets import publish_to, safe_name
from pipeline.keys import output_key
from pipeline.media import mux
from pipeline.stage import ManifestStage, StageContext
from pipeline.status import read_job
from pipeline.storage.base import ObjectStore

NAME = "publish"
log = structlog.get_logger("mouthpiece.publish")


def run(ctx: StageContext, manifest: Manifest) -> list[Manifest]:
    """Publish one task's video to the outputs bucket and the job's destinations."""
    spec = ctx.spec
    check_destinations(ctx.settings, spec.destinations)  # validate did; a refusal here publishes nothing
    filename = output_name(ctx.store, ctx.settings, manifest, spec)
    video = _final_video(ctx, manifest)
    where, ref = _to_outputs(ctx, video, filename, manifest)
    published = [where]
    delivery = Delivery(video, filename, ref.sha256, manifest.media.audio_seconds, manifest.avatar_name)
    for destination in spec.destinations:
        published.extend(publish_to(ctx, destination, delivery))
    # outputs/<job>/status.json is written by the runner once this task's done record is
    return [manifest.advance(NAME, {"published": published})]


def output_name(store: ObjectStore, settings: Settings, manifest: Manifest, spec: JobSpec) -> str:
    """``<name>.mp4``; with several avatars ``<name>-<avatar>.mp4``. Only safe characters."""
    job = read_job(store, settings, manifest.job_id)
    base = safe_name(job.name if job else (spec.name or manifest.job_id))
    if job is not None and len(job.tasks) > 1:
        stems = [PurePosixPath(avatar).stem for avatar in job.tasks.values()]
        stem = PurePosixPath(manifest.avatar_name).stem
        # face.png and face.jpg must not publish over each other
        base = (
            f"{base}-{safe_name(stem)}"
            if stems.count(stem) == 1
            else f"{base}-{safe_name(stem)}-{manifest.task}"
        )
    return f"{base}.mp4"


# --- the video --------------------------------------------------------------------------------------


def _final_video(ctx: StageContext, manifest: Manifest) -> Path:
    """The finished MP4: enhance's ``final``, else the render muxed with the voice, else the avatar looped."""
    if "final" in manifest.artifacts:
        return ctx.fetch(manifest.artifacts["final"], "final.mp4")
    audio = ctx.fetch(manifest.artifacts["audio"], "audio.wav")
    out = ctx.workdir / "published.mp4"
    seconds = manifest.media.audio_seconds
    if "video" in manifest.artifacts:
        mux(ctx.settings, ctx.fetch(manifest.artifacts["video"], "video.mp4"), audio, out, seconds)
    else:
        avatar = ctx.fetch(manifest.artifacts["avatar"], "avatar.mp4")
        mux(ctx.settings, avatar, audio, out, seconds, loop_video=True)
    return out


def _to_outputs(ctx: StageContext, video: Path, filename: str, manifest: Manifest) -> tuple[str, ArtifactRef]:
    """The video (and subtitles) in the outputs bucket; where it went and its reference."""
    bucket = ctx.settings.bucket_outputs
    key = output_key(ctx.job_id, filename)
    ref = ctx.save(video, filename, "video/mp4", key=key, bucket=bucket)
    for role, suffix in (("srt", "srt"), ("vtt", "vtt"), ("quality", "quality.json")):
        if role in manifest.artifacts:
            _copy_artifact(
                ctx, manifest.artifacts[role], output_key(ctx.job_id, f"{Path(filename).stem}.{suffix}")
            )
    return f"{bucket}/{key}", ref


def _copy_artifact(ctx: StageContext, ref: ArtifactRef, key: str) -> None:
    path = ctx.fetch(ref)
    ctx.save(path, path.name, ref.content_type, key=key, bucket=ctx.settings.bucket_outputs)


class Publish(ManifestStage):
    """Publish: the outputs bucket, the output folder, Discord — each exactly once."""

    name = NAME
    requires = frozenset({Role.audio, Role.avatar})

    def run(self, ctx: StageContext, inputs: Manifest) -> list[Manifest]:
        return run(ctx, inputs)


STAGE = Publish()
