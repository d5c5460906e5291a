"""The event bus and the claim store: NATS JetStream behind two small protocols.

One stream (``settings.stream``, work-queue retention, file storage) holds the subjects
``<prefix>.stage.<stage>[.<pool>]``. Each stage (and pool: render's ``neural`` pool goes to GPU
workers) has one durable pull consumer, shared by all its workers, so it scales by starting more
workers. Progress notes travel on plain NATS subjects ``<prefix>.progress.<job>`` and are not stored.
Claims (which worker runs which task now) live in the key-value bucket ``<stream>_claims``.
``pipeline.bus.memory`` implements both protocols in memory, for the runner's contract tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from pipeline.config import BusSettings, Settings
from pipeline.errors import BusError, ConfigError

log = structlog.get_logger("mouthpiece.bus")


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
    def id(self) -> str:
        """The message's identity on the bus (its stream sequence): the same on every redelivery."""
        ...

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
        """Store a message; False if the bus dropped it as a duplicate of ``msg_id``."""
        ...

    async def consume(self, durable: str, subject: str) -> Consumer:
        """The shared durable consumer ``durable`` of ``subject`` (created if missing)."""
        ...

    async def notify(self, subject: str, payload: bytes) -> None:
        """Fire-and-forget message (progress); nobody may be listening."""
        ...

    async def subscribe(
        self, subject: str, handler: Callable[[bytes], Awaitable[None]], *, queue: str | None = None
    ) -> None:
        """Call ``handler`` for each message on ``subject``; with ``queue``, one member of the queue
        group (across processes) gets each message."""
        ...

    async def close(self) -> None: ...


class ClaimStore(Protocol):
    """A key-value store with compare-and-set, where workers claim tasks (see ``pipeline.runner``).
    Revisions grow with every write; a write naming a stale revision changes nothing."""

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and its revision, or None."""
        ...

    async def create(self, key: str, value: bytes) -> int | None:
        """Write ``value`` if ``key`` has none; its revision, or None if the key exists."""
        ...

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        """Write ``value`` if the key is still at ``revision``; the new revision, or None if not."""
        ...

    async def delete(self, key: str, revision: int) -> bool:
        """Remove the key if it is still at ``revision``."""
        ...

    async def keys(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``."""
        ...


def durable_name(stage: str, pool: str = "default") -> str:
    """The durable consumer of a stage's pool, shared by all its workers."""
    return f"mouthpiece-{stage}" if pool == "default" else f"mouthpiece-{stage}-{pool}"


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
    """``Bus`` on NATS JetStream, with its claims in a JetStream key-value bucket. Create with
    ``await NatsBus.connect(url, settings)``."""

    def __init__(
        self, nc: NatsClient, js: JetStreamContext, settings: BusSettings, claims: ClaimStore
    ) -> None:
        self.nc = nc
        self.js = js
        self.settings = settings
        self.claims = claims

    @classmethod
    async def connect(cls, url: str, settings: BusSettings) -> NatsBus:
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
            raise BusError(f"cannot reach NATS at {_without_password(url)}: {exc}") from exc
        except nats.errors.Error as exc:  # e.g. 'Authorization Violation': wrong or missing credentials
            raise ConfigError(
                f"NATS at {_without_password(url)} refused the connection: {exc} "
                "(MOUTHPIECE_NATS_USER, MOUTHPIECE_NATS_PASSWORD, MOUTHPIECE_NATS_TOKEN)"
            ) from exc
        js = nc.jetstream(timeout=10)
        try:
            await ensure_stream(js, settings)
            claims = await NatsClaims.open(js, settings)
        except BaseException:
            await nc.close()
            raise
        return cls(nc, js, settings, claims)

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None) -> bool:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        try:
            ack = await self.js.publish(subject, payload, headers=headers, stream=self.settings.stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot publish to {subject}: {exc!r}") from exc
        return not ack.duplicate

    async def consume(self, durable: str, subject: str) -> Consumer:
        """The shared durable consumer, bound as ``mouthpiece init`` made it. A worker creates a missing
        one with the same ``consumer_config`` init uses, and never changes an existing one (a differing
        one is reported: ``mouthpiece init`` applies the settings)."""
        try:
            info = await self.js.consumer_info(self.settings.stream, durable)
        except NotFoundError:
            info = await ensure_consumer(self.js, self.settings, durable, subject)
        else:
            differs = consumer_differences(info.config, consumer_config(self.settings, durable, subject))
            if differs:
                log.warning(
                    "consumer_config_differs", consumer=durable, fields=differs, fix="mouthpiece init"
                )
        sub = await self.js.pull_subscribe_bind(durable=durable, stream=self.settings.stream)
        return _NatsConsumer(sub)

    async def notify(self, subject: str, payload: bytes) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(subject, payload)

    async def subscribe(
        self, subject: str, handler: Callable[[bytes], Awaitable[None]], *, queue: str | None = None
    ) -> None:
        async def on_msg(msg: Msg) -> None:
            await handler(msg.data)

        await self.nc.subscribe(subject, queue=queue or "", cb=on_msg)

    async def close(self) -> None:
        """Flush what we published, then disconnect. (Not ``drain``: it waits out idle pull
        subscriptions for its whole timeout.)"""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.flush(), timeout=5)
        with contextlib.suppress(Exception):
            await self.nc.close()


