"""The console's defences (``pipeline.console.auth``, ``throttle``, ``base._guard``, ``upload``):

- cookies signed with a random server secret kept in the store (shared by replicas, rotatable), not a
  hash of the password; sign-out revokes the session everywhere;
- wrong sign-ins throttled per client and for everyone (429 + Retry-After), the owner's browser exempt;
- sign-in, Host, Origin and CSRF decided before a byte of the body is read (counted at the app's
  ``receive`` here, and at the socket against a real uvicorn below); uploads one slot at a time;
- ids matched in full; cancel/retry of an unknown job answers 404 and lists nothing;
- text in every Unicode encoding named as audio or as a photo refused at upload;
- no server path in /api/drops."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.config import Settings
from pipeline.console import Console
from pipeline.console import auth as auth_module
from pipeline.console.auth import rotate_secret
from pipeline.console.throttle import Throttle, client_key
from pipeline.contracts import FailedDrop, State
from pipeline.drops import record_failed_drop
from pipeline.keys import cancel_key, console_secret_key, is_job_id
from tests.conftest import make_settings
from tests.pipeline.console.conftest import Harness, csrf_of, make_job, running
from tests.pipeline.test_media_sniff import ENCODINGS

PASSWORD = "correct horse"
TOKEN = "tok-" + "t" * 30
BIG = 6_500_000  # the 6.5 MiB body of the report


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def guarded(tmp_path: Path, **overrides: object) -> Settings:
    """A console with a password, listening beyond loopback (so any Host is accepted)."""
    values: dict[str, object] = {
        "console_password": PASSWORD,
        "console_token": TOKEN,
        "ingress_host": "0.0.0.0",
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


class Counting:
    """The app, counting the body bytes it pulls from ``receive``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            if message.get("type") == "http.request":
                self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


def client_of(
    app: Any, address: str = "198.51.100.7", base: str = "https://console.example"
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=base)


async def login_token(client: httpx.AsyncClient) -> str:
    page = await client.get("/login")
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]


