"""What the console's pages show, read from the store: a job's stage graph, inputs and outputs; the
operations page's dead letters and model files. Nothing here returns a secret: specs are read only for
file names, options and destination kinds."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from pipeline import characters
from pipeline.config import Settings
from pipeline.contracts import (
    Character,
    DeadLetter,
    JobRecord,
    JobSpec,
    JobStatus,
    QualityReport,
    Run,
    StageRecord,
    State,
    offered,
)
from pipeline.errors import MouthpieceError, ObjectNotFound
from pipeline.keys import resolve_relative
from pipeline.messages import for_operators
from pipeline.modelfiles import find_model, known_models
from pipeline.reports import quality_sentences
from pipeline.status import JOB_TASK, read_job, read_records, read_spec, status_from
from pipeline.storage.base import ObjectStore

DEFAULT_AVATAR_KEY = "defaults/avatar.png"
SHOWN_OPTIONS = tuple(offered("page"))  # the options a job page lists, declared on JobOptions


@dataclass
class Box:
    """One stage of one task in the graph."""

    stage: str
    task: str
    state: str  # queued, running, done, failed, cancelled, skipped
    progress: float | None = None
    seconds: float | None = None
    reason: str | None = None
    attempts: int = 0
    runs: list[Run] = field(default_factory=list)
    started_at: datetime | None = None


@dataclass
class OutputFile:
    name: str
    size: int
    kind: str  # video, subtitles, report, other


@dataclass
class JobView:
    job_id: str
    status: JobStatus
    name: str
    created_at: datetime | None
    head: list[Box]
    rows: dict[str, list[Box]]
    avatars: dict[str, str]
    audio_name: str | None
    speech: str | None
    options: dict[str, Any]
    destinations: list[str]
    source: str | None
    outputs: list[OutputFile]
    quality: dict[str, Any] | None

    @property
    def video(self) -> OutputFile | None:
        return next((o for o in self.outputs if o.kind == "video"), None)

    @property
    def vtt(self) -> OutputFile | None:
        return next((o for o in self.outputs if o.name.endswith(".vtt")), None)


def job_view(
    store: ObjectStore, settings: Settings, job_id: str, progress: dict[str, float] | None = None
) -> JobView | None:
    """Everything the job page shows (one fold of its records), or None for an unknown job."""
    job = read_job(store, settings, job_id)
    records = read_records(store, settings, job_id)
    status = status_from(store, settings, job_id, job, records)
    if status is None:
        return None
    chain = job.chain if job else list(settings.chain)
    spec = _spec(store, settings, job_id)
    tasks = list(job.tasks) if job else sorted({r.task for r in records if r.task != JOB_TASK})
    head, rows = _graph(job_id, status, records, chain, tasks, progress or {})
    outputs = _outputs(store, settings, job_id)
    return JobView(
        job_id=job_id,
        status=status,
        name=status.name or (job.name if job else None) or (spec.name if spec else None) or job_id,
        created_at=job.created_at if job else None,
        head=head,
        rows=rows,
        avatars=dict(job.tasks) if job else {},
        audio_name=PurePosixPath(spec.audio).name if spec and spec.audio else None,
        speech=spec.speech if spec else None,
        options=_options(spec),
        destinations=[_destination(d) for d in spec.destinations] if spec else [],
        source=spec.source if spec else None,
        outputs=outputs,
        quality=_quality(store, settings, job_id, outputs),
    )


def _spec(store: ObjectStore, settings: Settings, job_id: str) -> JobSpec | None:
    try:
        return read_spec(store, settings, job_id)
    except MouthpieceError:
        return None


def _options(spec: JobSpec | None) -> dict[str, Any]:
    if spec is None:
        return {}
    data = spec.options.model_dump(mode="json")
    return {k: data[k] for k in SHOWN_OPTIONS if k in data and data[k] is not None}


def _destination(destination: Any) -> str:
    """A destination in words, without its secrets (webhook URLs and tokens are never shown)."""
    kind = destination.kind
    if kind == "folder":
        return f"folder {destination.path}" if destination.path else "the output folder"
    if kind == "discord_webhook":
        return "a Discord channel (webhook)"
    if kind == "discord_interaction":
        return "a Discord reply"
    return str(kind)


# --- the graph -------------------------------------------------------------------------------------------


def _graph(
    job_id: str,
    status: JobStatus,
    records: list[StageRecord],
    chain: list[str],
    tasks: list[str],
    progress: dict[str, float],
) -> tuple[list[Box], dict[str, list[Box]]]:
    """The first stage runs once per job (task ``job``); the others once per task (avatar)."""
    by_key = {(r.task, r.stage): r for r in records}
    ended = status.state in (State.cancelled, State.failed)
    head = [_box(job_id, chain[0], JOB_TASK, by_key, progress, blocked=ended)]
    head_blocked = head[0].state in ("failed", "cancelled", "skipped")
    rows: dict[str, list[Box]] = {}
    for task in tasks or ["a0"]:
        row: list[Box] = []
        for stage in chain[1:]:
            blocked = head_blocked or ended or any(b.state in ("failed", "cancelled", "skipped") for b in row)
            row.append(_box(job_id, stage, task, by_key, progress, blocked=blocked))
        rows[task] = row
    return head, rows


def _box(
    job_id: str,
    stage: str,
    task: str,
    by_key: dict[tuple[str, str], StageRecord],
    progress: dict[str, float],
    *,
    blocked: bool,
) -> Box:
    record = by_key.get((task, stage))
    if record is None:
        return Box(stage, task, "skipped" if blocked else "queued")
    state = record.state.value
    box = Box(
        stage, task, state, attempts=record.attempt, runs=list(record.runs), started_at=record.started_at
    )
    if record.state == State.running:
        box.progress = progress.get(f"{task}/{stage}", record.progress)
    elif record.state == State.done:
        box.seconds = record.seconds
    elif record.state in (State.failed, State.cancelled):
        box.reason = for_operators(record.code, record.reason, job_id)
    elif record.state == State.queued and blocked:
        box.state = "skipped"
    return box


# --- files ----------------------------------------------------------------------------------------------


def _kind(name: str) -> str:
    if name.endswith((".mp4", ".webm", ".mov")):
        return "video"
    if name.endswith((".vtt", ".srt")):
        return "subtitles"
    if "quality" in name and name.endswith(".json"):
        return "report"
    return "other"


def _outputs(store: ObjectStore, settings: Settings, job_id: str) -> list[OutputFile]:
    files = []
    for info in store.list(settings.bucket_outputs, f"{job_id}/"):
        name = info.key.split("/", 1)[1]
        if "/" not in name and name != "status.json":
            files.append(OutputFile(name, info.size, _kind(name)))
    return files


def output_names(store: ObjectStore, settings: Settings, job_id: str) -> set[str]:
    return {o.name for o in _outputs(store, settings, job_id)}


def _quality(
    store: ObjectStore, settings: Settings, job_id: str, outputs: list[OutputFile]
) -> dict[str, Any] | None:
    """The quality report: a ``*quality*.json`` beside the video."""
    for output in outputs:
        if output.kind == "report":
            try:
                data = json.loads(store.get(settings.bucket_outputs, f"{job_id}/{output.name}"))
            except (ObjectNotFound, ValueError):
                continue
            if isinstance(data, dict):
                return data
    return None


def quality_text(report: dict[str, Any]) -> list[str]:
    """The quality report as sentences with its figures (``pipeline.reports``); none for a file that
    is not a report this version reads (the raw rows still show it)."""
    try:
        return quality_sentences(QualityReport.model_validate(report))
    except ValidationError:
        return []


def flatten(report: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A report as (name, value) rows: nested objects become dotted names, lists are counted."""
    rows: list[tuple[str, str]] = []
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(flatten(value, name + "."))
        elif isinstance(value, list):
            rows.append((name, f"{len(value)} items"))
        elif isinstance(value, float):
            rows.append((name, f"{value:.3g}"))
        else:
            rows.append((name, str(value)))
    return rows[:60]


