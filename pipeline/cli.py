"""The ``mouthpiece`` command line. Settings are built here, once, and passed down.

Exit codes: 0 success; 1 the job failed (the reason is printed); 2 bad usage or configuration;
3 the video was made (``render``, ``demo``) or read (``assess``) but its quality report flags it (the
reasons are printed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from pipeline import ASSETS_DIR
from pipeline.characters_cli import add_parsers as add_character_parsers
from pipeline.characters_cli import cmd_characters
from pipeline.config import (
    STAGES,
    Settings,
    data_dir_origin,
    filesystem_problem,
    load_settings,
    settings_markdown,
)
from pipeline.console.auth import check_exposure
from pipeline.contracts import (
    JobOptions,
    JobStatus,
    Progress,
    QualitySummary,
    State,
    offered,
    option_values,
)
from pipeline.destinations import check_destinations
from pipeline.errors import ConfigError, InvalidInput, MouthpieceError
from pipeline.eta import job_line, renderer_of
from pipeline.keys import pools_of, progress_subject
from pipeline.logs import configure_logging
from pipeline.messages import users_fault
from pipeline.metrics import Metrics
from pipeline.registry import check_chain
from pipeline.reports import offset_words, quality_sentences, verdict
from pipeline.specfile import job_options, parse_spec
from pipeline.stack import Stack, running_stack, stop_on_signals
from pipeline.stage import check_speech, speech_unavailable
from pipeline.status import job_status, read_job, read_records
from pipeline.storage import ObjectStore, open_store
from pipeline.submit import (
    NAME_LIMIT,
    SPEC_EXTS,
    Submission,
    check_inputs,
    check_local_file,
    job_name,
    submit,
)

log = structlog.get_logger("mouthpiece.cli")
DEMO_TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


# --- argument parsing -----------------------------------------------------------------------------------


GLOBAL_OPTIONS = "--config, --data-dir, --log-level and --log-format go before or after the command."
DATA_DIR_HELP = (
    "where state lives (buckets, NATS store, inbox, outbox); also MOUTHPIECE_DATA_DIR. Default: the "
    "nearest .mouthpiece/ folder holding state, here or above, else ~/.local/share/mouthpiece"
)


class _Paragraphs(argparse.HelpFormatter):
    """Wraps a description paragraph by paragraph, keeping the blank lines between them."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            super(_Paragraphs, self)._fill_text(part, width, indent) for part in text.split("\n\n")
        )


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """The options every command takes, before the command (``default`` None) or after it (``default``
    SUPPRESS, so that leaving them out after the command keeps what was given before it)."""
    p = parser.add_argument_group("global options")
    p.add_argument("--config", type=Path, default=default, help="TOML settings file (also MOUTHPIECE_CONFIG)")
    p.add_argument("--data-dir", type=Path, default=default, metavar="DIR", help=DATA_DIR_HELP)
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default=default, help="log detail"
    )
    p.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=default,
        help="auto: JSON lines unless stderr is a terminal",
    )


