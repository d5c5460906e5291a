"""The console's shared state and guards (sign-in, CSRF, rendering); the handlers are mixed in from pages,
files, actions and api."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from pipeline.bus import Bus
from pipeline.config import Settings
from pipeline.console.auth import CSRF_FIELD, CSRF_HEADER, Access, Session
from pipeline.console.index import JobIndex
from pipeline.console.throttle import client_key
from pipeline.console.upload import body_limit, capped_form, declared_length, first_field, unavailable
from pipeline.console.views import dead_letters, job_view, model_rows
from pipeline.contracts import JobOptions, offered
from pipeline.errors import InvalidKey, UploadTooLarge
from pipeline.keys import check_job_id
from pipeline.metrics import Metrics, queue_stats
from pipeline.status import read_job, read_records
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


@dataclass(frozen=True)
class _Rule:
    """What a route allows: ``public`` (no sign-in: /login, /logout), ``sign_in`` (the throttled
    sign-in form), ``upload`` (multipart files: the new-job POST)."""

    public: bool
    sign_in: bool = False
    upload: bool = False


class ConsoleBase:
    """The console of one process: its dependencies, job index, access rules and templates."""

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
        self.access = Access(settings, store)
        self.uploads = asyncio.Semaphore(settings.console_uploads)
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

    def _page(self, handler: Handler) -> Handler:
        return self._guard(handler, api=False, public=False)

    def _api(self, handler: Handler) -> Handler:
        return self._guard(handler, api=True, public=False)

    def _public(self, handler: Handler) -> Handler:
        return self._guard(handler, api=False, public=True)

    def _sign_in(self, handler: Handler) -> Handler:
        """The sign-in form's POST: public, throttled (``pipeline.console.throttle``)."""
        return self._guard(handler, api=False, public=True, sign_in=True)

    def _upload(self, handler: Handler, *, api: bool) -> Handler:
        """The new-job and add-character POSTs: the only routes that take a multipart body (files), one
        of ``console_uploads`` at a time."""
        return self._guard(handler, api=api, public=False, upload=True)

    def _guard(
        self, handler: Handler, *, api: bool, public: bool, sign_in: bool = False, upload: bool = False
    ) -> Handler:
        async def guarded(request: Request) -> Response:
            await self.start()
            await self.access.refresh()
            request.state.api = api or request.url.path.startswith("/api/")
            if not self.access.host_ok(request):
                response: Response = _unread(
                    request, PlainTextResponse("This console answers only on its loopback address.", 421)
                )
            else:
                session, fresh = await self.access.session_of(request), None
                if session is None:
                    session, fresh = self.access.visitor()
                request.state.session = session
                rule = _Rule(public=public, sign_in=sign_in, upload=upload)
                response = await self._decide(request, handler, session, rule)
                if fresh is not None:
                    self.access.set_cookie(response, fresh, request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return guarded

    async def _decide(self, request: Request, handler: Handler, session: Session, rule: _Rule) -> Response:
        """Who is asking, from where, and whether they may: all decided from the headers, before a byte
        of the body is read. A refusal of a request with a body closes the connection (the server
        does not read the rest to keep it open)."""
        given = self.access.bearer_given(request)
        bearer = False
        if given is not None:
            client = client_key(request.client.host if request.client else None)
            wait = self.access.throttle.retry_after(client, known_device=True)  # this client's count only
            if wait is not None:
                return _unread(request, self._too_many(request, wait))
            bearer = self.access.bearer_ok(given)
            if not bearer:
                self.access.throttle.failed(client, known_device=True, counts_globally=False)
        if not (rule.public or bearer or self.access.signed_in(session)):
            return _unread(request, self._unauthorized(request))
        if request.method != "POST":
            return await handler(request)
        if not bearer and not self.access.origin_ok(request):
            return _unread(request, self._forbidden(request))
        return await self._checked_post(request, handler, session, bearer, rule)

    def _unauthorized(self, request: Request) -> Response:
        if request.state.api:
            return _error(401, "sign in first, or send the console token as a bearer token")
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    def _forbidden(self, request: Request) -> Response:
        message = "the form is out of date or came from another site: reload the page and try again"
        return _error(403, message) if request.state.api else self._refused(request, 403, message)

    def _too_many(self, request: Request, wait: int) -> Response:
        message = f"too many wrong passwords or tokens: try again in {_duration(wait)}"
        if request.state.api:
            response = _error(429, message)
        else:
            context = {"next": "/", "error": message[:1].upper() + message[1:] + "."}
            response = self._render(request, "login.html", context, status=429)
        response.headers["Retry-After"] = str(wait)
        return response

    async def _checked_post(
        self, request: Request, handler: Handler, session: Session, bearer: bool, rule: _Rule
    ) -> Response:
        """A POST already allowed by its headers: its size and kind checked from the headers, the
        sign-in throttle, the CSRF token (the header, else the form's first field for an upload, else
        the small form's field), an upload slot; only then is the body parsed (files spooled to
        disk)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        multipart = kind == "multipart/form-data"
        if multipart and not rule.upload:
            return _unread(request, self._status(request, 415, "this form takes no files"))
        limit = body_limit(self.settings, multipart, public=rule.public)
        if declared_length(request) > limit:
            return _unread(request, self._status(request, 413, str(UploadTooLarge(limit))))
        if rule.sign_in:
            client, known = self.access.throttle_key(request)
            wait = self.access.throttle.begin(client, known_device=known)
            if wait is not None:
                return _unread(request, self._too_many(request, wait))
            request.state.throttle_key = (client, known)
        token = None if bearer else request.headers.get(CSRF_HEADER)
        receive = request.receive
        if not bearer and token is None and multipart:
            token, receive = await first_field(request, CSRF_FIELD)
            if token is None:
                return _unread(request, self._forbidden(request))
        if token is not None and not self.access.csrf_ok(session, token):
            return _unread(request, self._forbidden(request))
        if rule.upload:
            if self.uploads.locked():
                response = self._status(
                    request, 503, "the console is taking other uploads: try again shortly"
                )
                response.headers["Retry-After"] = "10"
                return _unread(request, response)
            await self.uploads.acquire()
        try:
            return await self._with_form(
                request, handler, session, receive, limit, bearer or token is not None
            )
        finally:
            if rule.upload:
                self.uploads.release()

    async def _with_form(
        self, request: Request, handler: Handler, session: Session, receive: Any, limit: int, checked: bool
    ) -> Response:
        try:
            form = await capped_form(request, limit, receive)
        except UploadTooLarge as exc:
            return _unread(request, self._status(request, 413, str(exc)))
        request.state.form = form
        try:
            if not checked and not self.access.csrf_ok(session, _field(form, CSRF_FIELD)):
                return self._forbidden(request)
            return await handler(request)
        finally:
            await form.close()

    def _status(self, request: Request, status: int, message: str) -> Response:
        return _error(status, message) if request.state.api else self._refused(request, status, message)

    def _refused(self, request: Request, status: int, message: str) -> Response:
        return self._render(request, "error.html", {"message": message}, status=status)

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

    def _not_found(self, request: Request, job_id: str) -> Response:
        if request.state.api:
            return _error(404, f"there is no job {job_id[:40]}")
        return self._refused(request, 404, f"There is no job {job_id[:40]}.")

    async def _view(self, job_id: str) -> Any:
        if not await self._known(job_id):  # a cancel marker alone is not a job to show
            return None
        progress = self.index.progress.get(job_id, {})
        return await asyncio.to_thread(job_view, self.store, self.settings, job_id, progress)

    async def _known(self, job_id: str) -> bool:
        """Whether ``job_id`` is a job: a full id with a job record or a stage record in the store, or
        one this console just submitted (listed as queued until its first record). Cancel and retry
        answer 404 otherwise: nothing is written for an id that names no job."""
        if not _valid_id(job_id):
            return False
        if self.index.get(job_id) is not None:
            return True
        return await asyncio.to_thread(job_exists, self.store, self.settings, job_id)

    async def _ops(self) -> dict[str, Any]:
        queues = await queue_stats(self.bus, self.settings) if self.bus is not None else []
        letters = await asyncio.to_thread(dead_letters, self.store, self.settings)
        models = await asyncio.to_thread(model_rows, self.settings)
        return {"queues": queues, "letters": letters, "models": models}

    def _form_context(self, values: dict[str, str], error: str | None = None) -> dict[str, Any]:
        return {
            "values": values,
            "error": error,
            "choices": _choices(),
            "max_mb": self.settings.max_input_bytes // (1024 * 1024),
            "unavailable": unavailable(self.settings),
        }


# --- helpers ------------------------------------------------------------------------------------------------------


def _valid_id(job_id: str) -> bool:
    try:
        check_job_id(job_id)
    except InvalidKey:
        return False
    return True


def job_exists(store: ObjectStore, settings: Settings, job_id: str) -> bool:
    """A job record or a stage record (validate writes one even when it refuses the upload)."""
    return read_job(store, settings, job_id) is not None or bool(read_records(store, settings, job_id))


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _int(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and len(text) < 7 else default


def _next(target: str | None) -> str:
    """Only a path on this site (never ``//elsewhere``, nor ``/\\elsewhere``, which browsers read as
    ``//``, nor a path with control characters)."""
    if not target or not target.startswith("/") or target[1:2] in ("/", "\\"):
        return "/"
    return target if target.isprintable() and "\\" not in target and len(target) <= 500 else "/"


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _unread(request: Request, response: Response) -> Response:
    """A refusal sent before the request's body was read: the connection is closed after it, so the
    server never reads (or discards) the rest of a body it did not want."""
    if declared_length(request) > 0 or "chunked" in request.headers.get("transfer-encoding", "").lower():
        response.headers["Connection"] = "close"
    return response


def _sentence(text: str) -> str:
    """A reason as a sentence (not capitalized: it often starts with the user's file name)."""
    text = text.strip()
    return text + ("" if text.endswith((".", "!", "?")) else ".")


def _choices() -> dict[str, list[str]]:
    """The values each option may take, read from ``JobOptions`` (new options appear by themselves);
    the first is the default, ``""`` where the default is to leave it unset."""
    schema = JobOptions.model_json_schema()
    out: dict[str, list[str]] = {}
    for name in offered("form"):
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
