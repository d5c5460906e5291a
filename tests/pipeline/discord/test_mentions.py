"""Mentions in announcement texts become names before synthesis, looked up from a fake Discord API."""

from __future__ import annotations

import httpx

from pipeline.discord.api import DiscordApi, RetryPolicy
from pipeline.discord.mentions import display_name, named_mentions
from stages.lib.speech.speakable import speakable

GUILD = "1000"
TOKEN = "bot-token"


def fake_discord(seen: list[str]) -> httpx.MockTransport:
    """Discord's member, role and channel endpoints for one guild (other ids: 404 Unknown)."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        assert request.headers["authorization"] == f"Bot {TOKEN}"
        bodies = {
            f"/api/guilds/{GUILD}/members/11": {"nick": "Captain Ally", "user": {"username": "alice"}},
            f"/api/guilds/{GUILD}/members/22": {
                "nick": None,
                "user": {"username": "bob", "global_name": "Bobby"},
            },
            f"/api/guilds/{GUILD}/roles": [{"id": "77", "name": "Moderators"}],
            "/api/channels/33": {"id": "33", "name": "general"},
        }
        body = bodies.get(request.url.path)
        if body is None:
            return httpx.Response(404, json={"message": "Unknown Member", "code": 10007})
        return httpx.Response(200, json=body)

    return httpx.MockTransport(answer)


def api(seen: list[str]) -> DiscordApi:
    return DiscordApi(
        "https://discord.test/api", transport=fake_discord(seen), policy=RetryPolicy(sleep=lambda s: None)
    )


def test_mentions_are_replaced_by_display_names() -> None:
    """Members by nickname (else global name), roles and channels by name; the caller's own name needs
    no request; an unknown member stays as markup (spoken as "someone" later)."""
    seen: list[str] = []
    text = "Hi <@11>, <@!22> and <@99>! <@&77> see <#33>. Thanks from <@5>"
    named = named_mentions(text, api(seen), TOKEN, GUILD, {"5": "Dana"})
    assert named == "Hi @Captain Ally, @Bobby and <@99>! @Moderators see #general. Thanks from @Dana"
    assert f"/api/guilds/{GUILD}/members/5" not in seen
    assert speakable(named) == "Hi Captain Ally, Bobby and someone! Moderators see general. Thanks from Dana"


def test_without_a_bot_token_nothing_is_looked_up() -> None:
    """No bot token: only known names are used, no request is made."""
    seen: list[str] = []
    assert named_mentions("<@11> and <@5>", api(seen), None, GUILD, {"5": "Dana"}) == "<@11> and @Dana"
    assert seen == []


def test_display_name_prefers_the_server_nickname() -> None:
    """nick > global_name > username; nothing → None."""
    assert display_name({"nick": "N", "user": {"global_name": "G", "username": "u"}}) == "N"
    assert display_name({"user": {"global_name": "G", "username": "u"}}) == "G"
    assert display_name({"user": {"username": "u"}}) == "u"
    assert display_name({}) is None