class _Commands:
    """Adds subcommands that all take the global options and have a description (the help line, unless
    a longer one is given)."""

    def __init__(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        self.sub = sub
        self.common = argparse.ArgumentParser(add_help=False)
        _global_options(self.common, argparse.SUPPRESS)

    def add(self, name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        text = f"{help[:1].upper()}{help[1:]}." + (f"\n\n{description}" if description else "")
        return self.sub.add_parser(
            name,
            help=help,
            description=text,
            epilog=GLOBAL_OPTIONS,
            parents=[self.common],
            formatter_class=_Paragraphs,
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mouthpiece",
        description="Talking-avatar videos from a voice clip and a photo or video.\n\n"
        "Quick start: `mouthpiece demo` makes a video from the bundled sample; `mouthpiece render "
        "voice.mp3 face.png -o out.mp4` makes one from yours; `mouthpiece say 'Hello!' face.png` one "
        "from a text; `mouthpiece up` runs everything and watches a folder. `mouthpiece COMMAND --help` explains each command.",
        epilog=GLOBAL_OPTIONS,
        formatter_class=_Paragraphs,
    )
    _global_options(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = _Commands(sub)
    _local_commands(commands)
    _queue_commands(commands)
    _operator_commands(commands)
    _assess_command(commands)
    return p


def _local_commands(commands: _Commands) -> None:
    up = commands.add(
        "up",
        "run everything on this machine: NATS, every stage, the watched folder",
        "Drop a voice clip (with a photo named like it) into DATA_DIR/inbox and the video appears in "
        "DATA_DIR/outbox. While a drop is worked on, the inbox shows NAME.processing. Ctrl-C stops "
        "(work in flight is finished first).",
    )
    up.add_argument("--no-watch", action="store_true", help="do not watch the inbox folder")
    up.add_argument(
        "--no-ingress", action="store_true", help="do not start the HTTP service (console, Discord, hooks)"
    )

    render = commands.add(
        "render",
        "make one video now and write it to a file",
        "Runs the whole pipeline for one job in this process (or on a running `mouthpiece up`), prints "
        "the files it wrote and exits 0, or prints why the job failed and exits 1. The voice is a clip, "
        "or a text with --say; a job spec file (.yaml/.json) given alone is rendered as it says.",
    )
    render.add_argument(
        "audio",
        type=Path,
        nargs="?",
        help="the voice clip (.mp3, .wav, .ogg, .m4a, .flac, ...), or a job spec file alone; "
        "left out with --say",
    )
    render.add_argument(
        "avatars",
        type=Path,
        nargs="*",
        help="photo(s) or video(s) of the face; one video each (none: the default avatar)",
    )
    _character_option(render)
    render.add_argument(
        "-o", "--output", type=Path, required=True, help="output file (a folder for several avatars)"
    )
    _speech_options(render)
    _job_options(render)

    say = commands.add(
        "say",
        "make one video of a face speaking a text (text to speech)",
        "`mouthpiece render --say TEXT` in short: the text is spoken by Piper (or eSpeak NG) and the face "
        "lip-synced to it. Needs the voice extra (GPL code, see the README).",
    )
    say.add_argument("say", metavar="TEXT", help="what to say (at most 2,000 characters)")
    say.add_argument(
        "avatars", type=Path, nargs="*", help="photo(s) or video(s) of the face (none: the default avatar)"
    )
    say.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("mouthpiece-say.mp4"),
        help="output file (a folder for several avatars; default mouthpiece-say.mp4)",
    )
    _job_options(say)

    demo = commands.add(
        "demo",
        "render the bundled public-domain sample",
        "JFK's 'ask not' speech on NASA's astronaut portrait, with the default (viseme) renderer: "
        "no model download, no GPU.",
    )
    demo.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("mouthpiece-demo.mp4"),
        help="where to write the video (default mouthpiece-demo.mp4)",
    )
    _job_options(demo)


def _queue_commands(commands: _Commands) -> None:
    submit = commands.add(
        "submit",
        "queue a job (runs when `mouthpiece up` runs)",
        "Prints the job id. Without a running stack the job waits in the data directory until "
        "`mouthpiece up` starts.",
    )
    submit.add_argument(
        "audio", type=Path, nargs="?", help="the voice clip, or a job spec file alone; left out with --say"
    )
    submit.add_argument(
        "avatars", type=Path, nargs="*", help="photo(s) or video(s) of the face (none: the default avatar)"
    )
    submit.add_argument("--wait", action="store_true", help="wait for the job and print its status")
    _character_option(submit)
    _speech_options(submit)
    _job_options(submit)

    status = commands.add("status", "show a job, or the recent jobs and failed drops")
    status.add_argument("job", nargs="?", help="a job id (from submit or the list); none: the recent jobs")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--follow", "-f", action="store_true", help="keep the table on screen, updated live")
    status.add_argument("--limit", type=int, default=20, help="how many recent jobs to show (default 20)")

    cancel = commands.add("cancel", "cancel a job: its stages stop, nothing more is published")
    cancel.add_argument("job", help="the job id")

    retry = commands.add("retry", "run a failed job's failed stages again (after fixing the cause)")
    retry.add_argument("job", help="the job id")

    letters = commands.add(
        "dead-letters",
        "list messages the runner gave up on",
        "A message is dead-lettered after MOUTHPIECE_MAX_DELIVER runs, or when it cannot be read.",
    )
    letters.add_argument("--stage", choices=list(STAGES), help="only this stage's")


def _operator_commands(commands: _Commands) -> None:
    worker = commands.add(
        "worker",
        "run one stage's worker (distributed mode)",
        "Connects to MOUTHPIECE_NATS_URL (or a running `mouthpiece up`) and serves STAGE until stopped.",
    )
    worker.add_argument("stage", choices=list(STAGES), help="the stage to serve")
    worker.add_argument(
        "--pool",
        default="default",
        help="comma-separated pools to serve: default, and for render neural (wav2lip GPU jobs) and "
        "musetalk (MuseTalk GPU jobs); "
        "'default,neural' lets a CPU worker take neural jobs too",
    )
    worker.add_argument("--max-messages", type=int, help="exit after handling this many messages (KEDA jobs)")
    worker.add_argument("--idle-exit", type=float, help="exit after this many seconds without a message")

    config = commands.add(
        "config",
        "print the effective settings",
        "Every setting as this command line, the environment and the config file make it (what `up` "
        "runs with), one MOUTHPIECE_NAME=value line each (the variable that sets it), secrets masked; warnings (on stderr) for credentials left at a well-known default.",
    )
    config.add_argument("--markdown", action="store_true", help="print the table of all settings instead")
    config.add_argument("--json", action="store_true", help="print them as JSON (keyed by variable name)")

    reconcile = commands.add("reconcile", "re-announce inputs without a job and jobs stuck mid-pipeline")
    reconcile.add_argument(
        "--every", metavar="DURATION", type=_duration, help="keep running, one sweep per DURATION (60s, 5m)"
    )
    commands.add(
        "init",
        "create buckets, the default avatar, the stream, every stage's consumer and (MinIO) notifications",
    )

    gc = commands.add("gc", "delete artifacts of finished jobs older than a duration (cron)")
    gc.add_argument("--older-than", metavar="DURATION", type=_duration, required=True, help="e.g. 7d, 12h")
    gc.add_argument("--outputs", action="store_true", help="also delete their videos (status.json stays)")
    gc.add_argument("--inputs", action="store_true", help="also delete the uploads that started them")
    gc.add_argument("--cache", action="store_true", help="also delete old cache entries no running job uses")
    gc.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    commands.add("bridge", "forward SeaweedFS filer events to the bus (MOUTHPIECE_EVENT_SOURCE=seaweedfs)")
    backlog = commands.add(
        "backlog",
        "print each stage pool's backlog (waiting + in flight); --serve: the endpoint KEDA scales on",
        "Reads JetStream's consumer info (MOUTHPIECE_NATS_URL). With --serve it first makes every stage "
        "consumer (as `mouthpiece init` does), then answers GET /backlog (JSON), /metrics and /healthz.",
    )
    backlog.add_argument("--serve", action="store_true", help="keep serving the backlog over HTTP")
    backlog.add_argument(
        "--host", default="0.0.0.0", help="address to listen on with --serve (default 0.0.0.0)"
    )
    backlog.add_argument(
        "--port", type=int, default=9180, help="port to listen on with --serve (default 9180)"
    )

    models = commands.add(
        "models",
        "list model files: who needs each, whether it is here; --fetch NAME downloads one",
        "The default job (viseme renderer, dlib and OpenCV face detection, pocketsphinx timing) needs "
        "none of them: its models come inside the installed packages. All live in the model directory "
        "(MOUTHPIECE_MODEL_DIR, default DATA_DIR/models).",
    )
    models.add_argument(
        "--fetch",
        metavar="NAME",
        action="append",
        default=[],
        help="download this file, or every file of a renderer (musetalk) (repeatable)",
    )
    models.add_argument("--url", help="download from this URL instead of the configured one")

    ingress = commands.add("ingress", "run the HTTP ingress (Discord interactions, relay and MinIO hooks)")
    ingress.add_argument("--host", help="address to listen on (default MOUTHPIECE_INGRESS_HOST)")
    ingress.add_argument("--port", type=int, help="port to listen on (default MOUTHPIECE_INGRESS_PORT)")

    commands.add(
        "console-rotate",
        "give the web console a new signing secret: every sign-in ends, on every replica",
        "The secret is kept in the work bucket (console/secret.json) and read again by running consoles "
        "within seconds; a copied or stolen cookie stops working. Not for MOUTHPIECE_CONSOLE_SECRET "
        "(change that setting instead).",
    )

    discord = commands.add("discord", "Discord set-up tasks")
    tasks = discord.add_subparsers(dest="discord_command", required=True, metavar="TASK")
    _Commands(tasks).add("register", "put the slash commands (/avatar, /announce) to Discord")
    add_character_parsers(commands.add, lambda tasks: _Commands(tasks).add)

    comfyui = commands.add("comfyui", "ComfyUI: install mouthpiece's node pack")
    comfy_tasks = comfyui.add_subparsers(dest="comfyui_command", required=True, metavar="TASK")
    comfy_install = _Commands(comfy_tasks).add(
        "install",
        "install the node pack into a ComfyUI",
        "Installs this mouthpiece into ComfyUI's Python with pip and writes custom_nodes/mouthpiece/ "
        "(docs/comfyui.md). Tested with ComfyUI 0.3.64.",
    )
    comfy_install.add_argument("comfyui", type=Path, help="the ComfyUI folder (holding main.py)")
    comfy_install.add_argument("--python", type=Path, help="ComfyUI's Python (default: a venv in its folder)")
    comfy_install.add_argument(
        "--extras", default="voice", help="mouthpiece extras to install (default: voice)"
    )
    comfy_install.add_argument("--editable", action="store_true", help="install this source tree editable")
    comfy_install.add_argument("--no-pip", action="store_true", help="only write custom_nodes/mouthpiece/")


def _character_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--character",
        action="append",
        default=[],
        metavar="NAME",
        help="a character of the library (`mouthpiece characters list`); repeatable; 'all': every one",
    )


