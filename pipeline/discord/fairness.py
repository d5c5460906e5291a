"""One member cannot fill the queue: at most ``member_jobs_in_flight`` unfinished jobs per Discord member.

The jobs a member asked for are kept in the work bucket (``discord/members/<guild>/<user>.json``,
``pipeline.contracts.MemberJobs``), so every ingress replica and a restarted one count the same. A job
counts until its status is final; one with no status yet counts for ``PENDING_HOURS`` (it may still be
waiting for a worker), then is forgotten. Two requests of one member in the same instant may both pass:
the limit keeps the queue fair, it is not a lock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.contracts import MemberJobs
from pipeline.errors import InvalidInput, MouthpieceError
from pipeline.keys import member_jobs_key
from pipeline.status import job_status
from pipeline.storage.base import ObjectStore

PENDING_HOURS = 6.0


def _read(store: ObjectStore, settings: Settings, guild: str, user: str) -> MemberJobs:
    key = member_jobs_key(guild, user)
    if store.stat(settings.bucket_work, key) is None:
        return MemberJobs()
    try:
        return MemberJobs.model_validate_json(store.get(settings.bucket_work, key))
    except (ValidationError, MouthpieceError):
        return MemberJobs()


def in_flight(store: ObjectStore, settings: Settings, guild: str, user: str) -> list[str]:
    """The member's jobs that have not finished (oldest first)."""
    now = datetime.now(UTC)
    busy = []
    for job_id, asked in sorted(_read(store, settings, guild, user).jobs.items(), key=lambda kv: kv[1]):
        status = job_status(store, settings, job_id)
        if status is None:
            if now - asked < timedelta(hours=PENDING_HOURS):
                busy.append(job_id)
        elif not status.finished:
            busy.append(job_id)
    return busy


def check_member(store: ObjectStore, settings: Settings, guild: str, user: str, adding: int = 1) -> None:
    """``InvalidInput`` (code ``member_busy``) when the member already has their limit of jobs in flight."""
    limit = settings.member_jobs_in_flight
    if limit <= 0:
        return
    busy = in_flight(store, settings, guild, user)
    if len(busy) + adding > limit:
        raise InvalidInput(
            f"you already have {len(busy)} video job{'s' if len(busy) != 1 else ''} in the making; one "
            f"member may have {limit} at a time: wait until one is finished, then send this again",
            code="member_busy",
        )


def remember(store: ObjectStore, settings: Settings, guild: str, user: str, job_id: str) -> None:
    """Add a job the member asked for (and forget their finished ones)."""
    record = _read(store, settings, guild, user)
    keep = set(in_flight(store, settings, guild, user))
    jobs = {j: t for j, t in record.jobs.items() if j in keep}
    jobs[job_id] = datetime.now(UTC)
    store.put(
        settings.bucket_work, member_jobs_key(guild, user), MemberJobs(jobs=jobs).model_dump_json().encode(),
        content_type="application/json",
    )  # fmt: skip
