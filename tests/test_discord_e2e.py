"""Discord end to end: signed interactions and relay events into the ingress on loopback, a real stack
(nats-server, workers on the chain validate → publish), a fake Discord API and a fake CDN."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from pipeline.bus.natsserver import free_port
from pipeline.config import Settings
from pipeline.contracts import State
from pipeline.ingress.http import serve_ingress
from pipeline.media import probe
from pipeline.stack import Stack
from pipeline.status import job_status, list_jobs
from tests.conftest import make_settings
from tests.pipeline.discord.conftest import (
    APP_ID,
    TEN_MIB,
    FakeCdn,
    FakeDiscord,
    ThreadServer,
    attachment,
    command_payload,
    signed,
    snowflake,
)

pytestmark = pytest.mark.integration

RELAY_TOKEN = "relay-secret-" + "r" * 30
BOT_TOKEN = "bot-secret-" + "b" * 40
WELCOME_HOOK_TOKEN = "welcome-hook-secret-" + "w" * 30
CHANNEL_HOOK_TOKEN = "channel-hook-secret-" + "c" * 30
USER_ID = "80351110224678912"


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeDiscord, str, FakeCdn, str]]:
    """The fake Discord API and fake CDN on loopback for this module."""
    discord, cdn = FakeDiscord(), FakeCdn()
    servers = [ThreadServer(discord.app()).start(), ThreadServer(cdn.app()).start()]
    yield discord, servers[0].origin, cdn, servers[1].origin
    for server in servers:
        server.stop()


@pytest.fixture
def discord(fakes: tuple[FakeDiscord, str, FakeCdn, str]) -> FakeDiscord:
    fakes[0].reset()
    return fakes[0]


@pytest.fixture
def cdn(fakes: tuple[FakeDiscord, str, FakeCdn, str], assets: Path, voice: Path) -> FakeCdn:
    """The CDN with a voice clip, a face, the caller's profile picture and a redirect off the list."""
    cdn, discord_origin = fakes[2], fakes[1]
    cdn.reset()
    face = (assets / "astronaut.png").read_bytes()
    cdn.files["/attachments/1/voice.flac"] = (voice.read_bytes(), "audio/flac")
    cdn.files["/attachments/1/face.png"] = (face, "image/png")
    cdn.files[f"/avatars/{USER_ID}/abc123hash.png"] = (face, "image/png")
    cdn.redirects["/attachments/1/sneaky.mp3"] = f"{discord_origin}/internal/metadata"
    return cdn


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Path:
    """Two seconds of the bundled speech clip."""
    import subprocess

    from pipeline.media import ffmpeg_binary

    out = tmp_path_factory.mktemp("voice") / "voice.flac"
    cmd = [
        ffmpeg_binary(make_settings(out.parent)),
        "-v",
        "error",
        "-i",
        str(assets / "jfk.flac"),
        "-t",
        "2",
        str(out),
    ]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture
def settings(
    tmp_path: Path, nats_url: str, fakes: tuple[FakeDiscord, str, FakeCdn, str], signing_key: SigningKey
) -> Settings:
    discord_origin, cdn_origin = fakes[1], fakes[3]
    return make_settings(
        tmp_path, nats_url=nats_url, chain=["validate", "publish"], ingress_port=free_port(),
        discord_public_key=signing_key.verify_key.encode().hex(), discord_application_id=APP_ID,
        discord_bot_token=BOT_TOKEN, discord_api_base=f"{discord_origin}/api/v10",
        discord_cdn_hosts=["cdn.discordapp.com", cdn_origin], ingress_token=RELAY_TOKEN,
        discord_welcome_webhook=f"{discord_origin}/api/webhooks/700/{WELCOME_HOOK_TOKEN}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    """The test application's key pair (its public half is the configured public key)."""
    return SigningKey.generate()


# --- helpers --------------------------------------------------------------------------------------------------

Body = Callable[[httpx.AsyncClient, Stack], Awaitable[Any]]


def run_ingress(settings: Settings, cdn_origin: str, body: Body) -> Any:
    """Run a stack with workers and the ingress (``serve_ingress``) on loopback around ``body``."""

    async def main() -> Any:
        stack = await Stack.open(settings)
        stop = asyncio.Event()
        workers = await stack.run_workers(list(settings.chain), stop)
        serving = asyncio.create_task(serve_ingress(stack, stop, cdn_base=cdn_origin))
        base = f"http://{settings.ingress_host}:{settings.ingress_port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                await _until(lambda: _healthy(client), 10)
                return await body(client, stack)
        finally:
            stop.set()
            await asyncio.gather(serving, *workers)
            await stack.close()

    return asyncio.run(main())


async def _healthy(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def _until(check: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)
    raise TimeoutError("condition not met in time")


def _files_posted(discord: FakeDiscord, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(discord.with_files()) >= count

    return check


async def _post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/discord/interactions", content=body, headers=headers)


def _avatar_payload(cdn_origin: str, token: str, url: str | None = None) -> bytes:
    audio_url = url or f"{cdn_origin}/attachments/1/voice.flac"
    payload = command_payload(
        "avatar", [{"name": "audio", "type": 11, "value": "11"}],
        {"11": attachment("11", audio_url, "voice.flac")}, token=token,
    )  # fmt: skip
    return json.dumps(payload).encode()


def assert_no_secrets(logs: Sequence[Mapping[str, Any]], stdlib: str, secrets: list[str]) -> None:
    """No secret appears in any structlog event (raw, before redaction) or stdlib log line."""
    text = json.dumps([dict(e) for e in logs], default=str) + stdlib
    leaked = [s[:12] + "…" for s in secrets if s in text]
    assert not leaked, f"secrets in logs: {leaked}"


# --- scenarios ------------------------------------------------------------------------------------------------


def test_avatar_gets_deferred_reply_progress_and_one_video(
    settings: Settings,
    signing_key: SigningKey,
    discord: FakeDiscord,
    cdn: FakeCdn,
    fakes: tuple[FakeDiscord, str, FakeCdn, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A valid /avatar (no avatar attachment: the caller's picture) is answered deferred within 3 s,
    the reply is edited with progress, then once with an MP4 ≤ 10 MiB, after Discord's one 429. The
    same interaction delivered again makes no second job. No token or webhook URL reaches the logs."""
    caplog.set_level(logging.DEBUG)
    discord.rate_limit_once = True
    token = "interaction-secret-" + "i" * 50
    body = _avatar_payload(fakes[3], token)

    async def scenario(client: httpx.AsyncClient, stack: Stack) -> tuple[list[Any], float]:
        started = time.monotonic()
        first = await _post(client, body, signed(signing_key, body))
        elapsed = time.monotonic() - started
        second = await _post(client, body, signed(signing_key, body))
        await _until(_files_posted(discord, 1), 60)
        await asyncio.sleep(1.0)  # anything late (a duplicate job, a stray progress edit) would show now
        jobs = await asyncio.to_thread(list_jobs, stack.store, settings)
        statuses = [await asyncio.to_thread(job_status, stack.store, settings, j) for j in jobs]
        return [first.json(), second.json(), statuses], elapsed

    with capture_logs(processors=[merge_contextvars]) as logs:
        (first, second, statuses), elapsed = run_ingress(settings, fakes[3], scenario)
    assert first == {"type": 5} and second == {"type": 5} and elapsed < 3.0
    [status] = statuses
    assert status is not None and status.state == State.done
    assert status.outputs[-1] == f"discord:interaction:{APP_ID}" and token not in status.model_dump_json()
    edits = [r for r in discord.requests if r.method == "PATCH" and r.path.endswith("/messages/@original")]
    assert 429 in [r.status for r in edits]
    accepted = [r for r in edits if r.status == 200]
    assert [bool(r.files) for r in accepted] == [False] * (len(accepted) - 1) + [True]
    progress = [r.content for r in accepted[:-1]]
    assert progress[0] == "Got it: your video is queued…" and all(c and " % · " in c for c in progress[1:])
    # forwarded from validate's progress note on the bus, with the time left (none measured yet here)
    assert "Validate 50 % · no time estimate yet (nothing measured here so far)" in progress
    name, data = accepted[-1].files["files[0]"]
    assert name == "voice.mp4" and 0 < len(data) <= TEN_MIB
    (settings.data_dir / "got.mp4").write_bytes(data)
    video = probe(settings.data_dir / "got.mp4")
    assert video.has_video and video.has_audio and abs(video.duration - 2.0) < 0.3
    assert f"/avatars/{USER_ID}/abc123hash.png" in cdn.hits
    assert_no_secrets(logs, caplog.text, [token, BOT_TOKEN, RELAY_TOKEN, WELCOME_HOOK_TOKEN])


def test_bad_signatures_are_refused(
    settings: Settings,
    signing_key: SigningKey,
    discord: FakeDiscord,
    cdn: FakeCdn,
    fakes: tuple[FakeDiscord, str, FakeCdn, str],
) -> None:
    """A forged signature, a tampered body and a stale timestamp each get 401, and start nothing."""
    body = _avatar_payload(fakes[3], "tok-" + "t" * 50)
    forged = signed(SigningKey.generate(), body)
    tampered = body.replace(b"voice.flac", b"voice.flad")
    stale = signed(signing_key, body, time.time() - 6 * 60)

    async def scenario(client: httpx.AsyncClient, stack: Stack) -> list[int]:
        codes = [
            (await _post(client, body, forged)).status_code,
            (await _post(client, tampered, signed(signing_key, body))).status_code,
            (await _post(client, body, stale)).status_code,
            (await _post(client, body, {})).status_code,
        ]
        await asyncio.sleep(0.5)
        return codes

    assert run_ingress(settings, fakes[3], scenario) == [401, 401, 401, 401]
    assert discord.requests == [] and cdn.hits == []


def test_foreign_or_redirecting_attachments_are_refused_with_a_message(
    settings: Settings,
    signing_key: SigningKey,
    discord: FakeDiscord,
    cdn: FakeCdn,
    fakes: tuple[FakeDiscord, str, FakeCdn, str],
) -> None:
    """An attachment URL on another host, or one redirecting to 127.0.0.1 elsewhere, is not downloaded;
    the deferred reply is edited with the reason, and no job is made."""
    elsewhere = _avatar_payload(fakes[3], "tok-a-" + "a" * 50, "https://files.example.net/voice.flac")
    redirect = _avatar_payload(fakes[3], "tok-b-" + "b" * 50, f"{fakes[3]}/attachments/1/sneaky.mp3")

    async def scenario(client: httpx.AsyncClient, stack: Stack) -> list[Any]:
        answers = [(await _post(client, b, signed(signing_key, b))).json() for b in (elsewhere, redirect)]

        async def two_edits() -> bool:
            return len(discord.accepted("PATCH")) >= 2

        await _until(two_edits, 10)
        return [answers, await asyncio.to_thread(list_jobs, stack.store, settings)]

    answers, jobs = run_ingress(settings, fakes[3], scenario)
    assert answers == [{"type": 5}, {"type": 5}] and jobs == []
    replies = sorted(r.content or "" for r in discord.accepted("PATCH"))
    assert replies[0].startswith("The audio link is not a Discord attachment (only https links on")
    assert replies[1] == "The audio link redirected somewhere that is not allowed"
    assert "/internal/metadata" not in [r.path for r in discord.requests]


def test_relay_upload_and_member_join_post_videos_to_webhooks(
    settings: Settings,
    discord: FakeDiscord,
    cdn: FakeCdn,
    fakes: tuple[FakeDiscord, str, FakeCdn, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/hooks/bot without the bearer token is 401; with it, an upload (voice + face) becomes a video on
    the channel's webhook and a member_join becomes a spoken welcome video on the welcome webhook."""
    caplog.set_level(logging.DEBUG)
    discord_origin, cdn_origin = fakes[1], fakes[3]
    channel_hook = f"{discord_origin}/api/webhooks/800/{CHANNEL_HOOK_TOKEN}"
    upload = {
        "type": "upload", "id": snowflake(), "guild": "Test Guild", "webhook_url": channel_hook,
        "attachments": [{"url": f"{cdn_origin}/attachments/1/voice.flac", "filename": "voice.flac"},
                        {"url": f"{cdn_origin}/attachments/1/face.png", "filename": "face.png"}],
    }  # fmt: skip
    join = {
        "type": "member_join", "id": USER_ID, "guild": "Test Guild", "member": "Alice",
        "avatar_url": f"{cdn_origin}/avatars/{USER_ID}/abc123hash.png",
    }  # fmt: skip
    auth = {"Authorization": f"Bearer {RELAY_TOKEN}"}

    async def scenario(client: httpx.AsyncClient, stack: Stack) -> list[int]:
        codes = [(await client.post("/hooks/bot", json=e)).status_code for e in (upload, join)]
        codes += [(await client.post("/hooks/bot", json=e, headers=auth)).status_code for e in (upload, join)]
        await _until(_files_posted(discord, 2), 60)
        return codes

    with capture_logs(processors=[merge_contextvars]) as logs:
        codes = run_ingress(settings, cdn_origin, scenario)
    assert codes == [401, 401, 202, 202]
    posts = {r.path: r for r in discord.with_files()}
    channel, welcome = (
        posts[f"/api/webhooks/800/{CHANNEL_HOOK_TOKEN}"],
        posts[f"/api/webhooks/700/{WELCOME_HOOK_TOKEN}"],
    )
    assert [name for name, _ in channel.files.values()] == ["voice.mp4"]
    assert welcome.content == "Welcome to Test Guild, Alice!"
    assert [name for name, _ in welcome.files.values()] == ["welcome.mp4"]
    (settings.data_dir / "welcome.mp4").write_bytes(next(iter(welcome.files.values()))[1])
    assert probe(settings.data_dir / "welcome.mp4").duration > 1.0  # the synthesized greeting
    assert_no_secrets(logs, caplog.text, [RELAY_TOKEN, CHANNEL_HOOK_TOKEN, WELCOME_HOOK_TOKEN, BOT_TOKEN])


def test_avatar_with_every_character_posts_one_video_each_and_welcomes_use_the_character(
    settings: Settings,
    signing_key: SigningKey,
    discord: FakeDiscord,
    cdn: FakeCdn,
    fakes: tuple[FakeDiscord, str, FakeCdn, str],
    tmp_path: Path,
) -> None:
    """/avatar character:all over a server's two characters makes one job of two videos, posted as two
    follow-ups under the reply (each captioned with its character and within the size limit), and the
    reply ends saying all are ready; a member joining gets a welcome read by the welcome character."""
    import cv2
    import numpy as np
    import skimage.data

    from pipeline import characters
    from pipeline.storage import open_store

    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp_path / "pirate.jpg"), face)
    cv2.imwrite(str(tmp_path / "ninja.png"), np.ascontiguousarray(face[:, ::-1]))
    store = open_store(settings)
    characters.add_character(store, settings, "guild-998877", "Pirate", tmp_path / "pirate.jpg")
    characters.add_character(store, settings, "guild-998877", "Ninja", tmp_path / "ninja.png")
    settings = settings.model_copy(update={"discord_welcome_character": "ninja"})
    token = "interaction-batch-" + "k" * 50
    payload = json.loads(_avatar_payload(fakes[3], token))
    payload["data"]["options"].append({"name": "character", "type": 3, "value": "all"})
    body = json.dumps(payload).encode()
    join = {
        "type": "member_join",
        "id": USER_ID,
        "guild": "Test Guild",
        "guild_id": "998877",
        "member": "Alice",
    }

    async def scenario(client: httpx.AsyncClient, stack: Stack) -> None:
        assert (await _post(client, body, signed(signing_key, body))).json() == {"type": 5}
        auth = {"Authorization": f"Bearer {RELAY_TOKEN}"}
        assert (await client.post("/hooks/bot", json=join, headers=auth)).status_code == 202
        await _until(_files_posted(discord, 3), 120)
        await asyncio.sleep(1.0)

    run_ingress(settings, fakes[3], scenario)
    followups = [r for r in discord.with_files() if r.method == "POST" and r.path.endswith(token)]
    assert sorted(r.content or "" for r in followups) == [
        "**Ninja** · video 1 of 2",
        "**Pirate** · video 2 of 2",
    ]
    assert sorted(r.files["files[0]"][0] for r in followups) == ["voice-Ninja.mp4", "voice-Pirate.mp4"]
    assert all(0 < len(r.files["files[0]"][1]) <= TEN_MIB for r in followups)
    edits = [r.content for r in discord.accepted("PATCH") if r.path.endswith(f"{token}/messages/@original")]
    assert edits[0] == "Got it: 2 videos are queued, one per character…"
    assert edits[-1] == "All 2 videos are ready: one per character, below."
    [welcome] = [r for r in discord.with_files() if WELCOME_HOOK_TOKEN in r.path]
    assert welcome.content == "Welcome to Test Guild, Alice!"
    assert [name for name, _ in welcome.files.values()] == ["welcome.mp4"]
    from pipeline.contracts import JobSpec

    specs = [
        JobSpec.model_validate_json(store.get(settings.bucket_inputs, i.key))
        for i in store.list(settings.bucket_inputs, "jobs/")
        if i.key.endswith("job.json")
    ]
    [welcome_spec] = [s for s in specs if s.name == "welcome"]
    assert welcome_spec.avatars == ["character:ninja"] and welcome_spec.library == "guild-998877"
