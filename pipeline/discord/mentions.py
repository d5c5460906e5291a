"""Names for the Discord mentions in a text that will be spoken (``/announce``): ``<@id>`` becomes
``@Display Name``, ``<@&id>`` ``@Role``, ``<#id>`` ``#channel``.

Discord sends mentions inside a string option as raw markup, so names are looked up with the bot token
(``GET /guilds/{guild}/members/{user}``, ``/guilds/{guild}/roles``, ``/channels/{channel}``); names
already known (the caller) need no request. Without a bot token, or when a lookup fails, the markup is
left as it is and the speech stage reads it generically ("someone", "a channel").
"""

from __future__ import annotations

import re
from typing import Any

import structlog

from pipeline.discord.api import DiscordApi
from pipeline.errors import MouthpieceError

log = structlog.get_logger("mouthpiece.discord")

MENTION = re.compile(r"<(@!?|@&|#)(\d{1,25})>")
MAX_LOOKUPS = 10
"""At most this many names are looked up for one text (each is a request to Discord)."""


def display_name(member: dict[str, Any]) -> str | None:
    """A guild member's name as Discord shows it: the server nickname, else the global name, else the
    username."""
    user = member.get("user") or {}
    name = member.get("nick") or user.get("global_name") or user.get("username")
    return " ".join(str(name).split()) or None if name else None


def named_mentions(
    text: str,
    api: DiscordApi,
    bot_token: str | None,
    guild_id: str | None,
    known: dict[str, str] | None = None,
) -> str:
    """``text`` with the mentions whose names can be found replaced by ``@name`` / ``#channel``."""
    wanted = {(kind.rstrip("!"), ident) for kind, ident in MENTION.findall(text)}
    names = {("@", ident): name for ident, name in (known or {}).items()}
    lookups = [w for w in wanted if w not in names][:MAX_LOOKUPS]
    if lookups and bot_token and guild_id:
        names.update(_look_up(api, bot_token, guild_id, lookups))

    def replace(match: re.Match[str]) -> str:
        kind = match.group(1).rstrip("!")
        name = names.get((kind, match.group(2)))
        return match.group(0) if name is None else f"{'#' if kind == '#' else '@'}{name}"

    return MENTION.sub(replace, text)


def _look_up(
    api: DiscordApi, token: str, guild: str, wanted: list[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    roles: dict[str, str] | None = None
    for kind, ident in wanted:
        try:
            if kind == "@":
                name = display_name(
                    api.get(f"/guilds/{guild}/members/{ident}", token, "a member's name") or {}
                )
            elif kind == "#":
                name = (api.get(f"/channels/{ident}", token, "a channel's name") or {}).get("name")
            else:
                if roles is None:
                    listed = api.get(f"/guilds/{guild}/roles", token, "the role names") or []
                    roles = {str(r.get("id")): str(r.get("name")) for r in listed if isinstance(r, dict)}
                name = roles.get(ident)
        except MouthpieceError as exc:  # unknown member, no permission, Discord busy: say it generically
            log.info("mention_not_named", kind=kind, reason=exc.reason)
            continue
        if name:
            found[(kind, ident)] = str(name)
    return found
