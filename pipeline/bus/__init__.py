"""The event bus and the claim store: NATS JetStream behind two small protocols.

One stream (``settings.stream``, work-queue retention, file storage) holds the subjects
``<prefix>.stage.<stage>[.<pool>]``. Each stage (and pool: render's ``neural`` pool goes to GPU
workers) has one durable pull consumer, shared by all its workers, so it scales by starting more
workers. Progress notes travel on plain NATS subjects ``<prefix>.progress.<job>`` and are not stored.
Claims (which worker runs which task now) live in the key-value bucket ``<stream>_claims``.
``pipeline.bus.memory`` implements both protocols in memory, for the runner's contract tests.

Every call to NATS rides out the bus being briefly unavailable (``transient``: a timeout, no responders,
a reconnecting connection, JetStream's 503 — what a cluster electing a new stream leader answers):
``patiently`` tries it again with growing pauses (0.25 s doubling to 5 s) for up to ``bus_patience``
seconds, logging ``bus_unavailable`` each time and ``bus_recovered`` once it answers; only then does its
error stand (``bus_gave_up``). A retried write is idempotent: publishes carry a ``Nats-Msg-Id`` (one is
made when the caller gave none), and a claim compare-and-set whose reply was lost is recognised by its
value when the retry finds the revision moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

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
    APIError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from pipeline.config import BusSettings, Settings
from pipeline.errors import BusError, ConfigError

log = structlog.get_logger("mouthpiece.bus")
T = TypeVar("T")

_TRANSIENT: tuple[type[BaseException], ...] = (
    TimeoutError,  # nats.errors.TimeoutError ("nats: timeout") and asyncio's are TimeoutErrors
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    NoStreamResponseError,  # a publish (a key-value write) that no stream leader answered
    ServiceUnavailableError,
)
FIRST_PAUSE, LONGEST_PAUSE = 0.25, 5.0
"""The pause before the first retry of a bus call, doubling up to the longest."""
ACK_CONFIRM = 5.0
"""Seconds one try of an ack waits for the server's confirmation."""


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is the bus briefly unavailable — a timeout, no
    responders, the connection reconnecting, JetStream answering 503 — rather than a refusal (a wrong
    revision, a missing stream, bad credentials) that asking again would not change."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TRANSIENT):
            return True
        if isinstance(current, APIError) and getattr(current, "code", None) == 503:
            return True
        current = current.__cause__ or current.__context__
    return False


