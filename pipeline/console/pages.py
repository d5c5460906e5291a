"""The console's HTML pages: the jobs, a job, the new-job form, operations, sign-in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import (
    RedirectResponse,
    Response,
)

from pipeline.console.base import NOTES, ConsoleBase, _field, _int, _next, _valid_id
from pipeline.console.characters import character_names
from pipeline.console.views import flatten, quality_text
from pipeline.contracts import State


class Pages(ConsoleBase):
    """The console's HTML pages."""

    async def home(self, request: Request) -> Response:
        number = _int(request.query_params.get("page"), 1)
        size = self.settings.console_page_size
        jobs, total = self.index.page(number, size)
        pages = max(1, -(-total // size))
        context = {
            "jobs": jobs,
            "total": total,
            "page": min(number, pages),
            "pages": pages,
            "loaded": self.index.loaded,
            "drops": self.index.drops[:20] if number == 1 else [],
            "counts": self.index.counts(),
            "now": datetime.now(UTC),
            "note": NOTES.get(request.query_params.get("note", "")),
        }
        partial = request.query_params.get("partial")
        if partial == "jobs":
            return self._render(request, "_jobs.html", context)
        return self._render(request, "jobs.html", context)

    async def job_page(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        view = await self._view(job_id)
        if view is None:
            summary = self.index.get(job_id)
            if summary is None or not _valid_id(job_id):
                return self._refused(request, 404, f"There is no job {job_id[:40]}.")
            context = {"summary": summary, "view": None, "job_id": job_id, "chain": self.settings.chain}
            return self._render(request, "job.html", context)
        context = {
            "view": view,
            "job_id": job_id,
            "summary": self.index.get(job_id),
            "quality_rows": flatten(view.quality) if view.quality else [],
            "quality_text": quality_text(view.quality) if view.quality else [],
            "can_retry": self.announcer is not None and view.status.state == State.failed,
            "note": NOTES.get(request.query_params.get("note", "")),
            "now": datetime.now(UTC),
        }
        if request.query_params.get("partial") == "graph":
            return self._render(request, "_graph.html", context)
        return self._render(request, "job.html", context)

    async def new_form(self, request: Request) -> Response:
        context = self._form_context({})
        context["characters"] = await asyncio.to_thread(character_names, self.store, self.settings)
        return self._render(request, "new.html", context)

    async def ops_page(self, request: Request) -> Response:
        context = await self._ops()
        context["can_retry"] = self.announcer is not None
        return self._render(request, "ops.html", context)

    async def login_form(self, request: Request) -> Response:
        if self.access.signed_in(request.state.session):
            return RedirectResponse("/", status_code=303)
        return self._render(
            request, "login.html", {"next": _next(request.query_params.get("next")), "error": None}
        )

    async def login(self, request: Request) -> Response:
        """The sign-in form (throttled before its body is read: ``_sign_in``). A right password makes a
        new server-side session (a new id: no session fixation) and marks this browser as one that
        signed in here (the throttle's exemption for the owner)."""
        form: FormData = request.state.form
        target = _next(_field(form, "next"))
        if not self.access.password_ok(_field(form, "password") or ""):
            await asyncio.sleep(0.5)  # a little friction for guessing
            return self._render(
                request, "login.html", {"next": target, "error": "That password is not right."}, 401
            )
        client, known = request.state.throttle_key
        self.access.throttle.succeeded(client, known_device=known)
        response = RedirectResponse(target, status_code=303)
        self.access.set_cookie(response, await self.access.sign_in(), request)
        self.access.set_device_cookie(response, request, self.access.device_of(request))
        return response

    async def logout(self, request: Request) -> Response:
        """Sign out: the session's record is revoked (a copy of the cookie stops working everywhere)."""
        await self.access.sign_out(request.state.session)
        _, cookie = self.access.visitor()
        response = RedirectResponse("/login", status_code=303)
        self.access.set_cookie(response, cookie, request)
        return response
