"""The few Discord REST calls mouthpiece makes, with Discord's rate limits and failure modes handled.

- ``DiscordApi`` (httpx): edit an interaction's deferred reply (``PATCH /webhooks/{app}/{token}/messages/
  @original``, multipart ``payload_json`` + ``files[0]``), post a follow-up, register slash commands.
- ``execute_webhook`` (discord-webhook, for channel webhooks): post a message with an optional file.

Both answer a 429 by waiting ``retry_after`` (body) or ``Retry-After`` (header) and trying again, a bounded
number of times; a wait longer than ``max_wait`` becomes a ``RetryableError`` so the runner retries the
message later instead of holding a worker. 5xx and network failures are retried the same way. A webhook
that answers 404 (deleted) or 401 (token invalid or expired) raises ``WebhookGone`` and is remembered:
later calls to it fail at once, without a request. 413 raises ``AttachmentTooLarge``. Every request has a timeout.
No URL (they carry tokens) is ever logged or put into an error message. Every request URL is built from
checked parts (``pipeline.webhooks``): ids are digits, tokens URL-safe, each segment percent-encoded,
so nothing a job spec says can make a request leave ``/webhooks/`` or go to another host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import requests
import structlog

from pipeline.config import DiscordSettings
from pipeline.errors import AttachmentTooLarge, ConfigError, DiscordError, RetryableError, WebhookGone
from pipeline.webhooks import SNOWFLAKE, WebhookUrl, interaction_path

log = structlog.get_logger("mouthpiece.discord")

NO_MENTIONS: dict[str, list[str]] = {"parse": []}
"""``allowed_mentions`` for every message: user-supplied text (names, transcripts) never pings anyone."""

_URL_LOGGERS = ("httpx", "httpcore", "urllib3", "requests", "discord_webhook")


def quiet_http_logging() -> None:
    """Keep HTTP client loggers at WARNING: httpx logs every request URL at INFO (webhook tokens)."""
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


class _Response(Protocol):
    """What we read from an httpx or requests response."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry. ``sleep`` is injectable so tests do not wait."""

    max_retries: int = 4
    max_wait: float = 30.0
    sleep: Callable[[float], None] = time.sleep


# --- gone webhooks ------------------------------------------------------------------------------------

_gone: set[str] = set()
_gone_lock = threading.Lock()


def _fingerprint(url_or_path: str) -> str:
    return hashlib.sha256(url_or_path.encode()).hexdigest()


def is_gone(url_or_path: str) -> bool:
    """Whether this webhook answered 404/401 before (in this process)."""
    with _gone_lock:
        return _fingerprint(url_or_path) in _gone


def mark_gone(url_or_path: str) -> None:
    with _gone_lock:
        _gone.add(_fingerprint(url_or_path))


# --- the shared response policy --------------------------------------------------------------------------


def send_with_retries(
    send: Callable[[], _Response], what: str, policy: RetryPolicy, *, webhook: str | None = None
) -> _Response:
    """Call ``send`` until Discord accepts, honouring 429s and retrying 5xx/network errors (bounded).

    ``webhook`` (a URL or path, never logged) marks the call as a webhook call: 404/401 then raise
    ``WebhookGone`` and remember it.
    """
    if webhook is not None and is_gone(webhook):
        raise WebhookGone(f"the Discord webhook for {what} no longer exists")
    for attempt in range(policy.max_retries + 1):
        last = attempt == policy.max_retries
        try:
            response = send()
        except (httpx.TransportError, requests.RequestException) as exc:
            if last:
                raise RetryableError(
                    f"Discord could not be reached for {what} ({type(exc).__name__})"
                ) from None
            _wait(policy, min(2.0**attempt, policy.max_wait), what, "network_error")
            continue
        if 200 <= response.status_code < 300:
            return response
        delay = _retry_delay(response, attempt)
        if delay is None:
            _raise_for(response, what, webhook)
        assert delay is not None
        if last or delay > policy.max_wait:
            raise RetryableError(
                f"Discord is busy ({response.status_code}) for {what}", defer=max(delay, 5.0)
            )
        _wait(policy, delay, what, "rate_limited" if response.status_code == 429 else "server_error")
    raise AssertionError("unreachable")  # the loop always returns or raises


