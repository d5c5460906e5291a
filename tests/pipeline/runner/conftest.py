"""The runner's contract-test harness: the same tests on the in-memory bus and on a real nats-server.

``harness`` is parametrized: ``memory`` (``pipeline.bus.memory``; milliseconds, no server) by default and
``nats`` (a real JetStream server, marked ``integration``). Stages in these tests are small test stages
(``Ingest``, ``Deliver``) whose behaviour each test sets: the runner is what is under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.bus import Bus, ClaimStore, threadsafe_publisher
from pipeline.bus.memory import MemoryBus
from pipeline.config import Settings
from pipeline.contracts import Claim, JobSpec, Manifest, MediaInfo, Owner, StageRecord, job_id_for
from pipeline.events import build_event, message_id
from pipeline.keys import event_subject, spec_key
from pipeline.owner import boot_id, process_start
from pipeline.runner import Worker
from pipeline.runner.records import claim_key
from pipeline.stage import Stage, StageContext
from pipeline.status import read_record
from pipeline.storage import ObjectInfo, ObjectStore, open_store
from pipeline.storage.emitting import EmittingStore
from tests.conftest import make_settings

Behaviour = Callable[[StageContext, Any], list[Manifest] | None]


class Ingest(Stage):
    """A first stage for runner tests: writes the job's spec, hands on one manifest (task a0), and
    does whatever ``behaviour`` adds (sleep, raise, report progress)."""

    name = "validate"
    takes_upload = True

    def __init__(self, behaviour: Behaviour | None = None, spec: JobSpec | None = None) -> None:
        self.behaviour = behaviour
        self.spec = spec or JobSpec(audio="a.flac")
        self.calls: list[float] = []

    def run(self, ctx: StageContext, inputs: ObjectInfo) -> list[Manifest]:
        self.calls.append(time.monotonic())
        ctx.save_bytes(
            self.spec.model_dump_json().encode(), "spec.json", "application/json", key=spec_key(ctx.job_id)
        )
        if self.behaviour is not None:
            self.behaviour(ctx, inputs)
        return [manifest(ctx.job_id, "a0", self.name)]


class Deliver(Stage):
    """A later stage for runner tests: hands the manifest on after ``behaviour``."""

    name = "publish"

    def __init__(self, behaviour: Behaviour | None = None, name: str = "publish") -> None:
        self.behaviour = behaviour
        self.name = name  # type: ignore[misc]
        self.calls: list[float] = []

    def run(self, ctx: StageContext, inputs: Manifest) -> list[Manifest]:
        self.calls.append(time.monotonic())
        assert ctx.spec is not None  # the runner hands the spec in
        if self.behaviour is not None:
            self.behaviour(ctx, inputs)
        return [inputs.advance(self.name)]


def manifest(job_id: str, task: str, stage: str) -> Manifest:
    media = MediaInfo(audio_seconds=1.0, fps=25.0, width=2, height=2, frames=1, still=True)
    return Manifest(
        job_id=job_id, task=task, stage=stage, spec_key=spec_key(job_id), avatar_name="a", media=media
    )


def slow(seconds: float, step: float = 0.05) -> Behaviour:
    """A behaviour that works for ``seconds``, reporting progress (where a stop is noticed)."""

    def run(ctx: StageContext, inputs: Any) -> None:
        for i in range(int(seconds / step)):
            time.sleep(step)
            ctx.progress(i * step / seconds)

    return run


def dead_owner() -> Owner:
    """The identity of a process on this host that has exited (as a crashed worker's claim names it)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    started = process_start(proc.pid)
    proc.wait()
    import socket

    host = socket.gethostname()
    return Owner(host=host, boot=boot_id(), pid=proc.pid, started=started, worker=f"{host}:{proc.pid}:dead")


class Harness:
    """A store, a bus and its claim store, with helpers to upload, serve and look."""

    def __init__(self, kind: str, settings: Settings, nats_url: str | None) -> None:
        self.kind = kind
        self.settings = settings
        self.nats_url = nats_url
        self.raw: ObjectStore = open_store(settings)
        self.store: ObjectStore = self.raw
        self.bus: Bus
        self.claims: ClaimStore

    async def open(self) -> None:
        if self.kind == "memory":
            memory = MemoryBus(ack_wait=self.settings.ack_wait)
            self.bus, self.claims = memory, memory.claims
        else:
            from pipeline.bus import NatsBus

            assert self.nats_url is not None
            nats = await NatsBus.connect(self.nats_url, self.settings)
            self.bus, self.claims = nats, nats.claims
        # client event source: writes that the routing table matches are announced, as in `up`
        self.store = EmittingStore(
            self.store, self.settings, threadsafe_publisher(self.bus, asyncio.get_running_loop())
        )

    def run(self, body: Callable[[Harness], Any]) -> Any:
        async def main() -> Any:
            await self.open()
            try:
                return await body(self)
            finally:
                await self.bus.close()

        return asyncio.run(main())

    # --- doing -------------------------------------------------------------------------------------------
    async def upload(
        self, key: str = "audio/a.flac", data: bytes = b"voice", *, again: bool = False
    ) -> ObjectInfo:
        """Put an input and announce it; ``again`` announces it a second time (another message id)."""
        info = await asyncio.to_thread(self.raw.put, self.settings.bucket_inputs, key, data)
        await self.announce(info)
        if again:
            await self.announce(info, msg_id="again")
        return info

    async def announce(self, info: ObjectInfo, msg_id: str | None = None) -> None:
        subject = event_subject(self.settings, info.bucket, info.key)
        assert subject is not None
        await self.bus.publish(
            subject, build_event(info), msg_id=msg_id or message_id(info.bucket, info.key, info.etag)
        )

    def worker(self, stage: Stage, **kw: Any) -> Worker:
        worker = Worker(
            self.settings, self.store, self.bus, self.claims, stage.name, implementation=stage, **kw
        )
        worker.pull_seconds = 0.05 if self.kind == "memory" else 0.2  # quick to stop between tests
        return worker

    @contextlib.asynccontextmanager
    async def serving(self, *workers: Worker) -> AsyncIterator[asyncio.Event]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.serve(stop)) for w in workers]
        try:
            yield stop
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    async def put_claim(self, job_id: str, task: str, stage: str, claim: Claim) -> None:
        await self.claims.create(claim_key(stage, job_id, task), claim.model_dump_json().encode())

    # --- looking -----------------------------------------------------------------------------------------
    def record(self, job_id: str, stage: str, task: str = "a0") -> StageRecord | None:
        return read_record(self.store, self.settings, job_id, "job" if stage == "validate" else task, stage)

    async def until(self, check: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := await asyncio.to_thread(check):
                return value
            await asyncio.sleep(0.02)
        raise TimeoutError("condition not met")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return [i.key for i in self.store.list(bucket, prefix)]

    async def pending(self) -> int:
        """Messages the bus still holds (waiting or unacknowledged)."""
        if isinstance(self.bus, MemoryBus):
            return self.bus.pending
        info = await self.bus.js.stream_info(self.settings.stream)  # type: ignore[attr-defined]
        return int(info.state.messages)


def job_of(info: ObjectInfo) -> str:
    return job_id_for(info.bucket, info.key, info.etag)


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.integration)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    url = request.getfixturevalue("nats_url") if request.param == "nats" else None
    settings = make_settings(
        tmp_path,
        chain=["validate", "publish"],
        heartbeat_seconds=0.1,
        ack_wait=3.0,
        backoff=[0.05],
        max_deliver=3,
        drain_seconds=5.0,
    )
    return Harness(request.param, settings, url)
