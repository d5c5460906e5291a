"""The console's JSON API, server-sent events and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import PurePath

from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    Response,
    StreamingResponse,
)

from pipeline.console.auth import Session
from pipeline.console.base import ConsoleBase, _int
from pipeline.contracts import FailedDrop
from pipeline.drops import list_failed_drops
from pipeline.metrics import CONTENT_TYPE


class Api(ConsoleBase):
    """The console's JSON API, server-sent events and /metrics.."""

    async def api_ops(self, request: Request) -> Response:
        data = await self._ops()
        return JSONResponse(
            {
                "queues": [q.__dict__ for q in data["queues"]],
                "dead_letters": [
                    {
                        "stage": d.stage,
                        "job_id": d.job_id,
                        "task": d.task,
                        "reason": d.reason,
                        "at": d.at.isoformat(),
                    }
                    for d in data["letters"]
                ],
                "models": [{**m.__dict__, "present": m.present} for m in data["models"]],
            }
        )

    async def events(self, request: Request) -> Response:
        only = request.query_params.get("job")
        queue = self.index.listen()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 3000\n\n"
                while not self.closing.is_set():
                    try:
                        kind, data = await asyncio.wait_for(queue.get(), timeout=15)
                    except TimeoutError:
                        yield ": still here\n\n"
                        continue
                    if kind == "close":
                        return
                    if only and data.get("job_id") not in (None, only):
                        continue
                    yield f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
            finally:
                self.index.unlisten(queue)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def api_session(self, request: Request) -> Response:
        session: Session = request.state.session
        return JSONResponse(
            {"csrf": self.access.csrf_token(session), "signed_in": self.access.signed_in(session)}
        )

    async def api_jobs(self, request: Request) -> Response:
        number = _int(request.query_params.get("page"), 1)
        jobs, total = self.index.page(number, self.settings.console_page_size)
        return JSONResponse({"page": number, "total": total, "jobs": [j.to_json() for j in jobs]})

    async def api_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        view = await self._view(job_id)
        if view is None:
            return self._not_found(request, job_id)
        boxes = [*view.head, *(b for row in view.rows.values() for b in row)]
        return JSONResponse(
            {
                "status": view.status.model_dump(mode="json"),
                "graph": [
                    {
                        "task": b.task, "stage": b.stage, "state": b.state, "progress": b.progress,
                        "seconds": b.seconds, "reason": b.reason, "attempts": b.attempts,
                        "runs": [r.model_dump(mode="json") for r in b.runs],
                    }
                    for b in boxes
                ],
                "outputs": [o.__dict__ for o in view.outputs],
                "options": view.options,
                "destinations": view.destinations,
                "quality": view.quality,
            }
        )  # fmt: skip

    async def api_drops(self, request: Request) -> Response:
        drops = await asyncio.to_thread(list_failed_drops, self.store, self.settings)
        return JSONResponse({"drops": [self._drop_json(d) for d in drops]})

    def _drop_json(self, drop: FailedDrop) -> dict[str, object]:
        """A failed drop without this server's paths: ``moved_to`` relative to the watched folder
        (``.failed/<stamp>-<name>``), or only the folder's name when it is elsewhere."""
        data = drop.model_dump(mode="json")
        if drop.moved_to:
            moved = PurePath(drop.moved_to)
            try:
                data["moved_to"] = moved.relative_to(self.settings.inbox).as_posix()
            except ValueError:
                data["moved_to"] = moved.name
        return data

    async def metrics_endpoint(self, request: Request) -> Response:
        self.metrics.set_jobs(self.index.counts())
        self.metrics.failed_drops.set(len(self.index.drops))
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.metrics.refresh_queues(self.bus)
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)
