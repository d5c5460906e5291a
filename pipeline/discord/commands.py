"""The slash commands mouthpiece answers, and ``register`` to put them to Discord.

``/avatar audio:<file> [avatar:<file>] [style:<choice>] [text:<transcript>]`` makes a talking-avatar
video of the caller's voice clip; ``/announce text:<...> [avatar:<file>] [voice:<name>]`` has an avatar
read a text into the announcement channel (members with Manage Server or an announcer role).
"""

from __future__ import annotations

from typing import Any

from pipeline.config import Settings
from pipeline.contracts import Style
from pipeline.discord.api import DiscordApi
from pipeline.errors import ConfigError

# application command option types (Discord API v10)
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
    ],
}  # fmt: skip

COMMANDS: list[dict[str, Any]] = [AVATAR_COMMAND, ANNOUNCE_COMMAND]


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
