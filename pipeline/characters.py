"""Character libraries: named avatars a community keeps, used by name in every job.

A library is ``default`` (the CLI, the inbox, the console) or ``guild-<id>`` (one per Discord server). A
character is a record ``characters/<library>/<handle>.json`` (``pipeline.contracts.Character``) and its
picture or clip ``characters/<library>/<handle>/<file>`` in the inputs bucket (nothing there starts a
job). The media is written first and the record last, so a listed character always has its picture.

Names: 1 to ``NAME_LIMIT`` characters, letters (any script), digits, spaces, ``-``, ``_`` and ``'``,
starting with a letter or digit; ``all`` is reserved (``character:all``: the whole library). Two names
that differ only in case, spaces or dashes are the same character (``handle``). Media is checked as
every upload is: a regular file within ``max_input_bytes``, its first bytes an image or a video
(``sniff``), readable by ffmpeg with a picture no larger than ``max_input_side`` (a clip no longer than
``max_video_seconds``).

Job specs name characters as ``character:<name>`` among their ``avatars`` (``character:all`` for the
whole library, capped at ``character_batch_limit``); validate resolves them in the spec's ``library``
(``resolve``). A character's defaults (voice, renderer, style, motion) apply when it is the job's only
avatar, to the options the job left at their default value (``apply_defaults``).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import structlog
from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.contracts import Character, CharacterDefaults, JobOptions
from pipeline.errors import FFmpegError, InvalidInput
from pipeline.keys import (
    DEFAULT_LIBRARY,
    character_key,
    character_media_key,
    characters_prefix,
    check_library,
    slug,
)
from pipeline.media import looks_like, probe
from pipeline.media.sniff import IMAGE_HINT, Kind, sniff
from pipeline.storage.base import ObjectStore
from pipeline.submit import check_local_file, content_type_of, name_metadata

log = structlog.get_logger("mouthpiece.characters")

NAME_LIMIT = 32
PREFIX = "character:"
ALL = "all"
_PUNCTUATION = frozenset(" -_'")


@dataclass(frozen=True)
class Picked:
    """Characters a request names, and what was left out (``character:all`` over a capped library)."""

    characters: list[Character]
    left_out: int = 0

    def cap_note(self, limit: int) -> str | None:
        """The sentence that says a batch was capped, or None when nothing was left out."""
        if not self.left_out:
            return None
        total = len(self.characters) + self.left_out
        return (
            f"The library has {total} characters; one batch makes at most {limit} videos, so the first "
            f"{limit} (by name) were used and {self.left_out} left out."
        )


# --- names -------------------------------------------------------------------------------------------


def library_for_guild(guild_id: str | None) -> str:
    """The library of a Discord server (``guild-<id>``), or the default one outside a server."""
    if guild_id and guild_id.isdigit() and len(guild_id) <= 25:
        return f"guild-{guild_id}"
    return DEFAULT_LIBRARY


def check_name(name: str) -> str:
    """The name tidied (NFC, spaces collapsed) if it can name a character; else ``InvalidInput``."""
    cleaned = " ".join(unicodedata.normalize("NFC", str(name)).split())
    if not cleaned:
        raise InvalidInput("give the character a name", code="character_name_invalid")
    if len(cleaned) > NAME_LIMIT:
        raise InvalidInput(
            f"the name {cleaned[:40]!r} is {len(cleaned)} characters long; a character name has at most "
            f"{NAME_LIMIT}",
            code="character_name_invalid",
        )
    odd = sorted({c for c in cleaned if not (c.isalnum() or c in _PUNCTUATION)})
    if odd:
        shown = " ".join(repr(c) for c in odd[:5])
        raise InvalidInput(
            f"the name {cleaned!r} has characters a name cannot use ({shown}): use letters, digits, "
            "spaces, '-', '_' and '''",
            code="character_name_invalid",
        )
    if not cleaned[0].isalnum():
        raise InvalidInput(
            f"the name {cleaned!r} must start with a letter or a digit", code="character_name_invalid"
        )
    if handle(cleaned) == ALL:
        raise InvalidInput(
            "'all' is reserved (character:all means the whole library): choose another name",
            code="character_name_invalid",
        )
    return cleaned


def handle(name: str) -> str:
    """The key-safe form of a name: case folded, spaces and dashes alike (``Captain Hook`` and
    ``captain-hook`` are one character)."""
    folded = unicodedata.normalize("NFC", " ".join(str(name).split())).casefold()
    return slug(folded.replace(" ", "-").replace("'", ""), 60, fallback="character", letters="any")


# --- media -----------------------------------------------------------------------------------------------


def check_media(path: Path, settings: Settings, shown: str) -> str:
    """``image`` or ``video`` if ``path`` can be a character's picture or clip; else ``InvalidInput``
    naming it as ``shown``. The same checks as any upload: size, content sniffed, readable by ffmpeg."""
    check_local_file(path, settings, shown)
    with path.open("rb") as f:
        head = f.read(4096)
    sniffed = sniff(head)
    if sniffed is None or sniffed.kind not in (Kind.image, Kind.video):
        looks = looks_like(head)
        said = f" (it is {looks})" if looks else ""
        raise InvalidInput(f"{shown} is not an image or a video{said}: {IMAGE_HINT}", code="not_media")
    try:
        info = probe(path)
    except FFmpegError:
        raise InvalidInput(
            f"{shown} could not be read as an image or video (it may be damaged): {IMAGE_HINT}",
            code="avatar_unreadable",
        ) from None
    if not info.has_video or info.width <= 0 or info.height <= 0:
        raise InvalidInput(f"{shown} has no picture in it: {IMAGE_HINT}", code="avatar_not_visual")
    if max(info.width, info.height) > settings.max_input_side:
        raise InvalidInput(
            f"{shown} is {info.width}×{info.height} pixels; the limit is {settings.max_input_side} pixels "
            "a side: send a smaller picture",
            code="avatar_too_large",
        )
    if not info.still and info.duration > settings.max_video_seconds:
        raise InvalidInput(
            f"{shown} is a {info.duration:.0f} s video; the limit is {settings.max_video_seconds:.0f} s",
            code="video_too_long",
        )
    return "image" if info.still else "video"


# --- the library -----------------------------------------------------------------------------------------


def defaults_from(voice: str | None = None, **options: str | None) -> CharacterDefaults:
    """Character defaults from typed words; ``InvalidInput`` naming what cannot be used."""
    given = {k: v for k, v in {"voice": voice, **options}.items() if v}
    try:
        return CharacterDefaults(**given)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "an option"
        raise InvalidInput(
            f"the character's {field} cannot be {first.get('input')!r}", code="character_options_invalid"
        ) from None


def add_character(
    store: ObjectStore,
    settings: Settings,
    library: str,
    name: str,
    media: Path,
    *,
    shown: str | None = None,
    added_by: str = "",
    defaults: CharacterDefaults | None = None,
) -> Character:
    """Check and store a new character; ``InvalidInput`` for a bad or taken name, a full library, or a
    file that is not a usable picture or clip."""
    check_library(library)
    name = check_name(name)
    key = character_key(library, handle(name))
    existing = find_character(store, settings, library, name)
    if existing is not None:
        raise InvalidInput(
            f"a character named {existing.name!r} is already in the library (names are compared without "
            "case, spaces or dashes): remove it first or choose another name",
            code="character_exists",
        )
    if len(list_characters(store, settings, library)) >= settings.characters_per_library:
        raise InvalidInput(
            f"the library is full ({settings.characters_per_library} characters): remove one first",
            code="character_library_full",
        )
    shown = shown or media.name
    kind = check_media(media, settings, shown)
    sniffed = sniff(media.open("rb").read(64))
    ext = sniffed.ext if sniffed is not None else PurePosixPath(media.name).suffix.lower()
    media_key = character_media_key(library, handle(name), f"{kind}{ext}")
    store.put(
        settings.bucket_inputs, media_key, media, content_type=content_type_of(Path(f"x{ext}")),
        metadata=name_metadata(shown),
    )  # fmt: skip
    character = Character(
        name=name,
        library=library,
        media=media_key,
        media_name=shown[:200],
        kind="image" if kind == "image" else "video",
        defaults=defaults or CharacterDefaults(),
        added_by=added_by[:200],
        added_at=datetime.now(UTC),
    )
    store.put(
        settings.bucket_inputs,
        key,
        character.model_dump_json(indent=1).encode(),
        content_type="application/json",
    )
    log.info("character_added", library=library, character=name, kind=kind)
    return character


def list_characters(store: ObjectStore, settings: Settings, library: str) -> list[Character]:
    """The library's characters by name (case folded); unreadable records are skipped and logged."""
    found = []
    for info in store.list(settings.bucket_inputs, characters_prefix(library)):
        rest = info.key.removeprefix(characters_prefix(library))
        if "/" in rest or not rest.endswith(".json"):
            continue
        try:
            found.append(Character.model_validate_json(store.get(settings.bucket_inputs, info.key)))
        except ValidationError:
            log.warning("character_unreadable", key=info.key)
    return sorted(found, key=lambda c: c.name.casefold())


