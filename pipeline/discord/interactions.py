"""Reading interaction payloads: which command, its options and attachments, and who called it.

Only the fields mouthpiece uses are modelled (pydantic, unknown fields ignored); a payload that lacks
them raises ``InvalidInput``. Interaction types: 1 PING, 2 APPLICATION_COMMAND, 4 AUTOCOMPLETE (a member
typing an option marked ``autocomplete``; answered with type 8 and up to 25 choices). A command with
subcommands (``/characters add``) carries them as its one option of type 1 with options of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import InvalidInput

PING = 1
APPLICATION_COMMAND = 2
AUTOCOMPLETE = 4
PONG = 1
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
AUTOCOMPLETE_RESULT = 8
SUB_COMMAND = 1
EPHEMERAL = 1 << 6
MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
DISCORD_EPOCH_MS = 1_420_070_400_000
CDN = "https://cdn.discordapp.com"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class User(_Loose):
    id: str
    username: str = ""
    global_name: str | None = None
    avatar: str | None = None
    discriminator: str = "0"


class Member(_Loose):
    user: User | None = None
    nick: str | None = None
    roles: list[str] = Field(default_factory=list)
    permissions: str = "0"
    avatar: str | None = None


class AttachmentInfo(_Loose):
    id: str
    filename: str
    url: str
    size: int = 0
    content_type: str | None = None


class Option(_Loose):
    name: str
    type: int
    value: Any = None
    focused: bool = False
    options: list[Option] = Field(default_factory=list)


class Resolved(_Loose):
    attachments: dict[str, AttachmentInfo] = Field(default_factory=dict)


class CommandData(_Loose):
    name: str
    options: list[Option] = Field(default_factory=list)
    resolved: Resolved = Field(default_factory=Resolved)


class Interaction(_Loose):
    """An interaction as Discord posts it to the endpoint URL."""

    id: str
    application_id: str
    type: int
    token: str = ""
    data: CommandData | None = None
    guild_id: str | None = None
    channel_id: str | None = None
    member: Member | None = None
    user: User | None = None
    attachment_size_limit: int | None = None

    # --- derived views ---------------------------------------------------------------------------------
    @property
    def caller(self) -> User:
        """The user who ran the command (``member.user`` in a server, ``user`` in a DM)."""
        user = self.member.user if self.member and self.member.user else self.user
        if user is None:
            raise InvalidInput("the interaction has no user")
        return user

    @property
    def created_at(self) -> datetime:
        return snowflake_time(self.id)

    @property
    def subcommand(self) -> str | None:
        """The subcommand used (``add`` of ``/characters add``), or None."""
        options = self.data.options if self.data else []
        return options[0].name if len(options) == 1 and options[0].type == SUB_COMMAND else None

    def _options(self) -> list[Option]:
        options = self.data.options if self.data else []
        return options[0].options if self.subcommand is not None else options

    def option(self, name: str) -> Any:
        """The value of option ``name`` (of the subcommand, if one was used), or None when not given."""
        for option in self._options():
            if option.name == name:
                return option.value
        return None

    def focused(self) -> Option | None:
        """The option being typed (autocomplete), or None."""
        return next((o for o in self._options() if o.focused), None)

    def attachment(self, name: str) -> AttachmentInfo | None:
        """The attachment given for option ``name`` (resolved from ``data.resolved.attachments``)."""
        attachment_id = self.option(name)
        if attachment_id is None or self.data is None:
            return None
        found = self.data.resolved.attachments.get(str(attachment_id))
        if found is None:
            raise InvalidInput(f"the {name} attachment is missing from the interaction")
        return found


def parse_interaction(payload: bytes) -> Interaction:
    """Decode a verified request body; ``InvalidInput`` if it is not an interaction."""
    try:
        return Interaction.model_validate_json(payload)
    except ValidationError as exc:
        raise InvalidInput(f"not an interaction: {exc.errors()[0]['msg']}") from exc


def snowflake_time(snowflake: str) -> datetime:
    """When a Discord id was made (ids embed milliseconds since 2015-01-01)."""
    try:
        ms = (int(snowflake) >> 22) + DISCORD_EPOCH_MS
    except ValueError:
        raise InvalidInput(f"{snowflake!r} is not a Discord id") from None
    return datetime.fromtimestamp(ms / 1000, UTC)


def can_announce(interaction: Interaction, announce_roles: list[str]) -> bool:
    """Members with Manage Server (or Administrator), or with one of ``announce_roles``, may /announce."""
    return manages_or_has_role(interaction, announce_roles)


def manages_or_has_role(interaction: Interaction, roles: list[str]) -> bool:
    """Whether the caller, in a server, has Manage Server (or Administrator) or one of ``roles``."""
    member = interaction.member
    if member is None:  # a DM: no server, no announcement channel
        return False
    try:
        permissions = int(member.permissions)
    except ValueError:
        permissions = 0
    if permissions & (MANAGE_GUILD | ADMINISTRATOR):
        return True
    return bool(set(member.roles) & set(roles))


def avatar_url(user: User, size: int = 512) -> str:
    """The user's profile picture as a PNG on Discord's CDN; the default avatar when they have none."""
    if user.avatar:
        return f"{CDN}/avatars/{user.id}/{user.avatar}.png?size={size}"
    return f"{CDN}/embed/avatars/{default_avatar_index(user)}.png"


def default_avatar_index(user: User) -> int:
    """Discord's default-avatar choice: (id >> 22) % 6, or discriminator % 5 for legacy usernames."""
    if user.discriminator.isdigit() and int(user.discriminator) != 0:
        return int(user.discriminator) % 5
    return (int(user.id) >> 22) % 6 if user.id.isdigit() else 0


def display_name(interaction: Interaction) -> str:
    """How the caller appears in the server: nickname, else global name, else username."""
    user = interaction.caller
    nick = interaction.member.nick if interaction.member else None
    return nick or user.global_name or user.username or "someone"