async def patiently(call: Callable[[], Awaitable[T]], what: str, patience: float) -> T:
    """``call()``, tried again while its error is ``transient``, with pauses growing from
    ``FIRST_PAUSE`` to ``LONGEST_PAUSE``, for at most ``patience`` seconds (0: once); then the last
    error stands. Each retry is logged as ``bus_unavailable``, the recovery as ``bus_recovered``.
    ``call`` must be safe to repeat: the first try may have taken effect although it timed out."""
    started, pause, tries = time.monotonic(), FIRST_PAUSE, 0
    while True:
        try:
            result = await call()
        except Exception as exc:
            waited = time.monotonic() - started
            if not transient(exc):
                raise
            if waited + pause > patience:
                if patience > 0:
                    log.error("bus_gave_up", doing=what, waited=round(waited, 1), error=repr(exc))
                raise
            tries += 1
            log.warning(
                "bus_unavailable", doing=what, error=repr(exc), waited=round(waited, 1), retry_in=pause
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
        else:
            if tries:
                log.info(
                    "bus_recovered", doing=what, waited=round(time.monotonic() - started, 1), tries=tries
                )
            return result


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
    """A JetStream message. Its ack waits for the consumer's confirmation (``ACK_CONFIRM`` seconds a
    try) and is tried again, patiently, until one comes: an ack sent while the consumer has no leader
    would be dropped, and the server confirms an ack of a message already acknowledged as well, so a
    repeat is harmless. Nak, term and in-progress are published without a reply (a lost one means a
    redelivery, which the runner's records recognise), again patiently while the connection reconnects."""

    msg: Msg
    patience: float = 0.0

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
        await patiently(lambda: self.msg.ack_sync(timeout=ACK_CONFIRM), "ack", self.patience)

    async def nak(self, delay: float) -> None:
        await patiently(lambda: self.msg.nak(delay=delay), "nak", self.patience)

    async def term(self) -> None:
        await patiently(self.msg.term, "term", self.patience)

    async def in_progress(self) -> None:
        await patiently(self.msg.in_progress, "in_progress", self.patience)


@dataclass
class _NatsConsumer:
    sub: JetStreamContext.PullSubscription
    patience: float = 0.0

    async def next(self, timeout: float) -> Delivery | None:
        """A fetch that times out is no message; other errors (the bus unavailable) are the caller's
        to wait out (``Worker._pull``: nothing is in flight then)."""
        try:
            msgs = await self.sub.fetch(1, timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        return _NatsDelivery(msgs[0], self.patience) if msgs else None


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
            # a cluster electing a leader answers the JetStream API with timeouts or 503 for seconds
            await patiently(lambda: ensure_stream(js, settings), "ensure_stream", settings.bus_patience)
            claims = await patiently(
                lambda: NatsClaims.open(js, settings), "open_claims", settings.bus_patience
            )
        except BaseException:
            await nc.close()
            raise
        return cls(nc, js, settings, claims)

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None) -> bool:
        """Store a message, patiently. A retry carries the same ``Nats-Msg-Id`` (one is made when none is
        given), so a first try that was stored although its reply was lost is not stored twice; a
        retry the server calls a duplicate then counts as stored."""
        headers = {"Nats-Msg-Id": msg_id or f"mp-{uuid.uuid4().hex}"}
        tried = [0]

        async def attempt() -> bool:
            tried[0] += 1
            ack = await self.js.publish(subject, payload, headers=headers, stream=self.settings.stream)
            return not ack.duplicate or tried[0] > 1

        try:
            return await patiently(attempt, f"publish {subject}", self.settings.bus_patience)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot publish to {subject}: {exc!r}") from exc

    async def consume(self, durable: str, subject: str) -> Consumer:
        """The shared durable consumer, bound as ``mouthpiece init`` made it. A worker creates a missing
        one with the same ``consumer_config`` init uses, and never changes an existing one (a differing
        one is reported: ``mouthpiece init`` applies the settings)."""
        patience = self.settings.bus_patience
        try:
            info = await patiently(
                lambda: self.js.consumer_info(self.settings.stream, durable), "consumer_info", patience
            )
        except NotFoundError:
            info = await patiently(
                lambda: ensure_consumer(self.js, self.settings, durable, subject), "add_consumer", patience
            )
        else:
            differs = consumer_differences(info.config, consumer_config(self.settings, durable, subject))
            if differs:
                log.warning(
                    "consumer_config_differs", consumer=durable, fields=differs, fix="mouthpiece init"
                )
        sub = await patiently(
            lambda: self.js.pull_subscribe_bind(durable=durable, stream=self.settings.stream),
            "bind_consumer",
            patience,
        )
        return _NatsConsumer(sub, patience)

    async def notify(self, subject: str, payload: bytes) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(subject, payload)

    async def subscribe(
        self, subject: str, handler: Callable[[bytes], Awaitable[None]], *, queue: str | None = None
    ) -> None:
        async def on_msg(msg: Msg) -> None:
            await handler(msg.data)

        await patiently(
            lambda: self.nc.subscribe(subject, queue=queue or "", cb=on_msg),
            "subscribe",
            self.settings.bus_patience,
        )

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
    stream's replicas). Compare-and-set is the server's: ``create`` and ``update`` with a last revision.

    Every call is made ``patiently``. A write whose reply was lost (a timeout while the bucket's leader
    changes) may have been stored: when its retry is refused because the revision moved, the key is read
    and a stored value equal to ours (a claim carries its owner and heartbeat time, so no other writer
    stores the same bytes) is our own write, returned as a success; a delete retried after a lost reply
    that finds the key gone has succeeded."""

    def __init__(self, kv: KeyValue, patience: float = 0.0) -> None:
        self.kv = kv
        self.patience = patience

    @classmethod
    async def open(cls, js: JetStreamContext, settings: BusSettings) -> NatsClaims:
        name = f"{settings.stream}_claims"
        kv = await key_value(js, name, settings.stream_replicas, ttl=settings.claim_ttl or None)
        return cls(kv, settings.bus_patience)

    async def _read(self, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return (entry.value or b"", int(entry.revision or 0))

    async def get(self, key: str) -> tuple[bytes, int] | None:
        try:
            return await patiently(lambda: self._read(key), "read_claim", self.patience)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot read claim {key}: {exc!r}") from exc

    async def _written(self, key: str, value: bytes, write: Callable[[], Awaitable[int]]) -> int | None:
        """``write()`` (a compare-and-set of ``value``), patiently; None if the revision had moved."""
        unsure = [False]  # an earlier try timed out: it may have been stored

        async def attempt() -> int | None:
            try:
                return int(await write())
            except KeyWrongLastSequenceError:
                if not unsure[0]:
                    return None
                found = await self._read(key)
                return found[1] if found is not None and found[0] == value else None
            except Exception as exc:
                unsure[0] = unsure[0] or transient(exc)
                raise

        try:
            return await patiently(attempt, "write_claim", self.patience)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot write claim {key}: {exc!r}") from exc

    async def create(self, key: str, value: bytes) -> int | None:
        return await self._written(key, value, lambda: self.kv.create(key, value))

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        return await self._written(key, value, lambda: self.kv.update(key, value, last=revision))

    async def delete(self, key: str, revision: int) -> bool:
        unsure = [False]

        async def attempt() -> bool:
            try:
                await self.kv.delete(key, last=revision)
            except Exception as exc:
                if _wrong_last(exc):  # the client reports it as a plain BadRequestError for a delete
                    return unsure[0] and await self._read(key) is None
                unsure[0] = unsure[0] or transient(exc)
                raise
            return True

        try:
            return await patiently(attempt, "remove_claim", self.patience)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot remove claim {key}: {exc!r}") from exc

    async def keys(self, prefix: str) -> list[str]:
        async def attempt() -> list[str]:
            try:
                return list(await self.kv.keys())
            except NoKeysError:
                return []

        try:
            found = await patiently(attempt, "list_claims", self.patience)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot list claims: {exc!r}") from exc
        return sorted(k for k in found if k.startswith(prefix))


def _wrong_last(exc: BaseException) -> bool:
    """A write refused because the key is no longer at the revision it named (JetStream error codes
    10071 and 10164)."""
    return isinstance(exc, KeyWrongLastSequenceError) or (
        isinstance(exc, APIError) and getattr(exc, "err_code", None) in (10071, 10164)
    )


def threadsafe_publisher(
    bus: Bus, loop: asyncio.AbstractEventLoop, timeout: float | None = None
) -> Callable[[str, bytes, str], None]:
    """A blocking ``publish`` for code running in worker threads (the store is synchronous). It waits
    up to ``timeout`` seconds; by default a patient publish's longest (``bus_patience`` and one more
    try's 10 s timeout, with room to spare)."""
    settings = getattr(bus, "settings", None)
    if timeout is None:
        timeout = float(getattr(settings, "bus_patience", 0.0)) + 30.0

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
