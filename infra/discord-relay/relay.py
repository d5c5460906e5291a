"""mouthpiece gateway relay: forwards Discord Gateway events to the ingress's ``POST /hooks/bot``.

Member joins exist only on Discord's Gateway (not on the Interactions Endpoint), so this small
discord.py 2.x bot listens for them, and for messages with attachments in chosen channels, and hands
them to mouthpiece:

- ``on_member_join`` → ``{"type": "member_join", "id", "guild", "guild_id", "member", "avatar_url"}``: a welcome video
  on the welcome channel's webhook (configured on the ingress);
- a message with attachments in a channel listed in ``RELAY_CHANNELS`` → ``{"type": "upload", "id",
  "guild", "webhook_url", "text", "attachments": [{"url", "filename"}]}``: a video on that channel's
  webhook; a refusal (HTTP 422) is answered in the channel.

Optional and off by default: nothing in mouthpiece imports or starts it. Needs ``pip install
"discord.py>=2.3"`` and, in the Developer Portal (Bot page), the privileged intents SERVER MEMBERS and
MESSAGE CONTENT. Configuration (environment):

    RELAY_BOT_TOKEN         the bot's token
    MOUTHPIECE_INGRESS_URL  where the ingress listens, e.g. http://127.0.0.1:8080
    MOUTHPIECE_INGRESS_TOKEN  the ingress's bearer token (same value as on the ingress)
    RELAY_CHANNELS          JSON object {"<channel id>": "<webhook URL>"}; empty: no uploads
    RELAY_WELCOME           "1" (default) to forward member joins, "0" not to

Tokens and webhook URLs are never printed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord

log = logging.getLogger("mouthpiece.relay")
MAX_ATTACHMENTS = 10


@dataclass(frozen=True)
class Config:
    bot_token: str
    ingress_url: str
    ingress_token: str
    channels: dict[int, str]
    welcome: bool

    @classmethod
    def from_env(cls) -> Config:
        """Read the environment; exits with a message naming what is missing."""
        missing = [
            n
            for n in ("RELAY_BOT_TOKEN", "MOUTHPIECE_INGRESS_URL", "MOUTHPIECE_INGRESS_TOKEN")
            if not os.environ.get(n)
        ]
        if missing:
            sys.exit(f"relay: set {', '.join(missing)}")
        try:
            channels = {
                int(k): str(v) for k, v in json.loads(os.environ.get("RELAY_CHANNELS") or "{}").items()
            }
        except (ValueError, AttributeError):
            sys.exit('relay: RELAY_CHANNELS must be a JSON object {"<channel id>": "<webhook URL>"}')
        return cls(
            bot_token=os.environ["RELAY_BOT_TOKEN"],
            ingress_url=os.environ["MOUTHPIECE_INGRESS_URL"].rstrip("/"),
            ingress_token=os.environ["MOUTHPIECE_INGRESS_TOKEN"],
            channels=channels,
            welcome=os.environ.get("RELAY_WELCOME", "1") != "0",
        )


def intents() -> discord.Intents:
    """Guild member events (privileged: SERVER MEMBERS) and message attachments (privileged: MESSAGE CONTENT)."""
    wanted = discord.Intents.default()
    wanted.members = True
    wanted.message_content = True
    return wanted


class Relay(discord.Client):
    """The relay bot: one HTTP session to the ingress, two event handlers."""

    def __init__(self, config: Config) -> None:
        super().__init__(intents=intents())
        self.config = config
        self.session: aiohttp.ClientSession | None = None

    async def setup_hook(self) -> None:
        # the ingress downloads attachments before answering: allow it time
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await super().close()

    async def on_ready(self) -> None:
        log.info("relay connected as %s; watching %d channel(s)", self.user, len(self.config.channels))

    async def on_member_join(self, member: discord.Member) -> None:
        if not self.config.welcome or member.bot:
            return
        event = {
            "type": "member_join",
            "id": str(member.id),
            "guild": member.guild.name,
            "guild_id": str(member.guild.id),  # the server's character library (welcome character)
            "member": member.display_name,
            "avatar_url": member.display_avatar.with_format("png").with_size(512).url,
        }
        status, _ = await self.forward(event)
        log.info("member_join forwarded (guild %s): HTTP %s", member.guild.id, status)

    async def on_message(self, message: discord.Message) -> None:
        webhook = self.config.channels.get(message.channel.id)
        if webhook is None or message.author.bot or not message.attachments:
            return
        event = {
            "type": "upload",
            "id": str(message.id),
            "guild": message.guild.name if message.guild else None,
            "webhook_url": webhook,
            "text": message.content or None,
            "attachments": [
                {"url": a.url, "filename": a.filename} for a in message.attachments[:MAX_ATTACHMENTS]
            ],
        }
        status, answer = await self.forward(event)
        log.info("upload forwarded (channel %s): HTTP %s", message.channel.id, status)
        if status == 422 and isinstance(answer, dict) and answer.get("error"):
            await message.reply(str(answer["error"])[:1900], mention_author=False)

    async def forward(self, event: dict[str, Any]) -> tuple[int, Any]:
        """POST an event to the ingress; (status, JSON answer). Network errors are logged, not raised."""
        assert self.session is not None, "setup_hook has not run"
        headers = {"Authorization": f"Bearer {self.config.ingress_token}"}
        try:
            async with self.session.post(
                f"{self.config.ingress_url}/hooks/bot", json=event, headers=headers
            ) as response:
                answer = await response.json(content_type=None)
                return response.status, answer
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning("the ingress could not be reached: %s", type(exc).__name__)
            return 0, None


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    Relay(config).run(config.bot_token, log_handler=None)


if __name__ == "__main__":
    main()
