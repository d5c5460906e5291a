"""The console's actions: submit a new job, cancel, retry."""

from __future__ import annotations

import asyncio

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
)

from pipeline.console.auth import CSRF_FIELD
from pipeline.console.base import ConsoleBase, _error, _field, _sentence, log
from pipeline.console.characters import character_names, picked_characters
from pipeline.console.upload import read_new_job, submit_new_job
from pipeline.contracts import State
from pipeline.control import cancel_job
from pipeline.errors import MouthpieceError
from pipeline.reconcile import retry_job


class Actions(ConsoleBase):
    """The console's actions."""

    async def create(self, request: Request) -> Response:
        form: FormData = request.state.form
        try:
            picked = await asyncio.to_thread(
                picked_characters, self.store, self.settings, _field(form, "character")
            )
            job = await read_new_job(form, self.settings)
            try:
                submitted = await asyncio.to_thread(submit_new_job, self.store, self.settings, job, picked)
            finally:
                job.close()
        except MouthpieceError as exc:
            self.metrics.console_uploads.labels("refused").inc()
            reason = _sentence(exc.reason)
            if request.state.api:
                return _error(422, reason)
            values = {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}
            context = self._form_context(values, reason)
            context["characters"] = await asyncio.to_thread(character_names, self.store, self.settings)
            return self._render(request, "new.html", context, status=422)
        self.metrics.console_uploads.labels("submitted").inc()
        self.index.placeholder(submitted.job_id, job.name, "console")
        log.info("console_job_submitted", job_id=submitted.job_id, avatars=len(job.avatars))
        if request.state.api:
            return JSONResponse(
                {"job_id": submitted.job_id, "url": f"/jobs/{submitted.job_id}"}, status_code=202
            )
        return RedirectResponse(f"/jobs/{submitted.job_id}", status_code=303)

    async def cancel(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not await self._known(job_id):
            return self._not_found(request, job_id)
        if self.bus is None:
            return _error(503, "the console is not connected to the bus")
        before = self.index.get(job_id)
        status = await cancel_job(self.store, self.settings, self.bus, job_id, by="console")
        self.index.touch(job_id)
        if request.state.api:
            return JSONResponse(status.model_dump(mode="json"))
        finished = status.state != State.cancelled and (before is None or before.finished)
        return RedirectResponse(
            f"/jobs/{job_id}?note={'finished' if finished else 'cancelled'}", status_code=303
        )

    async def retry(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not await self._known(job_id):
            return self._not_found(request, job_id)
        if self.announcer is None:
            return _error(
                503, "retrying needs the stack's bus (run the console with `mouthpiece up` or `ingress`)"
            )
        triggers = await asyncio.to_thread(retry_job, self.announcer, self.settings, job_id)
        self.index.touch(job_id)
        if request.state.api:
            return JSONResponse({"job_id": job_id, "retried": triggers})
        back = request.query_params.get("back") == "ops"
        target = "/ops" if back else f"/jobs/{job_id}?note={'retried' if triggers else 'nothing'}"
        return RedirectResponse(target, status_code=303)
