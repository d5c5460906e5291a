"""Reconciliation: nothing is lost, cluster-wide. Inputs without a job, and jobs stuck mid-pipeline, are
announced again.

Events can be lost before they reach the bus: an input written while no bus ran (``mouthpiece submit``
with no stack up, a file copied straight into the bucket directory), a server that dropped an event
(MinIO without a queue directory, a SeaweedFS filer killed before flushing its log), a stream that lost
a message. The sweep finds what such a loss leaves behind and re-announces it:

- **orphaned inputs**: trigger keys of the inputs bucket older than ``reconcile_grace`` whose job has no
  trace — no work objects and no durable record (``outputs/<job>/status.json``; so deleting old
  ``work/jobs/<id>`` never re-runs a finished job);
- **stuck manifests**: a stage's manifest whose next stage has no record after ``reconcile_stuck_after``;
- **stalled records**: a queued or running record whose heartbeat is older than ``reconcile_stuck_after``
  (its message was lost): its trigger is announced again.

Re-announcing is always harmless: the deterministic message id dedups it on the bus within the
duplicate window, and the runner skips work that is done or in progress elsewhere. Jobs with recent
activity, and finished jobs (remembered between sweeps in service mode), are not examined.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.contracts import StageRecord, State, job_id_for
from pipeline.errors import MouthpieceError, ObjectNotFound
from pipeline.events import build_event
from pipeline.keys import event_subject, job_prefix, parse_manifest_key, route, status_key
from pipeline.status import finished_before, read_records, write_record, write_status
from pipeline.storage.base import ObjectInfo, ObjectStore
from pipeline.storage.emitting import EmittingStore

log = structlog.get_logger("mouthpiece.reconcile")
_LIVE = (State.queued, State.running)


def orphans(store: ObjectStore, settings: Settings, now: datetime | None = None) -> list[ObjectInfo]:
    """Trigger objects in the inputs bucket with no trace of a job, older than the grace period."""
    now = now or datetime.now(UTC)
    found = []
    for prefix in ("jobs/", "audio/"):
        for info in store.list(settings.bucket_inputs, prefix):
            if route(settings, info.bucket, info.key) is None:
                continue
            if _age(info, now, settings.reconcile_grace) >= settings.reconcile_grace and not _has_job(
                store, settings, info
            ):
                found.append(info)
    return found


def _age(info: ObjectInfo, now: datetime, unknown: float) -> float:
    return (now - info.modified).total_seconds() if info.modified else unknown


def _has_job(store: ObjectStore, settings: Settings, info: ObjectInfo) -> bool:
    job_id = job_id_for(info.bucket, info.key, info.etag)
    if next(iter(store.list(settings.bucket_work, job_prefix(job_id))), None) is not None:
        return True
    return store.stat(settings.bucket_outputs, status_key(job_id)) is not None


# --- jobs stuck mid-pipeline -------------------------------------------------------------------------------


@dataclass
class JobObjects:
    """What the work bucket holds for one job, from one listing."""

    job_id: str
    manifests: dict[str, ObjectInfo] = field(default_factory=dict)  # key -> info
    records: dict[tuple[str, str], str] = field(default_factory=dict)  # (task, stage) -> key
    latest: datetime | None = None

    def add(self, info: ObjectInfo) -> None:
        if info.modified is not None and (self.latest is None or info.modified > self.latest):
            self.latest = info.modified
        rest = info.key.split("/", 2)[2]
        if parse_manifest_key(info.key) is not None:
            self.manifests[info.key] = info
        elif rest.startswith("records/") and rest.count(".") >= 2:
            task, stage = rest.removeprefix("records/").removesuffix(".json").split(".", 1)
            self.records[(task, stage)] = info.key


def group_jobs(infos: Iterable[ObjectInfo]) -> dict[str, JobObjects]:
    """Work-bucket objects under ``jobs/`` grouped by job id."""
    jobs: dict[str, JobObjects] = {}
    for info in infos:
        parts = info.key.split("/", 2)
        if len(parts) == 3 and parts[0] == "jobs":
            jobs.setdefault(parts[1], JobObjects(parts[1])).add(info)
    return jobs


class Reconciler:
    """The sweep, with memory of finished jobs between runs (service mode)."""

    def __init__(self, store: EmittingStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.finished: set[str] = set()

    def sweep(self, now: datetime | None = None) -> list[str]:
        """One pass: orphaned inputs, stuck manifests, stalled records. Returns what was announced."""
        now = now or datetime.now(UTC)
        announced = [
            info.key for info in orphans(self.store.inner, self.settings, now) if self.store.announce(info)
        ]
        for job in group_jobs(self.store.inner.list(self.settings.bucket_work, "jobs/")).values():
            announced.extend(self._job(job, now))
        if announced:
            log.info("reconciled", count=len(announced), keys=announced[:20])
        return announced

    def _job(self, job: JobObjects, now: datetime) -> list[str]:
        quiet = (
            job.latest is None or (now - job.latest).total_seconds() >= self.settings.reconcile_stuck_after
        )
        if job.job_id in self.finished or not quiet:
            return []
        if finished_before(self.store.inner, self.settings, job.job_id) is not None:
            self.finished.add(job.job_id)
            return []
        return self._stuck_manifests(job, now) + self._stalled_records(job, now)

    def _stuck_manifests(self, job: JobObjects, now: datetime) -> list[str]:
        out = []
        for key, info in job.manifests.items():
            where = parse_manifest_key(key)
            nxt = route(self.settings, info.bucket, key)
            if where is None or nxt is None or (where[1], nxt) in job.records:
                continue
            if _age(info, now, 0.0) >= self.settings.reconcile_stuck_after and self.store.announce(info):
                log.warning("stuck_manifest_announced", job_id=job.job_id, key=key, next_stage=nxt)
                out.append(key)
        return out

    def _stalled_records(self, job: JobObjects, now: datetime) -> list[str]:
        out = []
        for key in job.records.values():
            record = _read_record(self.store.inner, self.settings, key)
            if record is None or record.state not in _LIVE or not record.trigger:
                continue
            if (now - record.heartbeat_at).total_seconds() < self.settings.reconcile_stuck_after:
                continue
            bucket, _, trigger_key = record.trigger.partition("/")
            info = self.store.inner.stat(bucket, trigger_key)
            if info is not None and self.store.announce(info):
                log.warning(
                    "stalled_record_announced", job_id=job.job_id, stage=record.stage, trigger=record.trigger
                )
                out.append(trigger_key)
        return out


def _read_record(store: ObjectStore, settings: Settings, key: str) -> StageRecord | None:
    try:
        return StageRecord.model_validate_json(store.get(settings.bucket_work, key))
    except (ObjectNotFound, ValidationError):
        return None


def sweep(store: EmittingStore, settings: Settings) -> list[str]:
    """One reconciliation pass (``mouthpiece reconcile``, and every interval in ``mouthpiece up``)."""
    return Reconciler(store, settings).sweep()


async def reconcile_forever(reconciler: Reconciler, every: float, stop: asyncio.Event) -> None:
    """Sweep every ``every`` seconds until ``stop`` (``mouthpiece reconcile --every``). A failed sweep
    (the store or the bus is down) is logged and tried again at the next tick."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            announced = await asyncio.to_thread(reconciler.sweep)
        except (MouthpieceError, OSError) as exc:
            log.warning("reconcile_failed", error=getattr(exc, "reason", repr(exc)))
        else:  # every sweep, at info: an operator sees the service working, not only when it acts
            log.info(
                "reconcile_sweep", announced=len(announced), seconds=round(time.monotonic() - started, 3)
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


def retry_job(store: EmittingStore, settings: Settings, job_id: str) -> list[str]:
    """Run a failed job's failed stages again: mark their records queued, re-announce their triggers.

    For an operator who fixed the cause (uploaded the missing file, installed the model). Returns the
    triggers re-announced.
    """
    again: list[tuple[str, ObjectInfo, str]] = []  # (subject, trigger's object, trigger)
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
        again.append((subject, info, record.trigger))
    if again:  # the finished-job check reads outputs/<job>/status.json: say the job runs again first
        write_status(store.inner, settings, job_id)
    for subject, info, _ in again:
        store.publish(subject, build_event(info), f"retry-{uuid.uuid4().hex}")
    return [trigger for _, _, trigger in again]