async def ensure_stream(js: JetStreamContext, s: BusSettings) -> None:
    """Create the stream of stage subjects if it is missing. An existing stream keeps the replicas,
    limits and storage an operator gave it (``nats stream edit``): only missing subjects are added."""
    subjects = [f"{s.subject_prefix}.stage.>"]
    try:
        info = await js.stream_info(s.stream)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=s.stream,
                subjects=subjects,
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                duplicate_window=s.duplicate_window,
                num_replicas=s.stream_replicas,
                max_bytes=s.stream_max_bytes,
                max_age=s.stream_max_age or None,
            )
        )
        return
    config = info.config
    missing = [subject for subject in subjects if subject not in (config.subjects or [])]
    if missing:
        config.subjects = [*(config.subjects or []), *missing]
        await js.update_stream(config)
    if (config.num_replicas or 1) != s.stream_replicas:
        log.info("stream_kept", stream=s.stream, replicas=config.num_replicas, setting=s.stream_replicas)


def consumer_config(s: BusSettings, durable: str, subject: str) -> ConsumerConfig:
    """The configuration of a stage pool's durable consumer: the one ``mouthpiece init`` creates and
    the one a worker would create. Nothing else builds a consumer configuration."""
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=s.ack_wait,
        # the runner counts runs itself and dead-letters; the server never gives up silently
        max_deliver=-1,
        filter_subject=subject,
        max_ack_pending=1000,
    )


_COMPARED = ("ack_policy", "ack_wait", "max_deliver", "filter_subject", "max_ack_pending")


def consumer_differences(have: ConsumerConfig, want: ConsumerConfig) -> list[str]:
    """The fields ``consumer_config`` sets on which an existing consumer's configuration differs."""
    differs = []
    for name in _COMPARED:
        a, b = getattr(have, name), getattr(want, name)
        if isinstance(a, float) or isinstance(b, float):
            if abs(float(a or 0) - float(b or 0)) > 1e-3:
                differs.append(name)
        elif a != b:
            differs.append(name)
    return differs


async def ensure_consumer(js: JetStreamContext, s: BusSettings, durable: str, subject: str) -> ConsumerInfo:
    """Create the durable consumer ``durable`` of ``subject`` with ``consumer_config``, or bring an
    existing one to that configuration (JetStream updates the editable fields in place, keeping its
    messages and their delivery state)."""
    try:
        return await js.add_consumer(s.stream, config=consumer_config(s, durable, subject))
    except (nats.errors.Error, TimeoutError) as exc:
        raise BusError(f"cannot create consumer {durable} on stream {s.stream}: {exc!r}") from exc


def stage_consumers(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(stage, pool, durable name, subject) of every stage pool of the chain."""
    from pipeline.keys import pools_of, subject_for

    return [
        (stage, pool, durable_name(stage, pool), subject_for(settings, stage, pool))
        for stage in settings.chain
        for pool in pools_of(stage)
    ]


async def ensure_consumers(js: JetStreamContext, settings: Settings) -> list[ConsumerInfo]:
    """Create (or bring to ``consumer_config``) every stage pool's durable consumer, so that they exist
    before any worker starts: KEDA and the backlog read them, and a message published before the first
    worker is counted. ``mouthpiece init`` and ``mouthpiece backlog`` call this."""
    await ensure_stream(js, settings)
    made = []
    for _, _, durable, subject in stage_consumers(settings):
        made.append(await ensure_consumer(js, settings, durable, subject))
    return made


def _without_password(url: str) -> str:
    """A NATS URL fit for messages: credentials in it are replaced."""
    scheme, _, rest = url.rpartition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}" if "@" in rest else url


async def key_value(js: JetStreamContext, name: str, replicas: int, *, ttl: float | None = None) -> KeyValue:
    """The key-value bucket ``name``, created on first use (one revision kept, on disk, ``replicas``
    copies: as replicated as the stream it serves; an existing bucket's settings are left as they are)."""
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        config = KeyValueConfig(bucket=name, history=1, replicas=replicas, storage=StorageType.FILE, ttl=ttl)
        return await js.create_key_value(config=config)


class NatsClaims:
    """``ClaimStore`` on a JetStream key-value bucket (``<stream>_claims``, one revision kept, the
    stream's replicas). Compare-and-set is the server's: ``create`` and ``update`` with a last revision."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, settings: BusSettings) -> NatsClaims:
        name = f"{settings.stream}_claims"
        return cls(await key_value(js, name, settings.stream_replicas, ttl=settings.claim_ttl or None))

    async def get(self, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot read claim {key}: {exc!r}") from exc
        return (entry.value or b"", int(entry.revision or 0))

    async def create(self, key: str, value: bytes) -> int | None:
        try:
            return int(await self.kv.create(key, value))
        except KeyWrongLastSequenceError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot write claim {key}: {exc!r}") from exc

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        try:
            return int(await self.kv.update(key, value, last=revision))
        except KeyWrongLastSequenceError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot write claim {key}: {exc!r}") from exc

    async def delete(self, key: str, revision: int) -> bool:
        try:
            await self.kv.delete(key, last=revision)
        except KeyWrongLastSequenceError:
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot remove claim {key}: {exc!r}") from exc
        return True

    async def keys(self, prefix: str) -> list[str]:
        try:
            found = await self.kv.keys()
        except NoKeysError:
            return []
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot list claims: {exc!r}") from exc
        return sorted(k for k in found if k.startswith(prefix))


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
