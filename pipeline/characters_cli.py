"""``mouthpiece characters add|list|remove``: the character library from the command line.

The CLI, the inbox and the console share the ``default`` library; ``--library guild-<id>`` reaches a
Discord server's (an operator tidying it). Jobs name characters with ``render/submit --character NAME``
(repeatable; ``all`` for the whole library, capped at ``character_batch_limit``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline import characters
from pipeline.config import Settings
from pipeline.contracts import Character, CharacterDefaults, offered, option_values
from pipeline.keys import DEFAULT_LIBRARY
from pipeline.storage import ObjectStore, open_store

Add = Callable[[str, str, str], argparse.ArgumentParser]
Tasks = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], Add]


def add_parsers(add: Add, tasks_of: Tasks) -> None:
    """The ``characters`` command and its tasks (``add`` and ``tasks_of`` are the CLI's subcommand
    makers: every command gets the global options and a description)."""
    p = add(
        "characters",
        "manage the library of named characters (avatars jobs pick by name)",
        "The CLI, the inbox and the console share the default library; each Discord server has its own "
        "(--library guild-<id>). A job names a character with `--character NAME` (render, submit), "
        "`character:NAME` in a job spec, or `--character all` for every one (at most "
        "MOUTHPIECE_CHARACTER_BATCH_LIMIT).",
    )
    p.add_argument("--library", default=DEFAULT_LIBRARY, help="library id (default: default)")
    task = tasks_of(p.add_subparsers(dest="characters_command", required=True, metavar="TASK"))
    adding = task(
        "add",
        "add a character: a name and a photo or video of its face",
        "The picture is checked as every upload is (size, content, decodable, at most "
        "MOUTHPIECE_MAX_INPUT_SIDE pixels a side); the defaults apply to jobs whose only avatar it is.",
    )
    adding.add_argument("name", help="1-32 letters, digits, spaces, '-', '_' (not 'all')")
    adding.add_argument("media", type=Path, help="the character's photo or video")
    for name in CharacterDefaults.model_fields:  # a character's defaults are job options: same words
        use = offered("cli")[name]
        adding.add_argument(
            f"--{name}", choices=option_values(name), help=f"the character's default: {use.cli}"
        )
    adding.add_argument("--by", help="who adds it (default: your user name)")
    listing = task("list", "list the characters: name, kind, when and by whom added, defaults", "")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    removing = task("remove", "remove a character (videos made with it stay)", "")
    removing.add_argument("name", help="the character's name (case does not matter)")


def cmd_characters(settings: Settings, args: argparse.Namespace) -> int:
    library = args.library
    if args.characters_command == "add":
        return _add(open_store(settings), settings, library, args)
    if args.characters_command == "remove":
        gone = characters.remove_character(open_store(settings), settings, library, args.name)
        print(f"removed {gone.name} from the {library} library")
        return 0
    store = _existing(settings)
    found = characters.list_characters(store, settings, library) if store is not None else []
    if args.json:
        print(json.dumps([c.model_dump(mode="json") for c in found], indent=2))
    else:
        print(table(found, library))
    return 0


def _add(store: ObjectStore, settings: Settings, library: str, args: argparse.Namespace) -> int:
    defaults = characters.defaults_from(
        **{name: getattr(args, name) for name in CharacterDefaults.model_fields}
    )
    added = characters.add_character(
        store, settings, library, args.name, args.media, shown=args.media.name,
        added_by=args.by or _user(), defaults=defaults,
    )  # fmt: skip
    print(f"added {added.name} ({added.kind}, from {added.media_name}) to the {library} library")
    return 0


def table(found: list[Character], library: str) -> str:
    if not found:
        return f"The {library} library has no characters yet: `mouthpiece characters add NAME PHOTO`."
    lines = [f"{len(found)} character(s) in the {library} library", ""]
    lines.append(f"{'NAME':32} {'KIND':5} {'ADDED':16} {'BY':16} DEFAULTS")
    for c in found:
        defaults = ", ".join(f"{k}={v}" for k, v in c.defaults.model_dump(exclude_none=True).items())
        when = c.added_at.astimezone().strftime("%Y-%m-%d %H:%M")
        lines.append(f"{c.name:32} {c.kind:5} {when:16} {c.added_by[:16]:16} {defaults or '-'}")
    return "\n".join(lines)


def _existing(settings: Settings) -> ObjectStore | None:
    if settings.store == "local" and not (settings.data_dir / "buckets").is_dir():
        print(f"mouthpiece: no mouthpiece data in {settings.data_dir}", file=sys.stderr)
        return None
    return open_store(settings)


def _user() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
