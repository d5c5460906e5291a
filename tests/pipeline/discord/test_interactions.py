"""Interaction parsing and the ingress app's endpoints (signature, commands, dedup, relay and MinIO hooks).

The app runs in-process (httpx's ASGI transport) with the local store and a real nats-server; Discord
and its CDN are the loopback fakes.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey
from PIL import Image

from pipeline.bus import NatsBus
from pipeline.config import Settings
from pipeline.contracts import DiscordInteractionDestination, DiscordWebhookDestination, JobSpec
from pipeline.discord.interactions import (
    Interaction,
    avatar_url,
    can_announce,
    parse_interaction,
    snowflake_time,
)
from pipeline.errors import InvalidInput
from pipeline.events import build_event
from pipeline.ingress.http import build_app
from pipeline.keys import subject_for
from pipeline.storage import open_store
from pipeline.storage.base import ObjectInfo, ObjectStore
from pipeline.submit import original_name
from tests.conftest import make_settings
from tests.pipeline.discord.conftest import (
    APP_ID,
    FakeCdn,
    FakeDiscord,
    attachment,
    command_payload,
    signed,
    snowflake,
)

ROLE = "5550001"
RELAY_TOKEN = "relay-token-" + "r" * 30
MINIO_TOKEN = "minio-token-" + "m" * 30


# --- parsing ----------------------------------------------------------------------------------------


def test_parse_resolves_attachments_options_and_creation_time() -> None:
    """Options are read by name, attachment options resolve through data.resolved, and the creation
    time comes from the interaction id."""
    at = time.time() - 60
    payload = command_payload(
        "avatar",
        [{"name": "audio", "type": 11, "value": "7"}, {"name": "style", "type": 3, "value": "cartoon"}],
        {"7": attachment("7", "https://cdn.discordapp.com/a/voice.ogg", "voice.ogg")},
        interaction_id=snowflake(at),
    )
    it = parse_interaction(json.dumps(payload).encode())
    assert it.option("style") == "cartoon" and it.option("text") is None
    audio = it.attachment("audio")
    assert audio is not None and audio.filename == "voice.ogg"
    assert it.attachment("avatar") is None
    assert abs(it.created_at.timestamp() - at) < 0.01
    assert it.caller.id == "80351110224678912"


def test_parse_refuses_non_interactions_and_dangling_attachments() -> None:
    """A body without the interaction fields, or an attachment id missing from resolved, is InvalidInput."""
    with pytest.raises(InvalidInput):
        parse_interaction(b'{"hello": 1}')
    payload = command_payload("avatar", [{"name": "audio", "type": 11, "value": "404"}])
    with pytest.raises(InvalidInput, match="missing"):
        parse_interaction(json.dumps(payload).encode()).attachment("audio")


@pytest.mark.parametrize(
    ("permissions", "roles", "allowed"),
    [
        (1 << 5, [], True),
        (1 << 3, [], True),
        ((1 << 5) | 1, [], True),
        (1 << 4, [], False),
        (0, [ROLE], True),
        (0, ["1"], False),
    ],
)
def test_announce_needs_manage_server_or_a_configured_role(
    permissions: int, roles: list[str], allowed: bool
) -> None:
    """MANAGE_GUILD (1<<5) or Administrator in member.permissions, or a configured role, may announce."""
    it = Interaction.model_validate(command_payload("announce", [], permissions=permissions, roles=roles))
    assert can_announce(it, [ROLE]) is allowed


def test_dm_cannot_announce() -> None:
    """Without a member (a DM) nobody can announce."""
    payload = command_payload("announce", [])
    payload["user"] = payload.pop("member")["user"]
    assert can_announce(Interaction.model_validate(payload), [ROLE]) is False


def test_avatar_url_from_hash_or_default() -> None:
    """A user's avatar hash gives their picture; without one, Discord's default avatar index."""
    it = Interaction.model_validate(command_payload("avatar", []))
    assert (
        avatar_url(it.caller)
        == "https://cdn.discordapp.com/avatars/80351110224678912/abc123hash.png?size=512"
    )
    plain = Interaction.model_validate(command_payload("avatar", [], avatar=None)).caller
    assert (
        avatar_url(plain) == f"https://cdn.discordapp.com/embed/avatars/{(80351110224678912 >> 22) % 6}.png"
    )
    legacy = plain.model_copy(update={"discriminator": "1337"})
    assert avatar_url(legacy).endswith("/embed/avatars/2.png")
    assert snowflake_time("175928847299117063").year == 2016


# --- the ingress app ------------------------------------------------------------------------------


def _settings(
    tmp: Path, nats_url: str, key: SigningKey, discord_origin: str, cdn_origin: str, **extra: Any
) -> Settings:
    return make_settings(
        tmp, nats_url=nats_url, discord_public_key=key.verify_key.encode().hex(), discord_application_id=APP_ID,
        discord_api_base=f"{discord_origin}/api/v10", discord_cdn_hosts=["cdn.discordapp.com", cdn_origin],
        ingress_token=RELAY_TOKEN, minio_webhook_token=MINIO_TOKEN, discord_announce_roles=[ROLE],
        discord_announce_webhook=f"{discord_origin}/api/webhooks/1/announce-{'a' * 30}", **extra,
    )  # fmt: skip


Body = Callable[[httpx.AsyncClient, Any, ObjectStore, NatsBus], Awaitable[Any]]


def _with_app(settings: Settings, cdn_origin: str, body: Body) -> Any:
    async def main() -> Any:
        bus = await NatsBus.connect(settings.nats_url or "", settings)
        store = open_store(settings)
        app = build_app(settings, store, bus, cdn_base=cdn_origin)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
                result = await body(client, app.state.ingress, store, bus)
                await app.state.ingress.idle()
                return result
        finally:
            await bus.close()

    return asyncio.run(main())


async def _post(client: httpx.AsyncClient, key: SigningKey, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await client.post("/discord/interactions", content=body, headers=signed(key, body))


def _specs(store: ObjectStore, settings: Settings) -> list[JobSpec]:
    keys = [i.key for i in store.list(settings.bucket_inputs, "jobs/") if i.key.endswith("job.json")]
    return [JobSpec.model_validate_json(store.get(settings.bucket_inputs, k)) for k in keys]


@pytest.fixture
def app_settings(
    tmp_path: Path, nats_url: str, signing_key: SigningKey, discord_origin: str, cdn_origin: str
) -> Settings:
    return _settings(tmp_path, nats_url, signing_key, discord_origin, cdn_origin)


@pytest.mark.integration
def test_ping_is_answered_and_unsigned_requests_are_refused(
    app_settings: Settings, signing_key: SigningKey, cdn_origin: str
) -> None:
    """PING gets PONG; no signature, another key's signature, or a stale timestamp gets 401."""
    ping = json.dumps({"id": snowflake(), "application_id": APP_ID, "type": 1}).encode()
    other = SigningKey.generate()

    async def body(client: httpx.AsyncClient, *_: Any) -> list[Any]:
        url = "/discord/interactions"
        ok = await client.post(url, content=ping, headers=signed(signing_key, ping))
        bare = await client.post(url, content=ping)
        forged = await client.post(url, content=ping, headers=signed(other, ping))
        stale = await client.post(url, content=ping, headers=signed(signing_key, ping, time.time() - 301))
        return [ok.status_code, ok.json(), bare.status_code, forged.status_code, stale.status_code]

    assert _with_app(app_settings, cdn_origin, body) == [200, {"type": 1}, 401, 401, 401]


