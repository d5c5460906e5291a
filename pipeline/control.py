"""Operators' and users' controls over a job: cancel.

A cancel writes ``jobs/<job>/cancel.json`` (durable: a stage that has not started yet is never run) and
announces it on ``<prefix>.control.cancel.<job>`` (live: a running stage stops at its next progress
report). The job's destinations are told once, here; nothing more is published for it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import structlog

from pipeline.bus import Bus
from pipeline.config import Settings
from pipeline.contracts import JobStatus, State
from pipeline.destinations.targets import tell_failure
from pipeline.keys import cancel_key, cancel_subject, check_job_id
from pipeline.status import is_cancelled, job_status, write_status
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.control")


async def cancel_job(store: ObjectStore, settings: Settings, bus: Bus, job_id: str, by: str) -> JobStatus:
    """Cancel ``job_id`` (``by`` says who, for the record); returns its status afterwards. A finished
    job is left as it is; cancelling twice tells the destinations once."""
    check_job_id(job_id)
    status = await asyncio.to_thread(job_status, store, settings, job_id)
    if status is not None and status.finished:
        return status
    if not await asyncio.to_thread(is_cancelled, store, settings, job_id):
        marker = json.dumps({"by": by, "at": datetime.now(UTC).isoformat()}).encode()
        await asyncio.to_thread(store.put, settings.bucket_work, cancel_key(job_id), marker)
        await bus.notify(cancel_subject(settings, job_id), job_id.encode())
        await asyncio.to_thread(_tell, store, settings, job_id)
        log.info("job_cancelled", job_id=job_id, by=by)
    # a job whose upload has not been looked at yet has no status: the marker still stops it
    return await asyncio.to_thread(write_status, store, settings, job_id) or JobStatus(
        job_id=job_id, state=State.cancelled
    )


def _tell(store: ObjectStore, settings: Settings, job_id: str) -> None:
    try:
        tell_failure(settings, store, job_id, "cancelled", "the job was cancelled")
    except Exception:  # telling is best effort; the job is cancelled either way
        log.exception("cancel_notice_failed", job_id=job_id)
