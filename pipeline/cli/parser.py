"""The command line's arguments, and checking what was typed before anything starts."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from pipeline.characters_cli import add_parsers as add_character_parsers
from pipeline.config import (
    STAGES,
    Settings,
)
from pipeline.contracts import (
    JobOptions,
    offered,
    option_values,
)
from pipeline.destinations import check_destinations
from pipeline.errors import ConfigError, InvalidInput
from pipeline.specfile import job_options, parse_spec
from pipeline.stage import check_speech, speech_unavailable
from pipeline.submit import (
    NAME_LIMIT,
    SPEC_EXTS,
    Submission,
    check_inputs,
    check_local_file,
    job_name,
)

log = structlog.get_logger("mouthpiece.cli")


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


FLAGGED = 3