@pytest.mark.integration
def test_avatar_defers_then_submits_one_job_for_two_deliveries(
    app_settings: Settings,
    signing_key: SigningKey,
    cdn: FakeCdn,
    cdn_origin: str,
    discord: FakeDiscord,
    short_voice: Path,
    assets: Path,
) -> None:
    """/avatar answers type 5 at once; the background work downloads the attachments and writes one
    spec whose destination is the interaction; the same interaction delivered twice makes one job."""
    cdn.files["/att/voice.flac"] = (short_voice.read_bytes(), "audio/flac")
    cdn.files["/att/face.png"] = ((assets / "astronaut.png").read_bytes(), "image/png")
    payload = command_payload(
        "avatar",
        [{"name": "audio", "type": 11, "value": "1"}, {"name": "avatar", "type": 11, "value": "2"},
         {"name": "text", "type": 3, "value": "ask not"}],
        {"1": attachment("1", f"{cdn_origin}/att/voice.flac", "voice.flac"),
         "2": attachment("2", f"{cdn_origin}/att/face.png", "face.png")},
    )  # fmt: skip

    async def body(client: httpx.AsyncClient, ingress: Any, *_: Any) -> list[Any]:
        started = time.monotonic()
        first = await _post(client, signing_key, payload)
        elapsed = time.monotonic() - started
        await ingress.idle()
        second = await _post(client, signing_key, payload)
        return [first.json(), second.json(), elapsed]

    first, second, elapsed = _with_app(app_settings, cdn_origin, body)
    assert first == {"type": 5} and second == {"type": 5} and elapsed < 3.0
    [spec] = _specs(open_store(app_settings), app_settings)
    [dest] = spec.destinations
    assert isinstance(dest, DiscordInteractionDestination)
    assert dest.application_id == APP_ID and dest.token.get_secret_value() == payload["token"]
    assert dest.created_at == snowflake_time(payload["id"])
    assert (
        spec.audio == "voice.flac" and spec.avatars == ["face.png"] and spec.options.transcript == "ask not"
    )
    assert cdn.hits.count("/att/voice.flac") == 1
    assert [r.content for r in discord.accepted("PATCH")] == ["Got it: your video is queued…"]