def _assess_command(commands: _Commands) -> None:
    assess = commands.add(
        "assess",
        "check any video's lip sync and picture: the quality report, in sentences",
        "Measures a finished video, ours or another tool's (Wav2Lip, MuseTalk, HeyGem, ...): how early or "
        "late the voice is against the mouth, how sure that is, mouth motion in pauses, flicker, a "
        "verdict. No model weights; about 10 ms a frame on a CPU. Exits 0 when the video is fine, 3 when "
        "it is flagged, 2 when it cannot be read.",
    )
    assess.add_argument("video", type=Path, help="the video to check (.mp4, .mov, .webm, ...)")
    assess.add_argument(
        "--audio", type=Path, metavar="CLIP", help="the voice clip it was made from (else its own sound)"
    )
    assess.add_argument("--json", action="store_true", help="print the report as JSON")
    assess.add_argument(
        "--min-quality", type=float, default=0.5, help="score (0..1) under which it is flagged (default 0.5)"
    )


def _duration(text: str) -> float:
    from pipeline.gc import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _speech_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--say", metavar="TEXT", help="speak this text instead of a voice clip (needs the voice extra)"
    )


def _job_options(p: argparse.ArgumentParser) -> None:
    """A ``--flag`` for each job option ``JobOptions`` offers on the command line (its help and
    choices come from there), and ``--name``."""
    for name, use in offered("cli").items():
        flag = "--" + name.replace("_", "-")
        field = JobOptions.model_fields[name]
        typed: dict[str, Any] = {"type": float} if field.annotation in (float, float | None) else {}
        p.add_argument(flag, dest=name, choices=option_values(name), help=use.cli, **typed)
    p.add_argument("--name", help="name of the output (default: the voice clip's name)")


def _options(args: argparse.Namespace) -> JobOptions:
    _check_lengths(args)
    fields = {k: getattr(args, k, None) for k in offered("cli")}
    return job_options({k: v for k, v in fields.items() if v is not None})


def _asked(settings: Settings, args: argparse.Namespace) -> Submission:
    """What ``render``, ``say`` and ``submit`` were asked for: a voice clip and avatars, a text to speak
    (``--say``: every file is an avatar), or a job spec file (rendered as it says, once)."""
    options = _options(args)
    files = [p for p in [getattr(args, "audio", None), *args.avatars] if p is not None]
    text = getattr(args, "say", None)
    if text is not None:
        _check_speech(settings, text, options)
        name = args.name or job_name(" ".join(text.split()[:6]))  # the list shows it: its first words
        return Submission(audio=None, avatars=tuple(files), options=options, name=name, speech=text)
    if not files:
        raise InvalidInput(
            "give a voice clip (and photos of the face), a job spec file, or --say TEXT", code="no_input"
        )
    if files[0].suffix.lower() in SPEC_EXTS:
        if len(files) > 1:
            raise InvalidInput(
                f"{files[0]} is a job spec: it names its own voice and avatars, give it alone",
                code="spec_not_alone",
            )
        return _spec_submission(settings, files[0], args)
    characters = tuple(getattr(args, "character", None) or ())
    return Submission(
        audio=files[0], avatars=tuple(files[1:]), options=options, name=args.name, characters=characters
    )


def _spec_submission(settings: Settings, path: Path, args: argparse.Namespace) -> Submission:
    """The job a spec file on this machine describes: its media relative to it, its options with those
    given on the command line on top, its destinations (checked like a dropped spec's)."""
    check_local_file(path, settings)
    spec = parse_spec(path.read_bytes(), path.name)
    check_destinations(settings, spec.destinations, f"job spec {path.name}")
    if spec.speech is not None:
        _check_speech(settings, spec.speech, spec.options)
    given = {k: getattr(args, k) for k in offered("cli") if getattr(args, k, None) is not None}
    return Submission(
        audio=path.parent / spec.audio if spec.audio else None,
        avatars=tuple(path.parent / a for a in spec.avatars),
        name=args.name or spec.name or path.stem,
        options=job_options({**spec.options.model_dump(exclude_unset=True), **given}),
        destinations=tuple(spec.destinations),
        speech=spec.speech,
    )


def _check_speech(settings: Settings, text: str, options: JobOptions) -> None:
    """A text to speak is refused here, before anything starts, when it is empty or too long, names an
    unknown voice, or (workers on this machine) no text-to-speech engine is installed."""
    check_speech(settings, text, options.voice, options.language)
    if not settings.nats_url and (reason := speech_unavailable()) is not None:
        raise ConfigError(reason)


# --- checking what was typed (before anything starts) -----------------------------------------------

TEXT_LIMITS = {"name": NAME_LIMIT, "transcript": 20_000, "checkpoint": 255}


def _check_lengths(args: argparse.Namespace) -> None:
    """``--name``, ``--transcript`` and ``--checkpoint`` within their limits, said in a sentence."""
    for option, limit in TEXT_LIMITS.items():
        value = getattr(args, option, None)
        if value is not None and len(value) > limit:
            raise InvalidInput(
                f"--{option} is {len(value)} characters long; the limit is {limit}: give a shorter one",
                code="option_too_long",
            )


def _check_inputs(
    settings: Settings, audio: Path | None, avatars: Sequence[Path], output: Path | None = None
) -> None:
    """Every input is a readable regular file within the size limit (``submit.check_inputs``: refused
    before anything starts), and ``output`` is none of them."""
    check_inputs(settings, audio, avatars)
    inputs = [p for p in [audio, *avatars] if p is not None]
    if output is not None and any(_same_file(output, path) for path in inputs):
        raise InvalidInput(
            f"-o {output} is one of the input files; it would be overwritten: give another output name",
            code="output_is_input",
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


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


# --- commands ------------------------------------------------------------------------------------------


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown(), end="")
        return 0
    shown = effective_settings(settings)
    named = {env_name(name): value for name, value in shown.items()}
    if args.json:
        print(json.dumps(named, indent=2, default=str))
    else:
        print("\n".join(f"{name}={_env_value(value)}" for name, value in named.items()))
    print(f"mouthpiece: data directory {settings.data_dir}: {data_dir_origin(settings)}", file=sys.stderr)
    for warning in credential_warnings(settings, shown):
        print(f"mouthpiece: warning: {warning}", file=sys.stderr)
    return 0


