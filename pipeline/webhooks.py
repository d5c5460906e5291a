"""The shapes of the Discord addresses a job may name, and building request URLs from checked parts.

A job spec can come from anyone who can upload (a bucket, the inbox), so nothing in it is pasted into a
URL. A channel webhook URL is parsed into its parts (``WebhookUrl``) and only accepted in Discord's shape,
``/api[/vN]/webhooks/<digits>/<token>`` (optionally ``?thread_id=<digits>``), without user info, other
query parameters or a fragment; an interaction's ``application_id`` is digits only and its ``token`` is
from a URL-safe alphabet with a length bound. Requests are then built from those parts again, each
segment percent-encoded, so even a part that slipped through could not leave ``/webhooks/``.

Which hosts a webhook may point at is the deployment's decision (``discord_webhook_hosts``,
``discord_api_base``): ``allowed_webhook`` checks both, shape and host, with no I/O. Discord's routes and
the destinations' policy (``pipeline.destinations.policy``) both ask it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

from pydantic import SecretStr

from pipeline.config import DiscordSettings
from pipeline.errors import InvalidInput

SNOWFLAKE = re.compile(r"[0-9]{1,25}")
"""A Discord id: a decimal number (snowflakes are 64-bit: at most 20 digits; a little slack)."""
INTERACTION_TOKEN = re.compile(r"[A-Za-z0-9_.\-]{1,500}")
"""An interaction token: URL-safe characters only (Discord's are base64url-like, a few hundred long)."""
WEBHOOK_TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,200}")
"""A channel webhook's token (Discord's are 68 URL-safe characters)."""
_WEBHOOK_PATH = re.compile(r"/api(?:/v[0-9]{1,2})?/webhooks/([0-9]{1,25})/([A-Za-z0-9_\-]{1,200})/?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL = 2048


@dataclass(frozen=True)
class WebhookUrl:
    """A channel webhook, as checked parts. ``url`` rebuilds it; it never carries the raw input."""

    scheme: str
    host: str
    port: int
    webhook_id: str
    token: str
    thread_id: str | None = None

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def url(self) -> str:
        """The URL to post to (without query: ``thread_id`` is passed as a parameter)."""
        netloc = self.host if _DEFAULT_PORTS.get(self.scheme) == self.port else f"{self.host}:{self.port}"
        path = f"/api/webhooks/{quote(self.webhook_id, safe='')}/{quote(self.token, safe='')}"
        return f"{self.scheme}://{netloc}{path}"


def parse_webhook_url(text: str) -> WebhookUrl:
    """The parts of a Discord channel webhook URL; ``ValueError`` (a plain sentence) for anything else."""
    if len(text) > MAX_URL or any(ord(c) < 33 or ord(c) == 127 for c in text):
        raise ValueError("the webhook is not a Discord webhook URL")
    try:
        parts = urlsplit(text)
        port = parts.port
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        raise ValueError("the webhook is not a valid URL") from None
    if parts.scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password or parts.fragment:
        raise ValueError("the webhook is not a Discord webhook URL")
    match = _WEBHOOK_PATH.fullmatch(parts.path)
    if match is None:
        raise ValueError(
            "the webhook URL does not have the shape of a Discord webhook (/api/webhooks/ID/TOKEN)"
        )
    return WebhookUrl(
        scheme=parts.scheme,
        host=host,
        port=port or _DEFAULT_PORTS[parts.scheme],
        webhook_id=match.group(1),
        token=match.group(2),
        thread_id=_thread_id(parts.query),
    )


def _thread_id(query: str) -> str | None:
    """The one query parameter Discord webhook URLs carry: ``thread_id`` (a forum or thread channel)."""
    if not query:
        return None
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError("the webhook URL has an unreadable query") from None
    if len(pairs) != 1 or pairs[0][0] != "thread_id" or not SNOWFLAKE.fullmatch(pairs[0][1]):
        raise ValueError("the webhook URL may carry only a thread_id after '?'")
    return pairs[0][1]


def check_application_id(value: str) -> str:
    """``value`` if it is a Discord application id (digits only), else ``ValueError``."""
    if not SNOWFLAKE.fullmatch(value):
        raise ValueError("the application id is not a Discord id (digits only)")
    return value


def check_interaction_token(value: str) -> str:
    """``value`` if it looks like an interaction token (URL-safe, bounded), else ``ValueError``."""
    if not INTERACTION_TOKEN.fullmatch(value) or value in (".", ".."):
        raise ValueError("the interaction token has characters a Discord token does not have")
    return value


def interaction_path(application_id: str, token: str, *tail: str) -> str:
    """``/webhooks/<app>/<token>[/tail...]`` from checked parts, each segment percent-encoded."""
    segments = [check_application_id(application_id), check_interaction_token(token), *tail]
    return "/webhooks/" + "/".join(quote(s, safe="@") for s in segments)


# --- which webhooks this deployment may post to ---------------------------------------------------

WEBHOOK_HINT = (
    "use a webhook URL copied from a Discord channel's settings (https://discord.com/api/webhooks/...)"
)


def _origin(text: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(text.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        return None
    host = (parts.hostname or "").lower().rstrip(".")
    return (parts.scheme, host, port) if parts.scheme in _DEFAULT_PORTS and host else None


def webhook_allowed(settings: DiscordSettings, hook: WebhookUrl) -> bool:
    """Whether this deployment may send requests to ``hook`` (see the module docstring)."""
    if hook.origin == _origin(settings.discord_api_base):
        return True
    for entry in settings.discord_webhook_hosts:
        if "://" in entry:
            if hook.origin == _origin(entry):
                return True
        elif hook.scheme == "https" and hook.port == 443 and hook.host == entry.strip().lower().rstrip("."):
            return True
    return False


def allowed_webhook(settings: DiscordSettings, url: SecretStr | str, what: str = "the webhook") -> WebhookUrl:
    """The checked parts of a webhook URL this deployment may post to; ``InvalidInput`` otherwise."""
    text = url.get_secret_value() if isinstance(url, SecretStr) else url
    try:
        hook = parse_webhook_url(text)
    except ValueError:
        raise InvalidInput(
            f"{what} is not a Discord webhook URL: {WEBHOOK_HINT}", code="webhook_invalid"
        ) from None
    if not webhook_allowed(settings, hook):
        raise InvalidInput(
            f"{what} points at {hook.host}, which is not Discord: {WEBHOOK_HINT}", code="webhook_not_allowed"
        )
    return hook
