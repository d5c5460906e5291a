"""The console's shared state and guards (sign-in, CSRF, rendering); the handlers are mixed in from pages,
files, actions and api."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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
from pipeline.console.upload import TooLarge, body_limit, capped_form, unavailable
from pipeline.console.views import dead_letters, job_view, model_rows
from pipeline.contracts import JobOptions
from pipeline.errors import InvalidKey
from pipeline.keys import check_job_id
from pipeline.metrics import Metrics, queue_stats
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
        if not _valid_id(job_id):
            return None
        progress = self.index.progress.get(job_id, {})
        return await asyncio.to_thread(job_view, self.store, self.settings, job_id, progress)

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
