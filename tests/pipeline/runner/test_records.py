"""The record keeper's claims through a lost reply: a heartbeat of ours that was stored although its
answer never came (a timeout in a NATS leader election, or the heartbeat cancelled mid-write as the run
ended) moves the claim's revision; the next compare-and-set must recognise the claim as still ours rather
than abandon the run as taken over — while a real takeover (another owner, or another run) still wins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.bus.memory import MemoryBus
from pipeline.contracts import Claim, Owner, State
from pipeline.owner import current_owner
from pipeline.runner.decide import Decision
from pipeline.runner.records import RecordKeeper, Ticket
from pipeline.storage import open_store
from tests.conftest import make_settings

JOB = "j" + "0123456789abcdef012"


async def keeper_and_ticket(tmp_path: Path) -> tuple[RecordKeeper, MemoryBus, Ticket]:
    settings = make_settings(tmp_path)
    bus = MemoryBus(ack_wait=settings.ack_wait)
    keeper = RecordKeeper(settings, open_store(settings), bus.claims, "render", current_owner())
    admission, ticket = await keeper.admit(JOB, "a0", "17", f"work/jobs/{JOB}/a0/motion.json")
    assert admission.kind == "run" and ticket is not None
    return keeper, bus, ticket


async def land_behind_its_back(bus: MemoryBus, ticket: Ticket, claim: Claim) -> int:
    """Store ``claim`` at the ticket's key as a write whose reply was lost would: the revision moves."""
    found = await bus.claims.get(ticket.key)
    assert found is not None
    revision = await bus.claims.update(ticket.key, claim.model_dump_json().encode(), found[1])
    assert revision is not None
    return revision


def test_a_heartbeat_stored_without_its_reply_is_still_ours(tmp_path: Path) -> None:
    """Our own claim at a newer revision (a later heartbeat time): the next beat succeeds at the stored
    revision, the run is not lost, and finishing removes the claim."""

    async def body() -> None:
        keeper, bus, ticket = await keeper_and_ticket(tmp_path)
        landed = ticket.claim.model_copy(update={"heartbeat_at": datetime.now(UTC) + timedelta(seconds=1)})
        moved = await land_behind_its_back(bus, ticket, landed)
        assert await keeper.beat(ticket) is True and not ticket.lost
        assert ticket.revision > moved
        # a second lost heartbeat, then the run ends: the claim is still removed
        await land_behind_its_back(bus, ticket, landed)
        await keeper.finish(ticket, Decision("ack", State.done, "done"))
        assert await bus.claims.get(ticket.key) is None

    asyncio.run(body())


def test_a_takeover_is_still_a_takeover(tmp_path: Path) -> None:
    """Another owner's claim, or our owner with another run (a second slot of this process took the
    task over after this one went silent): the beat fails and the run is lost; the claim is left as
    the new owner wrote it (finishing a lost run does not remove it)."""

    async def body() -> None:
        keeper, bus, ticket = await keeper_and_ticket(tmp_path)
        other = Owner(host="elsewhere", boot="b", pid=1, started=1.0, worker="elsewhere:1:x")
        await land_behind_its_back(bus, ticket, ticket.claim.model_copy(update={"owner": other}))
        assert await keeper.beat(ticket) is False and ticket.lost

        keeper, bus, ticket = await keeper_and_ticket(tmp_path / "again")
        again = ticket.claim.model_copy(update={"runs": [*ticket.claim.runs, ticket.run]})
        await land_behind_its_back(bus, ticket, again)
        assert await keeper.beat(ticket) is False and ticket.lost
        await keeper.finish(ticket, Decision("ack", State.done, "done"))
        found = await bus.claims.get(ticket.key)
        assert found is not None and len(Claim.model_validate_json(found[0]).runs) == 2

    asyncio.run(body())
