"""The bucket/key layout and the routing table, in one place.

Inputs bucket (what people and ingresses upload):

    jobs/<path>.json|.yaml|.yml        a job spec: triggers validate
    audio/<path>                       a voice clip alone: triggers validate (default avatar)
    defaults/avatar.png                the default avatar
    characters/<library>/<name>.json   a character of a library (pipeline.characters): record
    characters/<library>/<name>/<file> its picture or clip
    <anything else>                    media named by job specs (relative to the spec's folder)

Work bucket (artifacts; written by stages):

    jobs/<job>/record.json                           JobRecord (tasks of the job; the input spec is spec.json)
    jobs/<job>/spec.json                             the resolved job spec (holds destination secrets)
    jobs/<job>/records/<task>.<stage>.json           StageRecord: status of one task in one stage
    jobs/<job>/<task>/<artifact>                     per-task artifacts (rendered.mp4, final.mp4, ...)
    jobs/<job>/<task>/<stage>[.<pool>].manifest.json Manifest: written last; triggers the next stage
                                                     (the pool of the next stage: render's neural pool)
    jobs/<job>/cancel.json                           the job was cancelled (who, when)
    jobs/<job>/<task>/published/<destination>.json   idempotence marker of one publication
    cache/media/<sha256>/<file>                      content-addressed normalized media
    cache/faces/<sha256>.json                        content-addressed face tracks
    stats/timings.json                               stage timings measured here (pipeline.eta)
    discord/members/<guild>/<user>.json              a member's recent jobs (the in-flight limit)
    dead-letter/<stage>/<message id>.json            DeadLetter records
    console/secret.json                              the console's signing secret (generated once)
    console/sessions/<sha256 of session id>.json     a console sign-in (deleted or revoked at sign-out)

Outputs bucket (what people get):

    <job>/<name>.mp4, <job>/<name>.srt, <job>/<name>.vtt, <job>/status.json

Routing: a storage event is routed by bucket, key prefix and key suffix, the only filters MinIO
notification rules have. ``routing_table`` gives the rules for a chain; the manifest a stage writes routes
to the next stage of the chain, to the pool of that stage the job needs: jobs with a neural renderer go
to render's ``neural`` pool (GPU workers), others to its default pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from posixpath import normpath

from pipeline.config import Settings
from pipeline.contracts import JobSpec
from pipeline.errors import InvalidKey

MAX_KEY_BYTES = 1024
JOB_SPEC_SUFFIXES = (".json", ".yaml", ".yml")
MANIFEST_SUFFIX = ".manifest.json"
DEFAULT_POOL = "default"
STAGE_POOLS: dict[str, tuple[str, ...]] = {"render": ("neural", "musetalk")}
"""Stages whose work goes to separate worker pools besides the default one."""
NEURAL_RENDERERS = frozenset({"wav2lip"})
"""Renderers that need a GPU: their jobs go to render's ``neural`` pool."""
RENDERER_POOLS = {"musetalk": "musetalk"}
"""Renderers with a GPU pool of their own (other weights and memory than wav2lip's workers)."""
JOB_ID_PATTERN = r"j[0-9a-f]{19}"
"""A job id inside larger key patterns (always matched with ``fullmatch``); alone, use ``is_job_id``."""
_JOB_ID = re.compile(JOB_ID_PATTERN)
_TASK = re.compile(r"job|a\d{1,3}")
_MANIFEST = re.compile(rf"jobs/({JOB_ID_PATTERN})/([a-z0-9]+)/([a-z]+)(?:\.[a-z]+)?\.manifest\.json")
# Every id pattern is matched with ``fullmatch``: ``$`` also matches before a trailing newline, so
# ``re.match(r"^j...$", "j...\n")`` accepts an id that is not one (and a key with a newline in it).


