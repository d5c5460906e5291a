"""The ``mouthpiece`` command line. Settings are built here, once, and passed down.

Exit codes: 0 success; 1 the job failed (the reason is printed); 2 bad usage or configuration;
130 interrupted.

The commands live by what they do: ``parser`` (the arguments and checking what was typed),
``local`` (make a video here: render, demo), ``jobs`` (a deployment's jobs: submit, status,
cancel, retry, dead-letters), ``services`` (run the pieces: up, worker, bridge, ingress,
reconcile), ``admin`` (set up and look after: config, init, models, gc, discord).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import structlog

from pipeline.characters_cli import cmd_characters
from pipeline.cli.admin import (
    cmd_comfyui,
    cmd_config,
    cmd_console_rotate,
    cmd_discord,
    cmd_gc,
    cmd_init,
    cmd_models,
)
from pipeline.cli.jobs import cmd_cancel, cmd_dead_letters, cmd_retry, cmd_status, cmd_submit
from pipeline.cli.local import cmd_assess, cmd_demo, cmd_render
from pipeline.cli.parser import _parser
from pipeline.cli.services import cmd_backlog, cmd_bridge, cmd_ingress, cmd_reconcile, cmd_up, cmd_worker
from pipeline.config import (
    Settings,
    filesystem_problem,
    load_settings,
)
from pipeline.errors import ConfigError, MouthpieceError
from pipeline.logs import configure_logging

log = structlog.get_logger("mouthpiece.cli")


# --- entry point ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(
            args.config, data_dir=args.data_dir, log_level=args.log_level, log_format=args.log_format
        )
    except (FileNotFoundError, ValueError, ConfigError) as exc:
        print(f"mouthpiece: bad settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        _logging_settings(settings, args.command, service=getattr(args, "every", None) is not None)
    )
    command: Callable[[Settings, argparse.Namespace], int] = COMMANDS[args.command]
    try:
        return command(settings, args)
    except KeyboardInterrupt:
        return 130
    except MouthpieceError as exc:
        print(f"mouthpiece: {exc.reason}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mouthpiece status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the file system said no: one line, not a traceback
        print(f"mouthpiece: {filesystem_problem(exc, settings)}", file=sys.stderr)
        return 2


def _logging_settings(settings: Settings, command: str, *, service: bool = False) -> Settings:
    """The settings logging runs with: commands that show their own progress log warnings only, unless a
    log level was set; a service (``reconcile --every``) logs at the configured level. A copy, so
    ``config`` still shows the level ``up`` runs at."""
    if command in QUIET_COMMANDS and not service and "log_level" not in settings.model_fields_set:
        return settings.model_copy(update={"log_level": "warning"})
    return settings


"""Credentials anyone can guess: ``config`` shows them as they are, with a warning."""
"""Exit code of ``render``, ``demo`` and ``assess`` for a video its quality report flags."""


QUIET_COMMANDS = {
    "characters",
    "assess",
    "render",
    "say",
    "demo",
    "submit",
    "status",
    "config",
    "models",
    "reconcile",
    "init",
    "retry",
    "dead-letters",
    "gc",
    "cancel",
    "console-rotate",
}


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "up": cmd_up,
    "render": cmd_render,
    "say": cmd_render,
    "demo": cmd_demo,
    "submit": cmd_submit,
    "status": cmd_status,
    "worker": cmd_worker,
    "cancel": cmd_cancel,
    "config": cmd_config,
    "reconcile": cmd_reconcile,
    "retry": cmd_retry,
    "gc": cmd_gc,
    "bridge": cmd_bridge,
    "backlog": cmd_backlog,
    "dead-letters": cmd_dead_letters,
    "init": cmd_init,
    "models": cmd_models,
    "ingress": cmd_ingress,
    "discord": cmd_discord,
    "console-rotate": cmd_console_rotate,
    "characters": cmd_characters,
    "comfyui": cmd_comfyui,
    "assess": cmd_assess,
}
