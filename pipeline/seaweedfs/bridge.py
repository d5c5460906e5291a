"""``mouthpiece bridge``: follow the SeaweedFS filer's metadata log and put bucket events on the bus.

Delivery is at least once, and nothing is lost across restarts of either side:

- the filer persists its metadata log and serves it from any timestamp (``since_ns``);
- the bridge publishes each routed event to JetStream (deterministic ``Nats-Msg-Id``: a replay within
  the duplicate window is dropped by the server), and only then stores the event's timestamp as its
  offset in a replicated NATS key-value bucket;
- after any restart it subscribes again from the stored offset, so it replays at most the events after
  the last stored one; beyond the duplicate window the runner skips work already done;
- only events move the offset: the filer's idle heartbeats carry the current time and no event, and an
  event stamped before a heartbeat can arrive after it.

On its very first start (no offset stored) it reads back ``FIRST_START_LOOKBACK`` seconds, which covers
uploads made while the deployment was coming up; older inputs without a job are the reconcile sweep's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from nats.js.errors import KeyNotFoundError

from pipeline.bus import NatsBus, key_value
from pipeline.config import Settings
from pipeline.errors import RetryableError
from pipeline.events import build_event, message_id
from pipeline.keys import event_subject
from pipeline.seaweedfs import filer_pb
from pipeline.seaweedfs.records import created_object, flatten

log = structlog.get_logger("mouthpiece.bridge")

FIRST_START_LOOKBACK = 3600.0
SAVE_EVERY = 2.0
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


class OffsetStore:
    """The bridge's read position (filer timestamp, ns) in a NATS key-value bucket."""

    def __init__(self, kv: Any, key: str) -> None:
        self.kv = kv
        self.key = key

    @classmethod
    async def open(cls, bus: NatsBus, settings: Settings, source: str) -> OffsetStore:
        kv = await key_value(bus.js, settings.bridge_offsets_bucket, settings.stream_replicas)
        return cls(kv, offset_key(source))

    async def load(self) -> int | None:
        try:
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:
            return None
        return int(entry.value.decode()) if entry.value else None

    async def save(self, ts_ns: int) -> None:
        await self.kv.put(self.key, str(ts_ns).encode())


def offset_key(source: str) -> str:
    """A key-value key naming one filer (its host:port, made safe)."""
    return "seaweedfs." + re.sub(r"[^A-Za-z0-9_-]", "_", source)


class Bridge:
    """Follows one filer; publishes each created object that the routing table routes."""

    def __init__(self, settings: Settings, bus: NatsBus, offsets: OffsetStore) -> None:
        self.settings = settings
        self.bus = bus
        self.offsets = offsets
        self.position = 0
        self.saved = 0
        self.saved_at = 0.0
        self.published = 0
        self.client_id = random.randint(1, 2**31 - 1)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the filer until ``stop``; reconnect with backoff when the stream breaks."""
        stored = await self.offsets.load()
        self.position = self.saved = stored or time.time_ns() - int(FIRST_START_LOOKBACK * 1e9)
        log.info(
            "bridge_started",
            filer=self.settings.seaweedfs_filer,
            since_ns=self.position,
            resumed=bool(stored),
        )
        epoch, delay = 0, 1.0
        while not stop.is_set():
            epoch += 1
            try:
                await self._follow(epoch, stop)
                delay = 1.0
            except (grpc.aio.AioRpcError, RetryableError) as exc:
                log.warning("bridge_stream_broken", error=_short(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 15.0)
        await self._save(force=True)
        log.info("bridge_stopped", position_ns=self.position, published=self.published)

    async def _follow(self, epoch: int, stop: asyncio.Event) -> None:
        """One subscription from the current position, until it breaks or ``stop``."""
        async with self._channel() as channel:
            reader = asyncio.create_task(self._consume(self._subscribe(channel, epoch)))
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if reader not in done:
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _consume(self, responses: AsyncIterator[Any]) -> None:
        async for response in responses:
            for event in flatten(response):
                await self._handle(event)
            await self._save()

    async def _handle(self, event: Any) -> None:
        """Publish the event when it creates a routed object; then its time is the position, stored at
        once after a publish (so a restart resumes after it, not before). An idle heartbeat (a response
        with a time and no event) moves nothing: an event stamped before it may still be on its way, and
        a bridge restarted from the heartbeat's time would never see that event (SeaweedFS: heartbeats
        must not move a subscriber's resume point)."""
        if not is_event(event):
            return
        published = await self._publish(event)
        self.position = max(self.position, int(event.ts_ns))
        if published:
            await self._save(force=True)

    async def _publish(self, event: Any) -> bool:
        found = created_object(event, self.settings.seaweedfs_buckets_dir)
        if found is None:
            return False
        name, info = found
        subject = event_subject(self.settings, info.bucket, info.key)
        if subject is None:
            return False
        fresh = await self.bus.publish(
            subject, build_event(info, name), msg_id=message_id(info.bucket, info.key, info.etag)
        )
        self.published += 1
        log.info("bridge_event", subject=subject, bucket=info.bucket, key=info.key, duplicate=not fresh)
        return True

    async def _save(self, *, force: bool = False) -> None:
        """Store the position: after each published event, else at most every ``SAVE_EVERY`` s."""
        if self.position == self.saved or (not force and time.monotonic() - self.saved_at < SAVE_EVERY):
            return
        try:
            await self.offsets.save(self.position)
        except Exception as exc:  # the bus is down: the events are replayed after a restart, no loss
            log.warning("bridge_offset_not_saved", error=_short(exc))
            return
        self.saved, self.saved_at = self.position, time.monotonic()

    def _subscribe(self, channel: grpc.aio.Channel, epoch: int) -> AsyncIterator[Any]:
        call = channel.unary_stream(
            filer_pb.SUBSCRIBE_METADATA,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=filer_pb.decode_response,
        )
        request = filer_pb.request(
            client_name="mouthpiece-bridge",
            path_prefix=self.settings.seaweedfs_buckets_dir.rstrip("/") + "/",
            since_ns=self.position,
            client_id=self.client_id,
            client_epoch=epoch,
            client_supports_idle_heartbeat=True,
        )
        stream: AsyncIterator[Any] = call(request)
        return stream

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[grpc.aio.Channel]:
        channel = _open_channel(self.settings)
        try:
            yield channel
        finally:
            await channel.close()


def is_event(response: Any) -> bool:
    """True for a metadata event; False for an idle heartbeat or a batch's empty envelope."""
    return bool(response.HasField("event_notification"))


def _open_channel(settings: Settings) -> grpc.aio.Channel:
    target = settings.seaweedfs_filer
    if settings.seaweedfs_grpc_ca is None:
        return grpc.aio.insecure_channel(target, options=_GRPC_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=settings.seaweedfs_grpc_ca.read_bytes(),
        private_key=settings.seaweedfs_grpc_key.read_bytes() if settings.seaweedfs_grpc_key else None,
        certificate_chain=settings.seaweedfs_grpc_cert.read_bytes() if settings.seaweedfs_grpc_cert else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=_GRPC_OPTIONS)


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return getattr(exc, "reason", None) or repr(exc)


async def serve_bridge(settings: Settings, bus: NatsBus, stop: asyncio.Event) -> Bridge:
    """Run the bridge until ``stop``; returns it (for its counters)."""
    offsets = await OffsetStore.open(bus, settings, settings.seaweedfs_filer)
    bridge = Bridge(settings, bus, offsets)
    await bridge.run(stop)
    return bridge