def env_name(field: str) -> str:
    """The environment variable a setting is read from (``s3_endpoint`` → ``MOUTHPIECE_S3_ENDPOINT``)."""
    return f"MOUTHPIECE_{field.upper()}"


def _env_value(value: object) -> str:
    """A value as it is written in the environment: lists and maps as JSON, unset as nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def effective_settings(settings: Settings) -> dict[str, object]:
    """The settings as the commands use them: folders left unset shown where they really are, secrets
    masked (a secret that is a well-known default is not a secret: it is shown as it is)."""
    shown = settings.masked()
    shown["inbox_dir"], shown["outbox_dir"] = str(settings.inbox), str(settings.outbox)
    shown["model_dir"] = str(settings.models)
    for name in _well_known_secrets(settings):
        secret = getattr(settings, name)
        shown[name] = secret.get_secret_value()
    return shown


WELL_KNOWN_SECRETS = {
    "minioadmin": "MinIO's default",
    "rustfsadmin": "RustFS's default",
    "changeme": "a placeholder",
    "change-me": "a placeholder",
    "password": "a placeholder",
    "password123": "a placeholder",
    "secret": "a placeholder",
    "admin": "a placeholder",
    "token": "a placeholder",
}
"""Credentials anyone can guess: ``config`` shows them as they are, with a warning."""


def _well_known_secrets(settings: Settings) -> list[str]:
    """The secret settings whose value is a well-known default or a placeholder."""
    names = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value().strip().lower() in WELL_KNOWN_SECRETS:
            names.append(name)
    return names


def credential_warnings(settings: Settings, shown: dict[str, object]) -> list[str]:
    """What an operator should know about the credentials: well-known values, and defaults that leave a
    service without authentication."""
    warnings = [
        f"{name} is {shown[name]!r}, {WELL_KNOWN_SECRETS[str(shown[name]).strip().lower()]}: anyone can "
        f"guess it; set your own (infra/gen-env.sh makes random ones)"
        for name in _well_known_secrets(settings)
    ]
    if settings.store == "s3" and settings.s3_access_key is None:
        warnings.append(
            f"s3_access_key is not set (the default): requests to {settings.s3_endpoint} are anonymous"
        )
    if settings.nats_url and not settings.nats_auth():
        warnings.append(
            f"no NATS credentials are set (the default): {settings.nats_url} is used without authentication"
        )
    return warnings


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    if not args.no_ingress:
        check_exposure(settings)  # a console beyond loopback needs a password: refuse before starting
    return asyncio.run(_up(settings, watch=not args.no_watch, ingress=not args.no_ingress))


async def _up(settings: Settings, *, watch: bool, ingress: bool) -> int:
    from pipeline.ingress.folder import FolderIngress

    stack = await Stack.open(settings, mode="up")
    stack.metrics = Metrics(settings)
    stop = asyncio.Event()
    stop_on_signals(stop, force=stack.nats.stop if stack.nats else None)
    try:
        tasks = await stack.run_workers(list(settings.chain), stop)
        tasks.append(asyncio.create_task(stack.reconcile_forever(stop)))
        tasks.extend(await _start_ingress(stack, stop) if ingress else [])
        folder = FolderIngress(settings, stack.store).start() if watch else None
        _banner(settings, watch, ingress)
        await stop.wait()
        if folder is not None:
            folder.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await stack.close()
    for failure in stack.failures:
        print(f"mouthpiece: worker failed: {failure}", file=sys.stderr)
    return 1 if stack.failures else 0


async def _start_ingress(stack: Stack, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The HTTP service: the web console (and /metrics), Discord interactions, relay and MinIO hooks.
    If it cannot start (the port is taken), the rest of ``up`` runs on and the reason is printed."""
    from pipeline.ingress.http import serve_ingress

    task = asyncio.create_task(serve_ingress(stack, stop))
    task.add_done_callback(_ingress_ended)
    return [task]


def _ingress_ended(task: asyncio.Task[None]) -> None:
    if task.cancelled() or task.exception() is None:
        return
    error = task.exception()
    reason = error.reason if isinstance(error, MouthpieceError) else repr(error)
    print(f"mouthpiece: the console and HTTP service are not running: {reason}", file=sys.stderr, flush=True)


def _banner(settings: Settings, watch: bool, ingress: bool = False) -> None:
    lines = ["mouthpiece is up."]
    if ingress and settings.console:
        host = settings.ingress_host if ":" not in settings.ingress_host else f"[{settings.ingress_host}]"
        lines.append(f"  The console is at http://{host}:{settings.ingress_port}/")
    if watch:
        lines.append(f"  Drop a voice clip (and a photo named like it) into {settings.inbox}")
        lines.append(f"  Videos appear in {settings.outbox}")
        lines.append(f"  (data directory {settings.data_dir}; `mouthpiece config` says why this one)")
    lines.append("  Ctrl-C stops (work in flight is finished first).")
    print("\n".join(lines), file=sys.stderr, flush=True)


def cmd_render(settings: Settings, args: argparse.Namespace) -> int:
    asked = _asked(settings, args)
    settings, options = _local_checkpoint(settings, asked.options)
    asked = replace(asked, options=options)
    _check_inputs(settings, asked.audio, asked.avatars, args.output)
    return asyncio.run(_render(settings, asked, args.output))


def _local_checkpoint(settings: Settings, options: JobOptions) -> tuple[Settings, JobOptions]:
    """``--checkpoint PATH`` names a file on this machine: the workers this command starts load it (a job
    option may only name a file in the model directory, since it travels to workers elsewhere). The
    settings and options the command then runs with."""
    given = options.checkpoint
    if given is None or ("/" not in given and not Path(given).is_file()):
        return settings, options
    path = Path(given).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"checkpoint {given} does not exist")
    if settings.nats_url or running_stack(settings):
        raise ConfigError(
            f"workers elsewhere cannot read {path}: copy it into {settings.models} and pass its file name"
        )
    local = settings.model_copy(update={"wav2lip_checkpoint": str(path)})
    return local, options.model_copy(update={"checkpoint": None, "renderer": "wav2lip"})


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    options = _options(args)
    if options.transcript is None:
        options = options.model_copy(update={"transcript": DEMO_TRANSCRIPT})
    sample = Submission(
        audio=ASSETS_DIR / "jfk.flac", avatars=(ASSETS_DIR / "astronaut.png",), options=options, name="demo"
    )
    code = asyncio.run(_render(settings, sample, args.output))
    if code in (0, FLAGGED):
        print(f"The demo video is at {args.output.resolve()}")
    return code


