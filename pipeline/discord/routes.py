"""Discord's endpoints of the HTTP ingress: the Interactions Endpoint and the gateway relay's hook.

    POST /discord/interactions   Ed25519-verified interactions: PING → PONG; /avatar, /announce and
                                 /characters are answered "deferred" at once, and the work (downloads,
                                 submission) runs in the background; the pipeline edits the reply with
                                 progress and the video; character options are autocompleted
                                 (``pipeline.discord.library``)
    POST /hooks/bot              bearer token; relay events ``upload`` and ``member_join``

An interaction is handled once: its id is remembered for 15 minutes, and its job folder is derived from
the id (``Submission(nonce=...)`` with content that is the same on every delivery), so a delivery this
process did not see still maps to the same job. Tokens and webhook URLs are never logged.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline import characters
from pipeline.bus import Bus
from pipeline.config import Settings
from pipeline.contracts import (
    Destination,
    DiscordInteractionDestination,
    DiscordWebhookDestination,
    JobOptions,
    Style,
)
from pipeline.discord import fairness
from pipeline.discord.api import DiscordApi
from pipeline.discord.fetch import Downloaded, Fetcher, Kind
from pipeline.discord.interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    CDN,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    EPHEMERAL,
    PING,
    PONG,
    Interaction,
    avatar_url,
    can_announce,
    parse_interaction,
)
from pipeline.discord.library import CharacterRoutes
from pipeline.discord.mentions import display_name, named_mentions
from pipeline.discord.signature import SignatureError, verify
from pipeline.errors import ConfigError, InvalidInput, MouthpieceError, RetryableError
from pipeline.httputil import bearer_ok, error_response, first_error, json_object, read_body
from pipeline.keys import DEFAULT_LIBRARY
from pipeline.logs import REDACTOR
from pipeline.owner import scratch_name, scratch_root
from pipeline.storage.base import ObjectStore
from pipeline.submit import Submission, Submitted, submit
from pipeline.webhooks import allowed_webhook

log = structlog.get_logger("mouthpiece.discord.routes")

SEEN_SECONDS = 15 * 60
VOICE = frozenset({Kind.audio, Kind.video})
FACE = frozenset({Kind.image, Kind.video})
ANY_MEDIA = frozenset(Kind)
TRANSCRIPT_LIMIT = 20_000


# --- relay events --------------------------------------------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RelayAttachment(_Event):
    url: str
    filename: str = Field("file", max_length=200)


class UploadEvent(_Event):
    """A message with attachments in a watched channel; the video goes to that channel's webhook."""

    type: Literal["upload"]
    id: str | None = Field(None, max_length=40, description="the message id (makes retries idempotent)")
    attachments: list[RelayAttachment] = Field(min_length=1, max_length=10)
    webhook_url: SecretStr
    guild: str | None = Field(None, max_length=100)
    text: str | None = Field(None, max_length=2000, description="transcript (the message text)")


class MemberJoinEvent(_Event):
    """A member joined a server; a welcome video goes to the welcome webhook."""

    type: Literal["member_join"]
    id: str | None = Field(None, max_length=40, description="the member id (makes retries idempotent)")
    guild: str = Field(max_length=100)
    member: str = Field(max_length=100)
    guild_id: str | None = Field(None, max_length=25, description="the server's id (its character library)")
    avatar_url: str | None = None
    webhook_url: SecretStr | None = None


class BotEvent(BaseModel):
    event: Annotated[UploadEvent | MemberJoinEvent, Field(discriminator="type")]


# --- the routes ------------------------------------------------------------------------------------


