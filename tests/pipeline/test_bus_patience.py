"""The bus rides out an unavailable NATS (a leader election, a reconnect): ``transient`` tells such an
error from a refusal, ``patiently`` retries it for the patience and then lets it stand, and a claim
compare-and-set whose reply was lost (stored, but the answer timed out) is recognised on its retry as
our own write rather than reported as someone else's — on a real nats-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError, ServiceUnavailableError
from structlog.testing import capture_logs

from pipeline.bus import NatsBus, NatsClaims, patiently, transient
from pipeline.errors import BusError
from tests.conftest import make_settings


def wrapped(cause: BaseException) -> BusError:
    try:
        raise BusError("cannot write claim x") from cause
    except BusError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (nats.errors.TimeoutError(), True),
        (TimeoutError(), True),
        (nats.errors.NoRespondersError(), True),
        (nats.errors.ConnectionReconnectingError(), True),
        (ServiceUnavailableError(code=503, description="JetStream system temporarily unavailable"), True),
        (APIError(code=503, description="no leader"), True),
        (wrapped(nats.errors.TimeoutError()), True),
        (KeyWrongLastSequenceError("wrong last sequence: 3"), False),
        (NotFoundError(code=404), False),
        (nats.errors.AuthorizationError(), False),
        (BusError("cannot reach NATS"), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_tells_an_unavailable_bus_from_a_refusal(error: BaseException, expected: bool) -> None:
    """Timeouts, no responders, a reconnecting connection and JetStream's 503 (also inside a BusError)
    are worth waiting out; a wrong revision, a missing stream, bad credentials or our own bug are not."""
    assert transient(error) is expected


def test_patiently_waits_out_an_outage_logs_it_and_gives_up_after_the_patience() -> None:
    """Two no-responders, then an answer: three tries, two ``bus_unavailable`` events and one
    ``bus_recovered``. A refusal is raised at the first try. A bus that never answers is given up after
    the patience (not much later), with ``bus_gave_up``, and its own error stands."""
    tries: list[float] = []

    async def flaky() -> str:
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise nats.errors.NoRespondersError
        return "stored"

    with capture_logs() as logs:
        assert asyncio.run(patiently(flaky, "publish", 30.0)) == "stored"
    names = [e["event"] for e in logs]
    assert names == ["bus_unavailable", "bus_unavailable", "bus_recovered"], logs
    assert tries[1] - tries[0] >= 0.2 and tries[2] - tries[1] >= 0.45  # growing pauses

    refused: list[int] = []

    async def refusal() -> None:
        refused.append(1)
        raise KeyWrongLastSequenceError("wrong last sequence: 3")

    with pytest.raises(KeyWrongLastSequenceError):
        asyncio.run(patiently(refusal, "write_claim", 30.0))
    assert refused == [1]

    async def gone() -> None:
        raise nats.errors.TimeoutError

    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(nats.errors.TimeoutError):
        asyncio.run(patiently(gone, "ack", 1.0))
    assert 0.7 <= time.monotonic() - started <= 2.0
    assert logs[-1]["event"] == "bus_gave_up" and logs[-1]["doing"] == "ack"


class LostReplies:
    """A real key-value bucket whose next ``lose`` write replies are lost (the write is stored by the
    server, then the caller gets ``nats: timeout``: the bucket's leader changed between storing and
    answering), and whose next ``drop`` write requests are lost (nothing stored, the same timeout)."""

    def __init__(self, kv: Any, lose: int = 0, drop: int = 0) -> None:
        self.kv = kv
        self.lose = lose
        self.drop = drop

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    async def _lost(self, result: Any) -> Any:
        if self.lose > 0:
            self.lose -= 1
            raise nats.errors.TimeoutError
        return result

    async def create(self, key: str, value: bytes) -> Any:
        return await self._lost(await self.kv.create(key, value))

    async def update(self, key: str, value: bytes, last: int) -> Any:
        if self.drop > 0:
            self.drop -= 1
            raise nats.errors.TimeoutError
        return await self._lost(await self.kv.update(key, value, last=last))

    async def delete(self, key: str, last: int) -> Any:
        return await self._lost(await self.kv.delete(key, last=last))


@pytest.mark.integration
def test_a_claim_write_whose_reply_was_lost_is_recognised_as_ours(tmp_path: Path, nats_url: str) -> None:
    """create, update and delete each stored but answered with a timeout: the retry is refused (the
    revision moved), the stored value is ours, so the call succeeds with the stored revision (delete:
    the key is gone). A value someone else wrote meanwhile is still a refusal, and so is a delete at a
    stale revision."""
    settings = make_settings(tmp_path, bus_patience=30.0)

    async def body() -> None:
        bus = await NatsBus.connect(nats_url, settings)
        try:
            assert isinstance(bus.claims, NatsClaims)
            real = bus.claims.kv
            claims = NatsClaims(LostReplies(real, lose=3), patience=30.0)  # type: ignore[arg-type]
            first = await claims.create("render.j1.a0", b"ours-1")
            assert first is not None and await claims.get("render.j1.a0") == (b"ours-1", first)
            second = await claims.update("render.j1.a0", b"ours-2", first)
            assert second is not None and second > first
            assert await claims.delete("render.j1.a0", second) is True
            assert await claims.get("render.j1.a0") is None
            # a real conflict: our request lost (a timeout, nothing stored) while someone else wrote
            mine = await claims.create("render.j2.a0", b"mine")
            assert mine is not None
            await real.update("render.j2.a0", b"theirs", last=mine)
            claims.kv.drop = 1  # type: ignore[attr-defined]
            assert await claims.update("render.j2.a0", b"mine-again", mine) is None
            assert (await claims.get("render.j2.a0") or (b"", 0))[0] == b"theirs"
            # a delete at a stale revision is a refusal (False), as the protocol says, not an error
            assert await claims.delete("render.j2.a0", mine) is False
        finally:
            await bus.close()

    asyncio.run(body())