def find_character(store: ObjectStore, settings: Settings, library: str, name: str) -> Character | None:
    """The character named ``name`` (compared as ``handle``), or None."""
    key = character_key(library, handle(name))
    if store.stat(settings.bucket_inputs, key) is None:
        return None
    try:
        return Character.model_validate_json(store.get(settings.bucket_inputs, key))
    except ValidationError:
        log.warning("character_unreadable", key=key)
        return None


def get_character(store: ObjectStore, settings: Settings, library: str, name: str) -> Character:
    """The character named ``name``; ``InvalidInput`` listing a few names when there is none."""
    found = find_character(store, settings, library, name)
    if found is None:
        raise InvalidInput(unknown_sentence(store, settings, library, name), code="character_unknown")
    return found


def unknown_sentence(store: ObjectStore, settings: Settings, library: str, name: str) -> str:
    names = [c.name for c in list_characters(store, settings, library)]
    if not names:
        return f"there is no character {name!r}: the library is empty (add one first)"
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return f"there is no character {name!r} in the library; it has {shown}"


def remove_character(store: ObjectStore, settings: Settings, library: str, name: str) -> Character:
    """Delete a character (its record first: it stops being listed, then its media)."""
    character = get_character(store, settings, library, name)
    store.delete(settings.bucket_inputs, character_key(library, handle(character.name)))  # type: ignore[attr-defined]
    store.delete(settings.bucket_inputs, character.media)  # type: ignore[attr-defined]
    log.info("character_removed", library=library, character=character.name)
    return character


