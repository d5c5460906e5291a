"""The reconciliation sweep: inputs that have no job get their notification again.

An input can be orphaned when it was written while no bus was running (``mouthpiece submit`` with no
stack up, a file copied straight into the inputs bucket directory) or when publishing its event failed.
The sweep lists the trigger keys of the inputs bucket, computes each one's job id, and re-announces those
older than ``reconcile_grace`` with no job record and no stage record. Re-announcing is harmless: the
message id dedups it on the bus, and the runner skips work that is already done.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import structlog

from pipeline.config import Settings
from pipeline.contracts import job_id_for
from pipeline.events import build_event
from pipeline.keys import event_subject, job_prefix, route
from pipeline.storage.base import ObjectInfo, ObjectStore
from pipeline.storage.emitting import EmittingStore

log = structlog.get_logger("mouthpiece.reconcile")


def orphans(store: ObjectStore, settings: Settings, now: datetime | None = None) -> list[ObjectInfo]:
    """Trigger objects in the inputs bucket with no trace of a job, older than the grace period."""
    now = now or datetime.now(UTC)
    found = []
    for prefix in ("jobs/", "audio/"):
        for info in store.list(settings.bucket_inputs, prefix):
            if route(settings, info.bucket, info.key) is None:
                continue
            age = (now - info.modified).total_seconds() if info.modified else settings.reconcile_grace
            if age >= settings.reconcile_grace and not _has_job(store, settings, info):
                found.append(info)
    return found


def _has_job(store: ObjectStore, settings: Settings, info: ObjectInfo) -> bool:
    prefix = job_prefix(job_id_for(info.bucket, info.key, info.etag))
    return next(iter(store.list(settings.bucket_work, prefix)), None) is not None


def sweep(store: EmittingStore, settings: Settings) -> list[str]:
    """Re-announce every orphaned input; returns their keys."""
    keys = []
    for info in orphans(store.inner, settings):
        if store.announce(info):
            keys.append(info.key)
    if keys:
        log.info("reconciled_orphans", count=len(keys), keys=keys[:20])
    return keys


def retry_job(store: EmittingStore, settings: Settings, job_id: str) -> list[str]:
    """Run a failed job's failed stages again: mark their records queued, re-announce their triggers.

    For an operator who fixed the cause (uploaded the missing file, installed the model). Returns the
    triggers re-announced.
    """
    from pipeline.contracts import State
    from pipeline.status import read_records, write_record, write_status

    announced = []
    for record in read_records(store.inner, settings, job_id):
        if record.state != State.failed or not record.trigger:
            continue
        bucket, key = record.trigger.split("/", 1)
        info = store.inner.stat(bucket, key)
        if info is None:
            log.warning("retry_trigger_missing", job_id=job_id, trigger=record.trigger)
            continue
        subject = event_subject(settings, bucket, key)
        if subject is None:
            continue
        record.state, record.reason, record.error, record.code = State.queued, "retry requested", None, None
        record.runs = []  # a fresh budget of runs: the operator fixed the cause
        write_record(store.inner, settings, record)
        announced.append(record.trigger)
        # the finished-job check reads outputs/<job>/status.json: say the job runs again before it does
        write_status(store.inner, settings, job_id)
        store.publish(subject, build_event(info), f"retry-{uuid.uuid4().hex}")
    return announced
