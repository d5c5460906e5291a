"""Job status: stage records are written once per (task, stage) and the status is folded from them.

Write-once records avoid lost updates when several workers finish tasks of one job at the same time;
``job_status`` reads a job's records and folds them into a ``JobStatus``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.contracts import (
    FINAL_STATES,
    JobRecord,
    JobSpec,
    JobStatus,
    QualityReport,
    QualitySummary,
    StageRecord,
    State,
    TaskStatus,
)
from pipeline.errors import ObjectNotFound, PermanentError
from pipeline.keys import (
    artifact_key,
    cancel_key,
    job_prefix,
    job_record_key,
    record_key,
    spec_key,
    status_key,
)
from pipeline.messages import for_operators, for_people
from pipeline.storage.base import ObjectStore

JOB_TASK = "job"


def write_record(store: ObjectStore, settings: Settings, record: StageRecord) -> None:
    key = record_key(record.job_id, record.task, record.stage)
    store.put(settings.bucket_work, key, record.model_dump_json().encode(), content_type="application/json")


def read_record(
    store: ObjectStore, settings: Settings, job_id: str, task: str, stage: str
) -> StageRecord | None:
    try:
        return StageRecord.model_validate_json(
            store.get(settings.bucket_work, record_key(job_id, task, stage))
        )
    except (ObjectNotFound, ValidationError):
        return None


def read_job(store: ObjectStore, settings: Settings, job_id: str) -> JobRecord | None:
    try:
        return JobRecord.model_validate_json(store.get(settings.bucket_work, job_record_key(job_id)))
    except (ObjectNotFound, ValidationError):
        return None


def read_spec(store: ObjectStore, settings: Settings, job_id: str) -> JobSpec:
    """The job's resolved spec (with destination secrets); ``PermanentError`` if there is none."""
    try:
        return JobSpec.model_validate_json(store.get(settings.bucket_work, spec_key(job_id)))
    except ObjectNotFound:
        raise PermanentError(f"job {job_id} has no spec (was it validated?)") from None
    except ValidationError as exc:
        raise PermanentError(f"job {job_id} has an unreadable spec: {exc}") from exc


def read_records(store: ObjectStore, settings: Settings, job_id: str) -> list[StageRecord]:
    records = []
    for info in store.list(settings.bucket_work, job_prefix(job_id) + "records/"):
        try:
            records.append(StageRecord.model_validate_json(store.get(settings.bucket_work, info.key)))
        except (ObjectNotFound, ValidationError):
            continue  # replaced or removed while listing
    return records


def job_status(store: ObjectStore, settings: Settings, job_id: str) -> JobStatus | None:
    """The job's current status, or None if nothing is known about it yet."""
    return status_from(
        store, settings, job_id, read_job(store, settings, job_id), read_records(store, settings, job_id)
    )


def status_from(
    store: ObjectStore, settings: Settings, job_id: str, job: JobRecord | None, records: list[StageRecord]
) -> JobStatus | None:
    """``job_status`` from the job record and stage records the caller has read already. A cancelled
    job changed last when it was cancelled, if no stage has reported since (its elapsed time runs to
    the cancel, not to the last progress report before it)."""
    marker = store.stat(settings.bucket_work, cancel_key(job_id))
    if job is None and not records and marker is None:
        return None
    status = with_quality(store, settings, fold(job_id, job, records, job.chain if job else settings.chain))
    if marker is not None and status.state != State.done:
        status.state, status.code = State.cancelled, "cancelled"
        status.reason = for_people("cancelled", None, job_id)
        if marker.modified is not None and (job is not None or records):
            status.updated_at = max(status.updated_at, marker.modified)
    return status


def is_cancelled(store: ObjectStore, settings: Settings, job_id: str) -> bool:
    """Whether someone cancelled the job (``mouthpiece cancel``, the console, the API)."""
    return store.stat(settings.bucket_work, cancel_key(job_id)) is not None


def write_status(store: ObjectStore, settings: Settings, job_id: str) -> JobStatus | None:
    """Fold the job's status and store it as ``outputs/<job>/status.json`` (what people and the
    finished-job check read)."""
    status = job_status(store, settings, job_id)
    if status is not None:
        store_status(store, settings, status)
    return status


def store_status(store: ObjectStore, settings: Settings, status: JobStatus) -> None:
    """Store a folded status as the job's durable record (``keys.status_key``)."""
    data = status.model_dump_json(indent=1).encode()
    store.put(settings.bucket_outputs, status_key(status.job_id), data, content_type="application/json")


def stored_status(store: ObjectStore, settings: Settings, job_id: str) -> JobStatus | None:
    """The job's durable record in the outputs bucket (written as it changes), or None."""
    try:
        return JobStatus.model_validate_json(store.get(settings.bucket_outputs, status_key(job_id)))
    except (ObjectNotFound, ValidationError):
        return None


def finished_before(store: ObjectStore, settings: Settings, job_id: str) -> JobStatus | None:
    """The stored status of a job that already finished (done, failed or cancelled), else None.

    ``outputs/<job>/status.json`` outlives ``work/`` (whose records a retention policy may delete): the
    first stage consults it so an old upload announced again never re-renders or re-posts."""
    status = stored_status(store, settings, job_id)
    return status if status is not None and status.finished else None


