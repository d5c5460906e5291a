"""Publishing to a job's destinations and telling them of a failure: one target per kind of destination
(``TARGETS``: a folder, Discord's interaction replies and channel webhooks; ``register_target`` adds a
kind). The publish stage and the runner both come here; no stage has a failure hook.

Each destination gets an intent before anything is sent and a marker after
(``published/<destination>.intent.json`` / ``.json``), so a redelivered message never publishes twice
and a run after a crash knows what may have been sent (docs/architecture.md: exactly once for folders
and interaction replies, at least once for channel webhooks).
"""

from __future__ import annotations

import hashlib
import json

import structlog

from pipeline.config import Settings
from pipeline.contracts import Destination
from pipeline.destinations.base import Delivery, Intent, Publication, Target, safe_name
from pipeline.destinations.discord import DiscordTarget
from pipeline.destinations.folder import FolderTarget
from pipeline.errors import ConfigError, PermanentError
from pipeline.faults import fault
from pipeline.keys import job_record_key, published_key
from pipeline.status import read_job, read_spec
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.publish")

TARGETS: dict[str, Target] = {
    "folder": FolderTarget(),
    "discord_interaction": DiscordTarget(),
    "discord_webhook": DiscordTarget(),
}
"""The target of each kind of destination a job spec may name (``Destination.kind``)."""


def register_target(kind: str, target: Target) -> None:
    """Add a kind of destination (its spec shape goes in ``pipeline.contracts.Destination``)."""
    TARGETS[kind] = target


def target_of(destination: Destination) -> Target:
    try:
        return TARGETS[destination.kind]
    except KeyError:
        raise ConfigError(f"no target publishes to a {destination.kind} destination") from None


def destination_id(destination: Destination) -> str:
    """A stable id for the idempotence marker (no secrets in it: a hash of the whole destination)."""
    digest = hashlib.sha256(destination.model_dump_json(context={"reveal_secrets": True}).encode())
    return f"{destination.kind}-{digest.hexdigest()[:16]}"


def publish_to(ctx: Publication, destination: Destination, delivery: Delivery) -> list[str]:
    """Publish to one destination exactly once: an intent is written before anything leaves, the
    marker after; a retry finds the marker (done), or the intent (the earlier run may have published:
    the target decides from what it can check). Where it went (nothing when it was done before)."""
    dest_id = destination_id(destination)
    marker = published_key(ctx.job_id, ctx.task, dest_id)
    if ctx.store.stat(ctx.settings.bucket_work, marker) is not None:
        ctx.log.info("already_published", destination=destination.kind)
        return []
    intent = Intent(ctx.store, ctx.settings.bucket_work, marker.removesuffix(".json") + ".intent.json")
    target = target_of(destination)
    where = target.publish(ctx, destination, delivery, intent)
    fault(ctx.settings, target.fault_point)
    ctx.save_bytes(json.dumps({"location": where}).encode(), "marker", "application/json", key=marker)
    ctx.log.info("published", destination=destination.kind, location=where)
    return [where]


def tell_failure(
    settings: Settings, store: ObjectStore, job_id: str, code: str | None, reason: str | None
) -> None:
    """Tell the job's destinations that it failed (or was cancelled), in the catalogue's words."""
    try:
        spec = read_spec(store, settings, job_id)
    except PermanentError:
        return  # failed before its spec was stored: the status record is all there is
    job = read_job(store, settings, job_id)
    name = safe_name(job.name if job else (spec.name or job_id))
    for destination in spec.destinations:
        target_of(destination).tell_failure(settings, destination, name, job_id, code, reason)
    log.info("failure_notified", job_id=job_id, record=job_record_key(job_id))
