"""The HTTP ingress: one service for Discord, storage-event hooks, health and the web console.

    POST /discord/interactions   Discord's Interactions Endpoint   } ``pipeline.discord.routes``
    POST /hooks/bot              the gateway relay's events        }
    POST /hooks/minio            MinIO's webhook notification (its auth token): the record goes onto the bus
    GET  /healthz                liveness
    /  (everything else)         the web console, its API and /metrics (``pipeline.console``)

An interaction is handled once: its id is remembered for 15 minutes, and its job folder is derived from
the id (``Submission(nonce=...)`` with content that is the same on every delivery), so a delivery this
process did not see still maps to the same job. Tokens and webhook URLs are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.bus import Bus
from pipeline.config import Settings
from pipeline.console import Console
from pipeline.console.auth import check_exposure
from pipeline.contracts import (
    BucketEvent,
)
from pipeline.discord.api import DiscordApi
from pipeline.discord.fetch import AllowList, Fetcher
from pipeline.discord.interactions import (
    CDN,
)
from pipeline.discord.progress import ProgressForwarder
from pipeline.discord.routes import DiscordRoutes
from pipeline.errors import ConfigError, InvalidInput, RetryableError
from pipeline.events import parse_event
from pipeline.httputil import bearer_ok, equal, error_response, read_body
from pipeline.keys import event_subject
from pipeline.storage.base import ObjectStore

if TYPE_CHECKING:
    from pipeline.stack import Stack

log = structlog.get_logger("mouthpiece.ingress")

MAX_BODY = 1024 * 1024


# --- the app -----------------------------------------------------------------------------------------------


class Ingress:
    """The endpoints' shared state: the store and bus, and the Discord routes (with their background
    work in flight)."""

    def __init__(self, settings: Settings, store: ObjectStore, bus: Bus, discord: DiscordRoutes) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.discord = discord

    async def idle(self) -> None:
        """Wait until the background work of every interaction so far has finished."""
        await self.discord.idle()

    # --- /hooks/minio -----------------------------------------------------------------------------------
    async def hooks_minio(self, request: Request) -> Response:
        token = self.settings.minio_webhook_token
        if token is None:
            return error_response(503, "the MinIO hook is not configured (MOUTHPIECE_MINIO_WEBHOOK_TOKEN)")
        if request.method == "HEAD":
            return Response(status_code=200)
        auth = request.headers.get("authorization")
        secret = token.get_secret_value()
        if not (bearer_ok(auth, secret) or equal(auth, secret)):
            return error_response(401, "missing or wrong token")
        body = await read_body(request)
        if body is None:
            return error_response(413, "request body too large")
        try:
            published = await self._republish(body)
        except InvalidInput as exc:
            return error_response(400, exc.reason)
        except RetryableError as exc:
            return error_response(503, exc.reason)
        return JSONResponse({"published": published})

    async def _republish(self, body: bytes) -> int:
        """Put each created-object record onto its stage's subject (deterministic message id)."""
        events = parse_event(body)
        count = 0
        for index, event in enumerate(events):
            obj = event.object
            subject = event_subject(self.settings, obj.bucket, obj.key) if event.created else None
            if subject is None:
                continue
            payload = body if len(events) == 1 else _single_record(body, index)
            if await self.bus.publish(subject, payload, msg_id=event.message_id):
                count += 1
            log.info("minio_event", subject=subject, bucket=obj.bucket, key=obj.key)
        return count

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers. (Readiness, which checks NATS and the store, is /readyz.)"""
        return JSONResponse({"ok": True})

    async def readyz(self, request: Request) -> Response:
        """Readiness: 200 when NATS and the object store both answer, else 503 naming what failed."""
        checks = {"nats": await _nats_ready(self.bus), "store": await _store_ready(self.store, self.settings)}
        return JSONResponse(
            {"ok": all(checks.values()), **checks}, status_code=200 if all(checks.values()) else 503
        )


def build_app(
    settings: Settings,
    store: ObjectStore,
    bus: Bus,
    *,
    api: DiscordApi | None = None,
    fetcher: Fetcher | None = None,
    cdn_base: str = CDN,
    clock: Callable[[], float] = time.time,
    console: Console | None = None,
) -> Starlette:
    """The ingress ASGI app. ``app.state.ingress`` is the ``Ingress`` (``await ...idle()`` in tests);
    ``app.state.console`` the web console (when ``settings.console``), mounted at ``/``."""
    api = api or DiscordApi.from_settings(settings)
    fetcher = fetcher or default_fetcher(settings)
    discord = DiscordRoutes(settings, store, bus, api, fetcher, cdn_base=cdn_base, clock=clock)
    ingress = Ingress(settings, store, bus, discord)
    app = Starlette(
        routes=[
            Route("/discord/interactions", ingress.discord.interactions, methods=["POST"]),
            Route("/hooks/bot", ingress.discord.relay.hooks_bot, methods=["POST"]),
            Route("/hooks/minio", ingress.hooks_minio, methods=["POST", "HEAD"]),
            Route("/healthz", ingress.healthz, methods=["GET"]),
            Route("/readyz", ingress.readyz, methods=["GET"]),
        ]
    )
    app.state.ingress = ingress
    if console is None and settings.console:
        console = Console(settings, store, bus)
    app.state.console = console
    if console is not None:
        app.router.routes.extend(console.routes())
    return app


def default_fetcher(settings: Settings) -> Fetcher:
    return Fetcher(AllowList.parse(settings.discord_cdn_hosts), settings.discord_max_download_bytes)


# --- serving -------------------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's ``stop`` event governs shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def serve_ingress(stack: Stack, stop: asyncio.Event, *, cdn_base: str = CDN) -> None:
    """Serve the ingress on ``settings.ingress_host:ingress_port`` (and forward progress to Discord)
    until ``stop`` is set; then finish the background work in flight."""
    settings = stack.settings
    try:
        check_exposure(settings)
        sock = _listen(settings.ingress_host, settings.ingress_port)
    except ConfigError as exc:  # under `mouthpiece up` this task's error would otherwise go unseen
        log.error("ingress_failed", reason=exc.reason)
        raise
    api = DiscordApi.from_settings(settings)
    console = (
        Console(settings, stack.store, stack.bus, announcer=stack.announcer, metrics=stack.metrics)
        if settings.console
        else None
    )
    app = build_app(settings, stack.store, stack.bus, api=api, cdn_base=cdn_base, console=console)
    forwarder = ProgressForwarder(settings, stack.store, api)
    await forwarder.start(stack.bus)
    if console is not None:
        await console.start()
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=5,  # open event streams end when the console closes; this is a backstop
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    log.info("ingress_started", host=settings.ingress_host, port=sock.getsockname()[1])
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if console is not None:
            await console.close()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await app.state.ingress.idle()
        await forwarder.idle()
        api.close()
        sock.close()
        log.info("ingress_stopped")


async def serve_app(app: Any, host: str, port: int, stop: asyncio.Event, name: str) -> None:
    """Serve a small ASGI app (a worker's /metrics) on host:port until ``stop`` is set."""
    sock = _listen(host, port)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", log_level="warning")
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    log.info(f"{name}_listening", host=host, port=sock.getsockname()[1])
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the ingress cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


# --- readiness ---------------------------------------------------------------------------------------------------


async def _nats_ready(bus: Bus, timeout: float = 2.0) -> bool:
    """Connected, and a round trip to the server completes."""
    nc = getattr(bus, "nc", None)
    if nc is None:
        return True  # not a NATS bus (tests): nothing to check
    try:
        await asyncio.wait_for(nc.flush(timeout=timeout), timeout=timeout + 0.5)
    except Exception:
        return False
    return bool(nc.is_connected)


async def _store_ready(store: ObjectStore, settings: Settings, timeout: float = 3.0) -> bool:
    """A metadata request to the inputs bucket is answered (a missing object is an answer too)."""
    try:
        await asyncio.wait_for(
            asyncio.to_thread(store.stat, settings.bucket_inputs, "defaults/avatar.png"), timeout=timeout
        )
    except Exception:
        return False
    return True


# --- helpers ----------------------------------------------------------------------------------------------------


def _single_record(body: bytes, index: int) -> bytes:
    event = BucketEvent.model_validate_json(body)
    record = event.Records[index]
    key = f"{record.s3.bucket.name}/{record.s3.object.key}"
    return BucketEvent(EventName=record.eventName, Key=key, Records=[record]).model_dump_json().encode()
