"""The stage runner: the one place that turns bus messages into stage calls, and outcomes into acks.

For each message on a stage's subject (a bucket notification):

1. decode it; a malformed one is dead-lettered and terminated; events other than object-created are acked;
2. load the stage's input (the uploaded object, or the previous stage's manifest) and bind
   ``job_id``/``task``/``stage`` to every log line;
3. skip work already done (a done record) or in progress elsewhere (a running record with a fresh
   heartbeat: nak and look again later);
4. run the stage in a thread, heartbeating ``in_progress()`` so a live job is not redelivered;
5. success: write the manifests the stage returned (last: their events trigger the next stage), then the
   done record, then ack;
   ``RetryableError`` or an unexpected exception: nak with backoff; after ``max_deliver`` deliveries
   write a dead-letter record and a failure record, and terminate;
   ``PermanentError``: write a failure record with the reason, tell the job's destinations, terminate.

``Worker.serve`` pulls until its stop event is set, then drains the messages in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from pipeline.bus import Bus, Consumer, Delivery
from pipeline.config import Settings
from pipeline.contracts import DeadLetter, Manifest, Progress, StageRecord, State, Upload, job_id_for
from pipeline.errors import InvalidKey, MouthpieceError, PermanentError, RetryableError
from pipeline.events import ObjectEvent, parse_event
from pipeline.keys import (
    dead_letter_key,
    manifest_key,
    parse_manifest_key,
    progress_subject,
    route,
    subject_for,
)
from pipeline.stage import ModelCache, StageCancelled, StageContext, load_stage
from pipeline.status import JOB_TASK, read_record, write_record
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.runner")

FailureHook = Callable[[str, str, str], None]
"""on_failure(job_id, task, reason): tell the job's destinations (runs in a thread; must not raise)."""
DoneHook = Callable[[str], None]
"""on_done(job_id): a task finished the last stage of the chain (runs in a thread)."""


@dataclass
class Work:
    """A decoded message: whom it is for, what the stage gets, and the object that triggered it."""

    job_id: str
    task: str
    inputs: Upload | Manifest
    trigger: str = ""


