"""The backlog of each stage pool — messages waiting plus messages in flight — read from JetStream's
consumer info, served as JSON for KEDA's ``metrics-api`` scaler and as Prometheus gauges.

This is the number the Kubernetes deployment scales on (runbooks/scaling-render.md says why it is ours
and not KEDA's NATS scaler's): for each durable consumer ``num_pending`` (stored, not yet handed out)
plus ``num_ack_pending`` (handed to a worker, not yet acknowledged: a render running now). A pool with
a backlog of 3 needs 3 workers (or Jobs) busy or starting.

``GET /backlog`` answers::

    {"stages": {"render": {"default": {"pending": 2, "in_flight": 1, "backlog": 3},
                           "neural": {"pending": 0, "in_flight": 0, "backlog": 0}}, ...},
     "total": 3, "stream": "MOUTHPIECE"}

so a trigger's ``valueLocation`` is ``stages.<stage>.<pool>.backlog``. When the bus cannot be read the
answer is 503 with the reason: KEDA then reports a scaler error (and keeps what runs) instead of reading
a zero. A consumer that is missing (deleted by hand) is made again with ``bus.consumer_config`` — the
configuration ``mouthpiece init`` and the workers use — and counted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import nats
import structlog
from nats.js.errors import NotFoundError

from pipeline.bus import NatsBus, ensure_consumer, stage_consumers
from pipeline.config import Settings
from pipeline.errors import BusError

log = structlog.get_logger("mouthpiece.backlog")


@dataclass(frozen=True)
class PoolBacklog:
    """One stage pool's consumer: messages waiting, and handed out but not acknowledged."""

    stage: str
    pool: str
    pending: int
    in_flight: int

    @property
    def backlog(self) -> int:
        return self.pending + self.in_flight


async def read_backlog(bus: NatsBus, settings: Settings) -> list[PoolBacklog]:
    """Every stage pool's backlog, in chain order. Raises BusError when JetStream cannot answer."""
    rows = []
    for stage, pool, durable, subject in stage_consumers(settings):
        try:
            try:
                info = await bus.js.consumer_info(settings.stream, durable)
            except NotFoundError:
                log.warning("consumer_recreated", consumer=durable)
                info = await ensure_consumer(bus.js, settings, durable, subject)
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"cannot read consumer {durable} of stream {settings.stream}: {exc!r}") from exc
        rows.append(PoolBacklog(stage, pool, int(info.num_pending or 0), int(info.num_ack_pending or 0)))
    return rows


def backlog_document(rows: list[PoolBacklog], settings: Settings) -> dict[str, Any]:
    """The JSON body of ``GET /backlog`` (see the module docstring)."""
    stages: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        stages.setdefault(row.stage, {})[row.pool] = {
            "pending": row.pending,
            "in_flight": row.in_flight,
            "backlog": row.backlog,
        }
    return {"stages": stages, "total": sum(r.backlog for r in rows), "stream": settings.stream}


def backlog_app(bus: NatsBus, settings: Settings) -> Any:
    """The ASGI app of ``mouthpiece backlog --serve``: ``GET /backlog`` (JSON, for KEDA), ``GET
    /metrics`` (the ``mouthpiece_backlog`` gauges and the queue gauges, Prometheus text) and ``GET
    /healthz``. Each request reads JetStream afresh (a handful of small API calls)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from pipeline.metrics import CONTENT_TYPE, Metrics

    metrics = Metrics(settings)
    lock = asyncio.Lock()

    async def fresh() -> list[PoolBacklog]:
        async with lock:
            return await read_backlog(bus, settings)

    async def backlog(request: Request) -> Response:
        try:
            rows = await fresh()
        except BusError as exc:
            log.warning("backlog_unreadable", error=str(exc))
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(backlog_document(rows, settings))

    async def exposition(request: Request) -> Response:
        try:
            metrics.set_backlog(await fresh())
        except BusError as exc:
            return Response(f"{exc}\n", status_code=503, media_type="text/plain")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        connected = bus.nc.is_connected
        return JSONResponse({"ok": connected}, status_code=200 if connected else 503)

    return Starlette(
        routes=[
            Route("/backlog", backlog, methods=["GET"]),
            Route("/metrics", exposition, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


__all__ = ["PoolBacklog", "backlog_app", "backlog_document", "read_backlog"]
