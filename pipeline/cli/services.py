"""Running the pieces: ``up``, ``worker``, ``bridge``, ``ingress``, ``reconcile``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

import structlog

from pipeline.config import (
    Settings,
)
from pipeline.console.auth import check_exposure
from pipeline.errors import MouthpieceError
from pipeline.keys import pools_of
from pipeline.metrics import Metrics
from pipeline.registry import check_chain
from pipeline.stack import Stack, stop_on_signals

log = structlog.get_logger("mouthpiece.cli")


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    if not args.no_ingress:
        check_exposure(settings)  # a console beyond loopback needs a password: refuse before starting
    return asyncio.run(_up(settings, watch=not args.no_watch, ingress=not args.no_ingress))


async def _up(settings: Settings, *, watch: bool, ingress: bool) -> int:
    from pipeline.ingress.folder import FolderIngress

    stack = await Stack.open(settings, mode="up")
    stack.metrics = Metrics(settings)
    stop = asyncio.Event()
    stop_on_signals(stop, force=stack.nats.stop if stack.nats else None)
    try:
        tasks = await stack.run_workers(list(settings.chain), stop)
        tasks.append(asyncio.create_task(stack.reconcile_forever(stop)))
        tasks.extend(await _start_ingress(stack, stop) if ingress else [])
        folder = FolderIngress(settings, stack.store).start() if watch else None
        _banner(settings, watch, ingress)
        await stop.wait()
        if folder is not None:
            folder.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await stack.close()
    for failure in stack.failures:
        print(f"mouthpiece: worker failed: {failure}", file=sys.stderr)
    return 1 if stack.failures else 0


async def _start_ingress(stack: Stack, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The HTTP service: the web console (and /metrics), Discord interactions, relay and MinIO hooks.
    If it cannot start (the port is taken), the rest of ``up`` runs on and the reason is printed."""
    from pipeline.ingress.http import serve_ingress

    task = asyncio.create_task(serve_ingress(stack, stop))
    task.add_done_callback(_ingress_ended)
    return [task]


def _ingress_ended(task: asyncio.Task[None]) -> None:
    if task.cancelled() or task.exception() is None:
        return
    error = task.exception()
    reason = error.reason if isinstance(error, MouthpieceError) else repr(error)
    print(f"mouthpiece: the console and HTTP service are not running: {reason}", file=sys.stderr, flush=True)


def _banner(settings: Settings, watch: bool, ingress: bool = False) -> None:
    lines = ["mouthpiece is up."]
    if ingress and settings.console:
        host = settings.ingress_host if ":" not in settings.ingress_host else f"[{settings.ingress_host}]"
        lines.append(f"  The console is at http://{host}:{settings.ingress_port}/")
    if watch:
        lines.append(f"  Drop a voice clip (and a photo named like it) into {settings.inbox}")
        lines.append(f"  Videos appear in {settings.outbox}")
        lines.append(f"  (data directory {settings.data_dir}; `mouthpiece config` says why this one)")
    lines.append("  Ctrl-C stops (work in flight is finished first).")
    print("\n".join(lines), file=sys.stderr, flush=True)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    pools = tuple(p.strip() for p in args.pool.split(",") if p.strip())
    unknown = [p for p in pools if p not in pools_of(args.stage)]
    if unknown:
        known = ", ".join(pools_of(args.stage))
        print(
            f"mouthpiece: {args.stage} has no pool {', '.join(unknown)}; its pools: {known}", file=sys.stderr
        )
        return 2
    return asyncio.run(_worker(settings, args.stage, pools, args.max_messages, args.idle_exit))