class DiscordRoutes:
    """``POST /discord/interactions`` (and, in ``relay``, the relay's hook): dependencies, interactions
    seen, background work in flight."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        bus: Bus,
        api: DiscordApi,
        fetcher: Fetcher,
        *,
        cdn_base: str = CDN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.api = api
        self.fetcher = fetcher
        self.cdn_base = cdn_base
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.relay = RelayRoutes(settings, store, fetcher)
        self.library = CharacterRoutes(settings, store, fetcher, self._reply, self._background)

    async def idle(self) -> None:
        """Wait until the background work of every interaction so far has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def first_delivery(self, interaction_id: str) -> bool:
        """True the first time an interaction id is seen (within 15 minutes); remembers it."""
        now = time.monotonic()
        if len(self._seen) > 10_000:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
        if self._seen.get(interaction_id, 0.0) > now:
            return False
        self._seen[interaction_id] = now + SEEN_SECONDS
        return True

    async def interactions(self, request: Request) -> Response:
        public_key = self.settings.discord_public_key
        if not public_key:
            return error_response(503, "Discord is not configured (MOUTHPIECE_DISCORD_PUBLIC_KEY)")
        body = await read_body(request)
        if body is None:
            return error_response(413, "request body too large")
        try:
            verify(
                public_key,
                request.headers.get("x-signature-ed25519"),
                request.headers.get("x-signature-timestamp"),
                body,
                now=self.clock(),
            )
        except SignatureError as exc:
            log.info("interaction_refused", why=str(exc))
            return error_response(401, "invalid request signature")
        try:
            interaction = parse_interaction(body)
        except InvalidInput as exc:
            return error_response(400, exc.reason)
        if interaction.type == PING:
            return JSONResponse({"type": PONG})
        if interaction.type == AUTOCOMPLETE and interaction.data is not None:
            return await self.library.autocomplete(interaction)
        if interaction.type != APPLICATION_COMMAND or interaction.data is None:
            return error_response(400, "unsupported interaction type")
        REDACTOR.add(interaction.token)
        return self._command(interaction)

    def _command(self, it: Interaction) -> Response:
        name = it.data.name if it.data else ""
        flags = EPHEMERAL if name in ("announce", "characters") else 0
        if not self.first_delivery(it.id):
            log.info("interaction_duplicate", interaction_id=it.id, command=name)
            return _deferred(flags)
        log.info("interaction_received", interaction_id=it.id, command=name, guild_id=it.guild_id)
        if name == "avatar":
            self._background(self._run(it, self._avatar_job))
            return _deferred(flags)
        if name == "characters":
            return self.library.command(it)
        if name == "announce":
            refusal = self._announce_refusal(it)
            if refusal:
                return _message(refusal)
            self._background(self._run(it, self._announce_job))
            return _deferred(flags)
        return _message(f"I do not know the command /{name}.")

    def _announce_refusal(self, it: Interaction) -> str | None:
        if not can_announce(it, self.settings.discord_announce_roles):
            return "Only members with the Manage Server permission or an announcer role can use /announce."
        if self.settings.discord_announce_webhook is None:
            return "Announcements are not set up yet (the announcement channel's webhook is missing)."
        return None

    async def _run(self, it: Interaction, job: Callable[[Interaction, Path], Awaitable[Submitted]]) -> None:
        """Run an interaction's background work; any failure edits the reply with the reason."""
        try:
            with tempfile.TemporaryDirectory(
                prefix=scratch_name("mp-discord"), dir=scratch_root(self.settings.data_dir)
            ) as tmp:
                submitted = await job(it, Path(tmp))
            log.info("interaction_submitted", interaction_id=it.id, job_id=submitted.job_id)
        except MouthpieceError as exc:
            log.info("interaction_refused_input", interaction_id=it.id, reason=exc.reason)
            await self._reply(it, _sentence(exc.reason))
        except Exception:
            log.exception("interaction_failed", interaction_id=it.id)
            await self._reply(it, "Sorry, something went wrong on our side. Please try again later.")

    async def _reply(self, it: Interaction, text: str) -> None:
        try:
            await asyncio.to_thread(self.api.edit_original, it.application_id, it.token, text)
        except MouthpieceError as exc:
            log.warning("interaction_reply_failed", interaction_id=it.id, reason=exc.reason)

    def _destination(self, it: Interaction) -> DiscordInteractionDestination:
        # created_at comes from the interaction id, so a redelivery writes a byte-identical spec (same job)
        return DiscordInteractionDestination(
            application_id=it.application_id,
            token=SecretStr(it.token),
            created_at=it.created_at,
            attachment_size_limit=it.attachment_size_limit,
            fallback_webhook=self.settings.discord_fallback_webhook,
        )

    async def _avatar_job(self, it: Interaction, folder: Path) -> Submitted:
        audio_info = it.attachment("audio")
        if audio_info is None:
            raise InvalidInput(
                "Attach a voice clip as the audio option: send .mp3, .wav, .ogg, .m4a or .flac"
            )
        await asyncio.to_thread(self._check_member, it)
        picked = await asyncio.to_thread(self.library.pick, it)  # a name not in the library: refused now
        audio = await fetch(
            self.fetcher, audio_info.url, folder / "audio", "audio", VOICE, audio_info.filename
        )
        face_info = it.attachment("avatar")
        labels = {audio.path: audio_info.filename}
        faces: tuple[Path, ...] = ()
        if face_info is not None:
            face = await fetch(
                self.fetcher, face_info.url, folder / "avatar", "avatar", FACE, face_info.filename
            )
            labels[face.path], faces = face_info.filename, (face.path,)
        elif picked is None:
            url = avatar_url(it.caller).replace(CDN, self.cdn_base.rstrip("/"), 1)
            face = await fetch(self.fetcher, url, folder / "avatar", "profile picture", FACE, "profile")
            labels[face.path], faces = "your profile picture", (face.path,)
        options = _options(it.option("style"), it.option("text"))
        names = tuple(c.name for c in picked.characters) if picked else ()
        await self._reply(
            it, _queued_text(len(faces) + len(names), picked, self.settings.character_batch_limit)
        )
        asked = Submission(
            audio=audio.path, avatars=faces, name=audio.path.stem, options=options,
            destinations=(self._destination(it),), source=f"discord:{it.guild_id or 'dm'}",
            nonce=f"discord-{it.id}", labels=labels, characters=names,
            library=characters.library_for_guild(it.guild_id) if names else None,
        )  # fmt: skip
        submitted = await asyncio.to_thread(submit, self.store, self.settings, asked)
        await asyncio.to_thread(self._remember, it, submitted.job_id)
        return submitted

    def _check_member(self, it: Interaction) -> None:
        fairness.check_member(self.store, self.settings, it.guild_id or "dm", it.caller.id)

    def _remember(self, it: Interaction, job_id: str) -> None:
        fairness.remember(self.store, self.settings, it.guild_id or "dm", it.caller.id, job_id)

    async def _announce_job(self, it: Interaction, folder: Path) -> Submitted:
        text = await asyncio.to_thread(self._named_mentions, it, _speech_text(it.option("text")))
        options = _voice_options(it.option("voice"))
        avatars: list[Path] = []
        picked = await asyncio.to_thread(self.library.pick, it)
        if picked is not None and len(picked.characters) != 1:
            raise InvalidInput("An announcement is read by one character: name one, not all.")
        names = tuple(c.name for c in picked.characters) if picked else ()
        face_info = it.attachment("avatar")
        if face_info is not None and not names:
            face = await fetch(
                self.fetcher, face_info.url, folder / "avatar", "avatar", FACE, face_info.filename
            )
            avatars.append(face.path)
        assert self.settings.discord_announce_webhook is not None  # checked before deferring
        destinations: list[Destination] = [
            DiscordWebhookDestination(url=self.settings.discord_announce_webhook),
            self._destination(it),
        ]
        await self._reply(it, "Got it: your announcement is queued…")
        asked = Submission(
            audio=None, avatars=tuple(avatars), name="announcement", speech=text, options=options,
            destinations=tuple(destinations), source=f"discord:{it.guild_id or 'dm'}", nonce=f"discord-{it.id}",
            characters=names, library=characters.library_for_guild(it.guild_id) if names else None,
        )  # fmt: skip
        return await asyncio.to_thread(submit, self.store, self.settings, asked)

    def _named_mentions(self, it: Interaction, text: str) -> str:
        """Mentions in an announcement as names (looked up with the bot token when one is set)."""
        token = self.settings.discord_bot_token
        caller = display_name({"nick": it.member.nick if it.member else None, "user": it.caller.model_dump()})
        known = {it.caller.id: caller} if caller else {}
        secret = token.get_secret_value() if token is not None else None
        return named_mentions(text, self.api, secret, it.guild_id, known)


