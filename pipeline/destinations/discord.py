"""Publishing to Discord: the interaction's deferred reply, or a channel webhook.

The video is attached when it fits the attachment limit (``discord_attachment_limit``, or the
interaction's own ``attachment_size_limit``); otherwise it is re-encoded at a bitrate computed from the
limit and its length (scaled down for long clips); if it still cannot fit, the message carries a link to
the object (a presigned URL on S3) instead. An interaction token lives 15 minutes: after that the job's
``fallback_webhook`` is used, if it has one. Idempotence per job and destination is the caller's marker
(``pipeline.destinations.targets``); failures of the job are told with ``notify_discord_failure`` in one short sentence.
Every webhook is checked against the deployment's allow-list (``pipeline.destinations``) right before it
is used, and posted to by its checked parts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from pipeline.config import Settings
from pipeline.contracts import Destination, DiscordInteractionDestination, DiscordWebhookDestination, Manifest
from pipeline.destinations import allowed_webhook
from pipeline.destinations.base import Delivery, Intent, Publication
from pipeline.discord.api import Attachment, AttachmentTooLarge, DiscordApi, WebhookGone, execute_webhook
from pipeline.discord.progress import token_alive
from pipeline.errors import ConfigError, MouthpieceError, StorageError
from pipeline.keys import artifact_key, output_key
from pipeline.logs import REDACTOR
from pipeline.media import probe, reencode_to_bitrate
from pipeline.messages import discord_text
from pipeline.status import read_job
from pipeline.storage.base import Presigner
from pipeline.webhooks import WebhookUrl

log = structlog.get_logger("mouthpiece.publish.discord")

READY_TEXT = "Your video is ready."
LINK_SECONDS = 7 * 24 * 3600  # the longest an S3 presigned URL may live
SAFETY_MARGIN = 0.9  # of the limit: container overhead and the encoder's overshoot


@dataclass(frozen=True)
class Message:
    """What to post: text, and the file to attach (None when the video is linked instead)."""

    content: str
    file: Attachment | None


class DiscordTarget:
    """Discord destinations (interaction replies, channel webhooks) as a ``Target``."""

    fault_point = "publish.after_post"

    def publish(self, ctx: Publication, destination: Destination, delivery: Delivery, intent: Intent) -> str:
        if not isinstance(destination, DiscordInteractionDestination | DiscordWebhookDestination):
            raise ConfigError(f"not a Discord destination: {destination.kind}")
        intent.write({"started": True})
        return post_video(
            ctx, destination, delivery.video, delivery.filename, delivery.seconds, delivery.avatar_name
        )

    def tell_failure(
        self,
        settings: Settings,
        destination: Destination,
        name: str,
        job_id: str,
        code: str | None,
        reason: str | None,
    ) -> None:
        if isinstance(destination, DiscordInteractionDestination | DiscordWebhookDestination):
            notify_discord_failure(settings, destination, job_id, code, reason)


def publish_to_discord(
    ctx: Publication,
    destination: DiscordInteractionDestination | DiscordWebhookDestination,
    video: Path,
    filename: str,
    manifest: Manifest,
) -> str:
    """Post one task's video to ``destination``; returns where it went, without secrets."""
    return post_video(ctx, destination, video, filename, manifest.media.audio_seconds, manifest.avatar_name)


def post_video(
    ctx: Publication,
    destination: DiscordInteractionDestination | DiscordWebhookDestination,
    video: Path,
    filename: str,
    seconds: float,
    avatar: str = "",
) -> str:
    """Post ``seconds`` of ``video`` (of ``avatar``, named in a batch's captions) to ``destination``;
    returns where it went, without secrets."""
    if isinstance(destination, DiscordInteractionDestination):
        return _to_interaction(ctx, destination, video, filename, seconds, avatar)
    if isinstance(destination, DiscordWebhookDestination):
        REDACTOR.add(destination.url.get_secret_value())
        hook = allowed_webhook(ctx.settings, destination.url, "the job's Discord webhook")
        limit = ctx.settings.discord_attachment_limit
        message = prepare(ctx, video, filename, limit, seconds, destination.content)
        posted = _post_webhook(ctx, hook, message)
        return f"discord:webhook:message:{posted}" if posted else "discord:webhook"
    raise ConfigError(f"not a Discord destination: {destination.kind}")


