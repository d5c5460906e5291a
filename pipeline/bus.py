"""The event bus: NATS JetStream behind a small protocol.

One stream (``settings.stream``, work-queue retention, file storage) holds the subjects
``<prefix>.stage.<stage>``. Each stage has one durable pull consumer, shared by all its workers, so a
stage scales by starting more workers. Progress notes travel on plain NATS subjects
``<prefix>.progress.<job>`` and are not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from pipeline.config import Settings
from pipeline.errors import ConfigError, RetryableError


class Delivery(Protocol):
    """One message handed to a worker. Exactly one of ack/nak/term ends it."""

    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def deliveries(self) -> int:
        """How many times this message has been delivered, this time included."""
        ...

    @property
    def id(self) -> str: ...

    async def ack(self) -> None: ...
    async def nak(self, delay: float) -> None: ...
    async def term(self) -> None: ...
    async def in_progress(self) -> None: ...


class Consumer(Protocol):
    async def next(self, timeout: float) -> Delivery | None:
        """The next message for this stage, or None when none came within ``timeout`` seconds."""
        ...


class Bus(Protocol):
    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None) -> bool:
        """Store a message; False if JetStream dropped it as a duplicate of ``msg_id``."""
        ...

    async def consume(self, stage: str, subject: str) -> Consumer: ...

    async def notify(self, subject: str, payload: bytes) -> None:
        """Fire-and-forget message (progress); nobody may be listening."""
        ...

    async def subscribe(self, subject: str, handler: Callable[[bytes], Awaitable[None]]) -> None: ...

    async def close(self) -> None: ...


@dataclass
class _NatsDelivery:
    msg: Msg

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def deliveries(self) -> int:
        return int(self.msg.metadata.num_delivered or 1)

    @property
    def id(self) -> str:
        return str(self.msg.metadata.sequence.stream)

    async def ack(self) -> None:
        await self.msg.ack()

    async def nak(self, delay: float) -> None:
        await self.msg.nak(delay=delay)

    async def term(self) -> None:
        await self.msg.term()

    async def in_progress(self) -> None:
        await self.msg.in_progress()


@dataclass
class _NatsConsumer:
    sub: JetStreamContext.PullSubscription

    async def next(self, timeout: float) -> Delivery | None:
        try:
            msgs = await self.sub.fetch(1, timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        return _NatsDelivery(msgs[0]) if msgs else None


class NatsBus:
    """``Bus`` on NATS JetStream. Create with ``await NatsBus.connect(url, settings)``."""

    def __init__(self, nc: NatsClient, js: JetStreamContext, settings: Settings) -> None:
        self.nc = nc
        self.js = js
        self.settings = settings

    @classmethod
    async def connect(cls, url: str, settings: Settings) -> NatsBus:
        try:
            nc = await nats.connect(
                url,
                name="mouthpiece",
                connect_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                **settings.nats_auth(),
            )
        except (OSError, nats.errors.NoServersError, TimeoutError) as exc:
            raise RetryableError(f"cannot reach NATS at {url}: {exc}") from exc
        except nats.errors.Error as exc:  # e.g. 'Authorization Violation'
            raise ConfigError(
                f"NATS at {url} refused the connection: {exc} (MOUTHPIECE_NATS_USER, _PASSWORD, _TOKEN)"
            ) from exc
        bus = cls(nc, nc.jetstream(timeout=10), settings)
        await bus.ensure_stream()
        return bus

    async def ensure_stream(self) -> None:
        """Create or update the stream of stage subjects (idempotent)."""
        config = StreamConfig(
            name=self.settings.stream,
            subjects=[f"{self.settings.subject_prefix}.stage.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=self.settings.duplicate_window,
        )
        try:
            await self.js.stream_info(self.settings.stream)
        except NotFoundError:
            await self.js.add_stream(config)
        else:
            await self.js.update_stream(config)

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None) -> bool:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        try:
            ack = await self.js.publish(subject, payload, headers=headers, stream=self.settings.stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise RetryableError(f"cannot publish to {subject}: {exc!r}") from exc
        return not ack.duplicate

    async def consume(self, stage: str, subject: str) -> Consumer:
        config = ConsumerConfig(
            durable_name=f"mouthpiece-{stage}",
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait,
            # the runner counts deliveries itself and dead-letters; the server never gives up silently
            max_deliver=-1,
            filter_subject=subject,
            max_ack_pending=1000,
        )
        sub = await self.js.pull_subscribe(
            subject, durable=f"mouthpiece-{stage}", stream=self.settings.stream, config=config
        )
        return _NatsConsumer(sub)

    async def notify(self, subject: str, payload: bytes) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(subject, payload)

    async def subscribe(self, subject: str, handler: Callable[[bytes], Awaitable[None]]) -> None:
        async def on_msg(msg: Msg) -> None:
            await handler(msg.data)

        await self.nc.subscribe(subject, cb=on_msg)

    async def close(self) -> None:
        """Flush what we published, then disconnect. (Not ``drain``: it waits out idle pull
        subscriptions for its whole timeout.)"""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.flush(), timeout=5)
        with contextlib.suppress(Exception):
            await self.nc.close()


def threadsafe_publisher(
    bus: Bus, loop: asyncio.AbstractEventLoop, timeout: float = 30.0
) -> Callable[[str, bytes, str], None]:
    """A blocking ``publish`` for code running in worker threads (the store is synchronous)."""

    def publish(subject: str, payload: bytes, msg_id: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("threadsafe_publisher called on the event loop thread; use await bus.publish")
        future = asyncio.run_coroutine_threadsafe(bus.publish(subject, payload, msg_id=msg_id), loop)
        future.result(timeout)

    return publish