class RelayRoutes:
    """``POST /hooks/bot``: the gateway relay's events (uploads in watched channels, members joining)."""

    def __init__(self, settings: Settings, store: ObjectStore, fetcher: Fetcher) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher

    async def hooks_bot(self, request: Request) -> Response:
        token = self.settings.ingress_token
        if token is None:
            return error_response(503, "the relay hook is not configured (MOUTHPIECE_INGRESS_TOKEN)")
        if not bearer_ok(request.headers.get("authorization"), token.get_secret_value()):
            return error_response(401, "missing or wrong bearer token")
        body = await read_body(request)
        if body is None:
            return error_response(413, "request body too large")
        try:
            event = BotEvent.model_validate({"event": json_object(body)}).event
        except (ValidationError, ValueError) as exc:
            return error_response(400, f"not a relay event: {first_error(exc)}")
        try:
            with tempfile.TemporaryDirectory(
                prefix=scratch_name("mp-relay"), dir=scratch_root(self.settings.data_dir)
            ) as tmp:
                if isinstance(event, UploadEvent):
                    submitted = await self._upload_job(event, Path(tmp))
                else:
                    submitted = await self._welcome_job(event, Path(tmp))
        except RetryableError as exc:
            return error_response(503, exc.reason)
        except MouthpieceError as exc:
            return error_response(422, _sentence(exc.reason))
        log.info("relay_submitted", kind=event.type, job_id=submitted.job_id)
        return JSONResponse({"job_id": submitted.job_id}, status_code=202)

    async def _upload_job(self, event: UploadEvent, folder: Path) -> Submitted:
        webhook = self._webhook_url(event.webhook_url)
        files = [
            await fetch(self.fetcher, a.url, folder / str(i), "attachment", ANY_MEDIA, a.filename)
            for i, a in enumerate(event.attachments)
        ]
        labels = {f.path: a.filename for f, a in zip(files, event.attachments, strict=True)}
        voice = next((f for f in files if f.kind == Kind.audio), None) or next(
            (f for f in files if f.kind == Kind.video), None
        )
        if voice is None:
            raise InvalidInput("That file is not audio: send .mp3, .wav, .ogg, .m4a or .flac")
        faces = [f.path for f in files if f is not voice]
        asked = Submission(
            audio=voice.path, avatars=tuple(faces), name=voice.path.stem, options=_options(None, event.text),
            destinations=(DiscordWebhookDestination(url=webhook),), source=f"discord:{event.guild or 'relay'}",
            nonce=f"relay-{event.id or time.time()}", labels=labels,
        )  # fmt: skip
        return await asyncio.to_thread(submit, self.store, self.settings, asked)

    async def _welcome_job(self, event: MemberJoinEvent, folder: Path) -> Submitted:
        webhook = (
            self._webhook_url(event.webhook_url)
            if event.webhook_url
            else self.settings.discord_welcome_webhook
        )
        if webhook is None:
            raise ConfigError("no welcome webhook is configured (MOUTHPIECE_DISCORD_WELCOME_WEBHOOK)")
        text = _welcome_text(self.settings.discord_welcome_text, event.guild, event.member)
        library = await asyncio.to_thread(self._welcome_library, event)
        welcome_faces = library is None and self._has_welcome_face(event)
        avatars = [await self._welcome_face(event, folder)] if welcome_faces else []
        character = self.settings.discord_welcome_character
        asked = Submission(
            audio=None, avatars=tuple(avatars), name="welcome", speech=text,
            options=_voice_options(self.settings.discord_welcome_voice),
            destinations=(DiscordWebhookDestination(url=webhook, content=text),),
            source=f"discord:{event.guild}", nonce=f"join-{event.id or time.time()}",
            characters=(character,) if library and character else (), library=library,
        )  # fmt: skip
        return await asyncio.to_thread(submit, self.store, self.settings, asked)

    def _welcome_library(self, event: MemberJoinEvent) -> str | None:
        """The library holding ``discord_welcome_character`` (the server's, else the default one); None
        when no welcome character is set. ``ConfigError`` when neither library has it."""
        name = self.settings.discord_welcome_character
        if not name:
            return None
        for library in dict.fromkeys([characters.library_for_guild(event.guild_id), DEFAULT_LIBRARY]):
            if characters.find_character(self.store, self.settings, library, name) is not None:
                return library
        raise ConfigError(f"the welcome character {name!r} is not in the server's or the default library")

    def _has_welcome_face(self, event: MemberJoinEvent) -> bool:
        return self.settings.discord_welcome_avatar is not None or bool(event.avatar_url)

    async def _welcome_face(self, event: MemberJoinEvent, folder: Path) -> Path:
        """The configured welcome avatar, else the member's own picture."""
        configured = self.settings.discord_welcome_avatar
        if configured is not None:
            if not configured.is_file():
                raise ConfigError(f"the welcome avatar {configured} does not exist")
            return configured
        assert event.avatar_url is not None
        return (await fetch(self.fetcher, event.avatar_url, folder, "profile picture", FACE, "member")).path

    def _webhook_url(self, url: SecretStr) -> SecretStr:
        """``url`` if this deployment may post to it (``pipeline.webhooks.allowed_webhook``, the same
        check validate applies to every job spec); else InvalidInput."""
        REDACTOR.add(url.get_secret_value())
        allowed_webhook(self.settings, url, "webhook_url")
        return url