def _wait(policy: RetryPolicy, seconds: float, what: str, why: str) -> None:
    log.warning(f"discord_{why}", request=what, retry_in=round(seconds, 2))
    policy.sleep(seconds)


def _retry_delay(response: _Response, attempt: int) -> float | None:
    """Seconds to wait before retrying, or None when the status is not worth retrying."""
    if response.status_code == 429:
        return retry_after(response)
    if response.status_code in (500, 502, 503, 504):
        return float(2**attempt)
    return None


def retry_after(response: _Response) -> float:
    """Discord's wait for a 429: ``retry_after`` in the JSON body, else the ``Retry-After`` header, else 1 s."""
    body = _json(response)
    value = body.get("retry_after") if isinstance(body, dict) else None
    if value is None:
        value = response.headers.get("retry-after") or response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


def _json(response: _Response) -> Any:
    try:
        return json.loads(response.content or b"null")
    except (ValueError, UnicodeDecodeError):
        return None


def _raise_for(response: _Response, what: str, webhook: str | None) -> None:
    status = response.status_code
    body = _json(response)
    message = str(body.get("message", ""))[:200] if isinstance(body, dict) else ""
    code = body.get("code") if isinstance(body, dict) else None
    if webhook is not None and status in (401, 404):
        mark_gone(webhook)
        raise WebhookGone(f"the Discord webhook for {what} no longer works ({status}: {message or 'gone'})")
    if status == 413 or code == 40005:
        raise AttachmentTooLarge(f"Discord refused the file for {what} as too large")
    if status in (401, 403):
        raise ConfigError(f"Discord refused {what} ({status}: {message or 'not allowed'})")
    raise DiscordError(f"Discord rejected {what} ({status}: {message or 'no reason given'})")


# --- interaction replies and commands (httpx) -------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """A local file to attach to a message."""

    path: Path
    filename: str
    content_type: str = "video/mp4"


class DiscordApi:
    """A small synchronous Discord REST client (call from threads; stages and ingress use ``to_thread``)."""

    def __init__(
        self,
        base: str,
        *,
        timeout: float = 30.0,
        upload_timeout: float = 300.0,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        quiet_http_logging()
        self.base = base.rstrip("/")
        self.policy = policy or RetryPolicy()
        self._timeout = httpx.Timeout(timeout, write=upload_timeout, pool=10.0)
        self._client = httpx.Client(
            timeout=self._timeout,
            follow_redirects=False,
            transport=transport,
            headers={"User-Agent": "DiscordBot (https://github.com/mouthpiece, 0.1)"},
        )

    @classmethod
    def from_settings(cls, settings: DiscordSettings, **kwargs: Any) -> DiscordApi:
        return cls(settings.discord_api_base, **kwargs)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DiscordApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- interaction webhooks ------------------------------------------------------------------------
    def edit_original(
        self,
        application_id: str,
        token: str,
        content: str | None,
        file: Attachment | None = None,
        *,
        clear_attachments: bool = False,
    ) -> dict[str, Any]:
        """Edit the interaction's original (deferred) reply; with ``file`` it replaces any attachment."""
        path = _checked_path(application_id, token, "messages", "@original")
        payload = _payload(content, file, clear_attachments)
        return self._send("PATCH", path, payload, file, "the reply edit", webhook=True)

    def followup(
        self, application_id: str, token: str, content: str | None, file: Attachment | None = None
    ) -> dict[str, Any]:
        """Post a follow-up message to the interaction."""
        path = _checked_path(application_id, token)
        return self._send("POST", path, _payload(content, file, False), file, "the follow-up", webhook=True)

    # --- commands ----------------------------------------------------------------------------------------
    def put_commands(self, application_id: str, bot_token: str, commands: list[dict[str, Any]]) -> Any:
        """Replace the application's global commands (``PUT /applications/{id}/commands``)."""
        if not SNOWFLAKE.fullmatch(application_id):
            raise ConfigError("discord_application_id must be the application's numeric id")
        url = f"{self.base}/applications/{application_id}/commands"
        headers = {"Authorization": f"Bot {bot_token}"}

        def send() -> httpx.Response:
            return self._client.put(url, json=commands, headers=headers)

        response = send_with_retries(send, "registering commands", self.policy)
        return _json(response)

    # --- reading names (mentions in announcement texts) --------------------------------------------------
    def get(self, path: str, bot_token: str, what: str) -> Any:
        """``GET {base}{path}`` as the bot (``/guilds/{id}/members/{id}``, ``/channels/{id}``, ...)."""
        url, headers = f"{self.base}{path}", {"Authorization": f"Bot {bot_token}"}

        def send() -> httpx.Response:
            return self._client.get(url, headers=headers)

        return _json(send_with_retries(send, what, self.policy))

    # --- plumbing ------------------------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        payload: dict[str, Any],
        file: Attachment | None,
        what: str,
        *,
        webhook: bool,
    ) -> dict[str, Any]:
        url = f"{self.base}{path}"

        def send() -> httpx.Response:
            if file is None:
                return self._client.request(method, url, json=payload)
            with file.path.open("rb") as f:  # reopened per attempt: a retry re-sends the whole file
                files = {"files[0]": (file.filename, f, file.content_type)}
                return self._client.request(
                    method, url, data={"payload_json": json.dumps(payload)}, files=files
                )

        response = send_with_retries(send, what, self.policy, webhook=path if webhook else None)
        body = _json(response)
        return body if isinstance(body, dict) else {}


