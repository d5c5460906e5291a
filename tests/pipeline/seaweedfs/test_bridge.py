"""The bridge on a real SeaweedFS (``weed mini``) and a real nats-server: uploads become stage messages
with the ETag S3 reports, and nothing is lost when the bridge or the filer restarts."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from minio.commonconfig import Tags

from pipeline.bus import NatsBus
from pipeline.config import Settings
from pipeline.contracts import job_id_for
from pipeline.events import parse_event
from pipeline.keys import subject_for
from pipeline.seaweedfs import filer_pb
from pipeline.seaweedfs.bridge import Bridge, OffsetStore
from pipeline.storage import open_store
from pipeline.storage.s3 import S3Store
from tests.conftest import SeaweedS3, make_settings, s3_settings
from tests.pipeline.seaweedfs.test_records import entry, event

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("weed-bridge")).start()
    yield server
    server.stop()


def bridge_settings(tmp: Path, weed: SeaweedS3, nats_url: str) -> Settings:
    return s3_settings(
        tmp,
        weed,
        nats_url=nats_url,
        event_source="seaweedfs",
        seaweedfs_filer=f"127.0.0.1:{weed.ports[5]}",
        bridge_offsets_bucket=f"off-{tmp.name[-8:].replace('_', '-')}",
    )


class Running:
    """A bridge task and a consumer of the validate subject, on one event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Running:
        self.bus = await NatsBus.connect(self.settings.nats_url or "", self.settings)
        self.bridge = Bridge(
            self.settings, self.bus, await OffsetStore.open(self.bus, self.settings, "filer")
        )
        self.task = asyncio.create_task(self.bridge.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await self.task
        await self.bus.close()


async def received(settings: Settings, count: int, timeout: float = 20.0) -> list[tuple[str, str]]:
    """(key, etag) of the next ``count`` validate messages (acked)."""
    bus = await NatsBus.connect(settings.nats_url or "", settings)
    consumer = await bus.consume("validate", subject_for(settings, "validate"))
    out: list[tuple[str, str]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < count and asyncio.get_running_loop().time() < deadline:
        delivery = await consumer.next(timeout=1.0)
        if delivery is not None:
            event = parse_event(delivery.data)[0]
            out.append((event.object.key, event.object.etag))
            await delivery.ack()
    await bus.close()
    return out


def client(settings: Settings) -> Minio:
    return S3Store.from_settings(settings).client


def put(c: Minio, bucket: str, key: str, data: bytes) -> str:
    return str(c.put_object(bucket, key, io.BytesIO(data), len(data), part_size=5 * 1024 * 1024).etag).strip(
        '"'
    )


def test_uploads_become_messages_with_the_etag_s3_reports(
    tmp_path: Path, weed: SeaweedS3, nats_url: str
) -> None:
    """Single and multipart uploads and an overwrite each make one validate message whose ETag is what
    S3 lists (so job ids agree with the reconcile sweep); tagging and unrouted keys make none."""
    settings = bridge_settings(tmp_path, weed, nats_url)
    store = open_store(settings)
    c = client(settings)

    async def main() -> list[tuple[str, str]]:
        async with Running(settings):
            await asyncio.sleep(0.5)
            await asyncio.to_thread(put, c, settings.bucket_inputs, "audio/hello world.flac", b"a" * 1000)
            await asyncio.to_thread(
                put, c, settings.bucket_inputs, "audio/big.wav", os.urandom(6 * 1024 * 1024)
            )
            tags = Tags.new_object_tags()
            tags["seen"] = "yes"
            await asyncio.to_thread(c.set_object_tags, settings.bucket_inputs, "audio/big.wav", tags)
            await asyncio.to_thread(put, c, settings.bucket_inputs, "notes/readme.txt", b"not a trigger")
            await asyncio.to_thread(put, c, settings.bucket_inputs, "audio/hello world.flac", b"b" * 1000)
            got = await received(settings, 3)
            got += await received(settings, 1, timeout=3.0)  # nothing more arrives
            return got

    got = asyncio.run(main())
    listed = {(i.key, i.etag) for i in store.list(settings.bucket_inputs, "audio/")}
    assert len(got) == 3
    assert got[1] in listed and got[2] in listed  # the multipart object and the overwrite, as S3 lists them
    assert got[0][0] == "audio/hello world.flac" and got[0] != got[2]
    assert got[1][1].endswith("-2")
    # the sweep computes the same job ids from the listing: an input with a job is never re-announced
    assert {job_id_for(settings.bucket_inputs, k, e) for k, e in listed} <= {
        job_id_for(settings.bucket_inputs, k, e) for k, e in got
    }


def test_nothing_is_lost_while_the_bridge_or_the_filer_is_down(
    tmp_path: Path, weed: SeaweedS3, nats_url: str
) -> None:
    """Uploads made while the bridge is stopped, and across a filer restart, all arrive after it resumes
    from its stored offset; each upload once."""
    settings = bridge_settings(tmp_path, weed, nats_url)
    open_store(settings)
    c = client(settings)

    async def main() -> list[tuple[str, str]]:
        async with Running(settings) as first:
            await asyncio.to_thread(put, c, settings.bucket_inputs, "audio/1.flac", b"1" * 100)
            got = await received(settings, 1)
        assert first.bridge.saved > 0
        await asyncio.to_thread(put, c, settings.bucket_inputs, "audio/2.flac", b"2" * 100)  # bridge down
        await asyncio.to_thread(weed.stop)
        await asyncio.to_thread(weed.start)  # the filer restarts: its log survives
        await asyncio.to_thread(put, c, settings.bucket_inputs, "audio/3.flac", b"3" * 100)
        async with Running(settings):
            got += await received(settings, 2)
            await asyncio.to_thread(weed.stop)  # and once more while the bridge follows it
            await asyncio.to_thread(weed.start)
            await asyncio.to_thread(put, c, settings.bucket_inputs, "audio/4.flac", b"4" * 100)
            got += await received(settings, 1, timeout=40.0)
            got += await received(settings, 1, timeout=3.0)
        return got

    keys = [k for k, _ in asyncio.run(main())]
    assert keys == ["audio/1.flac", "audio/2.flac", "audio/3.flac", "audio/4.flac"]


def test_the_stored_position_is_the_published_events_own(tmp_path: Path, nats_url: str) -> None:
    """After an upload's event is on the bus, the stored position is that event's time — not the one
    before it — so a restart resumes after it; an idle heartbeat after it moves nothing."""
    offsets_bucket = f"off-{tmp_path.name[-8:].replace('_', '-')}"
    settings = make_settings(
        tmp_path, nats_url=nats_url, event_source="seaweedfs", bridge_offsets_bucket=offsets_bucket
    )
    responses = [
        event("/buckets/inputs", new=entry("audio", directory=True), ts=100),
        event("/buckets/inputs/audio", new=entry("hello.flac", etag="398533d4"), ts=200),
        filer_pb.messages()["SubscribeMetadataResponse"](ts_ns=300),  # an idle heartbeat
    ]

    async def stream() -> AsyncIterator[Any]:
        for response in responses:
            yield response

    async def main() -> tuple[int, int, int | None]:
        bus = await NatsBus.connect(nats_url, settings)
        offsets = await OffsetStore.open(bus, settings, "filer")
        bridge = Bridge(settings, bus, offsets)
        await bridge._consume(stream())
        stored = await offsets.load()
        await bus.close()
        return bridge.position, bridge.saved, stored

    assert asyncio.run(main()) == (200, 200, 200)


class FakeFiler:
    """A stand-in for the SeaweedFS filer's ``SubscribeMetadata`` (an external service): it serves its
    metadata log from ``since_ns`` and, while idle, heartbeats stamped with the time of the newest
    event it knows of. ``late`` events are in the log with an older stamp but reach a subscriber only
    after a heartbeat stamped later than them (a slow filer write): the moment the issue is about."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.late: list[Any] = []
        self.subscriptions: list[int] = []
        self.heartbeat_sent = asyncio.Event()
        self.port = 0

    async def start(self) -> FakeFiler:
        import grpc

        messages = filer_pb.messages()
        handler = grpc.unary_stream_rpc_method_handler(
            self._subscribe,
            request_deserializer=messages["SubscribeMetadataRequest"].FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("filer_pb.SeaweedFiler", {"SubscribeMetadata": handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def _subscribe(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.subscriptions.append(int(request.since_ns))
        for response in sorted(self.log, key=lambda r: r.ts_ns):
            if response.ts_ns > request.since_ns:
                yield response
        newest = max([r.ts_ns for r in self.log + self.late] + [request.since_ns])
        yield filer_pb.messages()["SubscribeMetadataResponse"](ts_ns=newest + 1000)  # idle heartbeat
        self.heartbeat_sent.set()
        for response in self.late:  # delivered after the heartbeat, stamped before it
            await asyncio.sleep(3600)  # never, in this subscription: the bridge restarts first
            yield response
        await asyncio.sleep(3600)

    async def stop(self) -> None:
        await self.server.stop(None)


def test_a_restart_between_a_heartbeat_and_an_earlier_stamped_event_skips_nothing(
    tmp_path: Path, nats_url: str
) -> None:
    """The filer sends upload a (t=100), then an idle heartbeat (t=301 000) while upload b (t=200) is
    still on its way; the bridge is stopped right after the heartbeat and started again. The stored
    position is a's, so the new subscription starts before b: both uploads reach the bus, each once,
    with no reconcile sweep involved."""
    offsets_bucket = f"off-{tmp_path.name[-8:].replace('_', '-')}"
    a = event("/buckets/inputs/audio", new=entry("a.flac", etag="aa11"), ts=100)
    b = event("/buckets/inputs/audio", new=entry("b.flac", etag="bb22"), ts=200)

    async def main() -> tuple[list[tuple[str, str]], list[int], int | None]:
        filer = await FakeFiler().start()
        filer.log, filer.late = [a], [b]
        settings = make_settings(
            tmp_path,
            nats_url=nats_url,
            event_source="seaweedfs",
            bridge_offsets_bucket=offsets_bucket,
            seaweedfs_filer=f"127.0.0.1:{filer.port}",
        )
        try:
            bus = await NatsBus.connect(nats_url, settings)
            offsets = await OffsetStore.open(bus, settings, "filer")
            await offsets.save(50)  # the bridge has read up to t=50 before
            first = Bridge(settings, bus, offsets)
            stop = asyncio.Event()
            running = asyncio.create_task(first.run(stop))
            await asyncio.wait_for(filer.heartbeat_sent.wait(), 20)
            await asyncio.sleep(0.5)  # the heartbeat is handled; b has not arrived
            stop.set()  # the worst moment: SIGTERM, the position is stored on the way out
            await running
            stored = await offsets.load()
            filer.log, filer.late = [a, b], []  # b reached the filer's log meanwhile
            stop = asyncio.Event()
            second = asyncio.create_task(Bridge(settings, bus, offsets).run(stop))
            got = await received(settings, 2)
            got += await received(settings, 1, timeout=2.0)  # nothing more
            stop.set()
            await second
            await bus.close()
            return got, filer.subscriptions, stored
        finally:
            await filer.stop()

    got, subscriptions, stored = asyncio.run(main())
    assert [key for key, _ in got] == ["audio/a.flac", "audio/b.flac"]
    assert stored == 100 and subscriptions == [50, 100]