async def _worker(
    settings: Settings, stage: str, pools: tuple[str, ...], max_messages: int | None, idle_exit: float | None
) -> int:
    if stage not in settings.chain:
        print(f"mouthpiece: stage {stage} is not in the chain {settings.chain}", file=sys.stderr)
        return 2
    check_chain(settings.chain)
    stack = await Stack.open(settings, mode="attach")
    stack.metrics = Metrics(settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    listener = await _metrics_listener(stack, [stage], stop) if settings.metrics_port else None
    try:
        await stack.worker(stage, pools).serve(stop, max_messages=max_messages, idle_exit=idle_exit)
    finally:
        stop.set()
        if listener is not None:
            await asyncio.gather(listener, return_exceptions=True)
        await stack.close()
    return 0


async def _metrics_listener(stack: Stack, stages: list[str], stop: asyncio.Event) -> asyncio.Task[None]:
    """A worker's own ``GET /metrics`` on ``metrics_host:metrics_port`` (its stage's runs and queue)."""
    from pipeline.ingress.http import serve_app
    from pipeline.metrics import metrics_app

    metrics = stack.metrics
    assert metrics is not None

    async def refresh() -> None:
        with contextlib.suppress(Exception):
            await metrics.refresh_queues(stack.bus, stages)

    app = metrics_app(metrics, refresh)
    settings = stack.settings
    return asyncio.create_task(serve_app(app, settings.metrics_host, settings.metrics_port, stop, "metrics"))


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.reconcile import Reconciler, reconcile_forever

    every: float | None = args.every

    async def go() -> list[str]:
        stack = await Stack.open(settings, mode="attach")
        reconciler = Reconciler(stack.announcer, settings)
        try:
            if every is None:
                return await asyncio.to_thread(reconciler.sweep)
            stop = asyncio.Event()
            stop_on_signals(stop)
            log.info("reconcile_service_started", every=every)
            await reconcile_forever(reconciler, every, stop)
            return []
        finally:
            await stack.close()

    keys = asyncio.run(go())
    if every is not None:
        return 0
    print(f"re-announced {len(keys)} input(s)")
    for key in keys:
        print(f"  {key}")
    return 0


def cmd_bridge(settings: Settings, args: argparse.Namespace) -> int:
    if settings.event_source != "seaweedfs":
        print("mouthpiece: the bridge needs MOUTHPIECE_EVENT_SOURCE=seaweedfs", file=sys.stderr)
        return 2
    if not settings.nats_url:
        print("mouthpiece: the bridge needs MOUTHPIECE_NATS_URL", file=sys.stderr)
        return 2
    return asyncio.run(_bridge(settings))


async def _bridge(settings: Settings) -> int:
    from pipeline.bus import NatsBus
    from pipeline.seaweedfs.bridge import serve_bridge

    assert settings.nats_url is not None
    bus = await NatsBus.connect(settings.nats_url, settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await serve_bridge(settings, bus, stop)
    finally:
        await bus.close()
    return 0


def cmd_backlog(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.nats_url:
        print("mouthpiece: the backlog is read from NATS: set MOUTHPIECE_NATS_URL", file=sys.stderr)
        return 2
    if args.serve:
        return asyncio.run(_serve_backlog(settings, args.host, args.port))
    print(json.dumps(asyncio.run(_read_backlog(settings)), indent=2))
    return 0


async def _read_backlog(settings: Settings) -> dict[str, object]:
    from pipeline.backlog import backlog_document, read_backlog
    from pipeline.bus import NatsBus

    assert settings.nats_url is not None
    bus = await NatsBus.connect(settings.nats_url, settings)
    try:
        return backlog_document(await read_backlog(bus, settings), settings)
    finally:
        await bus.close()


async def _serve_backlog(settings: Settings, host: str, port: int) -> int:
    """Make every consumer (the numbers exist before any worker), then serve ``backlog_app``."""
    from pipeline.backlog import backlog_app
    from pipeline.bus import NatsBus, ensure_consumers
    from pipeline.ingress.http import serve_app

    assert settings.nats_url is not None
    bus = await NatsBus.connect(settings.nats_url, settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await ensure_consumers(bus.js, settings)
        await serve_app(backlog_app(bus, settings), host, port, stop, "backlog")
    finally:
        await bus.close()
    return 0


def cmd_ingress(settings: Settings, args: argparse.Namespace) -> int:
    where = {"ingress_host": args.host or None, "ingress_port": args.port}
    settings = settings.model_copy(update={k: v for k, v in where.items() if v is not None})
    check_exposure(settings)  # before anything starts: one readable line
    return asyncio.run(_ingress(settings))


async def _ingress(settings: Settings) -> int:
    from pipeline.ingress.http import serve_ingress

    stack = await Stack.open(settings, mode="attach")
    stack.metrics = Metrics(settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await serve_ingress(stack, stop)
    finally:
        await stack.close()
    return 0