async def _render(settings: Settings, asked: Submission, output: Path) -> int:
    stack = await Stack.open(settings)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        if stack.owner:
            tasks = await stack.run_workers(list(settings.chain), stop)
        status = await _submit_and_wait(stack, asked)
        # a batch where some avatars failed still hands over the videos that were made
        inputs = [p for p in [asked.audio, *asked.avatars] if p is not None]
        written = (
            await asyncio.to_thread(_download_outputs, stack, status, output, inputs)
            if status.outputs
            else []
        )
        details = [] if status.state == State.done else await asyncio.to_thread(_details, stack, status)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stack.close()
    if status.state != State.done:  # said last, after the shutdown lines, so it is what people see
        print(f"mouthpiece: failed: {status.reason or 'unknown reason'}", file=sys.stderr)
        for line in details:  # the person at this terminal runs the server: give them the detail
            print(f"  detail: {line}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return _flagged_lines(status)


def _flagged_lines(status: JobStatus) -> int:
    """Say on stderr which videos the quality report flags and why; ``FLAGGED`` if any, else 0."""
    flagged = {task: t.quality for task, t in status.tasks.items() if t.quality and t.quality.flagged}
    for task, quality in flagged.items():
        outputs = status.tasks[task].outputs
        name = outputs[0].rsplit("/", 1)[-1] if outputs else f"task {task}"
        print(f"mouthpiece: flagged: {name}: {verdict(quality)}", file=sys.stderr)
    if flagged:
        print(
            f"  (`mouthpiece assess VIDEO` explains the report; `mouthpiece status {status.job_id}` keeps it)",
            file=sys.stderr,
        )
    return FLAGGED if flagged else 0


def _details(stack: Stack, status: JobStatus) -> list[str]:
    """The full reasons of a job's failures that are not the user's own mistake (for operators)."""
    if users_fault(status.code):
        return []
    records = read_records(stack.store, stack.settings, status.job_id)
    failed = [r for r in records if r.state == State.failed and r.reason]
    told = status.reason or ""  # the status already says the first failure's reason (for_operators)
    return list(
        dict.fromkeys(
            f"{r.stage}: {r.reason}" for r in failed if (r.reason or "")[1:].strip(" .") not in told
        )
    )


async def _submit_and_wait(stack: Stack, asked: Submission) -> JobStatus:
    settings = stack.settings
    submitted = await asyncio.to_thread(submit, stack.store, settings, asked)
    previous = await asyncio.to_thread(job_status, stack.store, settings, submitted.job_id)
    if previous is not None and previous.state == State.failed:  # same input failed before: try afresh
        submitted = await asyncio.to_thread(
            submit,
            stack.store,
            settings,
            replace(asked, nonce=str(time.time())),
        )
    return await _wait(stack, submitted.job_id)


async def _wait(stack: Stack, job_id: str) -> JobStatus:
    """Poll the job's status until it finishes, showing progress on stderr."""
    display = _ProgressDisplay(job_id)

    async def on_progress(data: bytes) -> None:
        display.note(Progress.model_validate_json(data))

    await stack.bus.subscribe(progress_subject(stack.settings, job_id), on_progress)
    while True:
        if stack.failures:  # our own workers died: nobody will finish this job
            raise ConfigError("; ".join(stack.failures))
        status = await asyncio.to_thread(job_status, stack.store, stack.settings, job_id)
        if status is not None:
            if not status.finished and display.eta_due(status.stage):
                display.eta = await asyncio.to_thread(_eta_line, stack, job_id)
            display.show(status)
            if status.finished:
                display.end()
                return status
        await asyncio.sleep(0.3)


class _ProgressDisplay:
    """One status line on a terminal; a line per change otherwise."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.tty = sys.stderr.isatty()
        self.fraction: dict[str, float] = {}
        self.last = ""
        self.eta = ""
        self._eta_at = (0.0, "")

    def eta_due(self, stage: str | None) -> bool:
        """Whether to work the time left out again: once a second (it reads the job's records), and
        whenever the stage changes."""
        due = time.monotonic() - self._eta_at[0] >= 1.0 or (stage or "") != self._eta_at[1]
        if due:
            self._eta_at = (time.monotonic(), stage or "")
        return due

    def note(self, progress: Progress) -> None:
        self.fraction[progress.stage] = progress.fraction

    def show(self, status: JobStatus) -> None:
        stage = status.stage or "queued"
        pct = self.fraction.get(stage)
        done = " ".join(f"{s} {t:.1f}s" for s, t in status.timings.items())
        line = (
            f"[{self.job_id}] {status.state.value}: {stage}{f' {pct:.0%}' if pct is not None else ''}  {done}"
            + (f"  ({self.eta})" if self.eta and not status.finished else "")
        )
        if line == self.last:
            return
        if self.tty:
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
        elif line.split("  ")[0] != self.last.split("  ")[0]:
            print(line, file=sys.stderr, flush=True)
        self.last = line

    def end(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _eta_line(stack: Stack, job_id: str) -> str:
    """The job's "video 2 of 5 · render 40 % · about 1 min left" line (``pipeline.eta``)."""
    store, settings = stack.store, stack.settings
    job, records = read_job(store, settings, job_id), read_records(store, settings, job_id)
    return job_line(store, settings, job_id, job, records, renderer_of(store, settings, job_id))


def _download_outputs(
    stack: Stack, status: JobStatus, output: Path, inputs: Sequence[Path] = ()
) -> list[Path]:
    """Copy the job's videos (and subtitles, quality reports) from the outputs bucket to ``output``; a
    name that would land on one of the ``inputs`` (``-o .`` beside ``voice.mp4``) gets the job id added."""
    bucket = stack.settings.bucket_outputs
    files = [i for i in stack.store.list(bucket, f"{status.job_id}/") if not i.key.endswith("status.json")]
    videos = [i for i in files if i.key.endswith(".mp4")]
    if not videos:
        raise ConfigError(f"job {status.job_id} finished but the outputs bucket has no video for it")
    several = len(status.tasks) > 1 or output.is_dir() or str(output).endswith("/")
    written = []
    for info in files:
        name = info.key.rsplit("/", 1)[-1]
        if several:
            dest = output / name
        else:  # beside the video, named after it: out.mp4 → out.srt, out.quality.json
            stem = videos[0].key.rsplit("/", 1)[-1].removesuffix(".mp4")
            suffix = name[len(stem) :] if name.startswith(f"{stem}.") else Path(name).suffix
            dest = output if name.endswith(".mp4") else output.with_name(output.stem + suffix)
        if any(_same_file(dest, path) for path in inputs):
            dest = dest.with_name(f"{dest.stem}-{status.job_id[1:9]}{dest.suffix}")
        stack.store.download(bucket, info.key, dest)
        written.append(dest)
    return written


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_submit(settings, args))


async def _submit(settings: Settings, args: argparse.Namespace) -> int:
    asked = _asked(settings, args)
    _check_inputs(settings, asked.audio, asked.avatars)
    url = settings.nats_url or running_stack(settings)
    if url is None:  # nothing running: write straight into the bucket; `up` picks it up (reconcile)
        store = await asyncio.to_thread(open_store, settings)
        submitted = await asyncio.to_thread(submit, store, settings, asked)
        print(f"{submitted.job_id} queued; it runs when `mouthpiece up` is running")
        return 0
    stack = await Stack.open(settings)
    try:
        submitted = await asyncio.to_thread(submit, stack.store, settings, asked)
        print(submitted.job_id)
        if args.wait:
            status = await _wait(stack, submitted.job_id)
            print(status.model_dump_json(indent=2))
            return 0 if status.state == State.done else 1
        return 0
    finally:
        await stack.close()


def _existing_store(settings: Settings) -> ObjectStore | None:
    """The store, for commands that only read; None, with a line saying where it looked, when the local
    data directory holds no buckets (looking never creates an empty data directory)."""
    if settings.store == "local" and not (settings.data_dir / "buckets").is_dir():
        print(
            f"mouthpiece: no mouthpiece data in {settings.data_dir} ({data_dir_origin(settings)})",
            file=sys.stderr,
        )
        return None
    return open_store(settings)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    store = _existing_store(settings)
    if store is None and args.follow and not args.job:
        store = _await_store(settings, args.limit)
        if store is None:
            return 0  # interrupted before anything arrived
    if store is None:  # nothing there yet (said on stderr): the same answer as for an empty store
        if args.job:
            return 1
        if args.json:
            print(json.dumps({"jobs": [], "total": 0, "failed_drops": []}, indent=2))
        else:
            print(_status_table(settings, _NoJobs(), args.limit))
        return 0
    if args.job:
        status = job_status(store, settings, args.job)
        if status is None:
            print(f"mouthpiece: no job {args.job}", file=sys.stderr)
            return 1
        print(status.model_dump_json(indent=2) if args.json else _describe(status))
        return 0
    if args.follow:
        return _follow(settings, store, args.limit)
    from pipeline.console.index import JobIndex

    index = JobIndex(settings, store)
    index.load()  # stored statuses of finished jobs, folds of the others: no fold of 1,000 jobs
    jobs, total = index.page(1, max(1, args.limit))
    if args.json:
        data = {
            "jobs": [j.to_json() for j in jobs],
            "total": total,
            "failed_drops": [d.model_dump(mode="json") for d in index.drops],
        }
        print(json.dumps(data, indent=2))
        return 0
    print(_status_table(settings, index, args.limit))
    return 0


def _await_store(settings: Settings, limit: int) -> ObjectStore | None:
    """``status --follow`` before the data directory exists: the empty table, then the store once a
    stack creates it; None when interrupted first."""
    print(_status_table(settings, _NoJobs(), limit, live=True) + "\n", flush=True)
    try:
        while not (settings.data_dir / "buckets").is_dir():
            time.sleep(1.0)
    except KeyboardInterrupt:
        return None
    return open_store(settings)


class _NoJobs:
    """The job index of a data directory that holds nothing yet."""

    def __init__(self) -> None:
        self.progress: dict[str, dict[str, float]] = {}
        self.drops: list[Any] = []

    def page(self, number: int, size: int) -> tuple[list[Any], int]:
        return [], 0

    def counts(self) -> dict[str, int]:
        return {}


def _status_table(settings: Settings, index: Any, limit: int, live: bool = False) -> str:
    """The recent jobs (newest first) with a header, their outputs or reasons, then the failed drops."""
    jobs, total = index.page(1, max(1, limit))
    counts = index.counts()
    summary = ", ".join(
        f"{counts[s]} {s}" for s in ("running", "queued", "done", "failed", "cancelled") if s in counts
    )
    lines = [
        f"mouthpiece on {settings.data_dir}: {total} job{'s' if total != 1 else ''}"
        + (f" ({summary})" if summary else "")
    ]
    if not jobs:
        lines.append(_no_jobs_hint(settings))
    else:
        lines.append("")
        lines.append(f"{'JOB':21} {'STATE':9} {'STAGE':14} {'SOURCE':8} {'STARTED':19} {'ELAPSED':>8}  NAME")
        for j in jobs:
            stage = j.stage or "-"
            note = index.progress.get(j.job_id, {})
            if not j.finished and note:
                stage = f"{stage} {max(note.values()):.0%}" if j.stage else stage
            started = j.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            lines.append(
                f"{j.job_id:21} {j.state:9} {stage:14} {j.source[:8]:8} {started:19} {_seconds(j.elapsed()):>8}  {j.name}"
                + (" FLAGGED" if j.flagged else "")
            )
            if not j.finished and getattr(j, "eta", None):
                lines.append(f"{'':21} ~ {j.eta}")
            lines.extend(f"{'':21} -> {o}" for o in j.outputs)
            if j.reason and j.state in ("failed", "cancelled"):
                lines.append(f"{'':21} {j.reason}")
        if total > len(jobs):
            lines.append(f"({total - len(jobs)} older job(s) not shown: --limit N shows more)")
    lines.append("")
    if index.drops:
        lines.append("FAILED DROPS (files that never became a job)")
        for d in index.drops[:limit]:
            lines.append(f"{d.at.astimezone():%Y-%m-%d %H:%M:%S}  {d.name}: {d.reason}")
    else:
        lines.append("No failed drops.")
    if live:
        lines.append("")
        lines.append("Updated live; Ctrl-C stops.")
    return "\n".join(lines)


def _no_jobs_hint(settings: Settings) -> str:
    """What to do when there are no jobs: the inbox and submit only work while mouthpiece runs."""
    if settings.nats_url or running_stack(settings):
        return (
            f"No jobs yet: drop a voice clip into {settings.inbox}, or run `mouthpiece submit VOICE [PHOTO]`."
        )
    return (
        "No jobs yet, and mouthpiece is not running here: `mouthpiece up` starts it (then drop a voice clip "
        f"into {settings.inbox} or use the console), or `mouthpiece render VOICE PHOTO -o out.mp4` makes "
        "one video now."
    )


def _seconds(value: float) -> str:
    if value < 100:
        return f"{value:.1f}s"
    if value < 6000:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _follow(settings: Settings, store: Any, limit: int) -> int:
    """``status --follow``: the table, redrawn as jobs change (fed by the bus when a stack runs)."""
    from pipeline.bus import NatsBus
    from pipeline.console.index import JobIndex

    async def go() -> None:
        url = settings.nats_url or running_stack(settings)
        bus = None
        if url is not None:
            with contextlib.suppress(MouthpieceError, OSError):
                bus = await NatsBus.connect(url, settings)
        index = JobIndex(settings, store)
        if bus is None:
            index.rescan_every = 5.0  # nothing tells us about new jobs: look for them more often
        await index.start(bus)
        tty = sys.stdout.isatty()
        shown = ""
        try:
            while True:
                await asyncio.sleep(0.5)
                if not index.loaded:
                    continue
                text = _status_table(settings, index, limit, live=True)
                key = text if tty else _without_elapsed(text)
                if key != shown:
                    print(("\033[H\033[2J" if tty else "") + text + ("" if tty else "\n"), flush=True)
                    shown = key
        finally:
            await index.close()
            if bus is not None:
                await bus.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return 0


def _without_elapsed(text: str) -> str:
    """The table less its ticking columns and time estimates (a log gets a new table only when something
    happened)."""
    return "\n".join(
        line[:76] + line[84:] if line.startswith("j") else line
        for line in text.splitlines()
        if not line.startswith(f"{'':21} ~ ")
    )


def _describe(status: JobStatus) -> str:
    lines = [f"job {status.job_id} ({status.name or 'unnamed'}): {status.state.value}"]
    if status.reason:
        lines.append(f"  reason: {status.reason}")
    for task, t in status.tasks.items():
        lines.append(f"  {task}: {t.state.value} at {t.stage or '-'}{' — ' + t.reason if t.reason else ''}")
        if t.quality is not None:
            lines.append(f"    quality: {_quality_line(t.quality)}")
    if status.timings:
        lines.append("  timings: " + ", ".join(f"{s} {v:.2f}s" for s, v in status.timings.items()))
    lines.append(f"  last change: {status.updated_at.astimezone():%Y-%m-%d %H:%M:%S}")
    lines.extend(f"  output: {o}" for o in status.outputs)
    lines.extend(f"  note: {n}" for n in status.notes)
    return "\n".join(lines)


def _quality_line(quality: QualitySummary) -> str:
    """``0.93, the voice is 6 ms late`` or ``0.41, the voice is 200 ms late FLAGGED (<the problems>)``."""
    text = f"{quality.score:.2f}"
    if quality.offset_ms is not None:
        text += f", {offset_words(quality.offset_ms)}"
    if quality.flagged:
        text += " FLAGGED"
    if quality.problems:
        text += f" ({'; '.join(quality.problems)})"
    return text


def cmd_assess(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.stage import video_assessor

    for path in (args.video, args.audio):
        if path is not None and not path.is_file():
            raise ConfigError(f"{path} does not exist: check the path")
    if not 0.0 <= args.min_quality <= 1.0:
        raise ConfigError("--min-quality is a score between 0 and 1")
    report = video_assessor()(args.video, audio=args.audio, threshold=args.min_quality)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(f"{args.video}:")
        print("\n".join(f"  {line}" for line in quality_sentences(report)))
    return FLAGGED if report.flagged else 0


FLAGGED = 3
"""Exit code of ``render``, ``demo`` and ``assess`` for a video its quality report flags."""


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    pools = tuple(p.strip() for p in args.pool.split(",") if p.strip())
    unknown = [p for p in pools if p not in pools_of(args.stage)]
    if unknown:
        known = ", ".join(pools_of(args.stage))
        print(
            f"mouthpiece: {args.stage} has no pool {', '.join(unknown)}; its pools: {known}", file=sys.stderr
        )
        return 2
    return asyncio.run(_worker(settings, args.stage, pools, args.max_messages, args.idle_exit))


async def _worker(
    settings: Settings, stage: str, pools: tuple[str, ...], max_messages: int | None, idle_exit: float | None
) -> int:
    if stage not in settings.chain:
        print(f"mouthpiece: stage {stage} is not in the chain {settings.chain}", file=sys.stderr)
        return 2
    check_chain(settings.chain)
    stack = await Stack.open(settings, mode="attach")
    stack.metrics = Metrics(settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    listener = await _metrics_listener(stack, [stage], stop) if settings.metrics_port else None
    try:
        await stack.worker(stage, pools).serve(stop, max_messages=max_messages, idle_exit=idle_exit)
    finally:
        stop.set()
        if listener is not None:
            await asyncio.gather(listener, return_exceptions=True)
        await stack.close()
    return 0


async def _metrics_listener(stack: Stack, stages: list[str], stop: asyncio.Event) -> asyncio.Task[None]:
    """A worker's own ``GET /metrics`` on ``metrics_host:metrics_port`` (its stage's runs and queue)."""
    from pipeline.ingress.http import serve_app
    from pipeline.metrics import metrics_app

    metrics = stack.metrics
    assert metrics is not None

    async def refresh() -> None:
        with contextlib.suppress(Exception):
            await metrics.refresh_queues(stack.bus, stages)

    app = metrics_app(metrics, refresh)
    settings = stack.settings
    return asyncio.create_task(serve_app(app, settings.metrics_host, settings.metrics_port, stop, "metrics"))


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> JobStatus:
        from pipeline.control import cancel_job

        stack = await Stack.open(settings, mode="attach")
        try:
            return await cancel_job(stack.store, settings, stack.bus, args.job, by="cli")
        finally:
            await stack.close()

    status = asyncio.run(go())
    print(f"{status.job_id}: {status.state.value}")
    return 0


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.reconcile import Reconciler, reconcile_forever

    every: float | None = args.every

    async def go() -> list[str]:
        stack = await Stack.open(settings, mode="attach")
        reconciler = Reconciler(stack.announcer, settings)
        try:
            if every is None:
                return await asyncio.to_thread(reconciler.sweep)
            stop = asyncio.Event()
            stop_on_signals(stop)
            log.info("reconcile_service_started", every=every)
            await reconcile_forever(reconciler, every, stop)
            return []
        finally:
            await stack.close()

    keys = asyncio.run(go())
    if every is not None:
        return 0
    print(f"re-announced {len(keys)} input(s)")
    for key in keys:
        print(f"  {key}")
    return 0


def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> list[str]:
        from pipeline.reconcile import retry_job

        stack = await Stack.open(settings, mode="attach")
        try:
            return await asyncio.to_thread(retry_job, stack.announcer, settings, args.job)
        finally:
            await stack.close()

    triggers = asyncio.run(go())
    if not triggers:
        print(f"mouthpiece: job {args.job} has no failed stage to retry", file=sys.stderr)
        return 1
    for trigger in triggers:
        print(f"re-announced {trigger}")
    return 0


def cmd_gc(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.gc import collect

    store = open_store(settings)
    report = collect(
        store,
        settings,
        args.older_than,
        outputs=args.outputs,
        inputs=args.inputs,
        cache=args.cache,
        dry_run=args.dry_run,
    )
    print(report.line(args.dry_run))
    return 0


def cmd_bridge(settings: Settings, args: argparse.Namespace) -> int:
    if settings.event_source != "seaweedfs":
        print("mouthpiece: the bridge needs MOUTHPIECE_EVENT_SOURCE=seaweedfs", file=sys.stderr)
        return 2
    if not settings.nats_url:
        print("mouthpiece: the bridge needs MOUTHPIECE_NATS_URL", file=sys.stderr)
        return 2
    return asyncio.run(_bridge(settings))


async def _bridge(settings: Settings) -> int:
    from pipeline.bus import NatsBus
    from pipeline.seaweedfs.bridge import serve_bridge

    assert settings.nats_url is not None
    bus = await NatsBus.connect(settings.nats_url, settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await serve_bridge(settings, bus, stop)
    finally:
        await bus.close()
    return 0


def cmd_backlog(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.nats_url:
        print("mouthpiece: the backlog is read from NATS: set MOUTHPIECE_NATS_URL", file=sys.stderr)
        return 2
    if args.serve:
        return asyncio.run(_serve_backlog(settings, args.host, args.port))
    print(json.dumps(asyncio.run(_read_backlog(settings)), indent=2))
    return 0


async def _read_backlog(settings: Settings) -> dict[str, object]:
    from pipeline.backlog import backlog_document, read_backlog
    from pipeline.bus import NatsBus

    assert settings.nats_url is not None
    bus = await NatsBus.connect(settings.nats_url, settings)
    try:
        return backlog_document(await read_backlog(bus, settings), settings)
    finally:
        await bus.close()


async def _serve_backlog(settings: Settings, host: str, port: int) -> int:
    """Make every consumer (the numbers exist before any worker), then serve ``backlog_app``."""
    from pipeline.backlog import backlog_app
    from pipeline.bus import NatsBus, ensure_consumers
    from pipeline.ingress.http import serve_app

    assert settings.nats_url is not None
    bus = await NatsBus.connect(settings.nats_url, settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await ensure_consumers(bus.js, settings)
        await serve_app(backlog_app(bus, settings), host, port, stop, "backlog")
    finally:
        await bus.close()
    return 0


def cmd_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.contracts import DeadLetter

    store = _existing_store(settings)
    prefix = f"dead-letter/{args.stage}/" if args.stage else "dead-letter/"
    letters = (
        []
        if store is None
        else [
            DeadLetter.model_validate_json(store.get(settings.bucket_work, info.key))
            for info in store.list(settings.bucket_work, prefix)
        ]
    )
    for letter in letters:
        print(f"{letter.at:%Y-%m-%d %H:%M:%S}  {letter.stage:8} {letter.job_id or '-':21} {letter.reason}")
    if not letters:
        print(
            f"no dead letters{f' for {args.stage}' if args.stage else ''}: the runner has given up on nothing"
        )
    return 0


def cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.notifications import configure_bucket_notifications
    from pipeline.stage import get_stage

    store = open_store(settings)
    for stage in settings.chain:  # seed what the stages rely on (validate: the default avatar)
        get_stage(stage).prepare_store(store, settings)
    print(f"buckets ready: {settings.bucket_inputs}, {settings.bucket_work}, {settings.bucket_outputs}")
    if settings.nats_url:  # the stream must exist before MinIO publishes into it, the consumers before
        consumers = asyncio.run(_ensure_stream(settings))  # KEDA or a worker reads them
        print(f"stream ready: {settings.stream} ({settings.subject_prefix}.stage.>)")
        print(f"consumers ready: {', '.join(consumers)}")
    if settings.store == "s3" and settings.event_source == "minio":
        for line in configure_bucket_notifications(settings):
            print(line)
    if settings.event_source == "seaweedfs":
        print(f"events: `mouthpiece bridge` follows the SeaweedFS filer at {settings.seaweedfs_filer}")
    return 0


async def _ensure_stream(settings: Settings) -> list[str]:
    """The stream, then every stage pool's durable consumer (``bus.ensure_consumers``); their names."""
    from pipeline.bus import NatsBus, ensure_consumers

    assert settings.nats_url is not None
    bus = await NatsBus.connect(settings.nats_url, settings)
    try:
        return [str(info.name) for info in await ensure_consumers(bus.js, settings)]
    finally:
        await bus.close()


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline import modelfiles

    for name in args.fetch:
        path = modelfiles.fetch_model(settings, name, args.url)
        print(f"fetched {name} -> {path}")
    print(f"Model directory: {settings.models}")
    print(f"None of these files is needed by {modelfiles.DEFAULT_JOB}: {modelfiles.PACKAGED}.")
    missing = modelfiles.missing_neural(("torch", "face_alignment", "diffusers", "transformers"))
    if missing:
        print(f"The neural extra is not installed ({modelfiles.NEURAL_EXTRA}): no {' or '.join(missing)}.")
    for model, path, present, digest in modelfiles.model_status(settings):
        state = "present" if present else ("missing (optional)" if model.optional else "missing")
        print(f"\n{model.name}: {state}")
        print(f"  what:       {model.description}")
        print(f"  needed by:  {model.needed_by}")
        if model.licence:
            print(f"  licence:    {model.licence}")
        if present:
            print(f"  sha256:     {digest}")
            print(f"  path:       {path}")
        elif model.without:
            print(f"  without it: {model.without}")
    return 0


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


def cmd_ingress(settings: Settings, args: argparse.Namespace) -> int:
    where = {"ingress_host": args.host or None, "ingress_port": args.port}
    settings = settings.model_copy(update={k: v for k, v in where.items() if v is not None})
    check_exposure(settings)  # before anything starts: one readable line
    return asyncio.run(_ingress(settings))


async def _ingress(settings: Settings) -> int:
    from pipeline.ingress.http import serve_ingress

    stack = await Stack.open(settings, mode="attach")
    stack.metrics = Metrics(settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await serve_ingress(stack, stop)
    finally:
        await stack.close()
    return 0


def cmd_comfyui(settings: Settings, args: argparse.Namespace) -> int:
    from mouthpiece_comfyui.install import main_install

    return main_install(args.comfyui, args.python, args.extras, args.editable, not args.no_pip)


def cmd_discord(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.discord.commands import register

    names = register(settings)
    print(f"registered {len(names)} command(s): {', '.join('/' + n for n in names)}")
    return 0


def cmd_console_rotate(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.console.auth import rotate_secret

    rotate_secret(open_store(settings), settings)
    print("The console has a new signing secret: every sign-in has ended (sign in again).")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