def slug(text: str, limit: int = 40, *, keep: str = "", fallback: str = "job", letters: str = "ascii") -> str:
    """A short name safe in keys and file names: letters and digits (ASCII, or any script with
    ``letters="any"``), '-', '_' and the characters in ``keep``; runs of anything else become '-'."""
    allowed = set("-_" + keep)
    ok = (lambda c: c.isascii() and c.isalnum()) if letters == "ascii" else str.isalnum
    cleaned = re.sub(r"-{2,}", "-", "".join(c if ok(c) or c in allowed else "-" for c in text))
    return cleaned.strip("-" + keep)[:limit] or fallback


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``InvalidKey``."""
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key must be 1..{MAX_KEY_BYTES} bytes", key=key[:80])
    if "\x00" in key:
        raise InvalidKey("object key contains a NUL byte", key=key.replace("\x00", "\\0")[:80])
    if key.startswith("/") or key.startswith("\\") or re.match(r"^[A-Za-z]:", key):
        raise InvalidKey(f"object key {key!r} is absolute", key=key)
    parts = key.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts) or "" in parts[:-1]:
        raise InvalidKey(f"object key {key!r} has an empty, '.' or '..' segment", key=key)
    if key.endswith("/"):
        raise InvalidKey(f"object key {key!r} names a folder, not an object", key=key)
    return key


def resolve_relative(base_key: str, ref: str) -> str:
    """The key that ``ref`` (as written in the spec at ``base_key``) names; never escapes the bucket."""
    check_key(ref)
    folder = base_key.rsplit("/", 1)[0] if "/" in base_key else ""
    return check_key(normpath(f"{folder}/{ref}") if folder else ref)


# --- inputs bucket: the character libraries (pipeline.characters) ----------------------------------

DEFAULT_LIBRARY = "default"
_LIBRARY = re.compile(r"^[a-z0-9-]{1,40}$")


def check_library(library: str) -> str:
    """``library`` if it is a library id (``default``, ``guild-<id>``), else ``InvalidKey``."""
    if not _LIBRARY.match(library):
        raise InvalidKey(f"{library!r} is not a character library id", key=library[:80])
    return library


def characters_prefix(library: str) -> str:
    return f"characters/{check_library(library)}/"


def character_key(library: str, handle: str) -> str:
    """The record of character ``handle`` (its name folded by ``pipeline.characters.handle``)."""
    return check_key(characters_prefix(library) + f"{handle}.json")


def character_media_key(library: str, handle: str, filename: str) -> str:
    return check_key(characters_prefix(library) + f"{handle}/{filename}")


def is_job_id(text: str) -> bool:
    """Whether ``text`` is a job id (j + 19 hex digits, the whole of it), as folder and key names carry
    it. The one check of a job id: every caller (keys, console, CLI, index) goes through it."""
    return isinstance(text, str) and _JOB_ID.fullmatch(text) is not None


def is_task(text: str) -> bool:
    """Whether ``text`` is a task name (``job``, ``a0``...``a999``), the whole of it."""
    return _TASK.fullmatch(text) is not None


def check_job_id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise InvalidKey(f"{job_id!r} is not a job id (j + 19 hex digits)", key=job_id)
    return job_id


# --- work bucket layout ---------------------------------------------------------------------------


def job_prefix(job_id: str) -> str:
    return f"jobs/{check_job_id(job_id)}/"


def job_record_key(job_id: str) -> str:
    return job_prefix(job_id) + "record.json"


def spec_key(job_id: str) -> str:
    return job_prefix(job_id) + "spec.json"


def record_key(job_id: str, task: str, stage: str) -> str:
    return job_prefix(job_id) + f"records/{task}.{stage}.json"


def artifact_key(job_id: str, task: str, name: str) -> str:
    return job_prefix(job_id) + f"{task}/{name}"


def manifest_key(job_id: str, task: str, stage: str, pool: str = DEFAULT_POOL) -> str:
    """Where ``stage`` writes a task's manifest; ``pool`` is the pool of the stage it triggers."""
    middle = "" if pool == DEFAULT_POOL else f".{pool}"
    return artifact_key(job_id, task, f"{stage}{middle}{MANIFEST_SUFFIX}")


def cancel_key(job_id: str) -> str:
    return job_prefix(job_id) + "cancel.json"


def published_key(job_id: str, task: str, destination_id: str) -> str:
    return artifact_key(job_id, task, f"published/{destination_id}.json")


def timings_key() -> str:
    """The stage timings this installation measured (``pipeline.eta``)."""
    return "stats/timings.json"


def member_jobs_key(guild: str, user: str) -> str:
    """The jobs a Discord member started lately (``pipeline.discord.fairness``)."""
    return check_key(f"discord/members/{slug(guild, 30)}/{slug(user, 30)}.json")


def media_cache_key(digest: str, name: str) -> str:
    return f"cache/media/{digest}/{name}"


