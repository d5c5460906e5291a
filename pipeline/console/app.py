"""The console's routes: server-rendered pages, a JSON API, server-sent events and ``/metrics``.

    GET  /                        the jobs, newest first, paged; failed drops
    GET  /jobs/{id}               a job: stage graph, inputs, the video with subtitles, quality, downloads
    GET  /jobs/{id}/files/{name}  an output file (video, subtitles, report), with byte ranges
    GET  /jobs/{id}/inputs/{which} the voice clip (``audio``) or a task's avatar (``a0``...), sniffed
    GET  /new, POST /jobs         the new-job form; submitting goes to the new job's page
    POST /jobs/{id}/cancel        cancel (pipeline.control.cancel_job)
    POST /jobs/{id}/retry         run the failed stages again (pipeline.reconcile.retry_job)
    GET  /ops                     dead letters (with Retry), queues and workers per stage, model files
    GET  /events[?job=ID]         server-sent events: ``job`` (a summary changed), ``progress``, ``drops``
    GET  /login, POST /login, POST /logout
    GET  /api/session             the CSRF token for API clients using the session cookie
    GET  /api/jobs[?page=N], GET /api/jobs/{id}, POST /api/jobs, POST /api/jobs/{id}/cancel|retry,
    GET  /api/drops, GET /api/ops
    GET  /metrics                 Prometheus text format

Access rules are in ``pipeline.console.auth``. Pages are plain HTML with one script and one style sheet
(no inline script: the Content-Security-Policy allows only this origin).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.bus import Bus
from pipeline.config import Settings
from pipeline.console.auth import CSRF_FIELD, CSRF_HEADER, Access, Session
from pipeline.console.index import JobIndex
from pipeline.console.upload import TooLarge, body_limit, capped_form, read_new_job, submit_new_job
from pipeline.console.views import dead_letters, flatten, input_key, job_view, model_rows, output_names
from pipeline.contracts import JobOptions, State
from pipeline.control import cancel_job
from pipeline.discord.fetch import sniff
from pipeline.drops import list_failed_drops
from pipeline.errors import InvalidKey, MouthpieceError
from pipeline.keys import check_job_id
from pipeline.metrics import CONTENT_TYPE, Metrics, queue_stats
from pipeline.reconcile import retry_job
from pipeline.storage.base import ObjectStore
from pipeline.storage.emitting import EmittingStore

log = structlog.get_logger("mouthpiece.console")
HERE = Path(__file__).parent
NOTES = {
    "cancelled": "The job was cancelled.",
    "retried": "The failed stages run again.",
    "nothing": "Nothing to retry: no stage of this job failed.",
    "finished": "The job had already finished.",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
Handler = Callable[[Request], Awaitable[Response]]


class Console:
    """The console of one process. ``routes()`` are mounted at ``/`` of the HTTP service; ``start`` and
    ``close`` run its job index."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        bus: Bus | None,
        *,
        announcer: EmittingStore | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.announcer = announcer
        self.metrics = metrics or Metrics(settings)
        self.index = JobIndex(settings, store)
        self.access = Access(settings)
        self.closing = asyncio.Event()
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
        )
        self.env.filters.update(duration=_duration, ago=_ago, size=_size, pct=_pct, when=_when)
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.index.start(self.bus)

    async def close(self) -> None:
        self.closing.set()
        await self.index.close()

    # --- routing and guards -----------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        page, api, public = self._page, self._api, self._public
        return [
            Route("/", page(self.home), methods=["GET"]),
            Route("/new", page(self.new_form), methods=["GET"]),
            Route("/jobs", page(self.create), methods=["POST"]),
            Route("/jobs/{job_id}", page(self.job_page), methods=["GET"]),
            Route("/jobs/{job_id}/files/{name}", page(self.output_file), methods=["GET"]),
            Route("/jobs/{job_id}/inputs/{which}", page(self.input_file), methods=["GET"]),
            Route("/jobs/{job_id}/cancel", page(self.cancel), methods=["POST"]),
            Route("/jobs/{job_id}/retry", page(self.retry), methods=["POST"]),
            Route("/ops", page(self.ops_page), methods=["GET"]),
            Route("/events", api(self.events), methods=["GET"]),
            Route("/login", public(self.login_form), methods=["GET"]),
            Route("/login", public(self.login), methods=["POST"]),
            Route("/logout", public(self.logout), methods=["POST"]),
            Route("/api/session", api(self.api_session), methods=["GET"]),
            Route("/api/jobs", api(self.api_jobs), methods=["GET"]),
            Route("/api/jobs", api(self.create), methods=["POST"]),
            Route("/api/jobs/{job_id}", api(self.api_job), methods=["GET"]),
            Route("/api/jobs/{job_id}/cancel", api(self.cancel), methods=["POST"]),
            Route("/api/jobs/{job_id}/retry", api(self.retry), methods=["POST"]),
            Route("/api/drops", api(self.api_drops), methods=["GET"]),
            Route("/api/ops", api(self.api_ops), methods=["GET"]),
            Route("/metrics", api(self.metrics_endpoint), methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]

    def _page(self, handler: Handler) -> Handler:
        return self._guard(handler, api=False, public=False)

    def _api(self, handler: Handler) -> Handler:
        return self._guard(handler, api=True, public=False)

    def _public(self, handler: Handler) -> Handler:
        return self._guard(handler, api=False, public=True)

    def _guard(self, handler: Handler, *, api: bool, public: bool) -> Handler:
        async def guarded(request: Request) -> Response:
            await self.start()
            request.state.api = api or request.url.path.startswith("/api/")
            if not self.access.host_ok(request):
                return PlainTextResponse("This console answers only on its loopback address.", 421)
            session, fresh = self.access.session_of(request), None
            if session is None:
                session, fresh = self.access.new_session(signed_in=self.access.open)
            request.state.session = session
            bearer = self.access.bearer_ok(request)
            if not (public or bearer or self.access.signed_in(session)):
                response = self._unauthorized(request)
            else:
                response = await self._checked_post(request, handler, session, bearer)
            if fresh is not None:
                self.access.set_cookie(response, fresh, request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return guarded

    def _unauthorized(self, request: Request) -> Response:
        if request.state.api:
            return _error(401, "sign in first, or send the console token as a bearer token")
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    async def _checked_post(
        self, request: Request, handler: Handler, session: Session, bearer: bool
    ) -> Response:
        if request.method != "POST":
            return await handler(request)
        try:
            form = await capped_form(request, body_limit(self.settings, request))
        except TooLarge as exc:
            return (
                _error(413, f"{exc}: send smaller files")
                if request.state.api
                else self._refused(request, 413, f"{exc}: send smaller files")
            )
        request.state.form = form
        try:
            if not bearer:
                given = request.headers.get(CSRF_HEADER) or _field(form, CSRF_FIELD)
                if not self.access.origin_ok(request) or not self.access.csrf_ok(session, given):
                    message = (
                        "the form is out of date or came from another site: reload the page and try again"
                    )
                    return _error(403, message) if request.state.api else self._refused(request, 403, message)
            return await handler(request)
        finally:
            await form.close()

    def _refused(self, request: Request, status: int, message: str) -> Response:
        return self._render(request, "error.html", {"message": message}, status=status)

    # --- rendering ---------------------------------------------------------------------------------------
    def _render(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        session: Session = request.state.session
        page = self.env.get_template(template).render(
            csrf=self.access.csrf_token(session),
            signed_in=self.access.signed_in(session),
            can_sign_out=not self.access.open and session.signed_in,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})

    # --- the job list -------------------------------------------------------------------------------------
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

    # --- a job ----------------------------------------------------------------------------------------------
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
            "can_retry": self.announcer is not None and view.status.state == State.failed,
            "note": NOTES.get(request.query_params.get("note", "")),
            "now": datetime.now(UTC),
        }
        if request.query_params.get("partial") == "graph":
            return self._render(request, "_graph.html", context)
        return self._render(request, "job.html", context)

    async def _view(self, job_id: str) -> Any:
        if not _valid_id(job_id):
            return None
        progress = self.index.progress.get(job_id, {})
        return await asyncio.to_thread(job_view, self.store, self.settings, job_id, progress)

    async def output_file(self, request: Request) -> Response:
        job_id, name = request.path_params["job_id"], request.path_params["name"]
        if not _valid_id(job_id) or name not in await asyncio.to_thread(
            output_names, self.store, self.settings, job_id
        ):
            return PlainTextResponse("no such file", 404)
        path = await asyncio.to_thread(self._local_copy, self.settings.bucket_outputs, f"{job_id}/{name}")
        media_type = {".vtt": "text/vtt", ".srt": "text/plain", ".json": "application/json"}.get(
            Path(name).suffix, mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        download = request.query_params.get("download") == "1"
        return FileResponse(
            path,
            media_type=media_type,
            filename=name if download else None,
            content_disposition_type="attachment" if download else "inline",
            headers={"Cache-Control": "private, max-age=60"},
        )

    async def input_file(self, request: Request) -> Response:
        """An input shown as a thumbnail or a player: served only if its bytes are media (an upload is
        never served as a page of this site), as the type its bytes say."""
        job_id, which = request.path_params["job_id"], request.path_params["which"]
        if not _valid_id(job_id):
            return PlainTextResponse("no such file", 404)
        key = await asyncio.to_thread(input_key, self.store, self.settings, job_id, which)
        if key is None:
            return PlainTextResponse("no such file", 404)
        try:
            path = await asyncio.to_thread(self._local_copy, self.settings.bucket_inputs, key)
        except MouthpieceError:
            return PlainTextResponse("no such file", 404)
        with path.open("rb") as f:
            sniffed = sniff(f.read(64))
        if sniffed is None:
            return PlainTextResponse("not media", 404)
        media_type = mimetypes.guess_type(f"x{sniffed.ext}")[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})

    def _local_copy(self, bucket: str, key: str) -> Path:
        """A file on this machine holding the object: the local store's own file, else a cached copy."""
        store: Any = self.store
        for _ in range(5):
            if hasattr(store, "path_of") and hasattr(store, "root"):
                path = Path(store.path_of(bucket, key))
                if path.is_file():
                    return path
                break
            store = getattr(store, "inner", None)
            if store is None:
                break
        info = self.store.stat(bucket, key)
        if info is None:
            raise InvalidKey(f"{bucket}/{key} does not exist", key=key)
        cache = self.settings.data_dir / "tmp" / "console-cache" / bucket / f"{info.etag}-{Path(key).name}"
        if not cache.is_file():
            self.store.download(bucket, key, cache)
        return cache

    # --- new jobs --------------------------------------------------------------------------------------------
    async def new_form(self, request: Request) -> Response:
        return self._render(request, "new.html", self._form_context({}))

    def _form_context(self, values: dict[str, str], error: str | None = None) -> dict[str, Any]:
        return {
            "values": values,
            "error": error,
            "choices": _choices(),
            "max_mb": self.settings.max_input_bytes // (1024 * 1024),
        }

    async def create(self, request: Request) -> Response:
        form: FormData = request.state.form
        try:
            job = await read_new_job(form, self.settings)
            try:
                submitted = await asyncio.to_thread(submit_new_job, self.store, self.settings, job)
            finally:
                job.close()
        except MouthpieceError as exc:
            self.metrics.console_uploads.labels("refused").inc()
            reason = _sentence(exc.reason)
            if request.state.api:
                return _error(422, reason)
            values = {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}
            return self._render(request, "new.html", self._form_context(values, reason), status=422)
        self.metrics.console_uploads.labels("submitted").inc()
        self.index.placeholder(submitted.job_id, job.name, "console")
        log.info("console_job_submitted", job_id=submitted.job_id, avatars=len(job.avatars))
        if request.state.api:
            return JSONResponse(
                {"job_id": submitted.job_id, "url": f"/jobs/{submitted.job_id}"}, status_code=202
            )
        return RedirectResponse(f"/jobs/{submitted.job_id}", status_code=303)

    # --- actions ----------------------------------------------------------------------------------------------
    async def cancel(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not _valid_id(job_id):
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
        if not _valid_id(job_id):
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

    def _not_found(self, request: Request, job_id: str) -> Response:
        if request.state.api:
            return _error(404, f"there is no job {job_id[:40]}")
        return self._refused(request, 404, f"There is no job {job_id[:40]}.")

    # --- operations -------------------------------------------------------------------------------------------
    async def _ops(self) -> dict[str, Any]:
        queues = await queue_stats(self.bus, self.settings) if self.bus is not None else []
        letters = await asyncio.to_thread(dead_letters, self.store, self.settings)
        models = await asyncio.to_thread(model_rows, self.settings)
        return {"queues": queues, "letters": letters, "models": models}

    async def ops_page(self, request: Request) -> Response:
        context = await self._ops()
        context["can_retry"] = self.announcer is not None
        return self._render(request, "ops.html", context)

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
                "models": [m.__dict__ for m in data["models"]],
            }
        )

    # --- live updates -------------------------------------------------------------------------------------------
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

    # --- sign-in ---------------------------------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        if self.access.signed_in(request.state.session):
            return RedirectResponse("/", status_code=303)
        return self._render(
            request, "login.html", {"next": _next(request.query_params.get("next")), "error": None}
        )

    async def login(self, request: Request) -> Response:
        form: FormData = request.state.form
        target = _next(_field(form, "next"))
        if not self.access.password_ok(_field(form, "password") or ""):
            await asyncio.sleep(0.5)  # a little friction for guessing
            return self._render(
                request, "login.html", {"next": target, "error": "That password is not right."}, 401
            )
        _, cookie = self.access.new_session(signed_in=True)  # a new nonce: no session fixation
        response = RedirectResponse(target, status_code=303)
        self.access.set_cookie(response, cookie, request)
        return response

    async def logout(self, request: Request) -> Response:
        _, cookie = self.access.new_session(signed_in=False)
        response = RedirectResponse("/login", status_code=303)
        self.access.set_cookie(response, cookie, request)
        return response

    # --- the JSON API ----------------------------------------------------------------------------------------------
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
        return JSONResponse({"drops": [d.model_dump(mode="json") for d in drops]})

    async def metrics_endpoint(self, request: Request) -> Response:
        self.metrics.set_jobs(self.index.counts())
        self.metrics.failed_drops.set(len(self.index.drops))
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.metrics.refresh_queues(self.bus)
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)


