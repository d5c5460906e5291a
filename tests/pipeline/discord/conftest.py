"""Fakes of Discord's HTTP API and CDN, served by uvicorn on loopback in background threads.

``FakeDiscord`` records every request (method, path, JSON payload or multipart ``payload_json`` and files),
answers the first webhook request with one 429 when asked to, answers 404 for webhooks marked gone, and
rejects attachments larger than ``max_file_bytes`` (10 MiB, like Discord's default) with 413.
``FakeCdn`` serves registered files, redirects, and a streamed body without Content-Length.
``signed`` makes the headers Discord would send for a body, with a test Ed25519 key pair.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from nacl.signing import SigningKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeline.bus.natsserver import free_port
from pipeline.discord.interactions import DISCORD_EPOCH_MS

APP_ID = "223344556677889900"
TEN_MIB = 10 * 1024 * 1024


# --- serving -------------------------------------------------------------------------------------------


class ThreadServer:
    """A uvicorn server for an ASGI app on 127.0.0.1, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "fake server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


# --- the fake Discord API --------------------------------------------------------------------------------


@dataclass
class Sent:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    payload: Any
    files: dict[str, tuple[str, bytes]]
    status: int = 0

    @property
    def content(self) -> str | None:
        return self.payload.get("content") if isinstance(self.payload, dict) else None


@dataclass
class FakeDiscord:
    """Discord's REST API as far as mouthpiece uses it. Reset between tests with ``reset``."""

    requests: list[Sent] = field(default_factory=list)
    rate_limit_once: bool = False
    retry_after_in_body: bool = True
    retry_after: float = 0.05
    always_429: bool = False
    gone: set[str] = field(default_factory=set)
    max_file_bytes: int = TEN_MIB
    delay: float = 0.0
    _limited: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.rate_limit_once = self.always_429 = self._limited = False
        self.retry_after_in_body, self.retry_after, self.delay = True, 0.05, 0.0
        self.gone.clear()
        self.max_file_bytes = TEN_MIB

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])]
        )

    # --- views for assertions ---------------------------------------------------------------------------
    def accepted(self, method: str | None = None, contains: str = "") -> list[Sent]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.status < 300 and (method is None or r.method == method) and contains in r.path
            ]

    def with_files(self) -> list[Sent]:
        return [r for r in self.accepted() if r.files]

    # --- handling ----------------------------------------------------------------------------------------
    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        sent = Sent(request.method, request.url.path, dict(request.headers), None, {})
        _decode(sent, request.headers.get("content-type", ""), body)
        if self.delay:
            await asyncio.sleep(self.delay)
        response = self._answer(sent)
        sent.status = response.status_code
        with self._lock:
            self.requests.append(sent)
        return response

    def _answer(self, sent: Sent) -> Response:
        webhook = "/webhooks/" in sent.path
        if webhook and any(token in sent.path for token in self.gone):
            return JSONResponse({"message": "Unknown Webhook", "code": 10015}, status_code=404)
        if webhook and (self.always_429 or (self.rate_limit_once and not self._limited)):
            self._limited = True
            return self._too_many()
        if any(len(data) > self.max_file_bytes for _, data in sent.files.values()):
            return JSONResponse({"message": "Request entity too large", "code": 40005}, status_code=413)
        if sent.method == "PUT" and sent.path.endswith("/commands"):
            return JSONResponse([{**c, "id": str(i)} for i, c in enumerate(sent.payload or [])])
        return JSONResponse({"id": str(random.randint(1, 10**18)), "content": sent.content or ""})

    def _too_many(self) -> Response:
        body: dict[str, Any] = {"message": "You are being rate limited.", "global": False}
        if self.retry_after_in_body:
            body["retry_after"] = self.retry_after
        headers = {"Retry-After": str(self.retry_after), "X-RateLimit-Scope": "user"}
        return JSONResponse(body, status_code=429, headers=headers)


def _decode(sent: Sent, content_type: str, body: bytes) -> None:
    """Fill payload and files from a JSON or multipart/form-data body (stdlib parser: no extra deps)."""
    if content_type.startswith("application/json"):
        sent.payload = json.loads(body or b"null")
        return
    if not content_type.startswith("multipart/form-data"):
        return
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        if filename is None and name == "payload_json":
            sent.payload = json.loads(data)
        elif filename is not None:
            sent.files[str(name)] = (filename, data)


# --- the fake CDN -------------------------------------------------------------------------------------------