# --- interaction replies --------------------------------------------------------------------------------


def _to_interaction(
    ctx: Publication,
    dest: DiscordInteractionDestination,
    video: Path,
    filename: str,
    seconds: float,
    avatar: str,
) -> str:
    token = dest.token.get_secret_value()
    REDACTOR.add(token)
    where = f"discord:interaction:{dest.application_id}"
    if not token_alive(dest):
        return _fallback(ctx, dest, video, filename, seconds, where, "expired")
    limit = dest.attachment_size_limit or ctx.settings.discord_attachment_limit
    job = read_job(ctx.store, ctx.settings, ctx.job_id)
    batch = list(job.tasks) if job is not None and len(job.tasks) > 1 else []
    caption = f"**{avatar}** · video {batch.index(ctx.task) + 1} of {len(batch)}" if batch else None
    message = prepare(ctx, video, filename, limit, seconds, caption)
    try:
        with DiscordApi.from_settings(ctx.settings) as api:
            if batch:
                _post_followup(ctx, api, dest.application_id, token, message, filename, caption or "")
                api.edit_original(
                    dest.application_id, token, _batch_summary(ctx, batch), clear_attachments=True
                )
            else:
                _edit_with_file(ctx, api, dest.application_id, token, message, filename)
    except WebhookGone:
        return _fallback(ctx, dest, video, filename, seconds, where, "gone")
    return f"{where} (follow-up)" if batch else where


def _post_followup(
    ctx: Publication, api: DiscordApi, app: str, token: str, message: Message, filename: str, caption: str
) -> None:
    """One video of a batch as its own follow-up message under the reply (one attachment each: every
    message stays within Discord's size limit); a follow-up is posted at least once, like a webhook."""
    try:
        api.followup(app, token, message.content, message.file)
    except AttachmentTooLarge:
        api.followup(app, token, f"{caption}\n{link_text(ctx, filename)}")


def _batch_summary(ctx: Publication, tasks: list[str]) -> str:
    """The reply above a batch's follow-ups: how many of its videos are posted (this one included)."""
    posted = {ctx.task}
    for task in tasks:
        prefix = artifact_key(ctx.job_id, task, "published/discord_interaction-")
        if any(not i.key.endswith(".intent.json") for i in ctx.store.list(ctx.settings.bucket_work, prefix)):
            posted.add(task)
    if len(posted) >= len(tasks):
        return f"All {len(tasks)} videos are ready: one per character, below."
    return f"{len(posted)} of {len(tasks)} videos are ready (below); the others are on their way…"


def _edit_with_file(
    ctx: Publication, api: DiscordApi, app: str, token: str, message: Message, filename: str
) -> None:
    try:
        api.edit_original(app, token, message.content, message.file, clear_attachments=True)
    except AttachmentTooLarge:  # Discord's limit was lower than we were told: link instead
        api.edit_original(app, token, link_text(ctx, filename), clear_attachments=True)


def _fallback(
    ctx: Publication,
    dest: DiscordInteractionDestination,
    video: Path,
    filename: str,
    seconds: float,
    where: str,
    why: str,
) -> str:
    """The token expired or stopped working: post to the fallback webhook, if the job has one."""
    if dest.fallback_webhook is None:
        ctx.log.warning("discord_reply_unreachable", why=why, application_id=dest.application_id)
        if why == "gone":
            raise WebhookGone("the Discord reply can no longer be edited (the message or token is gone)")
        return f"{where} (token expired; not posted)"
    REDACTOR.add(dest.fallback_webhook.get_secret_value())
    hook = allowed_webhook(ctx.settings, dest.fallback_webhook, "the job's fallback webhook")
    limit = ctx.settings.discord_attachment_limit
    _post_webhook(ctx, hook, prepare(ctx, video, filename, limit, seconds))
    ctx.log.info("discord_fallback_used", why=why)
    return "discord:webhook (fallback)"


# --- channel webhooks -----------------------------------------------------------------------------------


def _post_webhook(ctx: Publication, hook: WebhookUrl, message: Message) -> str | None:
    """Post ``message``; the id of the Discord message made (recorded in the publication marker)."""
    try:
        return execute_webhook(hook, message.content, message.file)
    except AttachmentTooLarge:
        filename = message.file.filename if message.file else "video.mp4"
        return execute_webhook(hook, link_text(ctx, filename))