async def sign_in(client: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    token = await login_token(client)
    return await client.post("/login", data={"csrf": token, "password": password, "next": "/"})


async def big_body() -> AsyncIterator[bytes]:
    yield b'--b\r\nContent-Disposition: form-data; name="voice"; filename="v.flac"\r\n\r\n'
    for _ in range(BIG // 65536):
        yield b"x" * 65536


# --- the secret and sessions -----------------------------------------------------------------------------


def test_cookies_are_signed_with_a_stored_random_secret_not_the_password(tmp_path: Path) -> None:
    """The secret is 32 random bytes in work/console/secret.json; the visitor's cookie from GET /login
    is not a MAC keyed by a hash of the password (the old scheme an offline guesser could test), and two
    consoles with the same password on different stores sign differently."""
    settings = guarded(tmp_path / "a")
    other = guarded(tmp_path / "b")

    async def go() -> tuple[str, str, bytes]:
        async with (
            running(settings) as h,
            running(other) as o,
            client_of(h.app) as one,
            client_of(o.app) as two,
        ):
            await one.get("/login")
            await two.get("/login")
            stored = h.store.get(settings.bucket_work, console_secret_key())
            return one.cookies["mp_session"], two.cookies["mp_session"], stored

    first, second, stored = run(go())
    secret = bytes.fromhex(json.loads(stored)["secret"])
    assert len(secret) == 32
    body, mac = first.rsplit(".", 1)
    assert hmac.new(secret, body.encode(), hashlib.sha256).hexdigest() == mac
    old_key = hashlib.sha256(f"mouthpiece-console\0{PASSWORD}\0{TOKEN}".encode()).digest()
    assert hmac.new(old_key, body.encode(), hashlib.sha256).hexdigest() != mac
    assert first.rsplit(".", 1)[1] != second.rsplit(".", 1)[1]


def test_forged_cookies_open_nothing(tmp_path: Path) -> None:
    """A signed-in cookie made with the old password-derived key, or with a flipped flag, is refused."""
    settings = guarded(tmp_path)

    async def go() -> list[int]:
        async with running(settings) as h, client_of(h.app) as client:
            await client.get("/login")
            visitor = client.cookies["mp_session"]
            _, expires, nonce, mac = visitor.split(".")
            old_key = hashlib.sha256(f"mouthpiece-console\0{PASSWORD}\0{TOKEN}".encode()).digest()
            body = f"1.{expires}.{nonce}"
            forged = [
                f"{body}.{hmac.new(old_key, body.encode(), hashlib.sha256).hexdigest()}",
                f"{body}.{mac}",
                f"1.{int(time.time()) + 99999}.{nonce}.{mac}",
            ]
            answers = []
            for cookie in forged:
                client.cookies.clear()
                client.cookies.set("mp_session", cookie, domain="console.example")
                answers.append((await client.get("/api/jobs")).status_code)
            return answers

    assert run(go()) == [401, 401, 401]


def test_replicas_share_the_secret_and_sign_out_revokes_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two consoles on one store: a sign-in made on one opens the other; after signing out on the
    first, a copy of the cookie opens neither (the other re-reads the session's record)."""
    monkeypatch.setattr(auth_module, "SESSION_RECHECK", 0.0)
    settings = guarded(tmp_path)

    async def go() -> None:
        async with running(settings) as a:
            b = Console(settings, a.store, a.bus)
            app_b = Starlette(routes=b.routes())
            try:
                async with client_of(a.app) as client:
                    assert (await sign_in(client)).status_code == 303
                    cookie = client.cookies["mp_session"]
                    async with client_of(app_b) as copy:
                        copy.cookies.set("mp_session", cookie, domain="console.example")
                        assert (await copy.get("/api/jobs")).status_code == 200
                        token = (await client.get("/api/session")).json()["csrf"]
                        out = await client.post("/logout", data={"csrf": token})
                        assert out.status_code == 303
                        assert (await copy.get("/api/jobs")).status_code == 401
                    async with client_of(a.app) as copy_a:
                        copy_a.cookies.set("mp_session", cookie, domain="console.example")
                        assert (await copy_a.get("/api/jobs")).status_code == 401
                        assert (await copy_a.get("/")).status_code == 303
            finally:
                await b.close()

    run(go())


def test_rotating_the_secret_or_changing_the_password_ends_every_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mouthpiece console-rotate` (rotate_secret) ends sign-ins on a running console (it re-reads the
    secret); a console started with another password refuses the old sessions; with
    MOUTHPIECE_CONSOLE_SECRET set, rotation says to change that setting."""
    monkeypatch.setattr(auth_module, "SECRET_REFRESH", 0.0)
    monkeypatch.setattr(auth_module, "SESSION_RECHECK", 0.0)
    settings = guarded(tmp_path)

    async def go() -> None:
        async with running(settings) as h, client_of(h.app) as client:
            assert (await sign_in(client)).status_code == 303
            assert (await client.get("/api/jobs")).status_code == 200
            rotate_secret(h.store, settings)
            assert (await client.get("/api/jobs")).status_code == 401
            assert (await sign_in(client)).status_code == 303
            cookie = client.cookies["mp_session"]
            changed = settings.model_copy(
                update={"console_password": type(settings.console_password)("new one!")}
            )
            async with running(changed) as other, client_of(other.app) as copy:
                other.console.access.store = h.store
                copy.cookies.set("mp_session", cookie, domain="console.example")
                assert (await copy.get("/api/jobs")).status_code == 401

    run(go())
    from pipeline.errors import ConfigError

    fixed = guarded(tmp_path / "f", console_secret="s" * 40)
    with pytest.raises(ConfigError, match="change that setting"):
        rotate_secret(Harness(fixed).store, fixed)


def test_a_store_outage_keeps_the_secret_already_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store cannot be read, a console keeps signing with the secret it has (sessions go on);
    one that never read it refuses to guess one (the error propagates)."""
    from pipeline.errors import StorageError

    monkeypatch.setattr(auth_module, "SECRET_REFRESH", 0.0)
    access = Harness(guarded(tmp_path)).console.access
    run(access.refresh())
    session = access.visitor()[0]
    token = access.csrf_token(session)

    def down(*_: object) -> bytes:
        raise StorageError("the store is away")

    monkeypatch.setattr(access.store, "get", down)
    run(access.refresh())
    assert access.csrf_ok(session, token)  # still signed with the secret read before the outage
    fresh = Harness(guarded(tmp_path / "other")).console.access
    monkeypatch.setattr(fresh.store, "get", down)
    with pytest.raises(StorageError):
        run(fresh.refresh())


def test_passwords_and_tokens_compare_in_constant_time_whatever_their_length(tmp_path: Path) -> None:
    """Digests of equal length are compared, and both candidates always: a wrong password of any
    length, a prefix of the right one, or the right one plus a byte are all wrong."""
    access = Harness(guarded(tmp_path)).console.access
    assert access.password_ok(PASSWORD) and access.password_ok(TOKEN)
    for wrong in ("", "c", PASSWORD[:-1], PASSWORD + " ", TOKEN[:-1], "x" * 10_000, "\udcff"):
        assert not access.password_ok(wrong)


# --- throttling ------------------------------------------------------------------------------------------


def test_parallel_wrong_passwords_are_throttled_with_retry_after(tmp_path: Path) -> None:
    """60 wrong passwords at once from one address: 5 are checked (401), the other 55 are answered 429
    with Retry-After before their body is read; so is the right password from that address now."""
    settings = guarded(tmp_path)

    async def go() -> None:
        async with running(settings) as h:
            counting = Counting(h.app)
            async with client_of(counting) as client:
                token = await login_token(client)
                started = time.monotonic()
                answers = await asyncio.gather(
                    *(client.post("/login", data={"csrf": token, "password": f"guess{i}"}) for i in range(60))
                )
                codes = sorted(a.status_code for a in answers)
                assert codes == [401] * 5 + [429] * 55, codes
                limited = next(a for a in answers if a.status_code == 429)
                assert 800 <= int(limited.headers["retry-after"]) <= 900
                assert "Too many wrong passwords" in limited.text
                assert time.monotonic() - started < 5
                right = await client.post("/login", data={"csrf": token, "password": PASSWORD})
                assert right.status_code == 429
                read = counting.read
                assert read < 5 * 200, read  # only the five checked forms were read

    run(go())


def test_a_global_limit_holds_many_addresses_but_not_the_owners_browser(tmp_path: Path) -> None:
    """Wrong passwords from 40 addresses: after console_login_global (30) in a minute every new client
    is answered 429, even with the right password; the owner's browser, which signed in before (its
    mp_device cookie), still signs in."""
    settings = guarded(tmp_path)

    async def go() -> None:
        async with running(settings) as h:
            async with client_of(h.app, "192.0.2.1") as owner:
                assert (await sign_in(owner)).status_code == 303
                assert "mp_device" in owner.cookies
                token = (await owner.get("/api/session")).json()["csrf"]
                await owner.post("/logout", data={"csrf": token})
            codes = []
            for i in range(40):
                async with client_of(h.app, f"203.0.113.{i + 1}") as attacker:
                    codes.append((await sign_in(attacker, "wrong")).status_code)
            assert codes == [401] * 30 + [429] * 10
            async with client_of(h.app, "198.51.100.99") as stranger:
                assert (await sign_in(stranger)).status_code == 429
            owner_cookies = owner.cookies
            async with client_of(h.app, "192.0.2.1") as again:
                again.cookies.set(
                    "mp_device", owner_cookies["mp_device"], domain="console.example", path="/login"
                )
                assert (await sign_in(again)).status_code == 303

    run(go())


def test_wrong_bearer_tokens_are_throttled_per_client(tmp_path: Path) -> None:
    """Five wrong bearer tokens from an address, then that address is answered 429 (the right token
    too, for the window); another address is not affected."""
    settings = guarded(tmp_path)

    async def go() -> None:
        async with running(settings) as h:
            async with client_of(h.app, "198.51.100.20") as client:
                wrong = [
                    (await client.get("/api/jobs", headers={"Authorization": f"Bearer wrong{i}"})).status_code
                    for i in range(5)
                ]
                assert wrong == [401] * 5
                held = await client.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
                assert held.status_code == 429 and int(held.headers["retry-after"]) > 0
            async with client_of(h.app, "198.51.100.21") as other:
                ok = await other.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
                assert ok.status_code == 200

    run(go())


def test_throttle_windows_slide_and_ipv6_counts_by_prefix() -> None:
    """Failures leave the 15-minute window one by one; Retry-After is the time until the oldest
    leaves; a right password clears the client; IPv6 addresses of one /64 are one client."""
    now = [1000.0]
    throttle = Throttle(per_client=3, per_minute=100, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.begin("a", known_device=False) is None
        now[0] += 10
    assert throttle.retry_after("a", known_device=False) == 900 - 30
    now[0] = 1000 + 900.5
    assert throttle.retry_after("a", known_device=False) is None
    throttle.succeeded("a", known_device=False)
    assert throttle.begin("a", known_device=False) is None
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.5") == "192.0.2.5"
    assert client_key("192.0.2.5") == "192.0.2.5"


# --- nothing read before the request is allowed ---------------------------------------------------------


def test_refused_posts_read_no_body(tmp_path: Path, assets: Path) -> None:
    """Unauthenticated, cross-site (Origin or Sec-Fetch-Site), wrong CSRF header, files to a form
    that takes none, an oversized sign-in form: each answered without one byte of the 6.5 MB body
    pulled by the app, and with Connection: close."""
    settings = guarded(tmp_path)

    async def go() -> None:
        async with running(settings) as h:
            job = make_job(h, assets, State.running, failed_stage="render")
            counting = Counting(h.app)
            multipart = {"Content-Type": "multipart/form-data; boundary=b"}
            async with client_of(counting) as stranger:
                cases = {
                    "unauthenticated upload": ("/api/jobs", {}, 401),
                    "unauthenticated page upload": ("/jobs", {}, 303),
                    "cross-site sign-in": ("/login", {"Origin": "https://evil.example"}, 403),
                    "files to the sign-in form": ("/login", {}, 415),
                }
                for what, (path, headers, status) in cases.items():
                    answer = await stranger.post(path, headers={**multipart, **headers}, content=big_body())
                    assert answer.status_code == status, what
                    assert answer.headers.get("connection") == "close", what
                oversized = await stranger.post(
                    "/login", data={"password": "x" * 5000}, headers={"Origin": "https://console.example"}
                )
                assert oversized.status_code == 413
            async with client_of(counting) as user:
                assert (await sign_in(user)).status_code == 303
                token = (await user.get("/api/session")).json()["csrf"]
                form = counting.read  # the sign-in form itself (about 100 bytes)
                signed_in = {
                    "cross-site upload": ({"Origin": "https://evil.example", "X-CSRF-Token": token}, 403),
                    "cross-site by fetch metadata": (
                        {"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": token},
                        403,
                    ),
                    "same-site sibling": ({"Sec-Fetch-Site": "same-site", "X-CSRF-Token": token}, 403),
                    "wrong token header": ({"X-CSRF-Token": "0" * 64}, 403),
                }
                for what, (headers, status) in signed_in.items():
                    answer = await user.post(
                        "/api/jobs", headers={**multipart, **headers}, content=big_body()
                    )
                    assert answer.status_code == status, what
                cancel = await user.post(f"/jobs/{job}/cancel", headers=multipart, content=big_body())
                assert cancel.status_code == 415
            assert counting.read == form < 200, counting.read
            assert h.store.stat(settings.bucket_work, cancel_key(job)) is None

    run(go())


def test_an_upload_without_a_token_header_is_checked_by_its_first_field(tmp_path: Path, assets: Path) -> None:
    """The browser's form puts its CSRF token first: an upload whose first field is not the right token
    is refused after reading at most 4 KiB (plus one chunk) of it; with the token first it is taken."""
    settings = guarded(tmp_path)
    voice = (assets / "jfk.flac").read_bytes()

    async def go() -> None:
        async with running(settings) as h:
            counting = Counting(h.app)
            async with client_of(counting) as user:
                assert (await sign_in(user)).status_code == 303
                token = (await user.get("/api/session")).json()["csrf"]

                async def body(first: bytes) -> AsyncIterator[bytes]:
                    yield first
                    async for chunk in big_body():
                        yield chunk

                multipart = {"Content-Type": "multipart/form-data; boundary=b"}
                no_token = await user.post("/jobs", headers=multipart, content=body(b""))
                wrong = await user.post(
                    "/jobs",
                    headers=multipart,
                    content=body(
                        b'--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n' + b"0" * 64 + b"\r\n"
                    ),
                )
                assert no_token.status_code == 403 and wrong.status_code == 403
                assert counting.read <= 2 * (4096 + 65536), counting.read
                taken = await user.post(
                    "/jobs",
                    data={"csrf": token, "name": "first"},
                    files={"voice": ("v.flac", voice, "audio/flac")},
                )
                assert taken.status_code == 303 and taken.headers["location"].startswith("/jobs/j")

    run(go())


def test_uploads_beyond_the_concurrent_limit_are_answered_503(tmp_path: Path, assets: Path) -> None:
    """With console_uploads=1, a second upload while one is still streaming in is answered 503 with
    Retry-After, unread; once the first is done the next is taken."""
    settings = guarded(tmp_path, console_uploads=1, max_input_bytes=2_000_000)
    voice = (assets / "jfk.flac").read_bytes()

    async def go() -> None:
        async with running(settings) as h:
            counting = Counting(h.app)
            async with client_of(counting) as user:
                await sign_in(user)
                token = (await user.get("/api/session")).json()["csrf"]
                release = asyncio.Event()

                async def slow() -> AsyncIterator[bytes]:
                    yield b'--b\r\nContent-Disposition: form-data; name="speech"\r\n\r\nhello\r\n'
                    await release.wait()
                    yield b"--b--\r\n"

                headers = {"X-CSRF-Token": token, "Content-Type": "multipart/form-data; boundary=b"}
                first = asyncio.create_task(user.post("/api/jobs", headers=headers, content=slow()))
                await asyncio.sleep(0.3)
                before = counting.read
                second = await user.post("/api/jobs", headers=headers, content=big_body())
                assert second.status_code == 503 and second.headers["retry-after"] == "10"
                assert counting.read == before
                release.set()
                assert (await first).status_code == 202
                third = await user.post(
                    "/api/jobs", headers=headers, files={"voice": ("v.flac", voice, "audio/flac")}
                )
                assert third.status_code == 202

    run(go())


# --- the same against a real server, counting bytes at the socket --------------------------------------------


class CountingH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, counting every byte it reads from its sockets."""

    received = 0

    def data_received(self, data: bytes) -> None:
        CountingH11.received += len(data)
        super().data_received(data)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Harness]]:
    """The console app on a real uvicorn on 127.0.0.1 (a free port), in a thread."""
    settings = guarded(tmp_path)
    harness = Harness(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(
        harness.app, http=CountingH11, lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    yield sock.getsockname()[1], harness
    server.should_exit = True
    thread.join(10)
    sock.close()


def _raw_post(
    port: int, path: str, headers: dict[str, str], total: int, eager: bool = False
) -> tuple[bytes, int]:
    """POST headers declaring ``total`` body bytes, read the answer before sending any body (``eager``:
    while a thread pushes the body as fast as it can), then try to send the body: (the answer, how many
    body bytes the kernel accepted before the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {total}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        if eager:
            pusher = threading.Thread(target=_push, args=(conn, total), daemon=True)
            pusher.start()
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
        sent = 0
        conn.settimeout(2)
        try:
            while sent < total:
                sent += conn.send(b"x" * 65536)
        except OSError:
            pass
        return answer, sent


def _push(conn: socket.socket, total: int) -> None:
    with contextlib.suppress(OSError):
        for _ in range(total // 65536):
            conn.sendall(b"x" * 65536)


def test_a_real_server_refuses_large_posts_from_strangers_without_reading_them(
    served: tuple[int, Harness],
) -> None:
    """Against uvicorn on loopback: a stranger's 400 MB multipart POST to /api/jobs (401), to /login
    from another site (403) and as files to the sign-in form (415) are each answered from the headers
    alone — the answer arrives before a byte of body is sent — and the server closes the connection:
    it reads at most its first buffer of what the client pushes afterwards, never the body."""
    port, _ = served
    total = 400 * 1024 * 1024
    cases = [
        ("/api/jobs", {"Content-Type": "multipart/form-data; boundary=b"}, b"401"),
        (
            "/login",
            {"Content-Type": "multipart/form-data; boundary=b", "Origin": "https://evil.example"},
            b"403",
        ),
        ("/login", {"Content-Type": "multipart/form-data; boundary=b"}, b"415"),
    ]
    for path, headers, status in cases:
        CountingH11.received = 0
        answer, sent = _raw_post(port, path, headers, total)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b"connection: close" in answer.lower()
        read = CountingH11.received
        print(f"{path} {status.decode()}: server read {read} bytes; the kernel took {sent} of {total}")
        assert read < 4096, (path, read, sent)  # the request line and headers: not a byte of the body
        assert sent < total
    # a client that pushes its body without waiting: uvicorn buffers at most its 64 KiB high-water mark
    # (plus one socket read) before it stops reading; the answer then closes the connection
    for path, headers, status in cases:
        CountingH11.received = 0
        answer, _ = _raw_post(port, path, headers, 6_500_000, eager=True)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        time.sleep(0.2)
        assert CountingH11.received < 512 * 1024, (path, CountingH11.received)


# --- ids, unknown jobs, paths, uploads of text -------------------------------------------------------------


def test_ids_are_matched_in_full_and_unknown_jobs_are_404_and_never_listed(
    tmp_path: Path, assets: Path
) -> None:
    """A job id with a trailing newline (%0A) is not an id: cancel answers 404 and writes nothing; a
    well-formed id that names no job answers 404 to cancel and retry, never appears in the list, and has
    no page (404) even when a cancel marker exists for it; a
    real job still cancels."""
    settings = make_settings(tmp_path)
    newline = "j" + "0" * 19 + "\n"
    assert not is_job_id(newline) and not is_job_id("j" + "0" * 19 + "0") and is_job_id("j" + "0" * 19)

    async def go() -> None:
        async with running(settings) as h, h.client() as client:
            job = make_job(h, assets, State.running, failed_stage="render")
            token = await csrf_of(client)
            headers = {"X-CSRF-Token": token}
            ghost = "j" + "a" * 19
            answers = [
                await client.post(f"/api/jobs/{ghost[:-1]}0%0A/cancel", headers=headers),
                await client.post(f"/api/jobs/{ghost}/cancel", headers=headers),
                await client.post(f"/api/jobs/{ghost}/retry", headers=headers),
                await client.post(f"/jobs/{ghost}/cancel", data={"csrf": token}),
            ]
            assert [a.status_code for a in answers] == [404, 404, 404, 404]
            assert h.store.stat(settings.bucket_work, cancel_key(ghost)) is None
            assert not any("\n" in info.key for info in h.store.list(settings.bucket_work, ""))
            assert (await client.post(f"/api/jobs/{job}/cancel", headers=headers)).status_code == 200
            # a marker alone (a cancel of a job not seen yet, made elsewhere) is never listed as a job
            h.store.put(settings.bucket_work, cancel_key(ghost), b'{"by": "cli"}')
            h.console.index.touch(ghost)
            await asyncio.sleep(1.0)
            listed = [j["job_id"] for j in (await client.get("/api/jobs")).json()["jobs"]]
            assert listed == [job]
            assert (await client.get(f"/api/jobs/{ghost}")).status_code == 404
            assert (await client.get(f"/jobs/{ghost}")).status_code == 404

    run(go())


def test_api_drops_show_no_server_paths(tmp_path: Path) -> None:
    """A failed drop's moved_to is shown relative to the watched folder, never as an absolute path."""
    settings = make_settings(tmp_path)
    target = settings.inbox / ".failed" / "20261207-notes"
    record_failed_drop(
        Harness(settings).store,
        settings,
        FailedDrop(name="notes.txt", reason="not media", moved_to=str(target)),
    )

    async def go() -> str:
        async with running(settings) as h, h.client() as client:
            return (await client.get("/api/drops")).text

    text = run(go())
    assert json.loads(text)["drops"][0]["moved_to"] == ".failed/20261207-notes"
    assert str(tmp_path) not in text


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_text_in_every_unicode_encoding_is_refused_as_voice_and_as_photo(
    tmp_path: Path, assets: Path, encoding: str
) -> None:
    """Text named voice.mp3 (audio/mpeg) or face.png (image/png), in each encoding, is refused at
    upload (422, saying it is text where it has a BOM or is UTF-8) and nothing is submitted."""
    settings = make_settings(tmp_path)
    body = ENCODINGS[encoding]
    photo = (assets / "astronaut.png").read_bytes()
    voice = (assets / "jfk.flac").read_bytes()

    async def go() -> None:
        async with running(settings) as h, h.client() as client:
            token = await csrf_of(client)
            headers = {"X-CSRF-Token": token}
            as_voice = await client.post(
                "/api/jobs", headers=headers,
                files={"voice": ("voice.mp3", body, "audio/mpeg"), "faces": ("a.png", photo, "image/png")},
            )  # fmt: skip
            as_photo = await client.post(
                "/api/jobs", headers=headers,
                files={"voice": ("v.flac", voice, "audio/flac"), "faces": ("face.png", body, "image/png")},
            )  # fmt: skip
            assert as_voice.status_code == 422 and as_voice.json()["error"].startswith(
                "voice.mp3 is not audio"
            )
            assert as_photo.status_code == 422 and as_photo.json()["error"].startswith(
                "face.png is not an image"
            )
            if "without" not in encoding:
                assert "(it is a text file)" in as_voice.json()["error"]
            assert list(h.store.list(settings.bucket_inputs, "jobs/")) == []

    run(go())


def test_worker_metrics_listen_on_loopback_unless_configured(tmp_path: Path) -> None:
    assert make_settings(tmp_path).metrics_host == "127.0.0.1"
    assert make_settings(tmp_path, metrics_host="0.0.0.0").metrics_host == "0.0.0.0"


@pytest.mark.parametrize(
    ("given", "goes_to"),
    [
        ("/ops", "/ops"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/\\/evil.example", "/"),
        ("https://evil.example", "/"),
        ("/ops\r\nSet-Cookie: x=1", "/"),
        ("/jobs/j0123456789abcdef012?note=x", "/jobs/j0123456789abcdef012?note=x"),
    ],
)
def test_sign_in_goes_only_to_a_path_of_this_site(tmp_path: Path, given: str, goes_to: str) -> None:
    """The sign-in form's ``next`` is followed only when it is a plain path here: ``/\\host`` (which
    browsers read as ``//host``), ``//host``, a URL or a path with control characters go home."""
    settings = guarded(tmp_path)

    async def go() -> httpx.Response:
        async with running(settings) as h, client_of(h.app) as client:
            token = await login_token(client)
            return await client.post("/login", data={"csrf": token, "password": PASSWORD, "next": given})

    answer = run(go())
    assert answer.status_code == 303 and answer.headers["location"] == goes_to
