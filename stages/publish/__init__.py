"""publish: the last stage. Puts the finished video where the job's people will find it.

Always: the outputs bucket (``<job>/<name>.mp4``, subtitles and the quality report
``<name>.quality.json`` beside it, ``<job>/status.json``). Then each
destination of the job spec: a folder (the embedded default's output folder), Discord (see
``stages.publish.discord``). Each publication leaves a marker (``published/<destination>.json``), so a
redelivered message never publishes twice. ``notify_failure`` tells the same destinations when a job
fails, with the reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

import structlog

from pipeline.config import Settings
from pipeline.contracts import ArtifactRef, Destination, FolderDestination, JobSpec, Manifest
from pipeline.errors import PermanentError
from pipeline.keys import job_record_key, output_key, published_key
from pipeline.media import mux
from pipeline.stage import StageContext
from pipeline.status import job_status, read_job, read_spec
from pipeline.storage.base import ObjectStore
from stages.publish.folder import publish_to_folder, write_failure_note

NAME = "publish"
log = structlog.get_logger("mouthpiece.publish")


def run(ctx: StageContext, manifest: Manifest) -> list[Manifest]:
    """Publish one task's video to the outputs bucket and the job's destinations."""
    spec = read_spec(ctx.store, ctx.settings, ctx.job_id)
    filename = output_name(ctx.store, ctx.settings, manifest, spec)
    video = _final_video(ctx, manifest)
    published = [_to_outputs(ctx, video, filename, manifest)]
    for destination in spec.destinations:
        published.extend(_to_destination(ctx, destination, video, filename, manifest))
    # outputs/<job>/status.json is written by the runner once this task's done record is (write_status)
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
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.")
    return cleaned[:80] or "video"


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


def _to_outputs(ctx: StageContext, video: Path, filename: str, manifest: Manifest) -> str:
    bucket = ctx.settings.bucket_outputs
    key = output_key(ctx.job_id, filename)
    ctx.save(video, filename, "video/mp4", key=key, bucket=bucket)
    for role, suffix in (("srt", "srt"), ("vtt", "vtt"), ("quality", "quality.json")):
        if role in manifest.artifacts:
            _copy_artifact(
                ctx, manifest.artifacts[role], output_key(ctx.job_id, f"{Path(filename).stem}.{suffix}")
            )
    return f"{bucket}/{key}"


def _copy_artifact(ctx: StageContext, ref: ArtifactRef, key: str) -> None:
    path = ctx.fetch(ref)
    ctx.save(path, path.name, ref.content_type, key=key, bucket=ctx.settings.bucket_outputs)


# --- destinations -----------------------------------------------------------------------------------


def destination_id(destination: Destination) -> str:
    """A stable id for the idempotence marker (no secrets in it: a hash of the whole destination)."""
    digest = hashlib.sha256(destination.model_dump_json(context={"reveal_secrets": True}).encode())
    return f"{destination.kind}-{digest.hexdigest()[:16]}"


def _to_destination(
    ctx: StageContext, destination: Destination, video: Path, filename: str, manifest: Manifest
) -> list[str]:
    marker = published_key(ctx.job_id, ctx.task, destination_id(destination))
    if ctx.store.stat(ctx.settings.bucket_work, marker) is not None:
        ctx.log.info("already_published", destination=destination.kind)
        return []
    if isinstance(destination, FolderDestination):
        where = publish_to_folder(ctx.settings, destination, video, filename, ctx.job_id)
    else:
        from stages.publish.discord import publish_to_discord

        where = publish_to_discord(ctx, destination, video, filename, manifest)
    ctx.save_bytes(json.dumps({"location": where}).encode(), "marker", "application/json", key=marker)
    ctx.log.info("published", destination=destination.kind, location=where)
    return [where]


def write_status(store: ObjectStore, settings: Settings, job_id: str) -> None:
    status = job_status(store, settings, job_id)
    if status is not None:
        data = status.model_dump_json(indent=1).encode()
        store.put(
            settings.bucket_outputs, output_key(job_id, "status.json"), data, content_type="application/json"
        )


def notify_failure(settings: Settings, store: ObjectStore, job_id: str, task: str, reason: str) -> None:
    """Tell the job's destinations that it failed, and why (best effort; called by the runner)."""
    write_status(store, settings, job_id)
    try:
        spec = read_spec(store, settings, job_id)
    except PermanentError:
        return  # failed before its spec was stored: the status record is all there is
    job = read_job(store, settings, job_id)
    name = _safe(job.name if job else (spec.name or job_id))
    for destination in spec.destinations:
        if isinstance(destination, FolderDestination):
            write_failure_note(settings, destination, name, job_id, reason)
        else:
            from stages.publish.discord import notify_discord_failure

            notify_discord_failure(settings, destination, reason)
    log.info("failure_notified", job_id=job_id, task=task, record=job_record_key(job_id))