@pytest.mark.integration
def test_avatar_without_avatar_uses_the_callers_picture(
    app_settings: Settings,
    signing_key: SigningKey,
    cdn: FakeCdn,
    cdn_origin: str,
    short_voice: Path,
    assets: Path,
) -> None:
    """With no avatar attachment, the caller's profile picture (user id + avatar hash) is downloaded."""
    cdn.files["/att/v.flac"] = (short_voice.read_bytes(), "audio/flac")
    cdn.files["/avatars/80351110224678912/abc123hash.png"] = (
        (assets / "astronaut.png").read_bytes(),
        "image/png",
    )
    payload = command_payload(
        "avatar", [{"name": "audio", "type": 11, "value": "1"}],
        {"1": attachment("1", f"{cdn_origin}/att/v.flac", "v.flac")},
    )  # fmt: skip

    async def body(client: httpx.AsyncClient, *_: Any) -> int:
        return (await _post(client, signing_key, payload)).status_code

    assert _with_app(app_settings, cdn_origin, body) == 200
    [spec] = _specs(open_store(app_settings), app_settings)
    assert spec.avatars == ["profile.png"]
    assert "/avatars/80351110224678912/abc123hash.png" in cdn.hits


@pytest.mark.integration
def test_attachment_on_another_host_is_refused_with_a_message(
    app_settings: Settings, signing_key: SigningKey, cdn_origin: str, discord: FakeDiscord
) -> None:
    """An attachment URL outside the allow-list edits the reply with the reason; no job is made."""
    payload = command_payload(
        "avatar", [{"name": "audio", "type": 11, "value": "1"}],
        {"1": attachment("1", "https://evil.example/voice.mp3", "voice.mp3")},
    )  # fmt: skip

    async def body(client: httpx.AsyncClient, *_: Any) -> dict[str, Any]:
        return (await _post(client, signing_key, payload)).json()

    assert _with_app(app_settings, cdn_origin, body) == {"type": 5}
    [edit] = discord.accepted("PATCH")
    assert edit.content is not None and edit.content.startswith("The audio link is not a Discord attachment")
    assert _specs(open_store(app_settings), app_settings) == []


