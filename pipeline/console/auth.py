"""Who may use the console, and the session and CSRF rules.

- On a loopback address with no password and no token the console is open (the machine's own user).
  Listening anywhere else needs ``console_password`` or ``console_token``; ``check_exposure`` refuses to
  start otherwise, in one sentence.
- Cookies are signed (HMAC-SHA256) with a random 256-bit server secret, never with anything derived
  from the password: ``console_secret`` when set, else one generated once and kept in the work bucket
  (``console/secret.json``), so every replica sharing the store signs alike. It is read again every few
  seconds: ``mouthpiece console-rotate`` (a new secret) ends every session on every replica at once.
- A sign-in is a server-side session: a random id in the cookie (``mp_session``: flag, expiry, id,
  MAC), its record in the work bucket under the SHA-256 of the id. Signing out revokes the record, so a
  copied cookie stops working on every replica (within ``SESSION_RECHECK`` seconds on the others);
  changing the password or token ends every session (the record holds a MAC of them). Visitors who have
  not signed in get a signed cookie with a random nonce and no record (nothing is stored for strangers).
  Cookies are HttpOnly and SameSite=Lax, and Secure unless the console is plain http on loopback.
- Passwords and tokens are compared in constant time (digests of equal length, every candidate checked).
- Every POST carries a CSRF token bound to the session's nonce (the ``X-CSRF-Token`` header, or a form
  field — for an upload, the form's first field); a POST whose ``Origin`` is another site, or that the
  browser marks ``Sec-Fetch-Site: cross-site``/``same-site``, is refused before its body is read. API
  clients may instead send the token as ``Authorization: Bearer`` (no cookie, so no CSRF).
- On loopback the ``Host`` header must be a loopback name: a web page elsewhere cannot reach the console
  through a DNS name that resolves to 127.0.0.1 (DNS rebinding).
- Wrong passwords and tokens are throttled (``pipeline.console.throttle``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import structlog
from starlette.requests import Request
from starlette.responses import Response

from pipeline.config import Settings
from pipeline.console.throttle import Throttle, client_key
from pipeline.errors import ConfigError, ObjectNotFound, StorageError
from pipeline.keys import CONSOLE_SESSIONS, console_secret_key, console_session_key
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.console")

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


SECRET_REFRESH = 5.0
"""Seconds the stored secret is trusted before it is read again (a rotation reaches every replica)."""
SESSION_RECHECK = 2.0
"""Seconds a signed-in session's record is trusted before it is read again (sign-out elsewhere)."""
DEVICE_COOKIE = "mp_device"
DEVICE_DAYS = 365
ANONYMOUS_SECONDS = 3600


def load_secret(store: ObjectStore, settings: Settings) -> bytes:
    """The signing secret: ``console_secret`` when set, else the stored one, made (32 random bytes)
    the first time. Two replicas starting at once may both write one; each reads back what the store
    holds, so they agree once the later write is read (``SECRET_REFRESH``)."""
    if settings.console_secret is not None:
        return hashlib.sha256(
            b"mouthpiece-console-secret\0" + settings.console_secret.get_secret_value().encode()
        ).digest()
    key = console_secret_key()
    try:
        return _parse_secret(store.get(settings.bucket_work, key))
    except ObjectNotFound:
        pass
    _write_secret(store, settings)
    return _parse_secret(store.get(settings.bucket_work, key))


def rotate_secret(store: ObjectStore, settings: Settings) -> None:
    """A new stored secret: every console session and CSRF token signed with the old one ends."""
    if settings.console_secret is not None:
        raise ConfigError(
            "the console's secret is set by MOUTHPIECE_CONSOLE_SECRET: change that setting to rotate it"
        )
    _write_secret(store, settings)


def _write_secret(store: ObjectStore, settings: Settings) -> None:
    data = {"secret": secrets.token_hex(32), "created": datetime.now(UTC).isoformat()}
    store.put(
        settings.bucket_work, console_secret_key(), json.dumps(data).encode(), content_type="application/json"
    )


