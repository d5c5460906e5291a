"""One delivery, from decoding to the ack: the runner's handling of a message (see ``pipeline.runner``).

``Handler.handle`` decodes the notification, finds whom it is for (the uploaded object for the first
stage, else the previous stage's manifest), asks the record keeper for the task's claim, runs the stage
in a thread with ``ctx.spec`` read once while heartbeating, and applies ``decide.conclude``: the
manifests (last), the record, the claim, and exactly one of ack, nak and term.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import ValidationError

from pipeline.bus import Bus, Delivery
from pipeline.config import Settings
from pipeline.contracts import DeadLetter, Manifest, Progress, State, job_id_for
from pipeline.destinations.targets import tell_failure
from pipeline.errors import InvalidKey, MouthpieceError, PermanentError, RetryableError, StageStopped
from pipeline.eta import learn_from_run
from pipeline.events import ObjectEvent, parse_event
from pipeline.faults import fault
from pipeline.keys import (
    STAGE_POOLS,
    dead_letter_key,
    find_route,
    manifest_key,
    parse_manifest_key,
    pool_for,
    progress_subject,
)
from pipeline.owner import scratch_folder
from pipeline.runner.decide import Decision, conclude, gave_up_reason, outcome_of
from pipeline.runner.records import RecordKeeper, Ticket
from pipeline.stage import ModelCache, Stage, StageContext, run_stage
from pipeline.status import JOB_TASK, finished_before, is_cancelled, read_spec, write_status
from pipeline.storage.base import ObjectInfo, ObjectStore

log = structlog.get_logger("mouthpiece.runner")


def cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its finished children (ffmpeg runs):
    far less sensitive than wall time to other load on a shared machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_mib() -> int:
    """This process's peak resident memory so far (MiB; children not included): in ``stage_done``, so a
    bench can tell which stage raised it."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def resident_mib() -> int | None:
    """This process's resident memory now (MiB), or None where ``/proc`` does not say (not Linux)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * resource.getpagesize() // (1024 * 1024)


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


class Handler:
    """Handles the deliveries of one stage for one worker process."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        bus: Bus,
        stage: str,
        impl: Stage,
        models: ModelCache,
        keeper: RecordKeeper,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.stage = stage
        self.impl = impl
        self.models = models
        self.keeper = keeper
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running: dict[str, StageContext] = {}
        """The contexts of the runs in flight, by ``job/task`` (a cancel stops them)."""

    @property
    def first(self) -> bool:
        return self.stage == self.settings.chain[0]

    async def handle(self, delivery: Delivery) -> str:
        """Process one message end to end; returns what happened (for logs and tests)."""
        try:
            event = parse_event(delivery.data)[0]
        except (MouthpieceError, IndexError) as exc:
            return await self._dead_letter(delivery, f"malformed notification: {exc}", None)
        if not event.created:
            await delivery.ack()
            return "ignored"
        obj = event.object
        rule = find_route(self.settings, obj.bucket, obj.key)
        if rule is None or rule.stage != self.stage:
            log.warning("misrouted_event", stage=self.stage, bucket=obj.bucket, key=obj.key)
            await delivery.ack()
            return "ignored"
        try:
            work = await asyncio.to_thread(decode, self.settings, self.store, self.first, event)
        except RetryableError as exc:
            return await self._not_yet(delivery, exc)
        except PermanentError as exc:
            return await self._dead_letter(delivery, exc.reason, None)
        with structlog.contextvars.bound_contextvars(job_id=work.job_id, task=work.task, stage=self.stage):
            return await self._admit(delivery, work)

    async def _admit(self, delivery: Delivery, work: Work) -> str:
        if await asyncio.to_thread(already_finished, self.settings, self.store, self.first, work):
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
            await write_dead_letter(self.settings, self.store, self.stage, delivery, reason, work)
            await delivery.term()
            await tell(self.settings, self.store, work.job_id, "gave_up", reason)
            return "dead_letter"
        assert ticket is not None
        return await self._run(delivery, work, ticket)

    async def _run(self, delivery: Delivery, work: Work, ticket: Ticket) -> str:
        await self.keeper.start(ticket)
        log.info("stage_started", attempt=ticket.run.n)
        started, cpu = time.monotonic(), cpu_seconds()
        ctx = await self._context(work, ticket)
        self.running[ctx.job_id + "/" + ctx.task] = ctx
        beat = asyncio.create_task(heartbeat(self.settings, self.keeper, delivery, ticket, ctx))
        error: BaseException | None = None
        outputs: list[Manifest] = []
        try:
            fault(self.settings, f"{self.stage}.start")
            if not self.first and not ctx.has_spec:
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
            self.running.pop(ctx.job_id + "/" + ctx.task, None)
        ctx.cpu_seconds = cpu_seconds() - cpu
        return await self._conclude(delivery, work, ticket, ctx, error, outputs, time.monotonic() - started)

    async def _context(self, work: Work, ticket: Ticket) -> StageContext:
        bound = log.bind(job_id=work.job_id, task=work.task, stage=self.stage)
        workdir = scratch_folder(self.settings.data_dir, f"mp-{self.stage}")
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
            on_progress=progress_sink(self.bus, self.settings, self.stage, ticket, self.loop),
        )

    def _call_stage(self, ctx: StageContext, work: Work) -> list[Manifest]:
        """Run the stage (in a thread). The scratch folder is removed here, by the thread that used it,
        however the stage ends."""
        try:
            result = run_stage(self.impl, ctx, work.inputs)
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
        if error is None and not await self.keeper.beat(ticket, show=False):  # still ours, before writing
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
            await write_dead_letter(
                self.settings, self.store, self.stage, delivery, decision.reason or "", work
            )
        if decision.action == "nak":
            await delivery.nak(delay=decision.delay)
            log.warning("stage_retry", reason=decision.reason, delay=decision.delay, run=ticket.run.n)
            return "retry"
        await delivery.term()
        log.warning("stage_failed", code=decision.code, reason=decision.reason, run=ticket.run.n)
        if decision.tell:
            await tell(self.settings, self.store, work.job_id, decision.code, decision.reason)
        if decision.state == State.cancelled:
            return "cancelled"
        return "dead_letter" if decision.dead_letter else "failed"

    async def _done(
        self, delivery: Delivery, ticket: Ticket, ctx: StageContext, outputs: list[Manifest], seconds: float
    ) -> str:
        await asyncio.to_thread(write_manifests, self.settings, self.store, self.stage, ctx, outputs)
        fault(self.settings, f"{self.stage}.after_manifest")
        published = [o for m in outputs for o in m.info.get("published", [])]
        notes = list(dict.fromkeys(n for m in outputs for n in m.info.get("notes", [])))
        decision = Decision("ack", State.done, "done")
        await self.keeper.finish(
            ticket, decision, seconds=round(seconds, 3), progress=1.0, outputs=published, notes=notes
        )
        await delivery.ack()
        log.info(
            "stage_done",
            seconds=round(seconds, 3),
            cpu_seconds=round(ctx.cpu_seconds, 3),
            peak_mib=peak_mib(),
            manifests=len(outputs),
            run=ticket.run.n,
        )
        renderer = ctx.spec.options.renderer if ctx.has_spec else None
        await asyncio.to_thread(
            learn_from_run, self.store, self.settings, self.stage, renderer, outputs, seconds
        )
        if self.stage == self.settings.chain[-1]:
            with contextlib.suppress(Exception):  # the summary is rewritten by the next event anyway
                await asyncio.to_thread(write_status, self.store, self.settings, ctx.job_id)
        return "done"

    async def _hand_back(self, delivery: Delivery, ticket: Ticket) -> None:
        """Record that a stopping worker handed the run back, release the claim, return the message."""
        with contextlib.suppress(Exception):
            decision = conclude(
                StageStopped("the worker stopped"), ticket.claim.runs, max_runs=1, backoff=[0]
            )
            await self.keeper.finish(ticket, decision)
        with contextlib.suppress(Exception):
            await delivery.nak(delay=0)

    async def _not_yet(self, delivery: Delivery, exc: RetryableError) -> str:
        """A message that could not even be read (the store is down): it comes back later; one that
        keeps failing that way for very long is dead-lettered."""
        if delivery.deliveries >= max(20, 4 * self.settings.max_deliver):
            return await self._dead_letter(delivery, f"gave up reading the message: {exc.reason}", None)
        await delivery.nak(delay=max(exc.defer, (self.settings.backoff or [5.0])[-1]))
        return "retry"

    async def _dead_letter(self, delivery: Delivery, reason: str, work: Work | None) -> str:
        await write_dead_letter(self.settings, self.store, self.stage, delivery, reason, work)
        await delivery.term()
        return "dead_letter"