@pytest.mark.integration
def test_announce_is_for_managers_and_announcer_roles(
    app_settings: Settings, signing_key: SigningKey, cdn_origin: str
) -> None:
    """A member without Manage Server or an announcer role is refused at once (ephemeral); a member
    with the role gets a deferred ephemeral reply and a speech job for the announcement webhook."""
    text = [{"name": "text", "type": 3, "value": "Game night   at eight!"}]
    refused = command_payload("announce", text, permissions=1 << 4)
    allowed = command_payload("announce", text, roles=[ROLE])

    async def body(client: httpx.AsyncClient, *_: Any) -> list[Any]:
        return [
            (await _post(client, signing_key, refused)).json(),
            (await _post(client, signing_key, allowed)).json(),
        ]

    no, yes = _with_app(app_settings, cdn_origin, body)
    assert no["type"] == 4 and no["data"]["flags"] == 64 and "Manage Server" in no["data"]["content"]
    assert yes == {"type": 5, "data": {"flags": 64}}
    [spec] = _specs(open_store(app_settings), app_settings)
    assert spec.speech == "Game night at eight!" and spec.audio is None and spec.avatars == []
    kinds = [type(d) for d in spec.destinations]
    assert kinds == [DiscordWebhookDestination, DiscordInteractionDestination]


@pytest.mark.integration
def test_bot_hook_needs_the_bearer_token_and_a_discord_webhook(
    app_settings: Settings, cdn_origin: str
) -> None:
    """/hooks/bot: no or wrong token → 401; malformed event → 400; a webhook URL that is not Discord's → 422."""
    event = {
        "type": "upload",
        "attachments": [{"url": f"{cdn_origin}/x.flac"}],
        "webhook_url": "https://evil.example/webhooks/1/2",
    }
    good = {"Authorization": f"Bearer {RELAY_TOKEN}"}

    async def body(client: httpx.AsyncClient, *_: Any) -> list[int]:
        return [
            (await client.post("/hooks/bot", json=event)).status_code,
            (
                await client.post("/hooks/bot", json=event, headers={"Authorization": "Bearer nope"})
            ).status_code,
            (await client.post("/hooks/bot", json={"type": "party"}, headers=good)).status_code,
            (await client.post("/hooks/bot", json=event, headers=good)).status_code,
        ]

    assert _with_app(app_settings, cdn_origin, body) == [401, 401, 400, 422]


@pytest.mark.integration
def test_minio_hook_puts_the_record_on_the_bus(app_settings: Settings, cdn_origin: str) -> None:
    """/hooks/minio with MinIO's token publishes a routed record on the stage's subject, once per object
    version (deterministic message id); a wrong token is 401; an unrouted key publishes nothing."""
    info = ObjectInfo(app_settings.bucket_inputs, "jobs/team/job.json", 10, "abc123")
    record = build_event(info)
    other = build_event(ObjectInfo(app_settings.bucket_inputs, "misc/readme.txt", 1, "e"))

    async def body(client: httpx.AsyncClient, ingress: Any, store: ObjectStore, bus: NatsBus) -> list[Any]:
        auth = {"Authorization": f"Bearer {MINIO_TOKEN}"}
        answers = [
            (await client.post("/hooks/minio", content=record)).status_code,
            (await client.post("/hooks/minio", content=record, headers=auth)).json(),
            (
                await client.post("/hooks/minio", content=record, headers={"Authorization": MINIO_TOKEN})
            ).json(),
            (await client.post("/hooks/minio", content=other, headers=auth)).json(),
        ]
        consumer = await bus.consume("validate", subject_for(app_settings, "validate"))
        delivery = await consumer.next(timeout=2.0)
        assert delivery is not None
        await delivery.ack()
        answers.append(delivery.data == record)
        answers.append(await consumer.next(timeout=0.3))
        return answers

    assert _with_app(app_settings, cdn_origin, body) == [
        401,
        {"published": 1},
        {"published": 0},
        {"published": 0},
        True,
        None,
    ]


