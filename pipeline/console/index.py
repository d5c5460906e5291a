"""The console's job index: a summary per job in memory, kept current by the bus, so a page of the job
list never reads the store.

Built once at start (in a thread: one directory scan on the local store, then per job its stored
``outputs/<job>/status.json`` when it finished — the fold is already done — or a fold of its records when
it did not), then kept current by what the bus says: progress notes (``<prefix>.progress.*``), the
storage events of new specs and manifests (a plain subscription to ``<prefix>.stage.>`` gets a copy of
every JetStream message without taking it from the workers), and cancels. Only the jobs named by those
messages are folded again, plus, every few seconds, the jobs still running (a stage's end that starts
no other stage — the last one, a failure — sends no event). Listeners (server-sent event streams)
get a ``job`` message per changed summary and a ``progress`` message per note.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from pipeline.bus import Bus
from pipeline.config import Settings
from pipeline.contracts import FINAL_STATES, FailedDrop, Progress, StageRecord, State, job_id_for
from pipeline.drops import list_failed_drops
from pipeline.errors import MouthpieceError, ObjectNotFound
from pipeline.eta import job_line, renderer_of
from pipeline.events import parse_event
from pipeline.keys import (
    cancel_subject,
    is_job_id,
    job_record_key,
    parse_manifest_key,
    progress_subject,
    spec_key,
)
from pipeline.status import finished_before, list_jobs, read_job, read_records, status_from
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.console")
ACTIVE_EVERY = 2.0
"""Seconds between re-folds of the jobs still running (their last stage's end sends no event)."""
DROPS_EVERY = 10.0
RESCAN_EVERY = 60.0
"""Seconds between scans for jobs the bus did not tell us about (made while we were away)."""


@dataclass
class JobSummary:
    """One line of the job list."""

    job_id: str
    name: str
    source: str
    state: str
    stage: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    tasks: int = 1
    outputs: list[str] = field(default_factory=list)
    progress: float | None = None
    flagged: bool = False
    """A video scored under the job's quality threshold (``min_quality``)."""
    stopping: bool = False
    """Cancelled, but a stage has not stopped yet (it does at its next progress report)."""
    eta: str | None = None
    """While it runs: "video 2 of 5 · render 40 % · about 1 min 30 s left" (``pipeline.eta``)."""

    @property
    def finished(self) -> bool:
        return self.state in {s.value for s in FINAL_STATES} and not self.stopping

    def elapsed(self, now: datetime | None = None) -> float:
        end = self.updated_at if self.finished else (now or datetime.now(UTC))
        return max(0.0, (end - self.created_at).total_seconds())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["updated_at"] = self.updated_at.isoformat()
        data["elapsed"] = round(self.elapsed(), 1)
        return data


def source_label(source: str | None) -> str:
    """Where a job came from, in one word: folder, console, CLI, Discord, bucket."""
    text = (source or "").lower()
    if text.startswith("discord"):
        return "Discord"
    if text in ("folder", "console"):
        return text
    if text == "cli":
        return "CLI"
    if text:
        return text[:20]
    return "bucket"


def _spec_source(store: ObjectStore, settings: Settings, job_id: str) -> tuple[str | None, str | None]:
    """Only the ``source`` and ``name`` fields of the stored spec (the spec holds destination secrets:
    nothing else of it is kept); the name is the drop's or file's, shown before validate has written
    the job record (a job running or failed in validate)."""
    try:
        data = json.loads(store.get(settings.bucket_work, spec_key(job_id)))
    except (ObjectNotFound, ValueError, MouthpieceError):
        return None, None
    fields = [data.get(k) if isinstance(data, dict) else None for k in ("source", "name")]
    source, name = (value if isinstance(value, str) else None for value in fields)
    return source, name


def summarize(store: ObjectStore, settings: Settings, job_id: str) -> JobSummary | None:
    """The job's summary, or None when nothing is known of it yet. A finished job costs three small
    reads (its stored status, job record and spec source); a running one a fold of its records."""
    job = read_job(store, settings, job_id)
    records: list[StageRecord] | None = None
    status = finished_before(store, settings, job_id)
    if status is None:
        records = read_records(store, settings, job_id)
        status = status_from(store, settings, job_id, job, records)
    if status is None:
        return None
    if job is None and not (records if records is not None else read_records(store, settings, job_id)):
        return None  # only a cancel marker (a job not seen yet, or no job at all): not a job to list
    stopping = status.state == State.cancelled and any(
        r.state == State.running
        for r in (records if records is not None else read_records(store, settings, job_id))
    )
    if job is None and records is None:  # before validate's job record: the first stage's start
        records = read_records(store, settings, job_id)
    first = min((r.started_at for r in records or []), default=None)
    created = job.created_at if job else (first or status.updated_at)
    running = [
        t.progress for t in status.tasks.values() if t.state == State.running and t.progress is not None
    ]
    eta_line = None
    if records is not None and status.state in (State.queued, State.running):
        eta_line = job_line(store, settings, job_id, job, records, renderer_of(store, settings, job_id))
    source, spec_name = _spec_source(store, settings, job_id)
    return JobSummary(
        eta=eta_line,
        job_id=job_id,
        name=status.name or (job.name if job else None) or spec_name or job_id,
        source=source_label(source),
        state=status.state.value,
        stage=status.stage,
        reason=status.reason,
        created_at=created,
        updated_at=status.updated_at,
        tasks=max(1, len(status.tasks)),
        outputs=list(status.outputs),
        progress=min(running) if running else None,
        flagged=bool(getattr(status, "flagged", False)),
        stopping=stopping,
    )


def job_ids(store: ObjectStore, settings: Settings) -> list[str]:
    """Ids of the jobs the first stage has started on (``status.list_jobs``). On the local store one
    directory scan (a listing would stat every artifact of every job); elsewhere the store's listing."""
    root = _local_root(store)
    if root is None:
        return list_jobs(store, settings)
    folder = root / settings.bucket_work / "jobs"
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if is_job_id(e.name)]
    except FileNotFoundError:
        return []
    record = job_record_key(names[0]).rsplit("/", 1)[1] if names else ""
    first = f"records/job.{settings.chain[0]}.json"  # refused or cancelled while validated: no job record
    return [n for n in names if (folder / n / record).is_file() or (folder / n / first).is_file()]