def list_jobs(store: ObjectStore, settings: Settings) -> list[str]:
    """Ids of the jobs the first stage has started on (a job record, or the first stage's own record:
    a job refused or cancelled while it was validated has no job record), in key order."""
    first = f"/records/{JOB_TASK}.{settings.chain[0]}.json"
    found = (
        info.key.split("/")[1]
        for info in store.list(settings.bucket_work, "jobs/")
        if (info.key.endswith("/record.json") and info.key.count("/") == 2) or info.key.endswith(first)
    )
    return list(dict.fromkeys(found))


# --- folding ------------------------------------------------------------------------------------------


def fold(job_id: str, job: JobRecord | None, records: Iterable[StageRecord], chain: list[str]) -> JobStatus:
    """Combine stage records into the job's status (pure)."""
    records = list(records)
    by_task: dict[str, list[StageRecord]] = {}
    for record in records:
        by_task.setdefault(record.task, []).append(record)
    head = _fold_task(by_task.pop(JOB_TASK, []), chain)
    tasks = {t: _fold_task(by_task.get(t, []), chain) for t in (job.tasks if job else by_task)}
    state = _job_state(head, tasks)
    return JobStatus(
        job_id=job_id,
        name=job.name if job else None,
        state=state,
        stage=_current_stage(head, tasks),
        reason=_reason(head, tasks),
        code=_code(head, tasks) if state in (State.failed, State.cancelled) else None,
        tasks=tasks,
        timings=_timings(records, chain),
        outputs=[o for t in tasks.values() for o in t.outputs],
        notes=list(dict.fromkeys(n for r in records for n in r.notes)),
        updated_at=_last_change(records, job),
    )


def _last_change(records: list[StageRecord], job: JobRecord | None) -> datetime:
    """When anything last happened to the job (so job lists sort by recency)."""
    moments = [r.finished_at or r.heartbeat_at for r in records] + ([job.created_at] if job else [])
    return max(moments, default=datetime.now(UTC))


def _fold_task(records: list[StageRecord], chain: list[str]) -> TaskStatus:
    if not records:
        return TaskStatus(state=State.queued, stage=None)
    order = {s: i for i, s in enumerate(chain)}
    latest = max(records, key=lambda r: (order.get(r.stage, -1), r.started_at))
    attempts = max(r.attempt for r in records)
    ended = next((r for r in records if r.state in (State.failed, State.cancelled)), None)
    if ended is not None:
        reason = for_operators(ended.code, ended.reason, ended.job_id)  # status: read by operators
        return TaskStatus(
            state=ended.state, stage=ended.stage, reason=reason, code=ended.code, attempts=attempts
        )
    outputs = [o for r in records for o in r.outputs]
    if latest.state == State.done and latest.stage == chain[-1]:
        return TaskStatus(state=State.done, stage=latest.stage, outputs=outputs, attempts=attempts)
    state = State.running if latest.state in (State.running, State.done) else latest.state
    return TaskStatus(state=state, stage=latest.stage, progress=latest.progress, attempts=attempts)


def _job_state(head: TaskStatus, tasks: dict[str, TaskStatus]) -> State:
    if head.state in (State.failed, State.cancelled):
        return head.state
    if not tasks:
        return State.running if head.state != State.queued else State.queued
    states = {t.state for t in tasks.values()}
    if states <= {State.done}:
        return State.done
    if State.cancelled in states and states <= FINAL_STATES:
        return State.cancelled
    if states <= FINAL_STATES:
        return State.failed
    return State.running


def _code(head: TaskStatus, tasks: dict[str, TaskStatus]) -> str | None:
    if head.code:
        return head.code
    return next((t.code for t in tasks.values() if t.code), None)


def _current_stage(head: TaskStatus, tasks: dict[str, TaskStatus]) -> str | None:
    active = [t.stage for t in tasks.values() if t.state in (State.running, State.queued) and t.stage]
    return active[0] if active else (head.stage if not tasks else next(iter(tasks.values())).stage)


def _reason(head: TaskStatus, tasks: dict[str, TaskStatus]) -> str | None:
    if head.reason and head.state in (State.failed, State.cancelled):
        return head.reason
    reasons = [t.reason for t in tasks.values() if t.state in (State.failed, State.cancelled) and t.reason]
    return "; ".join(dict.fromkeys(reasons)) or None


def _timings(records: list[StageRecord], chain: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in records:
        if r.seconds is not None:
            out[r.stage] = max(out.get(r.stage, 0.0), r.seconds)
    return {s: round(out[s], 3) for s in chain if s in out}


# --- quality reports (faces, issue 12): each task's quality.json, summarised into its status ----------


def with_quality(store: ObjectStore, settings: Settings, status: JobStatus) -> JobStatus:
    """``status`` with each task's quality summary (from its ``quality.json``, once enhance wrote it)
    and ``flagged`` when any task's video scored under the job's threshold."""
    for task, task_status in status.tasks.items():
        try:
            data = store.get(settings.bucket_work, artifact_key(status.job_id, task, "quality.json"))
            report = QualityReport.model_validate_json(data)
        except (ObjectNotFound, ValidationError):
            continue
        task_status.quality = QualitySummary(
            score=report.score, flagged=report.flagged, offset_ms=report.offset_ms, problems=report.problems
        )
    status.flagged = any(t.quality is not None and t.quality.flagged for t in status.tasks.values())
    return status
