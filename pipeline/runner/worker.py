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

The bus briefly unavailable (a NATS cluster electing a new stream leader takes seconds; a client
reconnecting to another node) is ridden out, never a reason to exit: every bus call retries for
``bus_patience`` seconds (``pipeline.bus.patiently``), an idle slot whose fetch fails waits and pulls
again for as long as it takes, and a call that still fails while a message is handled leaves the message
to come back (the task's record and claim make a redelivery of finished work a no-op). Only a worker that
cannot start (reach the stream, bind its consumers, reclaim) within ``bus_patience`` exits, non-zero, for
its supervisor to restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from pipeline.bus import FIRST_PAUSE, LONGEST_PAUSE, Bus, ClaimStore, Consumer, Delivery, durable_name
from pipeline.config import Settings
from pipeline.devices import usable_cores
from pipeline.errors import (
    BusError,
    JobCancelled,
)
from pipeline.events import build_event
from pipeline.keys import (
    cancel_subject,
    event_subject,
    subject_for,
)
from pipeline.owner import current_owner, dead_scratch, scratch_root
from pipeline.runner.handler import Handler, resident_mib
from pipeline.runner.records import RecordKeeper
from pipeline.stage import ModelCache, Stage, get_stage
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.runner")

T = TypeVar("T")
RELEASE_AFTER = 0.2
"""Seconds a stage's worker waits for another message after a run before it releases the models only
its stage uses (``Worker.release_models_when_idle``): the tasks of one job arrive together, so a fifth
of a second with none means the job has passed; a whole fetch (``pull_seconds``) let the render start
while Whisper was still held."""


async def _patiently(call: Callable[[], Awaitable[T]], what: str, patience: float) -> T:
    """A start-up step ``call()``, tried again with growing pauses while the bus is unavailable
    (``BusError``, a timeout), for at most ``patience`` seconds (``bus_patience``); then its error
    stands and the worker exits for its supervisor to restart. (Each bus call inside is patient
    itself; this also covers the steps that report a refusal as ``BusError``.)"""
    deadline, pause = time.monotonic() + patience, 0.5
    while True:
        try:
            return await call()
        except (BusError, TimeoutError) as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("bus_unavailable_at_start", doing=what, error=repr(exc), retry_in=pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)


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
        self.models = (models or ModelCache()).for_stage(stage)
        """The process's models, each use noted as this stage's (``ModelCache.release``)."""
        self.owner = current_owner()
        self.keeper = RecordKeeper(settings, store, claims, stage, self.owner)
        impl = implementation or get_stage(stage)
        self.handler = Handler(settings, store, bus, stage, impl, self.models, self.keeper)
        self.handled = 0
        self.pull_seconds = 1.0
        """How long one fetch waits for a message (also the longest a stop waits for an idle slot)."""
        self.abandon_idle_pulls = False
        """At stop, cancel the fetches of idle slots instead of letting them run out: only for a bus that
        is thrown away with this process (``mouthpiece render``'s private nats-server), where a message a
        cancelled fetch was handed cannot be left waiting for anyone."""
        self._pulling: set[asyncio.Task[None]] = set()
        self.warm_while_serving = False
        """Take messages while ``warm_up`` still loads the models (a job's first use of a model waits for
        that load, not for every stage's): for ``mouthpiece render``, whose one job is waiting. A
        warm-up that fails still ends the worker. Long-lived workers warm up first, so that a model that
        will not load stops them before they take anyone's job."""
        self.release_models_when_idle = False
        """Give back the models only this stage uses (``ModelCache.release``) once a fetch after a run
        has waited ``RELEASE_AFTER`` seconds with no run in flight: for ``mouthpiece render``, whose one
        job does not come back to a stage it has passed (Whisper and the aligner's decoders, about
        250 MiB, are not held through the render). A later message loads them again."""
        self.served: tuple[str, ...] = (stage,)
        """The stages this process serves (``Stack.run_workers`` says): its default concurrency shares
        the cores among them (``Settings.concurrency_of``)."""
        self._ran_since_release = False
        self._warming: asyncio.Future[None] | None = None
        self._last_message = time.monotonic()

    async def serve(
        self, stop: asyncio.Event, *, max_messages: int | None = None, idle_exit: float | None = None
    ) -> None:
        """Pull and run messages until ``stop`` is set, ``max_messages`` were handled, or ``idle_exit``
        seconds passed without a message; then finish (drain) what is in flight."""
        self.handler.loop = asyncio.get_running_loop()
        warming = asyncio.ensure_future(asyncio.to_thread(self.impl.warm_up, self.settings, self.models))
        self._warming = warming
        if not self.warm_while_serving:
            await warming
        await asyncio.to_thread(self.impl.prepare_store, self.store, self.settings)
        await asyncio.to_thread(self._remove_dead_scratch)
        await self._reclaim()
        patience = self.settings.bus_patience
        consumers = [
            await _patiently(functools.partial(self._consume, pool), "consume", patience)
            for pool in self.pools
        ]
        await _patiently(
            lambda: self.bus.subscribe(cancel_subject(self.settings), self._on_cancel), "subscribe", patience
        )
        slots = self.settings.concurrency_of(self.stage, self.served, usable_cores())
        if max_messages is not None:  # a Job for one message (Kubernetes) takes no second one beside it
            slots = min(slots, max(1, max_messages))
        log.info(
            "worker_started", stage=self.stage, pools=list(self.pools), worker=self.owner.worker, slots=slots
        )
        enough = asyncio.Event()
        loops = [
            asyncio.create_task(self._pull_loop(consumers, stop, enough, max_messages)) for _ in range(slots)
        ]
        watch = asyncio.create_task(self._watch_idle(enough, idle_exit))
        warming.add_done_callback(lambda done: _end_if_failed(done, enough))
        await _first_of(stop, enough)
        enough.set()
        watch.cancel()
        if self.abandon_idle_pulls:
            for task in self._pulling:
                task.cancel()
        _, pending = await asyncio.wait(loops, timeout=self.settings.drain_seconds + 0.5)
        for task in pending:  # drain time is over: the runs are told to stop and handed back
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        log.info("worker_stopped", stage=self.stage, handled=self.handled, abandoned=len(pending))
        await warming  # a warm-up that failed ends the worker with its error

    async def _consume(self, pool: str) -> Consumer:
        return await self.bus.consume(
            durable_name(self.stage, pool), subject_for(self.settings, self.stage, pool)
        )

    async def _pull_loop(
        self, consumers: list[Consumer], stop: asyncio.Event, enough: asyncio.Event, limit: int | None
    ) -> None:
        # a fetch in flight is never cancelled: the server may already have handed it a message, which
        # would then wait a whole ack_wait; stopping takes at most one pull_seconds instead
        turn, outage = 0, _Outage()
        while not (stop.is_set() or enough.is_set()):
            consumer = consumers[turn % len(consumers)]
            turn += 1
            wait = self.pull_seconds
            if self.release_models_when_idle and self._ran_since_release:
                wait = min(wait, RELEASE_AFTER)  # the models go soon after the last run, not a fetch later
            delivery = await self._pull_marked(consumer, wait / len(consumers), outage)
            if delivery is None:
                await self._release_if_idle()
                continue
            await self._handle_safely(delivery)
            self._ran_since_release = True
            self.handled += 1
            if limit is not None and self.handled >= limit:
                enough.set()

    async def _release_if_idle(self) -> None:
        """``release_models_when_idle``: after a run, when no run is in flight and the warm-up is over
        (a model it is still loading would stay), give back what only this stage uses."""
        if not (self.release_models_when_idle and self._ran_since_release) or self.handler.running:
            return
        if self._warming is None or not self._warming.done():
            return
        self._ran_since_release = False
        try:
            names = await asyncio.to_thread(self.models.release, self.stage)
        except Exception as exc:  # memory not given back is no reason to stop serving
            log.warning("models_release_failed", stage=self.stage, error=repr(exc))
            return
        if names:
            log.info("models_released", stage=self.stage, models=names, rss_mib=resident_mib())

    async def _watch_idle(self, enough: asyncio.Event, idle_exit: float | None) -> None:
        if idle_exit is None:
            return
        while True:
            await asyncio.sleep(min(1.0, idle_exit / 4))
            if not self.handler.running and time.monotonic() - self._last_message >= idle_exit:
                log.info("worker_idle_exit", stage=self.stage, idle_seconds=idle_exit)
                enough.set()
                return

    async def _pull_marked(self, consumer: Consumer, timeout: float, outage: _Outage) -> Delivery | None:
        """``_pull``, with this slot's task marked as idle (``abandon_idle_pulls``) while it waits."""
        task = asyncio.current_task()
        assert task is not None
        self._pulling.add(task)
        try:
            return await self._pull(consumer, timeout, outage)
        finally:
            self._pulling.discard(task)

    async def _pull(self, consumer: Consumer, timeout: float, outage: _Outage) -> Delivery | None:
        """The next message, or None. A bus outage (an election, a reconnect) makes this slot wait, with
        pauses growing to ``LONGEST_PAUSE``, and try again for as long as it lasts: an idle slot has
        nothing in flight, and exiting would only trade the wait for a restart."""
        try:
            delivery = await consumer.next(timeout=timeout)
        except Exception as exc:  # bus unavailable: wait, the client reconnects
            pause = outage.failed()
            log.warning(
                "pull_failed", stage=self.stage, error=repr(exc), waited=outage.waited(), retry_in=pause
            )
            await asyncio.sleep(pause)
            return None
        if outage.since is not None:
            log.info("bus_recovered", doing="pull", stage=self.stage, waited=outage.waited())
            outage.since, outage.pause = None, FIRST_PAUSE
        if delivery is not None:
            self._last_message = time.monotonic()
        return delivery

    async def _handle_safely(self, delivery: Delivery) -> None:
        """Handle one message. Nothing that goes wrong here ends the loop: the message comes back."""
        try:
            await self.handler.handle(delivery)
        except Exception as exc:  # e.g. the store failed while recording an outcome
            log.error("message_handling_failed", stage=self.stage, error=repr(exc))
            with contextlib.suppress(Exception):
                await delivery.nak(delay=(self.settings.backoff or [5.0])[0])
        self._last_message = time.monotonic()

    async def _on_cancel(self, data: bytes) -> None:
        job_id = data.decode(errors="replace")
        for key, ctx in list(self.handler.running.items()):
            if key.startswith(job_id + "/"):
                ctx.stop(JobCancelled("the job was cancelled"))

    def _remove_dead_scratch(self) -> None:
        """Scratch folders left by processes that died (SIGKILL leaves them) are removed at start."""
        for path in scratch_root(self.settings.data_dir).iterdir():
            if path.is_dir() and path.name.startswith(("mp-", "nats-")) and dead_scratch(path.name):
                shutil.rmtree(path, ignore_errors=True)
                log.info("scratch_removed", path=path.name)

    async def _reclaim(self) -> None:
        """Take back, at once, the tasks a predecessor on this host was running when it died: release
        their claims and announce their triggers again. NATS briefly unreachable at start (a cluster
        electing a leader takes seconds) is waited out for ``bus_patience`` seconds, not fatal."""
        for claim in await _patiently(self.keeper.reclaim, "reclaim", self.settings.bus_patience):
            if "/" not in claim.trigger:
                continue
            bucket, key = claim.trigger.split("/", 1)
            info = await asyncio.to_thread(self.store.stat, bucket, key)
            subject = event_subject(self.settings, bucket, key) if info else None
            if info is None or subject is None:
                continue
            await self.bus.publish(subject, build_event(info), msg_id=f"reclaim-{uuid.uuid4().hex}")
            log.info("task_reclaimed", job_id=claim.job_id, task=claim.task, trigger=claim.trigger)

    @property
    def impl(self) -> Stage:
        """The stage this worker runs (tests may swap it before serving): the handler's."""
        return self.handler.impl

    @impl.setter
    def impl(self, stage: Stage) -> None:
        self.handler.impl = stage

    async def handle(self, delivery: Delivery) -> str:
        """Process one message end to end (see ``Handler.handle``)."""
        return await self.handler.handle(delivery)


class _Outage:
    """How long a pull slot has been failing, and its next pause."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.pause = FIRST_PAUSE

    def failed(self) -> float:
        """Note a failure; the pause before the next try."""
        if self.since is None:
            self.since = time.monotonic()
        pause, self.pause = self.pause, min(self.pause * 2, LONGEST_PAUSE)
        return pause

    def waited(self) -> float:
        return round(time.monotonic() - self.since, 1) if self.since is not None else 0.0


def _end_if_failed(warming: asyncio.Future[None], enough: asyncio.Event) -> None:
    """A warm-up that failed while the worker served ends the serving (``serve`` then raises its error)."""
    if not warming.cancelled() and warming.exception() is not None:
        enough.set()


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


__all__ = ["Worker"]