class Worker:
    """Serves one stage: pulls its messages and runs them, ``concurrency`` at a time."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        bus: Bus,
        stage: str,
        *,
        models: ModelCache | None = None,
        on_failure: FailureHook | None = None,
        on_done: DoneHook | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.stage = stage
        self.module = load_stage(stage)
        self.models = models or ModelCache()
        self.on_failure = on_failure
        self.on_done = on_done
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self._records_lock = threading.Lock()

    # --- serving ------------------------------------------------------------------------------------
    async def serve(self, stop: asyncio.Event) -> None:
        """Pull and process messages until ``stop`` is set; then finish (drain) what is in flight."""
        self.loop = asyncio.get_running_loop()
        if hasattr(self.module, "warm_up"):
            await asyncio.to_thread(self.module.warm_up, self.settings, self.models)
        if hasattr(self.module, "prepare_store"):
            await asyncio.to_thread(self.module.prepare_store, self.store, self.settings)
        consumer = await self.bus.consume(self.stage, subject_for(self.settings, self.stage))
        slots = self.settings.concurrency_of(self.stage)
        log.info("worker_started", stage=self.stage, worker=self.worker_id, concurrency=slots)

        async def pull_loop() -> None:
            while not stop.is_set():
                await self._pull_one(consumer)

        loops = [asyncio.create_task(pull_loop()) for _ in range(slots)]
        await stop.wait()
        _, pending = await asyncio.wait(loops, timeout=self.settings.drain_seconds + 1.5)
        for task in pending:  # drain time is over: the unacked messages are redelivered elsewhere
            task.cancel()
        log.info("worker_stopped", stage=self.stage, abandoned=len(pending))

    async def _pull_one(self, consumer: Consumer) -> None:
        """Fetch and handle one message. Nothing that goes wrong here may end the loop: a storage or
        bus outage makes this slot wait and try again, the message comes back by itself."""
        try:
            delivery = await consumer.next(timeout=1.0)
        except Exception as exc:  # bus unreachable: wait, the client reconnects
            log.warning("pull_failed", stage=self.stage, error=repr(exc))
            await asyncio.sleep(1.0)
            return
        if delivery is None:
            return
        try:
            await self.handle(delivery)
        except Exception as exc:  # e.g. the store failed while recording an outcome
            log.error("message_handling_failed", stage=self.stage, error=repr(exc))
            with contextlib.suppress(Exception):
                await delivery.nak(delay=(self.settings.backoff or [5.0])[0])

    # --- one message ----------------------------------------------------------------------------------
    async def handle(self, delivery: Delivery) -> str:
        """Process one message end to end; returns what happened (for logs and tests)."""
        try:
            event = parse_event(delivery.data)[0]
        except (MouthpieceError, IndexError) as exc:
            return await self._dead_letter(delivery, f"malformed notification: {exc}", None)
        if not event.created:
            await delivery.ack()
            return "ignored"
        if route(self.settings, event.bucket, event.key) != self.stage:
            log.warning("misrouted_event", stage=self.stage, bucket=event.bucket, key=event.key)
            await delivery.ack()
            return "ignored"
        try:
            work = await asyncio.to_thread(self._decode, event)
        except RetryableError as exc:
            return await self._retry(delivery, None, exc)
        except PermanentError as exc:
            return await self._dead_letter(delivery, str(exc), None)
        with structlog.contextvars.bound_contextvars(job_id=work.job_id, task=work.task, stage=self.stage):
            return await self._process(delivery, work)

    def _decode(self, event: ObjectEvent) -> Work:
        trigger = f"{event.bucket}/{event.key}"
        if self.stage == self.settings.chain[0]:
            upload = Upload(bucket=event.bucket, key=event.key, etag=event.etag, size=event.size)
            return Work(job_id_for(event.bucket, event.key, event.etag), JOB_TASK, upload, trigger)
        where = parse_manifest_key(event.key)
        if where is None:
            raise InvalidKey(f"{event.key} is not a manifest key", key=event.key)
        data = self.store.get(event.bucket, event.key)
        try:
            manifest = Manifest.model_validate_json(data)
        except ValidationError as exc:
            raise PermanentError(f"{event.key} is not a valid manifest: {exc}", key=event.key) from exc
        return Work(manifest.job_id, manifest.task, manifest, trigger)

    async def _process(self, delivery: Delivery, work: Work) -> str:
        previous = await asyncio.to_thread(
            read_record, self.store, self.settings, work.job_id, work.task, self.stage
        )
        if previous is not None and previous.state in (State.done, State.failed):
            log.info("duplicate_skipped", state=previous.state.value)
            await delivery.ack()
            return "duplicate"
        if previous is not None and previous.state == State.running and self._alive(previous):
            await delivery.nak(delay=max(1.0, self.settings.ack_wait / 2))
            return "busy_elsewhere"
        if delivery.deliveries > self.settings.max_deliver:
            reason = f"gave up after {delivery.deliveries - 1} attempts (workers kept stopping)"
            return await self._dead_letter(delivery, reason, work)
        return await self._run(delivery, work)

    def _alive(self, record: StageRecord) -> bool:
        """A running record is live while its heartbeat is fresh (ours too: a duplicate message for a
        task this very worker is running in another slot must wait, not run twice)."""
        age = (datetime.now(UTC) - record.heartbeat_at).total_seconds()
        return age < self.settings.ack_wait

    async def _run(self, delivery: Delivery, work: Work) -> str:
        record = StageRecord(
            job_id=work.job_id,
            task=work.task,
            stage=self.stage,
            state=State.running,
            attempt=delivery.deliveries,
            worker=self.worker_id,
            trigger=work.trigger,
        )
        await self._save(record)
        log.info("stage_started", attempt=delivery.deliveries)
        started = time.monotonic()
        ctx = self._context(work, record)
        beat = asyncio.create_task(self._heartbeat(delivery, record, ctx))
        error: Exception | None = None
        try:
            outputs = await asyncio.to_thread(self._call_stage, ctx, work, started)
        except asyncio.CancelledError:
            # drain time is over: the thread cannot be killed, so tell it to stop at its next progress
            # report and not to write anything; the message goes back for another worker
            ctx.cancelled.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(delivery.nak(delay=0))
            raise
        except Exception as exc:
            outputs, error = [], exc
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        if error is None:
            return await self._done(delivery, record, outputs, time.monotonic() - started)
        return await self._outcome(delivery, work, record, error)

    async def _outcome(self, delivery: Delivery, work: Work, record: StageRecord, error: Exception) -> str:
        if isinstance(error, PermanentError):
            return await self._fail(delivery, record, error)
        if isinstance(error, RetryableError):
            return await self._retry(delivery, work, error, record)
        # a bug or a crashing dependency: retry, then dead-letter
        log.error("stage_crashed", exc_info=error)
        return await self._retry(delivery, work, RetryableError(f"internal error: {error!r}"), record)

    def _call_stage(self, ctx: StageContext, work: Work, started: float) -> list[Manifest]:
        """Run the stage, then write its manifests (in a thread: the store is synchronous). The scratch
        folder is removed here, by the thread that used it, however the stage ends."""
        try:
            result = self.module.run(ctx, work.inputs)
        finally:
            shutil.rmtree(ctx.workdir, ignore_errors=True)
        outputs: list[Manifest] = result if isinstance(result, list) else [result]
        if ctx.cancelled.is_set():
            raise StageCancelled("the worker stopped before the stage finished")
        seconds = round(time.monotonic() - started, 3)
        for manifest in outputs:
            manifest.timings[self.stage] = seconds
            key = manifest_key(manifest.job_id, manifest.task, self.stage)
            self.store.put(
                self.settings.bucket_work,
                key,
                manifest.model_dump_json(indent=1).encode(),
                content_type="application/json",
            )
        return outputs

    def _context(self, work: Work, record: StageRecord) -> StageContext:
        bound = log.bind(job_id=work.job_id, task=work.task, stage=self.stage)
        workdir = Path(tempfile.mkdtemp(prefix=f"mp-{self.stage}-", dir=self._scratch()))
        return StageContext(
            settings=self.settings,
            store=self.store,
            job_id=work.job_id,
            task=work.task,
            stage=self.stage,
            log=bound,
            workdir=workdir,
            models=self.models,
            on_progress=self._progress_sink(record),
        )

    def _scratch(self) -> Path:
        path = self.settings.data_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- progress and heartbeats ----------------------------------------------------------------------
    def _progress_sink(self, record: StageRecord) -> Callable[[float, str], None]:
        last = [0.0]

        def sink(fraction: float, note: str) -> None:
            record.progress = round(fraction, 3)
            now = time.monotonic()
            if self.loop is None or (now - last[0] < 0.5 and fraction < 1.0):
                return
            last[0] = now
            note_msg = Progress(
                job_id=record.job_id, task=record.task, stage=self.stage, fraction=fraction, note=note
            )
            subject = progress_subject(self.settings, record.job_id)
            asyncio.run_coroutine_threadsafe(
                self.bus.notify(subject, note_msg.model_dump_json().encode()), self.loop
            )

        return sink

    async def _heartbeat(self, delivery: Delivery, record: StageRecord, ctx: StageContext) -> None:
        """Keep the message (``in_progress``) and the record (``heartbeat_at``) alive. When the bus has
        not heard from us for a whole ``ack_wait`` the message is someone else's now: the stage is told
        to stop rather than finish twice."""
        interval = max(0.5, self.settings.ack_wait / 3)
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await delivery.in_progress()
                last_ok = time.monotonic()
            except Exception as exc:
                if time.monotonic() - last_ok >= self.settings.ack_wait:
                    log.warning("heartbeat_lost", error=repr(exc), hint="stopping the stage; redelivered")
                    ctx.cancelled.set()
                    return
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self._write, record, only_running=True, heartbeat_at=datetime.now(UTC)
                )

    def _write(self, record: StageRecord, *, only_running: bool = False, **changes: Any) -> None:
        """Apply ``changes`` to the record and store it, under one lock, so a late heartbeat never
        overwrites a final state."""
        with self._records_lock:
            if only_running and record.state != State.running:
                return
            for name, value in changes.items():
                setattr(record, name, value)
            write_record(self.store, self.settings, record)

    async def _save(self, record: StageRecord, **changes: Any) -> None:
        await asyncio.to_thread(self._write, record, **changes)

    # --- outcomes ---------------------------------------------------------------------------------------
    async def _done(
        self, delivery: Delivery, record: StageRecord, outputs: list[Manifest], seconds: float
    ) -> str:
        published = [o for m in outputs for o in m.info.get("published", [])]
        await self._save(
            record,
            state=State.done,
            seconds=round(seconds, 3),
            finished_at=datetime.now(UTC),
            progress=1.0,
            outputs=published,
            notes=list(dict.fromkeys(n for m in outputs for n in m.info.get("notes", []))),
        )
        await delivery.ack()
        log.info("stage_done", seconds=record.seconds, manifests=len(outputs))
        if self.on_done is not None and self.stage == self.settings.chain[-1]:
            try:
                await asyncio.to_thread(self.on_done, record.job_id)
            except Exception:  # the job is done; its summary can be rewritten by the next event
                log.exception("done_hook_failed")
        return "done"

    async def _fail(self, delivery: Delivery, record: StageRecord, exc: MouthpieceError) -> str:
        exc.bind(job_id=record.job_id, stage=self.stage)
        await self._save(
            record,
            state=State.failed,
            reason=exc.reason,
            error=type(exc).__name__,
            finished_at=datetime.now(UTC),
        )
        await delivery.term()
        log.warning("stage_failed", reason=exc.reason, error=record.error, **exc.context())
        await self._tell_destinations(record.job_id, record.task, exc.reason)
        return "failed"

    async def _retry(
        self, delivery: Delivery, work: Work | None, exc: RetryableError, record: StageRecord | None = None
    ) -> str:
        if delivery.deliveries >= self.settings.max_deliver:
            reason = f"gave up after {delivery.deliveries} attempts: {exc.reason}"
            return await self._dead_letter(delivery, reason, work, record)
        table = self.settings.backoff or [5.0]
        delay = max(exc.defer, table[min(delivery.deliveries, len(table)) - 1])
        if record is not None:
            await self._save(record, state=State.queued, reason=f"retrying in {delay:.0f}s: {exc.reason}")
        await delivery.nak(delay=delay)
        log.warning("stage_retry", reason=exc.reason, delay=delay, attempt=delivery.deliveries)
        return "retry"

    async def _dead_letter(
        self, delivery: Delivery, reason: str, work: Work | None, record: StageRecord | None = None
    ) -> str:
        letter = DeadLetter(
            stage=self.stage,
            subject=delivery.subject,
            deliveries=delivery.deliveries,
            reason=reason,
            payload=delivery.data.decode(errors="replace")[:20_000],
            job_id=work.job_id if work else None,
            task=work.task if work else None,
        )
        key = dead_letter_key(self.stage, f"{delivery.id}-{uuid.uuid4().hex[:6]}")
        await asyncio.to_thread(
            self.store.put,
            self.settings.bucket_work,
            key,
            letter.model_dump_json().encode(),
            content_type="application/json",
        )
        log.error("dead_lettered", reason=reason, dead_letter=key)
        if work is not None:
            failed = record or StageRecord(
                job_id=work.job_id, task=work.task, stage=self.stage, state=State.failed, trigger=work.trigger
            )
            await self._save(
                failed, state=State.failed, reason=reason, error="DeadLetter", finished_at=datetime.now(UTC)
            )
            await self._tell_destinations(work.job_id, work.task, reason)
        await delivery.term()
        return "dead_letter"

    async def _tell_destinations(self, job_id: str, task: str, reason: str) -> None:
        if self.on_failure is None:
            return
        try:
            await asyncio.to_thread(self.on_failure, job_id, task, reason)
        except Exception:  # telling the user is best effort; the failure record is written already
            log.exception("failure_notice_failed")


def run_inline(
    settings: Settings, store: ObjectStore, stage: str, inputs: Any, job_id: str, task: str
) -> Any:
    """Call a stage directly, without a bus (tests, and ``mouthpiece`` debugging helpers)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"mp-{stage}-"))
    try:
        ctx = StageContext(
            settings=settings,
            store=store,
            job_id=job_id,
            task=task,
            stage=stage,
            log=log.bind(job_id=job_id, task=task, stage=stage),
            workdir=workdir,
        )
        return load_stage(stage).run(ctx, inputs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