# --- helpers ------------------------------------------------------------------------------------------------------


def _valid_id(job_id: str) -> bool:
    try:
        check_job_id(job_id)
    except InvalidKey:
        return False
    return True


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _int(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and len(text) < 7 else default


def _next(target: str | None) -> str:
    """Only a path on this site (never ``//elsewhere``)."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _sentence(text: str) -> str:
    """A reason as a sentence (not capitalized: it often starts with the user's file name)."""
    text = text.strip()
    return text + ("" if text.endswith((".", "!", "?")) else ".")


def _choices() -> dict[str, list[str]]:
    """The values each option may take, read from ``JobOptions`` (new options appear by themselves);
    the first is the default, ``""`` where the default is to leave it unset."""
    schema = JobOptions.model_json_schema()
    out: dict[str, list[str]] = {}
    for name in ("renderer", "style", "motion", "subtitles"):
        field = JobOptions.model_fields.get(name)
        values = _enum(schema, schema["properties"].get(name, {}))
        if field is None or not values:
            continue
        default = getattr(field.default, "value", field.default)
        first = "" if default is None else str(default)
        out[name] = [first, *(str(v) for v in values if str(v) != first)]
    return out


def _enum(schema: dict[str, Any], prop: dict[str, Any]) -> list[Any] | None:
    """The allowed values of a property: its enum, or the enum of the definition it refers to (also
    inside ``anyOf``/``allOf``, as an optional enum is written)."""
    if "enum" in prop:
        return list(prop["enum"])
    if "$ref" in prop:
        return _enum(schema, schema.get("$defs", {}).get(prop["$ref"].rsplit("/", 1)[-1], {}))
    for part in prop.get("anyOf", []) + prop.get("allOf", []):
        found = _enum(schema, part)
        if found:
            return found
    return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "–"
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if seconds < 60:
        return "just now"
    return f"{_duration(seconds)} ago"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "–"


def _size(size: int | None) -> str:
    if size is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size = size / 1024  # type: ignore[assignment]
    return f"{size} B"


def _pct(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction * 100:.0f}%"