def _local_root(store: object) -> Path | None:
    for _ in range(5):  # through wrappers (EmittingStore, ObservedStore) to the store itself
        root = getattr(store, "root", None)
        if isinstance(root, Path) and hasattr(store, "path_of"):
            return root
        store = getattr(store, "inner", None)
        if store is None:
            return None
    return None


class JobIndex:
    """Summaries of all jobs, newest first on request; see the module docstring."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store
        self.entries: dict[str, JobSummary] = {}
        self.drops: list[FailedDrop] = []
        self.loaded = False
        self.progress: dict[str, dict[str, float]] = {}
        """job id -> "task/stage" -> fraction, from the latest progress notes."""
        self._dirty: set[str] = set()
        self._waiting: dict[str, float] = {}
        """Jobs announced by the bus that have no record yet: folded again until they do (or 5 min)."""
        self._listeners: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rescan_every = RESCAN_EVERY
        self._closed = False

    # --- reading --------------------------------------------------------------------------------------
    def page(self, number: int, size: int) -> tuple[list[JobSummary], int]:
        """Page ``number`` (1-based) of the jobs, newest first, and how many jobs there are."""
        ordered = sorted(self.entries.values(), key=lambda s: (s.created_at, s.job_id), reverse=True)
        start = (max(1, number) - 1) * size
        return ordered[start : start + size], len(ordered)

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.state for s in self.entries.values()))

    def get(self, job_id: str) -> JobSummary | None:
        return self.entries.get(job_id)

    # --- building and keeping current ---------------------------------------------------------------
    def load(self) -> None:
        """Summarize every job (blocking; run in a thread)."""
        started = time.monotonic()
        for job_id in job_ids(self.store, self.settings):
            if job_id not in self.entries:
                self._put(job_id)
        self.drops = list_failed_drops(self.store, self.settings)
        self.loaded = True
        log.info("console_index_loaded", jobs=len(self.entries), seconds=round(time.monotonic() - started, 3))

    def _put(self, job_id: str) -> JobSummary | None:
        try:
            summary = summarize(self.store, self.settings, job_id)
        except MouthpieceError as exc:  # the store is away: keep what we had
            log.warning("console_summary_failed", job_id=job_id, reason=exc.reason)
            return None
        if summary is not None:
            self.entries[job_id] = summary
        return summary

    def placeholder(self, job_id: str, name: str, source: str) -> None:
        """A job just submitted here: listed at once, as queued, until its first record says more."""
        now = datetime.now(UTC)
        self.entries.setdefault(job_id, JobSummary(job_id, name, source, "queued", None, None, now, now))
        self.touch(job_id)

    def touch(self, job_id: str) -> None:
        """Fold ``job_id`` again soon (a message said something happened to it)."""
        if is_job_id(job_id):
            self._dirty.add(job_id)
            self._wake.set()

    async def start(self, bus: Bus | None) -> None:
        """Load in the background and follow the bus (when given)."""
        if bus is not None:
            s = self.settings
            await bus.subscribe(progress_subject(s), self._on_progress)
            await bus.subscribe(f"{s.subject_prefix}.stage.>", self._on_stage_event)
            await bus.subscribe(cancel_subject(s), self._on_cancel)
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        # a flag, not only cancel(): Python 3.11's wait_for can swallow a cancel that races its timeout
        self._closed = True
        self._wake.set()
        if self._task is not None:
            _, pending = await asyncio.wait({self._task}, timeout=5)
            for task in pending:
                task.cancel()
        for queue in list(self._listeners):
            queue.put_nowait(("close", {}))

    async def _run(self) -> None:
        await asyncio.to_thread(self.load)
        clock = {"active": 0.0, "drops": time.monotonic(), "rescan": time.monotonic()}
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            self._wake.clear()
            await asyncio.sleep(0.2)  # gather a burst of messages into one pass
            if self._closed:
                return
            try:
                await self._pass(clock)
            except Exception:
                log.exception("console_index_pass_failed")

    async def _pass(self, clock: dict[str, float]) -> None:
        now = time.monotonic()
        due = set(self._dirty)
        self._dirty.clear()
        if now - clock["active"] >= ACTIVE_EVERY:
            clock["active"] = now
            due |= {j for j, s in self.entries.items() if not s.finished}
            self._waiting = {j: t for j, t in self._waiting.items() if t > now and j not in self.entries}
            due |= set(self._waiting)
        if now - clock["rescan"] >= self.rescan_every:
            clock["rescan"] = now
            known = set(self.entries)
            due |= {j for j in await asyncio.to_thread(job_ids, self.store, self.settings) if j not in known}
        for job_id in sorted(due):
            await self._refold(job_id)
        if now - clock["drops"] >= DROPS_EVERY:
            clock["drops"] = now
            await self._refresh_drops()

    async def _refold(self, job_id: str) -> None:
        before = self.entries.get(job_id)
        summary = await asyncio.to_thread(self._put, job_id)
        if summary is None:
            self._waiting.setdefault(job_id, time.monotonic() + 300)
            return
        self._waiting.pop(job_id, None)
        if before is None or before.to_json() != summary.to_json():
            self.broadcast("job", summary.to_json())

    async def _refresh_drops(self) -> None:
        try:
            drops = await asyncio.to_thread(list_failed_drops, self.store, self.settings)
        except MouthpieceError:
            return
        if [d.model_dump() for d in drops] != [d.model_dump() for d in self.drops]:
            self.drops = drops
            self.broadcast("drops", {"count": len(drops)})

    # --- bus messages --------------------------------------------------------------------------------
    async def _on_progress(self, data: bytes) -> None:
        try:
            note = Progress.model_validate_json(data)
        except ValueError:
            return
        self.progress.setdefault(note.job_id, {})[f"{note.task}/{note.stage}"] = round(note.fraction, 3)
        self.broadcast("progress", note.model_dump())
        self.touch(note.job_id)

    async def _on_stage_event(self, data: bytes) -> None:
        try:
            events = parse_event(data)
        except MouthpieceError:
            return
        for event in events:
            obj = event.object
            parsed = parse_manifest_key(obj.key)
            if parsed is not None:
                self.touch(parsed[0])
            elif obj.bucket == self.settings.bucket_inputs and event.created:
                job_id = job_id_for(obj.bucket, obj.key, obj.etag)
                self._waiting.setdefault(job_id, time.monotonic() + 300)
                self.touch(job_id)

    async def _on_cancel(self, data: bytes) -> None:
        self.touch(data.decode(errors="replace"))

    # --- listeners ------------------------------------------------------------------------------------
    def listen(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=500)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        self._listeners.discard(queue)

    def broadcast(self, kind: str, data: dict[str, Any]) -> None:
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled browser misses notes, not the server
                queue.put_nowait((kind, data))
