"""``/characters add|list|remove`` and the character options' autocomplete: a Discord server's library.

Each server has its own library (``guild-<id>``, ``pipeline.characters``). ``list`` is for everyone;
``add`` and ``remove`` for members with Manage Server (or Administrator) or one of
``discord_character_roles``, refused at once otherwise. The answers are ephemeral (only the caller sees
them): the command is deferred and its work (the download, the checks every upload gets, the store) runs
in the background, then the reply says what happened in a sentence. Autocomplete answers within Discord's
3 seconds with up to 25 names that start with, then contain, what the member typed (``all`` first for
``/avatar``).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
from starlette.responses import JSONResponse, Response

from pipeline import characters
from pipeline.characters import Picked
from pipeline.config import Settings
from pipeline.contracts import Character
from pipeline.discord.fetch import Fetcher, Kind
from pipeline.discord.interactions import (
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    EPHEMERAL,
    Interaction,
    manages_or_has_role,
)
from pipeline.discord.mentions import display_name
from pipeline.errors import MouthpieceError
from pipeline.owner import scratch_name, scratch_root
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.discord.library")

FACE = frozenset({Kind.image, Kind.video})
MESSAGE_LIMIT = 2000
Reply = Callable[[Interaction, str], Awaitable[None]]
Background = Callable[[Coroutine[Any, Any, None]], None]
FORBIDDEN = "Only members with the Manage Server permission or a character role can add or remove characters."


class CharacterRoutes:
    """The library's commands for one ingress: the store, the downloader, and how to reply."""

    def __init__(
        self, settings: Settings, store: ObjectStore, fetcher: Fetcher, reply: Reply, background: Background
    ) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.reply = reply
        self.background = background

    # --- autocomplete ---------------------------------------------------------------------------------
    async def autocomplete(self, it: Interaction) -> Response:
        """Type 8 with the names matching what is being typed (none when nothing fits)."""
        focused = it.focused()
        command = it.data.name if it.data else ""
        choices: list[str] = []
        if focused is not None and focused.name in ("character", "name"):
            typed = str(focused.value or "")[:32]
            library = characters.library_for_guild(it.guild_id)
            try:
                choices = await asyncio.to_thread(
                    characters.suggest, self.store, self.settings, library, typed
                )
            except MouthpieceError as exc:  # the store is away: an empty list, the command still works
                log.info("autocomplete_failed", reason=exc.reason)
            if command != "avatar":  # only /avatar renders the whole library
                choices = [c for c in choices if c != characters.ALL]
        data = {"choices": [{"name": c, "value": c} for c in choices[:25]]}
        return JSONResponse({"type": AUTOCOMPLETE_RESULT, "data": data})

    # --- /characters ------------------------------------------------------------------------------------
    def command(self, it: Interaction) -> Response:
        """Answer ``/characters``: a refusal at once, else deferred (ephemeral) with the work behind."""
        sub = it.subcommand
        if sub in ("add", "remove") and not manages_or_has_role(it, self.settings.discord_character_roles):
            return _message(FORBIDDEN)
        work = {"add": self._add, "list": self._list, "remove": self._remove}.get(sub or "")
        if work is None:
            return _message("Use /characters add, /characters list or /characters remove.")
        self.background(self._run(it, work))
        return JSONResponse({"type": DEFERRED_CHANNEL_MESSAGE, "data": {"flags": EPHEMERAL}})

    async def _run(self, it: Interaction, work: Callable[[Interaction, Path], Awaitable[str]]) -> None:
        try:
            with tempfile.TemporaryDirectory(
                prefix=scratch_name("mp-characters"), dir=scratch_root(self.settings.data_dir)
            ) as tmp:
                text = await work(it, Path(tmp))
        except MouthpieceError as exc:
            log.info("characters_refused", interaction_id=it.id, reason=exc.reason)
            text = _sentence(exc.reason)
        except Exception:
            log.exception("characters_failed", interaction_id=it.id)
            text = "Sorry, something went wrong on our side. Please try again later."
        await self.reply(it, text)

    async def _add(self, it: Interaction, folder: Path) -> str:
        image = it.attachment("image")
        if image is None:
            return "Attach the character's photo or video as the image option."
        name = characters.check_name(str(it.option("name") or ""))  # before downloading anything
        defaults = characters.defaults_from(voice=it.option("voice"), style=it.option("style"))
        got = await asyncio.to_thread(
            self.fetcher.download, image.url, folder, what="image", accept=FACE, name=image.filename
        )
        member = {"nick": it.member.nick if it.member else None, "user": it.caller.model_dump()}
        who = display_name(member) or it.caller.username or "someone"
        added = await asyncio.to_thread(
            characters.add_character, self.store, self.settings, self._library(it), name, got.path,
            shown=image.filename, added_by=f"{who} (discord:{it.caller.id})", defaults=defaults,
        )  # fmt: skip
        log.info("character_added_discord", guild_id=it.guild_id, character=added.name)
        return f"Added **{added.name}** to this server's characters. Use it with `/avatar character:{added.name}`."

    async def _list(self, it: Interaction, folder: Path) -> str:
        found = await asyncio.to_thread(
            characters.list_characters, self.store, self.settings, self._library(it)
        )
        return list_text(found)

    async def _remove(self, it: Interaction, folder: Path) -> str:
        gone = await asyncio.to_thread(
            characters.remove_character,
            self.store,
            self.settings,
            self._library(it),
            str(it.option("name") or ""),
        )
        return f"Removed **{gone.name}** from this server's characters (videos made with it stay)."

    def _library(self, it: Interaction) -> str:
        return characters.library_for_guild(it.guild_id)

    # --- character options of /avatar and /announce ----------------------------------------------------
    def pick(self, it: Interaction) -> Picked | None:
        """The characters the ``character`` option names (blocking: run in a thread); None without one."""
        wanted = it.option("character")
        if wanted is None or not str(wanted).strip():
            return None
        return characters.pick(self.store, self.settings, self._library(it), str(wanted).strip())


def list_text(found: list[Character]) -> str:
    """The library as a message (within Discord's 2,000 characters)."""
    if not found:
        return "This server has no characters yet: add one with `/characters add name:<name> image:<file>`."
    lines = [
        f"**{len(found)} character{'s' if len(found) != 1 else ''}** (use one with `/avatar character:<name>`):"
    ]
    for index, c in enumerate(found):
        extra = ", ".join(f"{k} {v}" for k, v in c.defaults.model_dump(exclude_none=True).items())
        who = c.added_by.split(" (discord:")[0] or "someone"
        line = f"• **{c.name}** — {c.kind}, added by {who} on {c.added_at:%Y-%m-%d}" + (
            f" ({extra})" if extra else ""
        )
        if len("\n".join([*lines, line])) > MESSAGE_LIMIT - 40:
            lines.append(f"…and {len(found) - index} more.")
            break
        lines.append(line)
    return "\n".join(lines)


def _message(text: str) -> Response:
    return JSONResponse({"type": CHANNEL_MESSAGE, "data": {"content": text, "flags": EPHEMERAL}})


def _sentence(reason: str) -> str:
    return reason[:1].upper() + reason[1:]