# --- hostile and careless inputs (issue 9) --------------------------------------------------------------


@pytest.mark.integration
def test_avatar_text_over_the_limit_is_refused_in_a_sentence(
    app_settings: Settings,
    signing_key: SigningKey,
    cdn: FakeCdn,
    cdn_origin: str,
    discord: FakeDiscord,
    short_voice: Path,
) -> None:
    """/avatar with a 20001-character text edits the reply with the limit, in words; no job is made."""
    cdn.files["/att/v.flac"] = (short_voice.read_bytes(), "audio/flac")
    picture = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 60, 40)).save(
        picture, format="PNG"
    )  # a real PNG: the sniffer checks IHDR
    cdn.files["/avatars/80351110224678912/abc123hash.png"] = (picture.getvalue(), "image/png")
    payload = command_payload(
        "avatar", [{"name": "audio", "type": 11, "value": "1"}, {"name": "text", "type": 3, "value": "w" * 20_001}],
        {"1": attachment("1", f"{cdn_origin}/att/v.flac", "v.flac")},
    )  # fmt: skip

    async def body(client: httpx.AsyncClient, *_: Any) -> int:
        return (await _post(client, signing_key, payload)).status_code

    assert _with_app(app_settings, cdn_origin, body) == 200
    [edit] = discord.accepted("PATCH")
    assert edit.content == "The text is 20001 characters long; the limit is 20000: send a shorter one."
    assert _specs(open_store(app_settings), app_settings) == []


@pytest.mark.integration
def test_relay_upload_keeps_the_attachment_names_and_refuses_loopback_hooks(
    app_settings: Settings,
    cdn: FakeCdn,
    cdn_origin: str,
    discord_origin: str,
    short_voice: Path,
    assets: Path,
) -> None:
    """A relay upload records each attachment's own name ('Grüße Foto.png') for refusals, a webhook_url on
    a loopback port that is not Discord's is refused (422) with the host named, and an over-long text is a
    400 in words, not the validation library's."""
    cdn.files["/att/v.flac"] = (short_voice.read_bytes(), "audio/flac")
    cdn.files["/att/f.png"] = ((assets / "astronaut.png").read_bytes(), "image/png")
    hook = f"{discord_origin}/api/webhooks/800/channel-{'c' * 30}"
    event = {
        "type": "upload", "id": snowflake(), "webhook_url": hook,
        "attachments": [{"url": f"{cdn_origin}/att/v.flac", "filename": "Mein Gruß.flac"},
                        {"url": f"{cdn_origin}/att/f.png", "filename": "Grüße Foto.png"}],
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {RELAY_TOKEN}"}
    loopback = {**event, "webhook_url": "http://127.0.0.1:9/api/webhooks/1/internal"}
    wordy = {**event, "text": "t" * 2001}

    async def body(client: httpx.AsyncClient, ingress: Any, store: ObjectStore, bus: NatsBus) -> list[Any]:
        answers = [await client.post("/hooks/bot", json=e, headers=headers) for e in (event, loopback, wordy)]
        return [(a.status_code, a.json()) for a in answers]

    ok, refused, too_long = _with_app(app_settings, cdn_origin, body)
    assert ok[0] == 202
    assert refused == (422, {"error": "Webhook_url points at 127.0.0.1, which is not Discord: use a webhook "
                                      "URL copied from a Discord channel's settings (https://discord.com/api/webhooks/...)"})  # fmt: skip
    assert too_long[0] == 400 and "'text' is 2001 characters long; the limit is 2000" in too_long[1]["error"]
    store = open_store(app_settings)
    names = {
        original_name(info, info.key) for info in store.list(app_settings.bucket_inputs, "jobs/")
        if not info.key.endswith("job.json")
    }  # fmt: skip
    assert names == {"Mein Gruß.flac", "Grüße Foto.png"}
