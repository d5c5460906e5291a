"""The bus and claim store in memory, with JetStream's semantics, for the runner's contract tests.

``MemoryBus`` behaves as the one stream mouthpiece uses: work-queue retention (a message is removed
when acknowledged or terminated), durable consumers shared by the workers that name them (each
message goes to one of them), redelivery when a delivery is not acknowledged within ``ack_wait``
(``in_progress`` restarts that clock), ``nak(delay)``, a delivery count per message, and ``Nats-Msg-Id``
de-duplication within ``duplicate_window``. ``MemoryClaims`` is the key-value store with revisions and
compare-and-set. Like faststream's ``TestNatsBroker``, it lets the same tests run in milliseconds with no
server; ``tests/pipeline/runner`` runs them on both this and a real nats-server.

Everything here runs on one event loop (call from the loop, or through ``threadsafe_publisher``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pipeline.bus import ClaimStore, Consumer, Delivery


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` the rest."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


@dataclass
class _Message:
    seq: int
    subject: str
    data: bytes
    consumer: str | None = None
    delivered: int = 0
    available_at: float = 0.0
    deadline: float | None = None  # set while a worker holds it


@dataclass
class MemoryDelivery:
    """One delivery of a message; ends with ack, nak or term (as a JetStream message does)."""

    bus: MemoryBus
    message: _Message

    @property
    def subject(self) -> str:
        return self.message.subject

    @property
    def data(self) -> bytes:
        return self.message.data

    @property
    def deliveries(self) -> int:
        return self.message.delivered

    @property
    def id(self) -> str:
        return str(self.message.seq)

    async def ack(self) -> None:
        self.bus._remove(self.message)

    async def term(self) -> None:
        self.bus._remove(self.message)

    async def nak(self, delay: float) -> None:
        self.message.deadline = None
        self.message.available_at = time.monotonic() + max(0.0, delay)

    async def in_progress(self) -> None:
        if self.message.deadline is not None:
            self.message.deadline = time.monotonic() + self.bus.ack_wait


@dataclass
class MemoryConsumer:
    bus: MemoryBus
    durable: str
    subject: str

    async def next(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        while True:
            message = self.bus._take(self.durable, self.subject)
            if message is not None:
                return MemoryDelivery(self.bus, message)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.005)


@dataclass
class MemoryBus:
    """``Bus`` in memory (see the module docstring). ``claims`` is its ``MemoryClaims``."""

    ack_wait: float = 30.0
    duplicate_window: float = 120.0
    claims: ClaimStore = field(default_factory=lambda: MemoryClaims())
    _messages: dict[int, _Message] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _seen: dict[str, float] = field(default_factory=dict)
    _subscribers: list[tuple[str, str, Callable[[bytes], Awaitable[None]]]] = field(default_factory=list)
    _rotation: itertools.count[int] = field(default_factory=itertools.count)
    _tasks: set[asyncio.Future[None]] = field(default_factory=set)
    closed: bool = False

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None) -> bool:
        now = time.monotonic()
        if msg_id is not None:
            if now - self._seen.get(msg_id, -1e18) < self.duplicate_window:
                return False
            self._seen[msg_id] = now
        seq = next(self._seq)
        self._messages[seq] = _Message(seq, subject, payload)
        return True

    async def consume(self, durable: str, subject: str) -> Consumer:
        return MemoryConsumer(self, durable, subject)

    async def notify(self, subject: str, payload: bytes) -> None:
        groups: dict[str, list[Callable[[bytes], Awaitable[None]]]] = {}
        for pattern, queue, handler in self._subscribers:
            if subject_matches(pattern, subject):
                groups.setdefault(queue or f"solo-{id(handler)}", []).append(handler)
        for members in groups.values():  # one member of each queue group, as NATS does
            handler = members[next(self._rotation) % len(members)]
            task = asyncio.ensure_future(handler(payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def subscribe(
        self, subject: str, handler: Callable[[bytes], Awaitable[None]], *, queue: str | None = None
    ) -> None:
        self._subscribers.append((subject, queue or "", handler))

    async def close(self) -> None:
        self.closed = True

    # --- the stream ---------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Messages not yet acknowledged or terminated (waiting or being worked on)."""
        return len(self._messages)

    def _take(self, durable: str, subject: str) -> _Message | None:
        now = time.monotonic()
        for message in sorted(self._messages.values(), key=lambda m: m.seq):
            if message.consumer not in (None, durable) or not subject_matches(subject, message.subject):
                continue
            held = message.deadline is not None and message.deadline > now
            if held or message.available_at > now:
                continue
            message.consumer = durable  # work queue: the first consumer to see it keeps it
            message.delivered += 1
            message.deadline = now + self.ack_wait
            return message
        return None

    def _remove(self, message: _Message) -> None:
        self._messages.pop(message.seq, None)


@dataclass
class MemoryClaims:
    """``ClaimStore`` in memory: revisions grow with every write; writes at a stale revision fail."""

    _values: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    _revision: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def get(self, key: str) -> tuple[bytes, int] | None:
        return self._values.get(key)

    async def create(self, key: str, value: bytes) -> int | None:
        if key in self._values:
            return None
        return self._put(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        current = self._values.get(key)
        if current is None or current[1] != revision:
            return None
        return self._put(key, value)

    async def delete(self, key: str, revision: int) -> bool:
        current = self._values.get(key)
        if current is None or current[1] != revision:
            return False
        del self._values[key]
        return True

    async def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self._values if k.startswith(prefix))

    def _put(self, key: str, value: bytes) -> int:
        revision = next(self._revision)
        self._values[key] = (value, revision)
        return revision
