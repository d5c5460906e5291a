"""The pull loop: one place that turns bus messages into stage runs, and outcomes into acks.

For each message on a stage's subjects (a bucket notification):

1. decode it (a malformed one is dead-lettered; events other than object-created are acked) and find
   whom it is for: the uploaded object (first stage: its job id is derived from bucket, key and ETag),
   or the previous stage's manifest;
2. ask the record keeper for the task's claim (``pipeline.runner.decide.admit``): finished, busy
   elsewhere, a duplicate, out of runs, or ours to run;
3. run the stage in a thread with ``ctx.spec`` read once, heartbeating every ``heartbeat_seconds``
   (the message's ``in_progress`` and the claim), publishing progress notes;
4. conclude (``decide.conclude``): on success write the manifests (last: their events start the next
   stage), the done record, remove the claim, ack; retry later (nak with backoff), fail (term, tell the
   destinations), dead-letter once the runs are used up, hand back on shutdown, or abandon a task
   another worker took over — writing nothing.

``Worker.serve`` pulls until stopped (or after ``max_messages``, or ``idle_exit`` seconds without
work), then drains the runs in flight for up to ``drain_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import ValidationError

from pipeline.bus import Bus, ClaimStore, Consumer, Delivery, durable_name
from pipeline.config import Settings
from pipeline.contracts import DeadLetter, Manifest, Progress, State, job_id_for
from pipeline.errors import (
    InvalidKey,
    JobCancelled,
    MouthpieceError,
    PermanentError,
    RetryableError,
    StageStopped,
)
from pipeline.events import ObjectEvent, build_event, parse_event
from pipeline.faults import fault
from pipeline.keys import (
    STAGE_POOLS,
    cancel_subject,
    dead_letter_key,
    event_subject,
    find_route,
    manifest_key,
    parse_manifest_key,
    pool_for,
    progress_subject,
    subject_for,
)
from pipeline.owner import current_owner, dead_scratch, scratch_name
from pipeline.registry import get_stage
from pipeline.runner.decide import Decision, conclude, gave_up_reason, outcome_of
from pipeline.runner.records import RecordKeeper, Ticket
from pipeline.stage import ModelCache, Stage, StageContext
from pipeline.status import JOB_TASK, finished_before, is_cancelled, read_spec, write_status
from pipeline.storage.base import ObjectInfo, ObjectStore

log = structlog.get_logger("mouthpiece.runner")


@dataclass
class Work:
    """A decoded message: the task it is for, what the stage gets, and the object that triggered it."""

    job_id: str
    task: str
    inputs: ObjectInfo | Manifest
    trigger: ObjectInfo

    @property
    def trigger_name(self) -> str:
        return f"{self.trigger.bucket}/{self.trigger.key}"


class Worker:
    """Serves one stage (one or more of its pools): pulls messages and runs them, ``concurrency`` at a
    time."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        bus: Bus,
        claims: ClaimStore,
        stage: str,
        *,
        pools: tuple[str, ...] = ("default",),
        models: ModelCache | None = None,
        implementation: Stage | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.stage = stage
        self.pools = pools
        self.impl = implementation or get_stage(stage)
        self.models = models or ModelCache()
        self.owner = current_owner()
        self.keeper = RecordKeeper(settings, store, claims, stage, self.owner)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.handled = 0
        self.pull_seconds = 1.0
        """How long one fetch waits for a message (also the longest a stop waits for an idle slot)."""
        self._running: dict[str, StageContext] = {}
        self._last_message = time.monotonic()

    @property
    def first(self) -> bool:
        return self.stage == self.settings.chain[0]

    # --- serving ------------------------------------------------------------------------------------------
    async def serve(
        self, stop: asyncio.Event, *, max_messages: int | None = None, idle_exit: float | None = None
    ) -> None:
        """Pull and run messages until ``stop`` is set, ``max_messages`` were handled, or ``idle_exit``
        seconds passed without a message; then finish (drain) what is in flight."""
        self.loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.impl.warm_up, self.settings, self.models)
        await asyncio.to_thread(self.impl.prepare_store, self.store, self.settings)
        await asyncio.to_thread(self._remove_dead_scratch)
        await self._reclaim()
        consumers = [
            await self.bus.consume(
                durable_name(self.stage, pool), subject_for(self.settings, self.stage, pool)
            )
            for pool in self.pools
        ]
        await self.bus.subscribe(cancel_subject(self.settings), self._on_cancel)
        slots = self.settings.concurrency_of(self.stage)
        log.info(
            "worker_started", stage=self.stage, pools=list(self.pools), worker=self.owner.worker, slots=slots
        )
        enough = asyncio.Event()
        loops = [
            asyncio.create_task(self._pull_loop(consumers, stop, enough, max_messages)) for _ in range(slots)
        ]
        watch = asyncio.create_task(self._watch_idle(enough, idle_exit))
        await _first_of(stop, enough)
        enough.set()
        watch.cancel()
        _, pending = await asyncio.wait(loops, timeout=self.settings.drain_seconds + 1.5)
        for task in pending:  # drain time is over: the runs are told to stop and handed back
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        log.info("worker_stopped", stage=self.stage, handled=self.handled, abandoned=len(pending))

    async def _pull_loop(
        self, consumers: list[Consumer], stop: asyncio.Event, enough: asyncio.Event, limit: int | None
    ) -> None:
        # a fetch in flight is never cancelled: the server may already have handed it a message, which
        # would then wait a whole ack_wait; stopping takes at most one pull_seconds instead
        turn = 0
        while not (stop.is_set() or enough.is_set()):
            consumer = consumers[turn % len(consumers)]
            turn += 1
            delivery = await self._pull(consumer, timeout=self.pull_seconds / len(consumers))
            if delivery is None:
                continue
            await self._handle_safely(delivery)
            self.handled += 1
            if limit is not None and self.handled >= limit:
                enough.set()

    async def _watch_idle(self, enough: asyncio.Event, idle_exit: float | None) -> None:
        if idle_exit is None:
            return
        while True:
            await asyncio.sleep(min(1.0, idle_exit / 4))
            if not self._running and time.monotonic() - self._last_message >= idle_exit:
                log.info("worker_idle_exit", stage=self.stage, idle_seconds=idle_exit)
                enough.set()
                return

    async def _pull(self, consumer: Consumer, timeout: float) -> Delivery | None:
        """The next message, or None. A bus outage makes this slot wait and try again."""
        try:
            delivery = await consumer.next(timeout=timeout)
        except Exception as exc:  # bus unreachable: wait, the client reconnects
            log.warning("pull_failed", stage=self.stage, error=repr(exc))
            await asyncio.sleep(1.0)
            return None
        if delivery is not None:
            self._last_message = time.monotonic()
        return delivery

    async def _handle_safely(self, delivery: Delivery) -> None:
        """Handle one message. Nothing that goes wrong here ends the loop: the message comes back."""
        try:
            await self.handle(delivery)
        except Exception as exc:  # e.g. the store failed while recording an outcome
            log.error("message_handling_failed", stage=self.stage, error=repr(exc))
            with contextlib.suppress(Exception):
                await delivery.nak(delay=(self.settings.backoff or [5.0])[0])
        self._last_message = time.monotonic()

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
        rule = find_route(self.settings, event.bucket, event.key)
        if rule is None or rule.stage != self.stage:
            log.warning("misrouted_event", stage=self.stage, bucket=event.bucket, key=event.key)
            await delivery.ack()
            return "ignored"
        try:
            work = await asyncio.to_thread(self._decode, event)
        except RetryableError as exc:
            return await self._not_yet(delivery, exc)
        except PermanentError as exc:
            return await self._dead_letter(delivery, exc.reason, None)
        with structlog.contextvars.bound_contextvars(job_id=work.job_id, task=work.task, stage=self.stage):
            return await self._admit(delivery, work)

    def _decode(self, event: ObjectEvent) -> Work:
        trigger = ObjectInfo(event.bucket, event.key, event.size, event.etag)
        if self.first:
            return Work(job_id_for(event.bucket, event.key, event.etag), JOB_TASK, trigger, trigger)
        if parse_manifest_key(event.key) is None:
            raise InvalidKey(f"{event.key} is not a manifest key", key=event.key)
        data = self.store.get(event.bucket, event.key)
        try:
            manifest = Manifest.model_validate_json(data)
        except ValidationError as exc:
            raise PermanentError(f"{event.key} is not a valid manifest: {exc}", key=event.key) from exc
        return Work(manifest.job_id, manifest.task, manifest, trigger)

    async def _admit(self, delivery: Delivery, work: Work) -> str:
        if await asyncio.to_thread(self._already_finished, work):
            await delivery.ack()
            return "duplicate"
        if await asyncio.to_thread(is_cancelled, self.store, self.settings, work.job_id):
            await self.keeper.record_state(
                work.job_id,
                work.task,
                work.trigger_name,
                State.cancelled,
                "cancelled",
                "the job was cancelled",
            )
            await delivery.term()
            return "cancelled"
        admission, ticket = await self.keeper.admit(work.job_id, work.task, delivery.id, work.trigger_name)
        if admission.kind in ("skip", "duplicate"):
            log.info("duplicate_skipped", why=admission.note or admission.kind)
            await delivery.ack()
            return "duplicate"
        if admission.kind == "busy":
            await delivery.nak(delay=self.settings.heartbeat_seconds * 2)
            return "busy_elsewhere"
        if admission.kind == "exhausted":
            reason = gave_up_reason(admission.runs)
            await self.keeper.give_up(work.job_id, work.task, work.trigger_name, admission.runs, reason)
            await self._write_dead_letter(delivery, reason, work)
            await delivery.term()
            await self._tell(work.job_id, "gave_up", reason)
            return "dead_letter"
        assert ticket is not None
        return await self._run(delivery, work, ticket)

    def _already_finished(self, work: Work) -> bool:
        """The first stage skips a job whose outputs say it finished (its work records may be gone)."""
        if not self.first:
            return False
        done = finished_before(self.store, self.settings, work.job_id)
        if done is not None:
            log.info("job_already_finished", state=done.state.value)
        return done is not None

    # --- one run ------------------------------------------------------------------------------------------
    async def _run(self, delivery: Delivery, work: Work, ticket: Ticket) -> str:
        await self.keeper.start(ticket)
        log.info("stage_started", attempt=ticket.run.n)
        started = time.monotonic()
        ctx = await self._context(work, ticket)
        self._running[ctx.job_id + "/" + ctx.task] = ctx
        beat = asyncio.create_task(self._heartbeat(delivery, ticket, ctx))
        error: BaseException | None = None
        outputs: list[Manifest] = []
        try:
            fault(self.settings, f"{self.stage}.start")
            if ctx.spec is None and not self.first:
                ctx.spec = await asyncio.to_thread(read_spec, self.store, self.settings, work.job_id)
            outputs = await asyncio.to_thread(self._call_stage, ctx, work)
        except asyncio.CancelledError:
            # drain time is over: the thread cannot be killed, so it is told to stop at its next
            # progress report and write nothing; the task goes back for another worker
            ctx.stop(StageStopped("the worker stopped before the stage finished"))
            await asyncio.shield(self._hand_back(delivery, ticket))
            raise
        except Exception as exc:
            error = exc
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            self._running.pop(ctx.job_id + "/" + ctx.task, None)
        return await self._conclude(delivery, work, ticket, ctx, error, outputs, time.monotonic() - started)

    async def _context(self, work: Work, ticket: Ticket) -> StageContext:
        bound = log.bind(job_id=work.job_id, task=work.task, stage=self.stage)
        scratch = self.settings.data_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=scratch_name(f"mp-{self.stage}"), dir=scratch))
        return StageContext(
            settings=self.settings,
            store=self.store,
            job_id=work.job_id,
            task=work.task,
            stage=self.stage,
            log=bound,
            workdir=workdir,
            trigger=work.trigger,
            attempt=ticket.run.n,
            models=self.models,
            on_progress=self._progress_sink(ticket),
        )

    def _call_stage(self, ctx: StageContext, work: Work) -> list[Manifest]:
        """Run the stage (in a thread). The scratch folder is removed here, by the thread that used it,
        however the stage ends."""
        try:
            result = self.impl.run(ctx, work.inputs)
        finally:
            shutil.rmtree(ctx.workdir, ignore_errors=True)
        ctx.check()  # asked to stop while finishing: hand nothing on
        return result

    async def _conclude(
        self,
        delivery: Delivery,
        work: Work,
        ticket: Ticket,
        ctx: StageContext,
        error: BaseException | None,
        outputs: list[Manifest],
        seconds: float,
    ) -> str:
        if error is None and not await self.keeper.beat(ticket):  # still ours, before writing anything
            ctx.stop(StageStopped("another worker took the task over"))
        lost = ticket.lost
        if error is not None and not isinstance(error, MouthpieceError):
            log.error("stage_crashed", exc_info=error)
        outcome, reason = outcome_of(error)
        ticket.claim.runs[-1] = ticket.run.model_copy(update={"outcome": outcome, "reason": reason})
        decision = conclude(
            error,
            ticket.claim.runs,
            max_runs=self.settings.max_deliver,
            backoff=self.settings.backoff,
            lost=lost,
        )
        return await self._apply(delivery, work, ticket, ctx, decision, outputs, seconds)

    async def _apply(
        self,
        delivery: Delivery,
        work: Work,
        ticket: Ticket,
        ctx: StageContext,
        decision: Decision,
        outputs: list[Manifest],
        seconds: float,
    ) -> str:
        if decision.action == "abandon":
            log.warning("stage_abandoned", reason=decision.reason)
            return "abandoned"
        if decision.state == State.done:
            return await self._done(delivery, ticket, ctx, outputs, seconds)
        await self.keeper.finish(ticket, decision, seconds=round(seconds, 3))
        if decision.dead_letter:
            await self._write_dead_letter(delivery, decision.reason or "", work)
        if decision.action == "nak":
            await delivery.nak(delay=decision.delay)
            log.warning("stage_retry", reason=decision.reason, delay=decision.delay, run=ticket.run.n)
            return "retry"
        await delivery.term()
        log.warning("stage_failed", code=decision.code, reason=decision.reason, run=ticket.run.n)
        if decision.tell:
            await self._tell(work.job_id, decision.code, decision.reason)
        if decision.state == State.cancelled:
            return "cancelled"
        return "dead_letter" if decision.dead_letter else "failed"

    async def _done(
        self, delivery: Delivery, ticket: Ticket, ctx: StageContext, outputs: list[Manifest], seconds: float
    ) -> str:
        await asyncio.to_thread(self._write_manifests, ctx, outputs, seconds)
        fault(self.settings, f"{self.stage}.after_manifest")
        published = [o for m in outputs for o in m.info.get("published", [])]
        decision = Decision("ack", State.done, "done")
        await self.keeper.finish(ticket, decision, seconds=round(seconds, 3), progress=1.0, outputs=published)
        await delivery.ack()
        log.info("stage_done", seconds=round(seconds, 3), manifests=len(outputs), run=ticket.run.n)
        if self.stage == self.settings.chain[-1]:
            with contextlib.suppress(Exception):  # the summary is rewritten by the next event anyway
                await asyncio.to_thread(write_status, self.store, self.settings, ctx.job_id)
        return "done"

    def _write_manifests(self, ctx: StageContext, outputs: list[Manifest], seconds: float) -> None:
        """Write the manifests the stage handed on (last: their events start the next stage), each
        under the key that routes it to the pool of the next stage the job needs."""
        chain = self.settings.chain
        following = chain[chain.index(self.stage) + 1] if self.stage != chain[-1] else None
        spec = ctx.spec
        if following in STAGE_POOLS and spec is None:
            spec = read_spec(self.store, self.settings, ctx.job_id)  # the first stage just wrote it
        for manifest in outputs:
            manifest.timings[self.stage] = round(seconds, 3)
            pool = pool_for(following, spec) if following else "default"
            key = manifest_key(manifest.job_id, manifest.task, self.stage, pool)
            data = manifest.model_dump_json(indent=1).encode()
            self.store.put(self.settings.bucket_work, key, data, content_type="application/json")

    async def _hand_back(self, delivery: Delivery, ticket: Ticket) -> None:
        """Record that a stopping worker handed the run back, release the claim, return the message."""
        with contextlib.suppress(Exception):
            decision = conclude(
                StageStopped("the worker stopped"), ticket.claim.runs, max_runs=1, backoff=[0]
            )
            await self.keeper.finish(ticket, decision)
        with contextlib.suppress(Exception):
            await delivery.nak(delay=0)

    # --- progress, heartbeats, cancels ----------------------------------------------------------------
    def _progress_sink(self, ticket: Ticket) -> Callable[[float, str], None]:
        last = [0.0]

        def sink(fraction: float, note: str) -> None:
            ticket.record.progress = round(fraction, 3)
            now = time.monotonic()
            if self.loop is None or (now - last[0] < 0.5 and fraction < 1.0):
                return
            last[0] = now
            message = Progress(
                job_id=ticket.record.job_id,
                task=ticket.record.task,
                stage=self.stage,
                fraction=fraction,
                note=note,
            )
            subject = progress_subject(self.settings, ticket.record.job_id)
            asyncio.run_coroutine_threadsafe(
                self.bus.notify(subject, message.model_dump_json().encode()), self.loop
            )

        return sink

    async def _heartbeat(self, delivery: Delivery, ticket: Ticket, ctx: StageContext) -> None:
        """Every ``heartbeat_seconds``: keep the message (``in_progress``) and renew the claim. A claim
        taken over, or a bus silent for a whole ``ack_wait``, means the task is someone else's now:
        the stage is told to stop rather than finish twice."""
        interval = self.settings.heartbeat_seconds
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await delivery.in_progress()
                if not await self.keeper.beat(ticket):
                    log.warning("claim_lost", hint="another worker took the task over; stopping")
                    ctx.stop(StageStopped("another worker took the task over"))
                    return
                last_ok = time.monotonic()
            except Exception as exc:
                if time.monotonic() - last_ok >= self.settings.ack_wait:
                    log.warning("heartbeat_lost", error=repr(exc), hint="stopping the stage; it runs again")
                    ticket.lost = True
                    ctx.stop(StageStopped("the worker lost contact with the bus"))
                    return

    async def _on_cancel(self, data: bytes) -> None:
        job_id = data.decode(errors="replace")
        for key, ctx in list(self._running.items()):
            if key.startswith(job_id + "/"):
                ctx.stop(JobCancelled("the job was cancelled"))

    # --- failures ---------------------------------------------------------------------------------------
    async def _not_yet(self, delivery: Delivery, exc: RetryableError) -> str:
        """A message that could not even be read (the store is down): it comes back later; one that
        keeps failing that way for very long is dead-lettered."""
        if delivery.deliveries >= max(20, 4 * self.settings.max_deliver):
            return await self._dead_letter(delivery, f"gave up reading the message: {exc.reason}", None)
        await delivery.nak(delay=max(exc.defer, (self.settings.backoff or [5.0])[-1]))
        return "retry"

    async def _dead_letter(self, delivery: Delivery, reason: str, work: Work | None) -> str:
        await self._write_dead_letter(delivery, reason, work)
        await delivery.term()
        return "dead_letter"

    async def _write_dead_letter(self, delivery: Delivery, reason: str, work: Work | None) -> None:
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
        data = letter.model_dump_json().encode()
        await asyncio.to_thread(
            self.store.put, self.settings.bucket_work, key, data, content_type="application/json"
        )
        log.error("dead_lettered", reason=reason, dead_letter=key)

    async def _tell(self, job_id: str, code: str | None, reason: str | None) -> None:
        """Tell a failed job's destinations, in the catalogue's words, and store its status."""
        try:
            await asyncio.to_thread(write_status, self.store, self.settings, job_id)
            last = get_stage(self.settings.chain[-1])
            await asyncio.to_thread(last.tell_failure, self.settings, self.store, job_id, code, reason)
        except Exception:  # telling is best effort; the failure record is written already
            log.exception("failure_notice_failed")

    # --- start-up -----------------------------------------------------------------------------------------
    def _remove_dead_scratch(self) -> None:
        """Scratch folders left by processes that died (SIGKILL leaves them) are removed at start."""
        scratch = self.settings.data_dir / "tmp"
        if not scratch.is_dir():
            return
        for path in scratch.iterdir():
            if path.is_dir() and path.name.startswith(("mp-", "nats-")) and dead_scratch(path.name):
                shutil.rmtree(path, ignore_errors=True)
                log.info("scratch_removed", path=path.name)

    async def _reclaim(self) -> None:
        """Take back, at once, the tasks a predecessor on this host was running when it died: release
        their claims and announce their triggers again."""
        for claim in await self.keeper.reclaim():
            if "/" not in claim.trigger:
                continue
            bucket, key = claim.trigger.split("/", 1)
            info = await asyncio.to_thread(self.store.stat, bucket, key)
            subject = event_subject(self.settings, bucket, key) if info else None
            if info is None or subject is None:
                continue
            await self.bus.publish(subject, build_event(info), msg_id=f"reclaim-{uuid.uuid4().hex}")
            log.info("task_reclaimed", job_id=claim.job_id, task=claim.task, trigger=claim.trigger)


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


__all__ = ["Work", "Worker"]
