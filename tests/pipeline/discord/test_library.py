"""The character library from Discord: /characters add/list/remove with their permissions, autocomplete,
/avatar and /announce naming characters (one, or all of them capped), and the per-member limit — against
the fake Discord API and CDN, with the ingress app in-process and a real nats-server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
import skimage.data
from nacl.signing import SigningKey

from pipeline import characters
from pipeline.config import Settings
from pipeline.discord.library import FORBIDDEN
from pipeline.storage import open_store
from tests.pipeline.discord.conftest import FakeCdn, FakeDiscord, attachment, command_payload, signed
from tests.pipeline.discord.test_interactions import _settings, _specs, _with_app

pytestmark = pytest.mark.integration

CHAR_ROLE = "7770001"
GUILD_LIBRARY = "guild-998877"  # command_payload's guild
MANAGE_GUILD = 1 << 5


@pytest.fixture
def settings(
    tmp_path: Path, nats_url: str, signing_key: SigningKey, discord_origin: str, cdn_origin: str
) -> Settings:
    return _settings(
        tmp_path, nats_url, signing_key, discord_origin, cdn_origin, discord_character_roles=[CHAR_ROLE],
        character_batch_limit=2, member_jobs_in_flight=1,
    )  # fmt: skip


@pytest.fixture
def photo(tmp_path: Path) -> bytes:
    path = tmp_path / "pirate.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path.read_bytes()


def _sub(name: str, options: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [{"name": name, "type": 1, "options": options or []}]


def _add(name: str, url: str, **kw: Any) -> dict[str, Any]:
    options = [{"name": "name", "type": 3, "value": name}, {"name": "image", "type": 11, "value": "9"}]
    return command_payload(
        "characters", _sub("add", options), {"9": attachment("9", url, "pirate.jpg")}, **kw
    )


def _autocomplete(command: str, options: list[dict[str, Any]]) -> dict[str, Any]:
    payload = command_payload(command, options)
    payload["type"] = 4
    return payload


async def _post(client: httpx.AsyncClient, key: SigningKey, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    return (await client.post("/discord/interactions", content=body, headers=signed(key, body))).json()


def _edits(discord: FakeDiscord) -> list[str | None]:
    return [r.content for r in discord.accepted("PATCH") if r.path.endswith("/messages/@original")]


def test_characters_add_list_remove_with_permissions(
    settings: Settings,
    signing_key: SigningKey,
    discord: FakeDiscord,
    cdn: FakeCdn,
    cdn_origin: str,
    photo: bytes,
) -> None:
    """A plain member is refused at once; Manage Server or the character role adds (deferred, ephemeral,
    then a sentence); a duplicate name or a text file as the picture is refused in a sentence; list and
    remove answer in the reply."""
    cdn.files["/att/pirate.jpg"] = (photo, "image/jpeg")
    cdn.files["/att/notes.png"] = (b"just some text, not a picture\n" * 4, "image/png")
    url = f"{cdn_origin}/att/pirate.jpg"

    async def body(client: httpx.AsyncClient, ingress: Any, *_: Any) -> list[Any]:
        answers = [await _post(client, signing_key, _add("Pirate", url, permissions=1 << 4))]
        answers.append(await _post(client, signing_key, _add("Pirate", url, permissions=MANAGE_GUILD)))
        await ingress.idle()
        answers.append(await _post(client, signing_key, _add("PIRATE", url, roles=[CHAR_ROLE])))
        await ingress.idle()
        answers.append(
            await _post(client, signing_key, _add("Notes", f"{cdn_origin}/att/notes.png", roles=[CHAR_ROLE]))
        )
        await ingress.idle()
        answers.append(await _post(client, signing_key, command_payload("characters", _sub("list"))))
        await ingress.idle()
        remove = _sub("remove", [{"name": "name", "type": 3, "value": "pirate"}])
        answers.append(await _post(client, signing_key, command_payload("characters", remove)))  # no role
        answers.append(
            await _post(client, signing_key, command_payload("characters", remove, roles=[CHAR_ROLE]))
        )
        await ingress.idle()
        return answers

    answers = _with_app(settings, cdn_origin, body)
    refused, added, dup, notes, listed, remove_refused, removed = answers
    assert refused == {"type": 4, "data": {"content": FORBIDDEN, "flags": 64}}
    assert remove_refused["data"]["content"] == FORBIDDEN
    assert all(a == {"type": 5, "data": {"flags": 64}} for a in (added, dup, notes, listed, removed))
    edits = _edits(discord)
    assert edits[0] == "Added **Pirate** to this server's characters. Use it with `/avatar character:Pirate`."
    assert edits[1].startswith("A character named 'Pirate' is already in the library")
    assert edits[2].startswith("The image is not an image or a video")  # the download's sniffing refused it
    assert edits[3].startswith(
        "**1 character** (use one with `/avatar character:<name>`):\n• **Pirate** — image, added by nelly"
    )
    assert edits[4] == "Removed **Pirate** from this server's characters (videos made with it stay)."
    assert characters.list_characters(open_store(settings), settings, GUILD_LIBRARY) == []


def test_autocomplete_offers_the_servers_names(
    settings: Settings, signing_key: SigningKey, cdn_origin: str, photo: bytes, tmp_path: Path
) -> None:
    """/avatar's character option offers 'all' and the names starting with, then containing, what is
    typed; /characters remove never offers 'all'; another server's library is not offered."""
    store = open_store(settings)
    (tmp_path / "p.jpg").write_bytes(photo)
    for name in ("Pirate", "Captain Pirate", "Ninja"):
        characters.add_character(store, settings, GUILD_LIBRARY, name, tmp_path / "p.jpg")
    characters.add_character(store, settings, "guild-1", "Pixie", tmp_path / "p.jpg")

    async def body(client: httpx.AsyncClient, *_: Any) -> list[Any]:
        typed = [{"name": "character", "type": 3, "value": "pi", "focused": True}]
        nothing = [{"name": "character", "type": 3, "value": "", "focused": True}]
        remove = _sub("remove", [{"name": "name", "type": 3, "value": "", "focused": True}])
        return [
            await _post(client, signing_key, _autocomplete("avatar", typed)),
            await _post(client, signing_key, _autocomplete("avatar", nothing)),
            await _post(client, signing_key, _autocomplete("characters", remove)),
        ]

    typed, everything, removing = _with_app(settings, cdn_origin, body)
    names = lambda answer: [c["value"] for c in answer["data"]["choices"]]  # noqa: E731
    assert typed["type"] == 8 and names(typed) == ["Pirate", "Captain Pirate"]
    assert names(everything) == ["all", "Captain Pirate", "Ninja", "Pirate"]
    assert names(removing) == ["Captain Pirate", "Ninja", "Pirate"]