def faces_cache_key(digest: str) -> str:
    return f"cache/faces/{digest}.json"


def dead_letter_key(stage: str, message_id: str) -> str:
    return f"dead-letter/{stage}/{message_id}.json"


def console_secret_key() -> str:
    """The console's signing secret (work bucket): every replica sharing the store signs with it."""
    return "console/secret.json"


CONSOLE_SESSIONS = "console/sessions/"


def console_session_key(digest: str) -> str:
    """A console sign-in, named by the SHA-256 (hex) of its session id, never by the id itself."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidKey("a console session key is a SHA-256 hex digest", key=digest[:80])
    return f"{CONSOLE_SESSIONS}{digest}.json"


def output_key(job_id: str, filename: str) -> str:
    return f"{check_job_id(job_id)}/{filename}"


def status_key(job_id: str) -> str:
    """The job's durable record in the outputs bucket (outlives ``work/``)."""
    return output_key(job_id, "status.json")


def parse_manifest_key(key: str) -> tuple[str, str, str] | None:
    """(job_id, task, stage) of a manifest key, or None if ``key`` is not one."""
    m = _MANIFEST.fullmatch(key)
    if not m or not is_task(m.group(2)):
        return None
    return m.group(1), m.group(2), m.group(3)


# --- routing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One notification rule: objects created in ``bucket`` matching prefix and suffix go to ``stage``."""

    bucket: str
    prefix: str
    suffix: str
    stage: str
    pool: str = DEFAULT_POOL

    def matches(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix) and key.endswith(self.suffix)


def subject_for(settings: Settings, stage: str, pool: str = DEFAULT_POOL) -> str:
    """The subject of a stage's pool: ``<prefix>.stage.<stage>``, or ``...<stage>.<pool>``."""
    base = f"{settings.subject_prefix}.stage.{stage}"
    return base if pool == DEFAULT_POOL else f"{base}.{pool}"


def pools_of(stage: str) -> tuple[str, ...]:
    """Every pool of ``stage``, the default one first."""
    return (DEFAULT_POOL, *STAGE_POOLS.get(stage, ()))


def pool_for(stage: str, spec: JobSpec | None) -> str:
    """The pool of ``stage`` that a job needs (render: neural for a neural renderer)."""
    if stage == "render" and spec is not None and spec.options.renderer in RENDERER_POOLS:
        return RENDERER_POOLS[spec.options.renderer]
    if stage == "render" and spec is not None and spec.options.renderer in NEURAL_RENDERERS:
        return "neural"
    return DEFAULT_POOL


def progress_subject(settings: Settings, job_id: str = "*") -> str:
    return f"{settings.subject_prefix}.progress.{job_id}"


def cancel_subject(settings: Settings, job_id: str = "*") -> str:
    """Where a cancel is announced to the workers running the job's stages (plain NATS)."""
    return f"{settings.subject_prefix}.control.cancel.{job_id}"


def routing_table(settings: Settings) -> list[Route]:
    """All rules for the configured chain: inputs feed validate, each manifest feeds the next stage."""
    first = settings.chain[0]
    routes = [Route(settings.bucket_inputs, "jobs/", sfx, first) for sfx in JOB_SPEC_SUFFIXES]
    routes.append(Route(settings.bucket_inputs, "audio/", "", first))
    for here, nxt in zip(settings.chain, settings.chain[1:], strict=False):
        for pool in pools_of(nxt):
            middle = "" if pool == DEFAULT_POOL else f".{pool}"
            routes.append(
                Route(settings.bucket_work, "jobs/", f"/{here}{middle}{MANIFEST_SUFFIX}", nxt, pool)
            )
    return routes


def find_route(settings: Settings, bucket: str, key: str) -> Route | None:
    """The rule an object created at bucket/key matches, or None."""
    for rule in routing_table(settings):
        if rule.matches(bucket, key):
            return rule
    return None


def route(settings: Settings, bucket: str, key: str) -> str | None:
    """The stage an object created at bucket/key triggers, or None."""
    rule = find_route(settings, bucket, key)
    return rule.stage if rule else None


def event_subject(settings: Settings, bucket: str, key: str) -> str | None:
    """The subject the created-event of bucket/key is published on, or None if nothing routes it."""
    rule = find_route(settings, bucket, key)
    return subject_for(settings, rule.stage, rule.pool) if rule else None