@dataclass
class FakeCdn:
    """Serves ``files[path] = (bytes, content type)``, ``redirects[path] = location``, and streamed bodies."""

    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    streamed: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.files.clear()
        self.redirects.clear()
        self.streamed.clear()
        self.hits.clear()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET"])])

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        self.hits.append(path)
        if path in self.redirects:
            return Response(status_code=302, headers={"Location": self.redirects[path]})
        if path in self.streamed:
            data = self.streamed[path]

            async def chunks() -> Any:
                for i in range(0, len(data), 65536):
                    yield data[i : i + 65536]

            return StreamingResponse(chunks(), media_type="application/octet-stream")
        if path in self.files:
            data, content_type = self.files[path]
            return Response(data, media_type=content_type)
        return Response("not found", status_code=404)


# --- signing ------------------------------------------------------------------------------------------------


def signed(key: SigningKey, body: bytes, timestamp: float | None = None) -> dict[str, str]:
    """The headers Discord sends with an interaction: an Ed25519 signature of timestamp + body."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    signature = key.sign(stamp.encode() + body).signature.hex()
    return {
        "X-Signature-Ed25519": signature,
        "X-Signature-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def snowflake(at: float | None = None) -> str:
    """A Discord id made at ``at`` (default now)."""
    ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
    return str((ms << 22) | random.randint(0, (1 << 22) - 1))


def command_payload(
    name: str,
    options: list[dict[str, Any]],
    attachments: dict[str, dict[str, Any]] | None = None,
    *,
    interaction_id: str | None = None,
    token: str = "tok-" + "x" * 60,
    permissions: int = 0,
    roles: list[str] | None = None,
    avatar: str | None = "abc123hash",
) -> dict[str, Any]:
    """An APPLICATION_COMMAND interaction as Discord posts it."""
    return {
        "id": interaction_id or snowflake(),
        "application_id": APP_ID,
        "type": 2,
        "token": token,
        "version": 1,
        "guild_id": "998877",
        "channel_id": "665544",
        "attachment_size_limit": TEN_MIB,
        "member": {
            "user": {"id": "80351110224678912", "username": "nelly", "avatar": avatar, "discriminator": "0"},
            "roles": roles or [],
            "permissions": str(permissions),
            "nick": None,
        },
        "data": {
            "id": "1",
            "name": name,
            "type": 1,
            "options": options,
            "resolved": {"attachments": attachments or {}},
        },
    }


def attachment(attachment_id: str, url: str, filename: str) -> dict[str, Any]:
    return {"id": attachment_id, "filename": filename, "url": url, "proxy_url": url, "size": 1000}


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def _discord_server() -> Iterator[tuple[FakeDiscord, ThreadServer]]:
    fake = FakeDiscord()
    server = ThreadServer(fake.app()).start()
    yield fake, server
    server.stop()


@pytest.fixture
def discord(_discord_server: tuple[FakeDiscord, ThreadServer]) -> FakeDiscord:
    """The fake Discord API, emptied for this test."""
    _discord_server[0].reset()
    return _discord_server[0]


@pytest.fixture
def discord_origin(_discord_server: tuple[FakeDiscord, ThreadServer]) -> str:
    return _discord_server[1].origin


@pytest.fixture(scope="session")
def _cdn_server() -> Iterator[tuple[FakeCdn, ThreadServer]]:
    fake = FakeCdn()
    server = ThreadServer(fake.app()).start()
    yield fake, server
    server.stop()


@pytest.fixture
def cdn(_cdn_server: tuple[FakeCdn, ThreadServer]) -> FakeCdn:
    """The fake CDN, emptied for this test."""
    fake = _cdn_server[0]
    fake.reset()
    return fake


@pytest.fixture
def cdn_origin(_cdn_server: tuple[FakeCdn, ThreadServer]) -> str:
    return _cdn_server[1].origin


@pytest.fixture(scope="session")
def short_voice(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Path:
    """The first 2 s of the bundled speech clip (FLAC): fast to process."""
    from pipeline.media import ffmpeg_binary
    from tests.conftest import make_settings

    out = tmp_path_factory.mktemp("voice") / "voice.flac"
    settings = make_settings(out.parent)
    import subprocess

    subprocess.run(
        [ffmpeg_binary(settings), "-v", "error", "-i", str(assets / "jfk.flac"), "-t", "2", str(out)],
        check=True,
    )
    return out