def test_avatar_and_announce_name_characters_and_the_whole_library_is_capped(
    settings: Settings,
    signing_key: SigningKey,
    discord: FakeDiscord,
    cdn: FakeCdn,
    cdn_origin: str,
    short_voice: Path,
    photo: bytes,
    tmp_path: Path,
) -> None:
    """character:Pirate makes a spec naming the character in the server's library (no profile picture
    fetched); character:all over 3 characters with a cap of 2 queues 2 and says so; an unknown name is
    refused with the names there are; /announce takes one character."""
    store = open_store(settings)
    (tmp_path / "p.jpg").write_bytes(photo)
    for name in ("Pirate", "Ninja", "Robot"):
        characters.add_character(store, settings, GUILD_LIBRARY, name, tmp_path / "p.jpg")
    cdn.files["/att/v.flac"] = (short_voice.read_bytes(), "audio/flac")
    voice = {"1": attachment("1", f"{cdn_origin}/att/v.flac", "v.flac")}

    def avatar(character: str, user: str) -> dict[str, Any]:
        payload = command_payload(
            "avatar", [{"name": "audio", "type": 11, "value": "1"}, {"name": "character", "type": 3, "value": character}],
            voice,
        )  # fmt: skip
        payload["member"]["user"]["id"] = user  # different members: the in-flight limit is 1 each
        return payload

    announce = command_payload(
        "announce", [{"name": "text", "type": 3, "value": "Game night!"}, {"name": "character", "type": 3, "value": "robot"}],
        roles=["5550001"],
    )  # fmt: skip

    async def body(client: httpx.AsyncClient, ingress: Any, *_: Any) -> None:
        for payload in (avatar("pirate", "101"), avatar("all", "102"), avatar("Parrot", "103"), announce):
            await _post(client, signing_key, payload)
            await ingress.idle()

    _with_app(settings, cdn_origin, body)
    specs = sorted(_specs(store, settings), key=lambda s: (s.speech or "", len(s.avatars)))
    one, batch, announced = specs
    assert one.avatars == ["character:Pirate"] and one.library == GUILD_LIBRARY
    assert batch.avatars == ["character:Ninja", "character:Pirate"]  # capped at 2, by name
    assert announced.speech == "Game night!" and announced.avatars == ["character:Robot"]
    assert not [h for h in cdn.hits if h.startswith("/avatars/")]  # no profile picture was needed
    edits = _edits(discord)
    assert "Got it: your video is queued…" in edits
    assert (
        "Got it: 2 videos are queued, one per character…\nThe library has 3 characters; one batch makes at "
        "most 2 videos, so the first 2 (by name) were used and 1 left out." in edits
    )
    assert "There is no character 'Parrot' in the library; it has Ninja, Pirate, Robot" in edits


def test_one_member_cannot_fill_the_queue(
    settings: Settings,
    signing_key: SigningKey,
    discord: FakeDiscord,
    cdn: FakeCdn,
    cdn_origin: str,
    short_voice: Path,
) -> None:
    """With member_jobs_in_flight = 1, a member's second /avatar while the first is unfinished is refused
    in a sentence; another member still gets theirs queued."""
    cdn.files["/att/v.flac"] = (short_voice.read_bytes(), "audio/flac")
    cdn.files["/avatars/80351110224678912/abc123hash.png"] = (b"", "image/png")

    def avatar(user: str) -> dict[str, Any]:
        payload = command_payload(
            "avatar", [{"name": "audio", "type": 11, "value": "1"}, {"name": "avatar", "type": 11, "value": "2"}],
            {"1": attachment("1", f"{cdn_origin}/att/v.flac", "v.flac"), "2": attachment("2", f"{cdn_origin}/att/v.flac", "f.png")},
        )  # fmt: skip
        payload["data"]["resolved"]["attachments"]["2"]["url"] = f"{cdn_origin}/att/face.png"
        payload["member"]["user"]["id"] = user
        return payload

    cdn.files["/att/face.png"] = (cv2.imencode(".png", skimage.data.astronaut())[1].tobytes(), "image/png")

    async def body(client: httpx.AsyncClient, ingress: Any, *_: Any) -> None:
        for user in ("201", "201", "202"):
            await _post(client, signing_key, avatar(user))
            await ingress.idle()

    _with_app(settings, cdn_origin, body)
    assert len(_specs(open_store(settings), settings)) == 2  # nobody ran them: both stay in flight
    edits = _edits(discord)
    assert edits.count("Got it: your video is queued…") == 2
    assert (
        "You already have 1 video job in the making; one member may have 1 at a time: wait until one is "
        "finished, then send this again" in edits
    )