def write_manifests(
    settings: Settings, store: ObjectStore, stage: str, ctx: StageContext, outputs: list[Manifest]
) -> None:
    """Write the manifests the stage handed on (last: their events start the next stage), each
    under the key that routes it to the pool of the next stage the job needs."""
    chain = settings.chain
    following = chain[chain.index(stage) + 1] if stage != chain[-1] else None
    spec = ctx.spec if ctx.has_spec else None
    if following in STAGE_POOLS and spec is None:
        spec = read_spec(store, settings, ctx.job_id)  # the first stage just wrote it
    if following is None:
        return  # the last stage's result is its record (what it published): nothing to trigger
    for manifest in outputs:
        pool = pool_for(following, spec)
        key = manifest_key(manifest.job_id, manifest.task, stage, pool)
        data = manifest.model_dump_json(indent=1).encode()
        store.put(settings.bucket_work, key, data, content_type="application/json")


async def write_dead_letter(
    settings: Settings, store: ObjectStore, stage: str, delivery: Delivery, reason: str, work: Work | None
) -> None:
    letter = DeadLetter(
        stage=stage,
        subject=delivery.subject,
        deliveries=delivery.deliveries,
        reason=reason,
        payload=delivery.data.decode(errors="replace")[:20_000],
        job_id=work.job_id if work else None,
        task=work.task if work else None,
    )
    key = dead_letter_key(stage, f"{delivery.id}-{uuid.uuid4().hex[:6]}")
    data = letter.model_dump_json().encode()
    await asyncio.to_thread(store.put, settings.bucket_work, key, data, content_type="application/json")
    log.error("dead_lettered", reason=reason, dead_letter=key)