def input_key(store: ObjectStore, settings: Settings, job_id: str, which: str) -> str | None:
    """The inputs-bucket key of a job's voice clip (``audio``) or of a task's avatar (``a0``, ...)."""
    job: JobRecord | None = read_job(store, settings, job_id)
    spec = _spec(store, settings, job_id)
    if job is None or spec is None:
        return None
    try:
        if which == "audio":
            return resolve_relative(job.source_key, spec.audio) if spec.audio else None
        if which not in job.tasks:
            return None
        if not spec.avatars:
            return DEFAULT_AVATAR_KEY
        index = int(which[1:])
        avatars = characters.resolve(store, settings, spec.library, spec.avatars)  # character:<name>
        if index >= len(avatars):
            return None
        chosen = avatars[index]
        return chosen.media if isinstance(chosen, Character) else resolve_relative(job.source_key, chosen)
    except (MouthpieceError, ValueError):
        return None


# --- operations ---------------------------------------------------------------------------------------------


def dead_letters(store: ObjectStore, settings: Settings, limit: int = 100) -> list[DeadLetter]:
    """The newest dead letters, newest first (their payloads are bucket notifications: no secrets)."""
    letters = []
    for info in store.list(settings.bucket_work, "dead-letter/"):
        try:
            letters.append(DeadLetter.model_validate_json(store.get(settings.bucket_work, info.key)))
        except (ObjectNotFound, ValidationError):
            continue
    letters.sort(key=lambda letter: letter.at, reverse=True)
    return letters[:limit]


@dataclass
class ModelRow:
    name: str
    used_by: str
    state: str
    """present, packaged (installed with mouthpiece, unpacked on first use) or missing"""
    size: int | None
    optional: bool
    without: str
    """What happens without the file (shown when it is missing)."""

    @property
    def present(self) -> bool:
        return self.state != "missing"


def model_rows(settings: Settings) -> list[ModelRow]:
    """Model files and where they are (no hashing: this is for a page view)."""
    rows = []
    for model in known_models(settings):
        state, _, size = find_model(settings, model)
        rows.append(ModelRow(model.name, model.used_by, state, size, model.optional, model.without))
    return rows