def pick(store: ObjectStore, settings: Settings, library: str, wanted: str) -> Picked:
    """The characters ``wanted`` names: one name, or ``all`` (the library by name, capped at
    ``character_batch_limit``; ``Picked.left_out`` says how many were not taken)."""
    if handle(wanted) == ALL:
        everyone = list_characters(store, settings, library)
        if not everyone:
            raise InvalidInput(
                "the character library is empty: add characters first", code="character_unknown"
            )
        limit = settings.character_batch_limit
        return Picked(everyone[:limit], max(0, len(everyone) - limit))
    return Picked([get_character(store, settings, library, wanted)])


def suggest(store: ObjectStore, settings: Settings, library: str, typed: str, limit: int = 25) -> list[str]:
    """Names for autocomplete: those starting with what was typed, then those containing it; ``all``
    first when it matches (Discord shows at most 25)."""
    typed_fold = typed.casefold().strip()
    names = [c.name for c in list_characters(store, settings, library)]
    starts = [n for n in names if n.casefold().startswith(typed_fold)]
    contains = [n for n in names if typed_fold in n.casefold() and n not in starts]
    found = starts + contains
    if names and ALL.startswith(typed_fold):
        found = [ALL, *found]
    return found[:limit]


def is_reference(avatar: str) -> bool:
    """Whether an avatar entry of a job spec names a character (``character:<name>``)."""
    return avatar.startswith(PREFIX)


def resolve(
    store: ObjectStore, settings: Settings, library: str | None, avatars: list[str]
) -> list[Character | str]:
    """A spec's avatars with ``character:<name>`` entries replaced by their characters (``character:all``
    by the capped library); other entries kept as they are."""
    return resolve_noted(store, settings, library, avatars)[0]


def resolve_noted(
    store: ObjectStore, settings: Settings, library: str | None, avatars: list[str]
) -> tuple[list[Character | str], list[str]]:
    """``resolve``, and the sentences people should read about it (a capped ``character:all``)."""
    out: list[Character | str] = []
    notes: list[str] = []
    for avatar in avatars:
        if is_reference(avatar):
            picked = pick(store, settings, library or DEFAULT_LIBRARY, avatar.removeprefix(PREFIX))
            out.extend(picked.characters)
            if (note := picked.cap_note(settings.character_batch_limit)) is not None:
                notes.append(note)
        else:
            out.append(avatar)
    return out, notes


def apply_defaults(options: JobOptions, character: Character) -> JobOptions:
    """``options`` with the character's defaults for the options the job left at their default value
    (every ingress writes all options into the spec, so "left at the default" is what unset means)."""
    chosen = {
        k: v
        for k, v in character.defaults.model_dump(exclude_none=True).items()
        if k in JobOptions.model_fields and getattr(options, k) == JobOptions.model_fields[k].default
    }
    return options.model_copy(update=chosen) if chosen else options