async def tell(
    settings: Settings, store: ObjectStore, job_id: str, code: str | None, reason: str | None
) -> None:
    """Tell a failed job's destinations, in the catalogue's words, and store its status."""
    try:
        await asyncio.to_thread(write_status, store, settings, job_id)
        await asyncio.to_thread(tell_failure, settings, store, job_id, code, reason)
    except Exception:  # telling is best effort; the failure record is written already
        log.exception("failure_notice_failed")


def decode(settings: Settings, store: ObjectStore, first: bool, event: ObjectEvent) -> Work:
    trigger = event.object
    if first:
        return Work(job_id_for(trigger.bucket, trigger.key, trigger.etag), JOB_TASK, trigger, trigger)
    if parse_manifest_key(trigger.key) is None:
        raise InvalidKey(f"{trigger.key} is not a manifest key", key=trigger.key)
    data = store.get(trigger.bucket, trigger.key)
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise PermanentError(f"{trigger.key} is not a valid manifest: {exc}", key=trigger.key) from exc
    return Work(manifest.job_id, manifest.task, manifest, trigger)


def already_finished(settings: Settings, store: ObjectStore, first: bool, work: Work) -> bool:
    """The first stage skips a job whose outputs say it finished (its work records may be gone)."""
    if not first:
        return False
    done = finished_before(store, settings, work.job_id)
    if done is not None:
        log.info("job_already_finished", state=done.state.value)
    return done is not None


def progress_sink(
    bus: Bus, settings: Settings, stage: str, ticket: Ticket, loop: asyncio.AbstractEventLoop | None
) -> Callable[[float, str], None]:
    last = [0.0]

    def sink(fraction: float, note: str) -> None:
        if fraction >= 0.5 > (ticket.record.progress or 0.0):
            fault(settings, f"{stage}.halfway")  # test hook: killed mid-stage
        ticket.record.progress = round(fraction, 3)
        now = time.monotonic()
        if loop is None or (now - last[0] < 0.5 and fraction < 1.0):
            return
        last[0] = now
        message = Progress(
            job_id=ticket.record.job_id,
            task=ticket.record.task,
            stage=stage,
            fraction=fraction,
            note=note,
        )
        subject = progress_subject(settings, ticket.record.job_id)
        asyncio.run_coroutine_threadsafe(bus.notify(subject, message.model_dump_json().encode()), loop)

    return sink


async def heartbeat(
    settings: Settings, keeper: RecordKeeper, delivery: Delivery, ticket: Ticket, ctx: StageContext
) -> None:
    """Every ``heartbeat_seconds``: keep the message (``in_progress``) and renew the claim. A renewal
    that waits for the bus (a claim bucket electing its leader: the write is retried for
    ``bus_patience``) does not hold up the message's ``in_progress``, sent every interval meanwhile, so
    the message is not redelivered to another worker while the claim cannot be renewed. A claim taken
    over, or a renewal that failed with the bus silent for a whole ``ack_wait``, means the task is
    someone else's now: the stage is told to stop rather than finish twice."""
    interval = settings.heartbeat_seconds
    last_ok = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        renewal = asyncio.ensure_future(keeper.beat(ticket))
        try:
            while True:
                with contextlib.suppress(Exception):  # fire-and-forget; a lost one is a redelivery
                    await delivery.in_progress()
                done, _ = await asyncio.wait({renewal}, timeout=interval)
                if done:
                    break
            kept = renewal.result()
        except Exception as exc:
            if time.monotonic() - last_ok >= settings.ack_wait:
                log.warning("heartbeat_lost", error=repr(exc), hint="stopping the stage; it runs again")
                ticket.lost = True
                ctx.stop(StageStopped("the worker lost contact with the bus"))
                return
            continue
        finally:
            if not renewal.done():  # the run ended (this task was cancelled) while renewing
                renewal.cancel()
        if not kept:
            log.warning("claim_lost", hint="another worker took the task over; stopping")
            ctx.stop(StageStopped("another worker took the task over"))
            return
        last_ok = time.monotonic()
