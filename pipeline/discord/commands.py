"""The slash commands mouthpiece answers, and ``register`` to put them to Discord.

``/avatar audio:<file> [avatar:<file>] [character:<name>] [style:<choice>] [text:<transcript>]`` makes a
talking-avatar video of the caller's voice clip (``character:all``: one per character of the server's
library); ``/announce text:<...> [avatar:<file>] [character:<name>] [voice:<name>]`` has an avatar read a
text into the announcement channel (members with Manage Server or an announcer role); ``/characters add
name:<...> image:<file> [voice:<name>] [style:<choice>]``, ``list`` and ``remove name:<...>`` keep the
server's character library (add and remove: Manage Server or a character role). Character options are
filled in as the member types (autocomplete).
"""

from __future__ import annotations

from typing import Any

from pipeline.config import Settings
from pipeline.contracts import Style
from pipeline.discord.api import DiscordApi
from pipeline.errors import ConfigError

# application command option types (Discord API v10)
SUB_COMMAND = 1
STRING = 3
ATTACHMENT = 11
CHAT_INPUT = 1
GUILD_CONTEXT = 0  # interaction context: in a server


def _attachment(name: str, description: str, required: bool, file_types: list[str]) -> dict[str, Any]:
    return {
        "type": ATTACHMENT,
        "name": name,
        "description": description,
        "required": required,
        "file_types": file_types,  # a hint for the client's file picker; the server still sniffs content
    }


def _string(name: str, description: str, required: bool, **extra: Any) -> dict[str, Any]:
    return {"type": STRING, "name": name, "description": description, "required": required, **extra}


AVATAR_COMMAND: dict[str, Any] = {
    "name": "avatar",
    "type": CHAT_INPUT,
    "description": "Turn your voice clip into a talking-avatar video",
    "contexts": [GUILD_CONTEXT],
    "options": [
        _attachment("audio", "Your voice clip (.mp3, .wav, .ogg, .m4a, .flac)", True, ["audio", "video"]),
        _attachment("avatar", "A photo or video of a face (default: your profile picture)", False, ["image", "video"]),
        _string(
            "style", "What kind of face the avatar has", False,
            choices=[{"name": s.value, "value": s.value} for s in Style],
        ),
        _string("text", "What the clip says (better lip-sync)", False, max_length=2000),
        _string("character", "A character of this server's library, or all of them", False, max_length=32, autocomplete=True),
    ],
}  # fmt: skip

ANNOUNCE_COMMAND: dict[str, Any] = {
    "name": "announce",
    "type": CHAT_INPUT,
    "description": "Have an avatar read an announcement into the announcement channel",
    "contexts": [GUILD_CONTEXT],
    "options": [
        _string("text", "What the avatar says", True, max_length=2000),
        _attachment("avatar", "A photo or video of a face (default: the server's avatar)", False, ["image", "video"]),
        _string("voice", "Voice to read with, e.g. en_US-joe-medium or de (default: the server's)", False, max_length=100),
        _string("character", "A character of this server's library reads it", False, max_length=32, autocomplete=True),
    ],
}  # fmt: skip


def _subcommand(name: str, description: str, options: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": SUB_COMMAND, "name": name, "description": description, "options": options}


CHARACTERS_COMMAND: dict[str, Any] = {
    "name": "characters",
    "type": CHAT_INPUT,
    "description": "This server's library of named characters",
    "contexts": [GUILD_CONTEXT],
    "options": [
        _subcommand("add", "Add a character (Manage Server or a character role)", [
            _string("name", "Its name (letters, digits, spaces, - and _)", True, max_length=32),
            _attachment("image", "A photo or video of its face", True, ["image", "video"]),
            _string("voice", "Voice for text it reads, e.g. en_US-joe-medium or de", False, max_length=100),
            _string("style", "What kind of face it has", False, choices=[{"name": s.value, "value": s.value} for s in Style]),
        ]),
        _subcommand("list", "List the characters", []),
        _subcommand("remove", "Remove a character (Manage Server or a character role)", [
            _string("name", "The character's name", True, max_length=32, autocomplete=True),
        ]),
    ],
}  # fmt: skip

COMMANDS: list[dict[str, Any]] = [AVATAR_COMMAND, ANNOUNCE_COMMAND, CHARACTERS_COMMAND]


def register(settings: Settings, api: DiscordApi | None = None) -> list[str]:
    """Replace the application's global slash commands with ``COMMANDS``; returns the names registered.

    Needs ``discord_application_id`` and ``discord_bot_token`` (``ConfigError`` otherwise, or when
    Discord refuses the token).
    """
    if not settings.discord_application_id or settings.discord_bot_token is None:
        raise ConfigError(
            "set MOUTHPIECE_DISCORD_APPLICATION_ID and MOUTHPIECE_DISCORD_BOT_TOKEN to register commands"
        )
    client = api or DiscordApi.from_settings(settings)
    try:
        answer = client.put_commands(
            settings.discord_application_id, settings.discord_bot_token.get_secret_value(), COMMANDS
        )
    finally:
        if api is None:
            client.close()
    if not isinstance(answer, list):
        return [c["name"] for c in COMMANDS]
    return [str(c.get("name")) for c in answer if isinstance(c, dict)]
