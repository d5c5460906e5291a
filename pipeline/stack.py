"""The running pieces of one process: the bus (and, embedded, its nats-server), the store, the workers.

``Stack.open`` connects to ``settings.nats_url`` when set (distributed mode). Otherwise ``mouthpiece up``
starts the data directory's nats-server and advertises it in ``DATA_DIR/stack.json``; other commands
attach to it, and ``mouthpiece render`` without a running ``up`` starts a private nats-server for its one
job (its store is removed afterwards). Only a stack that owns its nats-server runs workers for
``render``; ``mouthpiece up`` always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog

from pipeline.bus import NatsBus, threadsafe_publisher
from pipeline.bus.natsserver import EmbeddedNats
from pipeline.config import Settings, filesystem_problem
from pipeline.errors import ConfigError, MouthpieceError
from pipeline.keys import pools_of
from pipeline.metrics import Metrics, observed
from pipeline.owner import scratch_folder
from pipeline.reconcile import sweep
from pipeline.registry import check_chain
from pipeline.runner import Worker
from pipeline.stage import ModelCache
from pipeline.storage import ObjectStore, open_store
from pipeline.storage.emitting import EmittingStore

log = structlog.get_logger("mouthpiece.stack")
StackMode = Literal["up", "attach-or-private", "attach"]


def _stack_file(settings: Settings) -> Path:
    return settings.data_dir / "stack.json"


def running_stack(settings: Settings) -> str | None:
    """The NATS URL of a live embedded stack on this data dir, or None."""
    try:
        info = json.loads(_stack_file(settings).read_text())
        os.kill(int(info["pid"]), 0)
        host, port = info["nats_url"].removeprefix("nats://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=1.0):
            return str(info["nats_url"])
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None


@dataclass
class Stack:
    settings: Settings
    bus: NatsBus
    store: ObjectStore
    announcer: EmittingStore
    owner: bool
    nats: EmbeddedNats | None = None
    models: ModelCache = field(default_factory=ModelCache)
    failures: list[str] = field(default_factory=list)
    metrics: Metrics | None = None
    """When set, workers write through ``metrics.ObservedStore`` (stage metrics for /metrics)."""

    @classmethod
    async def open(cls, settings: Settings, *, mode: StackMode = "attach-or-private") -> Stack:
        """Connect the bus and the store.

        ``mode``: ``up`` runs the long-lived embedded stack of this data dir (refused if one runs) and
        advertises it in ``stack.json``; ``attach-or-private`` attaches to that stack, or starts a
        private nats-server for this command alone (``mouthpiece render``: two renders never share
        one); ``attach`` refuses to run without a stack to attach to (``retry``, ``reconcile``:
        events sent to a private bus would be lost). ``MOUTHPIECE_NATS_URL`` overrides all three.
        """
        loop = asyncio.get_running_loop()
        # stage work runs in threads; the default pool (cores + 4) is too small for workers + heartbeats
        loop.set_default_executor(ThreadPoolExecutor(max_workers=64, thread_name_prefix="mouthpiece"))
        nats, url = await cls._bus_url(settings, mode)
        try:
            bus = await NatsBus.connect(url, settings)
            raw = await asyncio.to_thread(open_store, settings)
        except BaseException:
            if nats is not None:
                await asyncio.to_thread(nats.stop)
            raise
        announcer = EmittingStore(raw, settings, threadsafe_publisher(bus, loop))
        store: ObjectStore = announcer if settings.event_source == "client" else raw
        stack = cls(settings, bus, store, announcer, owner=nats is not None, nats=nats)
        if nats is not None and mode == "up":
            _stack_file(settings).write_text(json.dumps({"nats_url": url, "pid": os.getpid()}))
        return stack

    @staticmethod
    async def _bus_url(settings: Settings, mode: StackMode) -> tuple[EmbeddedNats | None, str]:
        if settings.nats_url:
            return None, settings.nats_url
        running = running_stack(settings)
        if running is not None and mode == "up":
            raise ConfigError(f"mouthpiece is already running on {settings.data_dir} ({running})")
        if running is not None:
            return None, running
        if mode == "attach":
            raise ConfigError(
                f"mouthpiece is not running on {settings.data_dir}: start `mouthpiece up` first"
            )
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            store_dir = settings.data_dir / "nats" if mode == "up" else _private_store(settings)
        except OSError as exc:  # said in one line by the entry point, not as a traceback
            raise ConfigError(filesystem_problem(exc, settings)) from None
        nats = EmbeddedNats(store_dir, settings.nats_port)
        await asyncio.to_thread(nats.start)
        log.info("nats_started", url=nats.url, store=str(nats.store_dir))
        return nats, nats.url

    async def close(self) -> None:
        await self.bus.close()
        if self.nats is None:
            return
        if not self.private:
            with contextlib.suppress(FileNotFoundError):
                _stack_file(self.settings).unlink()
            await asyncio.to_thread(self.nats.stop)
        else:  # a private bus for one command: nothing in it outlives the command
            await asyncio.to_thread(self.nats.stop)
            await asyncio.to_thread(shutil.rmtree, self.nats.store_dir, True)

    @property
    def private(self) -> bool:
        """Whether the bus is this command's own nats-server, removed when the command ends."""
        return self.nats is not None and self.nats.store_dir != self.settings.data_dir / "nats"

    def worker(self, stage: str, pools: tuple[str, ...] | None = None) -> Worker:
        """A worker for ``stage``'s ``pools`` (default: all of them — one machine serves every pool).
        On a private bus (``mouthpiece render``'s) it takes the job while its models still load, and its
        idle fetches are cancelled at stop (nothing on that bus outlives it), so the one job starts and
        the command exits without waiting for what the job does not need."""
        worker = Worker(
            self.settings,
            observed(self.store, self.metrics),
            self.bus,
            self.bus.claims,
            stage,
            pools=pools or pools_of(stage),
            models=self.models,
        )
        worker.abandon_idle_pulls = worker.warm_while_serving = self.private
        worker.release_models_when_idle = self.private
        return worker

    async def run_workers(self, stages: list[str], stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """Start a worker per stage (each serves until ``stop``). A worker that cannot start (a model
        that will not load, a default avatar that is missing) is logged and stops the whole stack:
        running without one stage would only leave jobs waiting forever."""
        check_chain(self.settings.chain)
        workers = [self.worker(s) for s in stages]
        for worker in workers:
            worker.served = tuple(stages)
        tasks = [asyncio.create_task(w.serve(stop), name=f"worker-{w.stage}") for w in workers]
        for task in tasks:
            task.add_done_callback(lambda t: self._worker_ended(t, stop))
        return tasks

    def _worker_ended(self, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        reason = error.reason if isinstance(error, MouthpieceError) else repr(error)
        if isinstance(error, OSError) and error.filename:  # a folder it cannot write: say which, in words
            reason = f"cannot use {os.fsdecode(error.filename)}: {error.strerror or error}"
        self.failures.append(f"{task.get_name()}: {reason}")
        log.error("worker_failed", worker=task.get_name(), reason=reason)
        stop.set()

    async def reconcile_forever(self, stop: asyncio.Event) -> None:
        """Run the reconciliation sweep every ``reconcile_interval`` seconds until ``stop``."""
        interval = self.settings.reconcile_interval
        while interval > 0 and not stop.is_set():
            try:
                await asyncio.to_thread(sweep, self.announcer, self.settings)
            except Exception:
                log.exception("reconcile_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


def _private_store(settings: Settings) -> Path:
    """The store of a private nats-server, named so a later start removes it if this process dies."""
    return scratch_folder(settings.data_dir, "nats")


def stop_on_signals(stop: asyncio.Event, force: Callable[[], None] | None = None) -> None:
    """SIGINT/SIGTERM set ``stop`` (workers then drain); a second signal runs ``force`` and exits."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            if force is not None:
                force()
            os._exit(128 + signum)
        log.info(
            "stopping", signal=signal.Signals(signum).name, hint="finishing work in flight; again to force"
        )
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
