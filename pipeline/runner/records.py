"""The record keeper: claims, heartbeats and stage records of one stage's runs.

A claim (in the bus's claim store, key ``<stage>.<job>.<task>``) says which worker runs a task now; it
is created or taken over only by compare-and-set, so exactly one worker runs a (job, task, stage) at a
time, across processes and hosts. The owner renews it every ``heartbeat_seconds``; a claim whose owner
is known dead (same host) or silent for ``LIVENESS_BEATS`` intervals is taken over, its open run closed
as crashed. A finished task's claim is removed: its stage record in the store (``records/<task>.<stage>
.json``) is the durable truth from then on, and it carries every run.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from pipeline.bus import ClaimStore
from pipeline.config import Settings
from pipeline.contracts import Claim, Owner, Run, StageRecord, State
from pipeline.owner import known_dead
from pipeline.runner.decide import Admission, Decision, admit, close_abandoned
from pipeline.status import read_record, write_record
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.runner")


def claim_key(stage: str, job_id: str, task: str) -> str:
    return f"{stage}.{job_id}.{task}"


@dataclass
class Ticket:
    """A claim this worker holds, and the record it keeps for the run."""

    key: str
    revision: int
    claim: Claim
    record: StageRecord
    lost: bool = False
    final: bool = False
    shown: float | None = None
    """The progress the stored record shows."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def run(self) -> Run:
        return self.claim.runs[-1]