def _parse_secret(raw: bytes) -> bytes:
    try:
        value = bytes.fromhex(json.loads(raw)["secret"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            "the console's stored secret (work bucket, console/secret.json) is damaged: run "
            "`mouthpiece console-rotate` to make a new one"
        ) from exc
    if len(value) < 32:
        raise ConfigError("the console's stored secret is too short: run `mouthpiece console-rotate`")
    return value


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def equal_secret(given: str, expected: str) -> bool:
    """Constant-time equality of two secrets of any lengths (their digests are compared)."""
    return hmac.compare_digest(_digest(given), _digest(expected))


@dataclass(frozen=True)
class Session:
    signed_in: bool
    expires: int
    nonce: str
    """A random value: the session id of a sign-in (its record's name is its SHA-256), the CSRF nonce of
    a visitor."""


class Access:
    """The console's access rules for one process (see the module docstring). ``await refresh()`` before
    using the signing methods in a request."""

    def __init__(
        self, settings: Settings, store: ObjectStore, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        password = settings.console_password.get_secret_value() if settings.console_password else None
        token = settings.console_token.get_secret_value() if settings.console_token else None
        self.password, self.token = password, token
        self.open = password is None and token is None
        self.loopback = is_loopback(settings.ingress_host)
        self.lifetime = int(settings.console_session_hours * 3600)
        self.throttle = Throttle(settings.console_login_attempts, settings.console_login_global)
        self._key: bytes | None = None
        self._key_read = -SECRET_REFRESH
        self._checked: dict[str, tuple[float, bool]] = {}
        self._lock = asyncio.Lock()
        self._swept = 0.0

    # --- the secret ------------------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the signing secret again when it is older than ``SECRET_REFRESH`` seconds."""
        if self._key is not None and time.monotonic() - self._key_read < SECRET_REFRESH:
            return
        async with self._lock:
            if self._key is None or time.monotonic() - self._key_read >= SECRET_REFRESH:
                try:
                    key = await asyncio.to_thread(load_secret, self.store, self.settings)
                except StorageError as exc:
                    if self._key is None:
                        raise
                    log.warning("console_secret_unreadable", reason=exc.reason)  # keep the one we have
                    self._key_read = time.monotonic()
                    return
                if key != self._key:
                    self._checked.clear()
                self._key, self._key_read = key, time.monotonic()

    def _mac(self, text: str) -> str:
        if self._key is None:
            raise RuntimeError("Access.refresh() was not awaited")
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def _signed(self, text: str) -> str:
        return f"{text}.{self._mac(text)}"

    def _unsigned(self, raw: str, parts: int) -> list[str] | None:
        """The fields of a signed value with ``parts`` fields (and the MAC), or None."""
        fields = raw.split(".")
        if len(fields) != parts + 1 or len(raw) > 400:
            return None
        body, mac = raw.rsplit(".", 1)
        return fields[:-1] if hmac.compare_digest(mac.encode(), self._mac(body).encode()) else None

    # --- sessions ---------------------------------------------------------------------------------------
    async def session_of(self, request: Request) -> Session | None:
        """The request's session: a visitor's (signed cookie) or a sign-in whose record says it is
        still valid; None for no cookie, a forged, expired or revoked one."""
        fields = self._unsigned(request.cookies.get(COOKIE, ""), 3)
        if fields is None or fields[0] not in ("0", "1") or not fields[1].isdigit():
            return None
        flag, expires, nonce = fields
        if int(expires) < self.clock():
            return None
        session = Session(signed_in=flag == "1", expires=int(expires), nonce=nonce)
        if session.signed_in and not self.open and not await self._still_valid(nonce):
            return None
        return session

    def visitor(self) -> tuple[Session, str]:
        """A new visitor's session (not signed in: nothing stored) and its cookie value."""
        expires = int(self.clock()) + ANONYMOUS_SECONDS
        nonce = secrets.token_hex(16)
        return Session(False, expires, nonce), self._signed(f"0.{expires}.{nonce}")

    async def sign_in(self) -> str:
        """A new sign-in (a new id: no session fixation): its record is stored; the cookie value."""
        expires = int(self.clock()) + self.lifetime
        sid = secrets.token_hex(32)
        record = {"expires": expires, "at": datetime.now(UTC).isoformat(), "credentials": self._credentials()}
        await asyncio.to_thread(self._put_record, sid, record)
        self._checked[sid] = (time.monotonic(), True)
        if time.monotonic() - self._swept > 3600:
            self._swept = time.monotonic()
            asyncio.get_running_loop().run_in_executor(None, self._sweep)
        return self._signed(f"1.{expires}.{sid}")

    async def sign_out(self, session: Session | None) -> None:
        """Revoke the session's record: its cookie, wherever it was copied, no longer signs anyone in."""
        if session is None or not session.signed_in or self.open:
            return
        self._checked[session.nonce] = (time.monotonic(), False)
        await asyncio.to_thread(
            self._put_record, session.nonce, {"expires": session.expires, "revoked": True}
        )

    def _credentials(self) -> str:
        return self._mac(f"credentials\0{self.password or ''}\0{self.token or ''}")

    def _put_record(self, sid: str, record: dict[str, object]) -> None:
        key = console_session_key(hashlib.sha256(sid.encode()).hexdigest())
        self.store.put(
            self.settings.bucket_work, key, json.dumps(record).encode(), content_type="application/json"
        )

    async def _still_valid(self, sid: str) -> bool:
        seen = self._checked.get(sid)
        if seen is not None and time.monotonic() - seen[0] < SESSION_RECHECK:
            return seen[1]
        valid = await asyncio.to_thread(self._read_valid, sid)
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[sid] = (time.monotonic(), valid)
        return valid

    def _read_valid(self, sid: str) -> bool:
        key = console_session_key(hashlib.sha256(sid.encode()).hexdigest())
        try:
            record = json.loads(self.store.get(self.settings.bucket_work, key))
        except (ObjectNotFound, ValueError):
            return False
        return (
            isinstance(record, dict)
            and not record.get("revoked")
            and int(record.get("expires", 0)) >= self.clock()
            and hmac.compare_digest(str(record.get("credentials", "")).encode(), self._credentials().encode())
        )

    def _sweep(self) -> None:
        """Delete records of sessions that ended (best effort: a store without ``delete`` keeps them)."""
        delete = getattr(self.store, "delete", None)
        if delete is None:
            return
        try:
            for info in self.store.list(self.settings.bucket_work, CONSOLE_SESSIONS):
                try:
                    record = json.loads(self.store.get(self.settings.bucket_work, info.key))
                except (ObjectNotFound, ValueError):
                    continue
                if record.get("revoked") or int(record.get("expires", 0)) < self.clock():
                    delete(self.settings.bucket_work, info.key)
        except Exception:  # cleaning is extra; the sessions are refused either way
            log.warning("console_session_sweep_failed")

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

    # --- a browser that signed in before (the throttle's exemption) ----------------------------------
    def device_of(self, request: Request) -> str | None:
        fields = self._unsigned(request.cookies.get(DEVICE_COOKIE, ""), 2)
        return fields[1] if fields is not None and fields[0] == "d" else None

    def set_device_cookie(self, response: Response, request: Request, device: str | None) -> None:
        value = self._signed(f"d.{device or secrets.token_hex(16)}")
        response.set_cookie(
            DEVICE_COOKIE,
            value,
            max_age=DEVICE_DAYS * 86400,
            path="/login",
            httponly=True,
            samesite="strict",
            secure=self.secure(request),
        )

    def throttle_key(self, request: Request) -> tuple[str, bool]:
        """Who a sign-in attempt counts against: (this browser's device id, True), else (its address,
        False)."""
        device = self.device_of(request)
        if device is not None:
            return f"device:{device}", True
        return client_key(request.client.host if request.client else None), False

    # --- CSRF -------------------------------------------------------------------------------------------
    def csrf_token(self, session: Session) -> str:
        return self._mac(f"csrf.{session.nonce}")

    def csrf_ok(self, session: Session | None, given: str | None) -> bool:
        return (
            session is not None
            and given is not None
            and hmac.compare_digest(given.encode(), self.csrf_token(session).encode())
        )

    # --- who is asking ----------------------------------------------------------------------------------
    def signed_in(self, session: Session | None) -> bool:
        return self.open or (session is not None and session.signed_in)

    @staticmethod
    def bearer_given(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        return header[7:] if header[:7].lower() == "bearer " else None

    def bearer_ok(self, given: str | None) -> bool:
        return self.token is not None and given is not None and equal_secret(given, self.token)

    def password_ok(self, given: str) -> bool:
        """The password (or the token) in constant time: both are compared, whatever the first says."""
        ok = False
        for candidate in (self.password, self.token):
            if candidate:
                ok |= equal_secret(given, candidate)
        return ok

    def host_ok(self, request: Request) -> bool:
        """On loopback, the Host header names loopback (no DNS rebinding); elsewhere any host."""
        if not self.loopback:
            return True
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def origin_ok(self, request: Request) -> bool:
        """A POST from a page of another site is refused: its ``Origin`` names another host (or is
        ``null``), or the browser says the request is ``Sec-Fetch-Site: cross-site``/``same-site``."""
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser's cross-site request (they always send Origin on POST)
        return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")