# --- fitting the video ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BitratePlan:
    video_kbps: int
    audio_kbps: int
    max_side: int | None


def bitrate_plan(limit_bytes: float, seconds: float, margin: float = SAFETY_MARGIN) -> BitratePlan | None:
    """Bitrates (and a size cap) that make ``seconds`` of video fit ``limit_bytes``; None if hopeless."""
    total_kbps = limit_bytes * 8 * margin / 1000 / max(seconds, 1.0)
    audio = 96 if total_kbps >= 600 else 64 if total_kbps >= 200 else 32
    video = int(total_kbps - audio)
    if video < 40:  # below this a face is mush: better send a link
        return None
    # fewer pixels at low bitrates: a smaller sharp picture beats a large blocky one
    max_side = None if video >= 1500 else 720 if video >= 600 else 480 if video >= 200 else 320
    return BitratePlan(video, audio, max_side)


def fit_video(ctx: Publication, video: Path, limit: int, seconds: float) -> Path | None:
    """``video`` if it fits ``limit`` bytes, else a re-encoded copy that does, else None."""
    if video.stat().st_size <= limit:
        return video
    seconds = seconds if seconds > 0 else probe(video).duration
    for attempt, share in enumerate((1.0, 0.7)):
        plan = bitrate_plan(limit * share, seconds)
        if plan is None:
            return None
        out = ctx.workdir / f"discord-fit-{attempt}.mp4"
        reencode_to_bitrate(ctx.settings, video, out, plan.video_kbps, plan.audio_kbps, plan.max_side)
        ctx.log.info("discord_video_refit", bytes=out.stat().st_size, limit=limit, kbps=plan.video_kbps)
        if out.stat().st_size <= limit:
            return out
    return None


def prepare(
    ctx: Publication, video: Path, filename: str, limit: int, seconds: float, intro: str | None = None
) -> Message:
    """The message for ``video``: attached when it can be made to fit, otherwise linked."""
    fitted = fit_video(ctx, video, limit, seconds)
    if fitted is None:
        text = link_text(ctx, filename)
        return Message(f"{intro}\n{text}" if intro else text, None)
    return Message(intro or READY_TEXT, Attachment(fitted, filename))


def link_text(ctx: Publication, filename: str) -> str:
    """A message pointing at the video in the outputs bucket (a presigned link when the store can)."""
    bucket, key = ctx.settings.bucket_outputs, output_key(ctx.job_id, filename)
    if isinstance(ctx.store, Presigner):
        try:
            url = ctx.store.presigned_url(bucket, key, LINK_SECONDS)
            return f"The video is too large to attach here. Download it (link valid for 7 days): {url}"
        except StorageError:
            pass  # signing failed (the S3 server is unreachable): say where the file is
    return f"The video is too large to attach here; it is saved as {bucket}/{key}."


# --- failures -----------------------------------------------------------------------------------------------


def notify_discord_failure(
    settings: Settings,
    destination: DiscordInteractionDestination | DiscordWebhookDestination,
    job_id: str,
    code: str | None,
    reason: str | None,
) -> None:
    """Tell the destination that its job failed, in the catalogue's words (best effort: never raises).
    A destination this deployment may not post to (``pipeline.destinations``) is told nothing."""
    text = discord_text(code, reason, job_id)
    try:
        if isinstance(destination, DiscordWebhookDestination):
            REDACTOR.add(destination.url.get_secret_value())
            execute_webhook(allowed_webhook(settings, destination.url), text)
        elif isinstance(destination, DiscordInteractionDestination):
            _notify_interaction(settings, destination, text)
    except MouthpieceError as exc:
        log.warning("discord_failure_notice_failed", reason=exc.reason)


def _notify_interaction(settings: Settings, dest: DiscordInteractionDestination, text: str) -> None:
    token = dest.token.get_secret_value()
    REDACTOR.add(token)
    if token_alive(dest):
        try:
            with DiscordApi.from_settings(settings) as api:
                api.edit_original(dest.application_id, token, text, clear_attachments=True)
            return
        except WebhookGone:
            pass
    if dest.fallback_webhook is not None:
        REDACTOR.add(dest.fallback_webhook.get_secret_value())
        execute_webhook(allowed_webhook(settings, dest.fallback_webhook), text)
