"""structlog setup: JSON lines when stderr is not a terminal, readable console output when it is.

Every line a stage worker writes carries ``job_id``, ``task`` and ``stage`` (bound by the runner through
context variables, which ``asyncio.to_thread`` carries into worker threads). Known secret values are
scrubbed from every line, and httpx's request-URL logging (which would print webhook tokens) is muted.
Libraries' own log records (the standard ``logging`` module) and Python warnings (watchdog's
``RuntimeWarning`` when a watched folder moves) are rendered the same way, as one line each, so the JSON
log stays one JSON object per line.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from pydantic import SecretStr

from pipeline.config import LogSettings

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _secret_values(settings: LogSettings) -> list[str]:
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 6:
            values.append(value.get_secret_value())
    return values


class Redactor:
    """A processor that replaces known secrets, wherever they appear in a value, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = {s for s in secrets if s}

    def add(self, *secrets: str) -> None:
        self.secrets.update(s for s in secrets if s and len(s) >= 6)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not self.secrets:
            return event
        for key, value in event.items():
            text = value if isinstance(value, str) else None
            if text is not None and any(s in text for s in self.secrets):
                for secret in self.secrets:
                    text = text.replace(secret, "***")
                event[key] = text
        return event


REDACTOR = Redactor()
"""The process-wide redactor; code that learns a secret at run time (a Discord token) adds it here."""


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Configure structlog for this process (call once, at the entry point)."""
    out = stream or sys.stderr
    as_json = settings.log_format == "json" or (settings.log_format == "auto" and not out.isatty())
    REDACTOR.add(*_secret_values(settings))
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    exc = structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info
    processors: list[Any] = [*shared, exc, REDACTOR, renderer]
    _route_standard_logging(out, shared, renderer, exc)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(settings.log_level.lower(), 20)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # libraries that log through the standard logging module: keep their noise (and URLs) out
    for name in ("httpx", "httpcore", "urllib3", "nats", "asyncio", "numba", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _OurHandler(logging.StreamHandler[TextIO]):
    """The root handler ``configure_logging`` installs (replaced, not stacked, when called again)."""


def _route_standard_logging(out: TextIO, shared: list[Any], renderer: Any, exc: Any) -> None:
    """Standard-library log records and Python warnings become lines like ours (JSON or console), with
    secrets scrubbed; nothing reaches stderr as a raw, multi-line text."""
    handler = _OurHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, exc, REDACTOR, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _OurHandler)] + [handler]
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    warnings.showwarning = _log_warning


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: one structured line instead of two raw lines on stderr."""
    structlog.get_logger("py.warnings").warning(
        "python_warning", category=category.__name__, message=str(message), where=f"{filename}:{lineno}"
    )