class RecordKeeper:
    """Claims and records for one stage, on behalf of one worker process (``owner``)."""

    def __init__(self, settings: Settings, store: ObjectStore, claims: ClaimStore, stage: str, owner: Owner):
        self.settings = settings
        self.store = store
        self.claims = claims
        self.stage = stage
        self.owner = owner

    # --- claiming ---------------------------------------------------------------------------------------
    async def admit(
        self, job_id: str, task: str, message_id: str, trigger: str
    ) -> tuple[Admission, Ticket | None]:
        """Decide what the message gets; for ``run``, the claim is ours (returned as a ticket)."""
        key = claim_key(self.stage, job_id, task)
        for _ in range(5):  # a lost compare-and-set means someone else moved: look again
            record = await asyncio.to_thread(read_record, self.store, self.settings, job_id, task, self.stage)
            found = await self.claims.get(key)
            claim = Claim.model_validate_json(found[0]) if found else None
            admission = admit(
                record,
                claim,
                message_id,
                datetime.now(UTC),
                heartbeat=self.settings.heartbeat_seconds,
                max_runs=self.settings.max_deliver,
                dead=known_dead,
            )
            if admission.kind != "run":
                return admission, None
            ticket = await self._take(
                key, found[1] if found else None, job_id, task, message_id, trigger, admission
            )
            if ticket is not None:
                return admission, ticket
        return Admission("busy", note="claim contended"), None

    async def _take(
        self,
        key: str,
        revision: int | None,
        job_id: str,
        task: str,
        message_id: str,
        trigger: str,
        admission: Admission,
    ) -> Ticket | None:
        run = Run(n=len(admission.runs) + 1, worker=self.owner.worker)
        claim = Claim(
            job_id=job_id,
            task=task,
            stage=self.stage,
            owner=self.owner,
            message=message_id,
            trigger=trigger,
            runs=[*admission.runs, run],
        )
        value = claim.model_dump_json().encode()
        new = await (
            self.claims.create(key, value) if revision is None else self.claims.update(key, value, revision)
        )
        if new is None:
            return None
        record = StageRecord(
            job_id=job_id,
            task=task,
            stage=self.stage,
            state=State.running,
            attempt=run.n,
            worker=self.owner.worker,
            trigger=trigger,
            runs=claim.runs,
        )
        return Ticket(key, new, claim, record)

    # --- while running ----------------------------------------------------------------------------------
    async def start(self, ticket: Ticket) -> None:
        await asyncio.to_thread(write_record, self.store, self.settings, ticket.record)

    async def beat(self, ticket: Ticket, *, show: bool = True) -> bool:
        """Renew the claim; False when another worker has taken it over. With ``show``, the stage record
        (what people see) is rewritten too when the run's progress moved since it was last written."""
        async with ticket.lock:
            if ticket.final:
                return True
            ticket.claim.heartbeat_at = datetime.now(UTC)
            value = ticket.claim.model_dump_json().encode()
            new = await self.claims.update(ticket.key, value, ticket.revision)
            if new is None and await self._refresh(ticket):
                new = await self.claims.update(ticket.key, value, ticket.revision)
            if new is None:
                ticket.lost = True
                return False
            ticket.revision = new
            ticket.record.heartbeat_at = ticket.claim.heartbeat_at
            if show and ticket.record.progress != ticket.shown:
                ticket.shown = ticket.record.progress
                with contextlib.suppress(Exception):  # the record is for people; the claim is what counts
                    await asyncio.to_thread(write_record, self.store, self.settings, ticket.record)
        return True

    # --- the end of a run -------------------------------------------------------------------------------
    async def finish(self, ticket: Ticket, decision: Decision, **fields: Any) -> None:
        """Close the run, store the record's final word for it, and remove or release the claim."""
        now = datetime.now(UTC)
        async with ticket.lock:
            ticket.final = True
            reason = ticket.run.reason or decision.reason  # the run's own words, not the retry plan
            closed = ticket.run.model_copy(
                update={"outcome": decision.outcome, "ended_at": now, "reason": reason}
            )
            ticket.claim.runs[-1] = closed
        record = ticket.record
        record.runs = list(ticket.claim.runs)
        record.state = decision.state or record.state
        record.code, record.reason = decision.code, decision.reason
        record.error = decision.code if decision.state in (State.failed, State.cancelled) else None
        if decision.state != State.queued:
            record.finished_at = now
        for name, value in fields.items():
            setattr(record, name, value)
        await asyncio.to_thread(write_record, self.store, self.settings, record)
        await self._settle_claim(ticket, decision)

    async def _settle_claim(self, ticket: Ticket, decision: Decision) -> None:
        if decision.claim == "remove":
            if not await self.claims.delete(ticket.key, ticket.revision) and await self._refresh(ticket):
                await self.claims.delete(ticket.key, ticket.revision)
        elif decision.claim == "release":
            released = ticket.claim.model_copy(update={"state": "released", "owner": None, "message": None})
            value = released.model_dump_json().encode()
            written = await self.claims.update(ticket.key, value, ticket.revision)
            if written is None and await self._refresh(ticket):
                await self.claims.update(ticket.key, value, ticket.revision)
            ticket.claim.state, ticket.claim.owner, ticket.claim.message = "released", None, None

    async def _refresh(self, ticket: Ticket) -> bool:
        """After a compare-and-set refused for a moved revision: whether the stored claim is still this
        run's own (our owner, our message, running, the same runs) — a heartbeat of ours that was
        written although its reply never came (a timeout in a leader election, or the heartbeat
        cancelled mid-write as the run ended) — and if so, ``ticket.revision`` becomes its revision.
        Another worker's takeover writes its own owner, and a release clears it: those stay refused."""
        found = await self.claims.get(ticket.key)
        if found is None:
            return False
        stored = Claim.model_validate_json(found[0])
        ours = (
            stored.state == "running"
            and stored.owner == self.owner
            and stored.message == ticket.claim.message
            and len(stored.runs) == len(ticket.claim.runs)
        )
        if ours:
            log.info("claim_revision_refreshed", key=ticket.key, revision=found[1], had=ticket.revision)
            ticket.revision = found[1]
        return ours

    async def give_up(self, job_id: str, task: str, trigger: str, runs: list[Run], reason: str) -> None:
        """Record a task whose runs used up the budget as failed (before running it again)."""
        record = StageRecord(
            job_id=job_id,
            task=task,
            stage=self.stage,
            state=State.failed,
            attempt=len(runs),
            worker=self.owner.worker,
            trigger=trigger,
            runs=runs,
            code="gave_up",
            error="gave_up",
            reason=reason,
            finished_at=datetime.now(UTC),
        )
        await asyncio.to_thread(write_record, self.store, self.settings, record)
        key = claim_key(self.stage, job_id, task)
        found = await self.claims.get(key)
        if found is not None:
            await self.claims.delete(key, found[1])

    async def record_state(
        self, job_id: str, task: str, trigger: str, state: State, code: str, reason: str
    ) -> None:
        """Store a final record for a task that did not run (e.g. its job was cancelled)."""
        record = StageRecord(
            job_id=job_id,
            task=task,
            stage=self.stage,
            state=state,
            attempt=0,
            worker=self.owner.worker,
            trigger=trigger,
            code=code,
            reason=reason,
            finished_at=datetime.now(UTC),
        )
        await asyncio.to_thread(write_record, self.store, self.settings, record)

    # --- after a crash ----------------------------------------------------------------------------------
    async def reclaim(self) -> list[Claim]:
        """Release the claims of this stage whose owners are known dead (a predecessor on this host),
        closing their runs as crashed; returns them, so their triggers can be announced again."""
        released = []
        for key in await self.claims.keys(f"{self.stage}."):
            found = await self.claims.get(key)
            if found is None:
                continue
            claim = Claim.model_validate_json(found[0])
            if claim.state != "running" or claim.owner is None or not known_dead(claim.owner):
                continue
            claim.runs = close_abandoned(claim.runs, claim, datetime.now(UTC), why="died")
            claim.state, claim.owner, claim.message = "released", None, None
            if await self.claims.update(key, claim.model_dump_json().encode(), found[1]) is not None:
                released.append(claim)
        return released