async def fetch(
    fetcher: Fetcher, url: str, folder: Path, what: str, accept: frozenset[Kind], name: str
) -> Downloaded:
    """Download ``url`` into ``folder`` (allow-listed, capped, sniffed; see ``pipeline.discord.fetch``)."""
    return await asyncio.to_thread(fetcher.download, url, folder, what=what, accept=accept, name=name)


def _queued_text(videos: int, picked: characters.Picked | None, limit: int) -> str:
    """The first reply: what is queued, and whether a whole-library batch was capped."""
    text = (
        "Got it: your video is queued…"
        if videos == 1
        else f"Got it: {videos} videos are queued, one per character…"
    )
    note = picked.cap_note(limit) if picked else None
    return f"{text}\n{note}" if note else text


def _deferred(flags: int) -> Response:
    data = {"flags": flags} if flags else None
    return JSONResponse({"type": DEFERRED_CHANNEL_MESSAGE, **({"data": data} if data else {})})


def _message(text: str) -> Response:
    return JSONResponse({"type": CHANNEL_MESSAGE, "data": {"content": text, "flags": EPHEMERAL}})


def _sentence(reason: str) -> str:
    return reason[:1].upper() + reason[1:]


def _options(style: Any, transcript: Any) -> JobOptions:
    """Job options from a command's or a message's words; refusals are sentences for the member."""
    text = str(transcript).strip() if transcript else ""
    if len(text) > TRANSCRIPT_LIMIT:
        raise InvalidInput(
            f"The text is {len(text)} characters long; the limit is {TRANSCRIPT_LIMIT}: send a shorter one.",
            code="transcript_too_long",
        )
    if style and str(style) not in {s.value for s in Style}:
        raise InvalidInput("The style must be auto, photo or cartoon.", code="style_invalid")
    return JobOptions(style=Style(style) if style else Style.auto, transcript=text or None)


def _voice_options(voice: Any) -> JobOptions:
    """Options of a speech job: the voice asked for (checked against the installed ones in validate)."""
    try:
        return JobOptions(voice=str(voice).strip() or None if voice else None)
    except ValidationError:
        raise InvalidInput("The voice name may use only letters, digits, '-', '_' and '.'.") from None


def _speech_text(text: Any) -> str:
    cleaned = " ".join(str(text or "").split())
    if not cleaned:
        raise InvalidInput("Give the text to read aloud.")
    if len(cleaned) > 2000:
        raise InvalidInput("The text is too long: at most 2000 characters.")
    return cleaned


def _welcome_text(template: str, guild: str, member: str) -> str:
    clean = {"guild": " ".join(guild.split()), "name": " ".join(member.split())}
    try:
        return _speech_text(template.format_map(clean))
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(f"discord_welcome_text may use only {{guild}} and {{name}} ({exc})") from None
