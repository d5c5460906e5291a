"""Who may use the console, and the session and CSRF rules.

- On a loopback address with no password and no token the console is open (the machine's own user).
  Listening anywhere else needs ``console_password`` or ``console_token``; ``check_exposure`` refuses to
  start otherwise, in one sentence.
- Sessions are stateless signed cookies (``mp_session``: signed-in flag, expiry, nonce, HMAC-SHA256 with a
  key derived from the password and token, so every replica accepts them and changing the password ends
  them all). They are HttpOnly and SameSite=Lax, and Secure unless the console is plain http on loopback.
- Every POST carries a CSRF token bound to the session's nonce (a form field, or the ``X-CSRF-Token``
  header); a POST whose ``Origin`` is another site is refused as well. API clients may instead send the
  token as ``Authorization: Bearer`` (no cookie, so no CSRF).
- On loopback the ``Host`` header must be a loopback name: a web page elsewhere cannot reach the console
  through a DNS name that resolves to 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from pipeline.config import Settings
from pipeline.errors import ConfigError

COOKIE = "mp_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = {"localhost", "localhost.", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine only."""
    name = host.strip().lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse a console listening beyond loopback without a password or token (one readable line)."""
    if not settings.console or is_loopback(settings.ingress_host):
        return
    if settings.console_password is None and settings.console_token is None:
        raise ConfigError(
            f"the console would listen on {settings.ingress_host} without a password: set "
            "MOUTHPIECE_CONSOLE_PASSWORD (or MOUTHPIECE_CONSOLE_TOKEN), listen on 127.0.0.1, "
            "or turn the console off with MOUTHPIECE_CONSOLE=false"
        )


@dataclass(frozen=True)
class Session:
    signed_in: bool
    expires: int
    nonce: str


class Access:
    """The console's access rules for one process (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        password = settings.console_password.get_secret_value() if settings.console_password else None
        token = settings.console_token.get_secret_value() if settings.console_token else None
        self.password, self.token = password, token
        self.open = password is None and token is None
        if self.open:  # nothing to derive from: sessions last as long as the process
            self._key = os.urandom(32)
        else:
            material = f"mouthpiece-console\0{password or ''}\0{token or ''}".encode()
            self._key = hashlib.sha256(material).digest()
        self.loopback = is_loopback(settings.ingress_host)
        self.lifetime = int(settings.console_session_hours * 3600)

    # --- sessions ---------------------------------------------------------------------------------------
    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def session_of(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE, "")
        parts = raw.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        flag, expires, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"{flag}.{expires}.{nonce}")) or int(expires) < time.time():
            return None
        return Session(signed_in=flag == "1", expires=int(expires), nonce=nonce)

    def new_session(self, signed_in: bool) -> tuple[Session, str]:
        expires = int(time.time()) + (self.lifetime if signed_in else 3600)
        nonce = secrets.token_hex(16)
        flag = "1" if signed_in else "0"
        return Session(
            signed_in, expires, nonce
        ), f"{flag}.{expires}.{nonce}.{self._mac(f'{flag}.{expires}.{nonce}')}"

    def set_cookie(self, response: Response, value: str, request: Request) -> None:
        response.set_cookie(
            COOKIE,
            value,
            max_age=self.lifetime,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure(request),
        )

    def secure(self, request: Request) -> bool:
        """Secure cookies unless this is plain http on loopback (the browser would not send them back)."""
        return request.url.scheme == "https" or not self.loopback

    def csrf_token(self, session: Session) -> str:
        return self._mac(f"csrf.{session.nonce}")

    def csrf_ok(self, session: Session | None, given: str | None) -> bool:
        return (
            session is not None and given is not None and hmac.compare_digest(given, self.csrf_token(session))
        )

    # --- who is asking ----------------------------------------------------------------------------------
    def signed_in(self, session: Session | None) -> bool:
        return self.open or (session is not None and session.signed_in)

    def bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return (
            self.token is not None
            and header.startswith("Bearer ")
            and hmac.compare_digest(header[7:].encode(), self.token.encode())
        )

    def password_ok(self, given: str) -> bool:
        candidates = [c for c in (self.password, self.token) if c]
        return any(hmac.compare_digest(given.encode(), c.encode()) for c in candidates)

    def host_ok(self, request: Request) -> bool:
        """On loopback, the Host header names loopback (no DNS rebinding); elsewhere any host."""
        if not self.loopback:
            return True
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def origin_ok(self, request: Request) -> bool:
        """A POST from a page of another site is refused (browsers send Origin on POST)."""
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")
