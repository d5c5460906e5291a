"""publish: the last stage. Puts the finished video where the job's people will find it.

Always: the outputs bucket (``<job>/<name>.mp4``, subtitles and the quality report
``<name>.quality.json`` beside it, ``<job>/status.json``). Then each
destination of the job spec: a folder (the embedded default's output folder), Discord (see
``pipeline.discord.publish``). Each destination gets an intent before anything is sent and a marker after
(``published/<destination>.intent.json`` / ``.json``), so a redelivered message never publishes twice
and a run after a crash knows what may have been sent (docs/architecture.md: exactly once for folders
and interaction replies, at least once for channel webhooks). ``tell_failure`` tells the same
destinations when a job fails, in the catalogue's words.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from pipeline.config import Settings
from pipeline.contracts import ArtifactRef, Destination, FolderDestination, JobSpec, Manifest
from pipeline.destinations import check_destinations
from pipeline.errors import ObjectNotFound, PermanentError
from pipeline.faults import fault
from pipeline.keys import job_record_key, output_key, published_key, slug
from pipeline.media import mux
from pipeline.messages import for_operators
from pipeline.stage import Stage, StageContext
from pipeline.status import read_job, read_spec
from pipeline.storage.base import ObjectStore
from stages.publish.folder import publish_to_folder, write_failure_note

NAME = "publish"
log = structlog.get_logger("mouthpiece.publish")


def run(ctx: StageContext, manifest: Manifest) -> list[Manifest]:
    """Publish one task's video to the outputs bucket and the job's destinations."""
    spec = ctx.job_spec
    check_destinations(ctx.settings, spec.destinations)  # validate did; a refusal here publishes nothing
    filename = output_name(ctx.store, ctx.settings, manifest, spec)
    video = _final_video(ctx, manifest)
    where, ref = _to_outputs(ctx, video, filename, manifest)
    published = [where]
    for destination in spec.destinations:
        published.extend(_to_destination(ctx, destination, video, ref.sha256, filename, manifest))
    # outputs/<job>/status.json is written by the runner once this task's done record is
    return [manifest.advance(NAME, {"published": published})]


def output_name(store: ObjectStore, settings: Settings, manifest: Manifest, spec: JobSpec) -> str:
    """``<name>.mp4``; with several avatars ``<name>-<avatar>.mp4``. Only safe characters."""
    job = read_job(store, settings, manifest.job_id)
    base = _safe(job.name if job else (spec.name or manifest.job_id))
    if job is not None and len(job.tasks) > 1:
        stems = [PurePosixPath(avatar).stem for avatar in job.tasks.values()]
        stem = PurePosixPath(manifest.avatar_name).stem
        # face.png and face.jpg must not publish over each other
        base = f"{base}-{_safe(stem)}" if stems.count(stem) == 1 else f"{base}-{_safe(stem)}-{manifest.task}"
    return f"{base}.mp4"


def _safe(text: str) -> str:
    """An output file name: the user's words kept (any script), nothing a file system minds."""
    return slug(text, 80, keep=".", fallback="video", letters="any")


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


# --- destinations -----------------------------------------------------------------------------------


def destination_id(destination: Destination) -> str:
    """A stable id for the idempotence marker (no secrets in it: a hash of the whole destination)."""
    digest = hashlib.sha256(destination.model_dump_json(context={"reveal_secrets": True}).encode())
    return f"{destination.kind}-{digest.hexdigest()[:16]}"


def _to_destination(
    ctx: StageContext, destination: Destination, video: Path, digest: str, filename: str, manifest: Manifest
) -> list[str]:
    """Publish to one destination exactly once: an intent is written before anything leaves, the
    marker after; a retry finds the marker (done), or the intent (the earlier run may have published:
    the destination decides from what it can check)."""
    dest_id = destination_id(destination)
    marker = published_key(ctx.job_id, ctx.task, dest_id)
    if ctx.store.stat(ctx.settings.bucket_work, marker) is not None:
        ctx.log.info("already_published", destination=destination.kind)
        return []
    intent = Intent(ctx, dest_id)
    if isinstance(destination, FolderDestination):
        where = publish_to_folder(ctx.settings, destination, video, digest, filename, ctx.job_id, intent)
        fault(ctx.settings, "publish.after_copy")
    else:
        from pipeline.discord.publish import publish_to_discord

        intent.write({"started": True})
        where = publish_to_discord(ctx, destination, video, filename, manifest)
        fault(ctx.settings, "publish.after_post")
    ctx.save_bytes(json.dumps({"location": where}).encode(), "marker", "application/json", key=marker)
    ctx.log.info("published", destination=destination.kind, location=where)
    return [where]


class Intent:
    """``published/<destination>.intent.json``: what a run is about to publish, written before it
    does, so a run after a crash knows what the crashed one may have done."""

    def __init__(self, ctx: StageContext, destination_id: str) -> None:
        self.ctx = ctx
        self.key = published_key(ctx.job_id, ctx.task, destination_id).removesuffix(".json") + ".intent.json"

    def read(self) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(self.ctx.store.get(self.ctx.settings.bucket_work, self.key))
        except ObjectNotFound:
            return None
        return found

    def write(self, data: dict[str, Any]) -> None:
        self.ctx.store.put(self.ctx.settings.bucket_work, self.key, json.dumps(data).encode())


def tell_failure(
    settings: Settings, store: ObjectStore, job_id: str, code: str | None, reason: str | None
) -> None:
    """Tell the job's destinations that it failed (or was cancelled), in the catalogue's words."""
    try:
        spec = read_spec(store, settings, job_id)
    except PermanentError:
        return  # failed before its spec was stored: the status record is all there is
    job = read_job(store, settings, job_id)
    name = _safe(job.name if job else (spec.name or job_id))
    for destination in spec.destinations:
        if isinstance(destination, FolderDestination):
            note = for_operators(code, reason, job_id)  # the folders are the operator's own
            write_failure_note(settings, destination, name, job_id, note)
        else:
            from pipeline.discord.publish import notify_discord_failure

            notify_discord_failure(settings, destination, job_id, code, reason)
    log.info("failure_notified", job_id=job_id, record=job_record_key(job_id))


class Publish(Stage):
    """Publish: the outputs bucket, the output folder, Discord — each exactly once."""

    name = NAME
    requires = frozenset({"audio", "avatar"})

    def run(self, ctx: StageContext, inputs: Manifest) -> list[Manifest]:
        return run(ctx, inputs)

    def tell_failure(
        self, settings: Settings, store: ObjectStore, job_id: str, code: str | None, reason: str | None
    ) -> None:
        tell_failure(settings, store, job_id, code, reason)


STAGE = Publish()