def _checked_path(application_id: str, token: str, *tail: str) -> str:
    """The interaction webhook path from checked parts; a malformed id or token is refused unsent."""
    try:
        return interaction_path(application_id, token, *tail)
    except ValueError:
        raise DiscordError(
            "the Discord reply cannot be edited: its application id or token is malformed",
            code="discord_target_malformed",
        ) from None


def _payload(content: str | None, file: Attachment | None, clear_attachments: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
    if content is not None:
        payload["content"] = content[:2000]
    if file is not None:
        payload["attachments"] = [{"id": 0, "filename": file.filename}]
    elif clear_attachments:
        payload["attachments"] = []
    return payload


# --- channel webhooks (discord-webhook) ---------------------------------------------------------------------


def execute_webhook(
    hook: WebhookUrl,
    content: str | None,
    file: Attachment | None = None,
    *,
    timeout: float = 300.0,
    policy: RetryPolicy | None = None,
) -> str | None:
    """Post a message (and optionally a file) through a channel webhook, waiting for Discord's answer
    (``wait=true``); returns the id of the message it made.

    discord-webhook's own 429 handling sleeps without bound and it sets no timeout by default; we turn
    its retry off, set the timeout, and apply ``send_with_retries`` to its raw request. ``hook`` is a
    parsed, allowed webhook (``pipeline.webhooks.allowed_webhook``): the URL is rebuilt from its parts.
    """
    from discord_webhook import DiscordWebhook

    quiet_http_logging()
    data = file.path.read_bytes() if file is not None else None

    def send() -> _Response:
        webhook = DiscordWebhook(
            url=hook.url, content=content[:2000] if content else None, timeout=timeout,
            rate_limit_retry=False, allowed_mentions=NO_MENTIONS, thread_id=hook.thread_id,
        )  # fmt: skip
        if file is not None and data is not None:
            webhook.add_file(file=data, filename=file.filename)
        response: _Response = webhook.api_post_request()
        return response

    response = send_with_retries(send, "the channel webhook", policy or RetryPolicy(), webhook=hook.url)
    return _message_id(response)


def _message_id(response: _Response) -> str | None:
    """The id of the message a webhook post made (the answer of ``?wait=true``), if Discord said."""
    try:
        body = response.json()  # type: ignore[attr-defined]
    except Exception:  # not JSON (or no body): the post worked, its id is unknown
        return None
    return str(body["id"]) if isinstance(body, dict) and "id" in body else None
