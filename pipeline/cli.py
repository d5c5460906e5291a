"""The ``mouthpiece`` command line. Settings are built here, once, and passed down.

Exit codes: 0 success; 1 the job failed (the reason is printed); 2 bad usage or configuration;
130 interrupted.
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
    Motion,
    Progress,
    QualitySummary,
    State,
    Style,
    SubtitleMode,
)
from pipeline.errors import ConfigError, InvalidInput, MouthpieceError
from pipeline.keys import pools_of, progress_subject
from pipeline.logs import configure_logging
from pipeline.messages import users_fault
from pipeline.metrics import Metrics
from pipeline.registry import check_chain
from pipeline.specfile import job_options
from pipeline.stack import Stack, running_stack, stop_on_signals
from pipeline.status import job_status, read_records
from pipeline.storage import ObjectStore, open_store
from pipeline.submit import NAME_LIMIT, Submission, check_inputs, submit

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
        "voice.mp3 face.png -o out.mp4` makes one from yours; `mouthpiece up` runs everything and "
        "watches a folder. `mouthpiece COMMAND --help` explains each command.",
        epilog=GLOBAL_OPTIONS,
        formatter_class=_Paragraphs,
    )
    _global_options(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = _Commands(sub)
    _local_commands(commands)
    _queue_commands(commands)
    _operator_commands(commands)
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
        "the files it wrote and exits 0, or prints why the job failed and exits 1.",
    )
    render.add_argument("audio", type=Path, help="the voice clip (.mp3, .wav, .ogg, .m4a, .flac, ...)")
    render.add_argument(
        "avatars", type=Path, nargs="+", help="photo(s) or video(s) of the face; one video each"
    )
    render.add_argument(
        "-o", "--output", type=Path, required=True, help="output file (a folder for several avatars)"
    )
    _job_options(render)

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
    submit.add_argument("audio", type=Path, help="the voice clip")
    submit.add_argument(
        "avatars", type=Path, nargs="*", help="photo(s) or video(s) of the face (none: the default avatar)"
    )
    submit.add_argument("--wait", action="store_true", help="wait for the job and print its status")
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
        "runs with), secrets masked; warnings (on stderr) for credentials left at a well-known default.",
    )
    config.add_argument("--markdown", action="store_true", help="print the table of all settings instead")

    reconcile = commands.add("reconcile", "re-announce inputs without a job and jobs stuck mid-pipeline")
    reconcile.add_argument(
        "--every", metavar="DURATION", type=_duration, help="keep running, one sweep per DURATION (60s, 5m)"
    )
    commands.add("init", "create buckets, the default avatar and (MinIO) bucket notifications")

    gc = commands.add("gc", "delete artifacts of finished jobs older than a duration (cron)")
    gc.add_argument("--older-than", metavar="DURATION", type=_duration, required=True, help="e.g. 7d, 12h")
    gc.add_argument("--outputs", action="store_true", help="also delete their videos (status.json stays)")
    gc.add_argument("--inputs", action="store_true", help="also delete the uploads that started them")
    gc.add_argument("--cache", action="store_true", help="also delete old cache entries no running job uses")
    gc.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    commands.add("bridge", "forward SeaweedFS filer events to the bus (MOUTHPIECE_EVENT_SOURCE=seaweedfs)")

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

    discord = commands.add("discord", "Discord set-up tasks")
    tasks = discord.add_subparsers(dest="discord_command", required=True, metavar="TASK")
    _Commands(tasks).add("register", "put the slash commands (/avatar, /announce) to Discord")


def _duration(text: str) -> float:
    from pipeline.gc import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--renderer",
        choices=["viseme", "wav2lip", "musetalk", "none"],
        help="lip-sync method: viseme (default, no model), wav2lip (neural: needs the neural extra "
        "and a checkpoint; research-only weights), musetalk (neural: MuseTalk 1.5, needs the neural "
        "extra and `models --fetch musetalk`), none (the avatar as it is)",
    )
    p.add_argument("--checkpoint", help="wav2lip checkpoint (file in the model dir, or a path)")
    p.add_argument(
        "--style", choices=[s.value for s in Style], help="avatar style (default auto: told from the picture)"
    )
    p.add_argument(
        "--subtitles",
        choices=[s.value for s in SubtitleMode],
        help="none (default), soft (a subtitle track) or burn (drawn into the picture)",
    )
    p.add_argument("--transcript", help="what the audio says (better timing and subtitles)")
    p.add_argument("--name", help="name of the output (default: the voice clip's name)")
    p.add_argument(
        "--motion", choices=[m.value for m in Motion], help="blinks and head motion (photos: subtle)"
    )
    p.add_argument("--min-quality", type=float, help="quality score (0..1) under which the video is flagged")


def _options(args: argparse.Namespace) -> JobOptions:
    _check_lengths(args)
    fields = {
        k: getattr(args, k, None)
        for k in ("renderer", "checkpoint", "style", "subtitles", "transcript", "motion", "min_quality")
    }
    return job_options({k: v for k, v in fields.items() if v is not None})


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


def _check_inputs(settings: Settings, audio: Path, avatars: list[Path], output: Path | None = None) -> None:
    """Every input is a readable regular file within the size limit (``submit.check_inputs``: refused
    before anything starts), and ``output`` is none of them."""
    check_inputs(settings, audio, avatars)
    if output is not None and any(_same_file(output, path) for path in [audio, *avatars]):
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
    configure_logging(_logging_settings(settings, args.command))
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


def _logging_settings(settings: Settings, command: str) -> Settings:
    """The settings logging runs with: commands that show their own progress log warnings only, unless a
    log level was set. A copy, so ``config`` still shows the level ``up`` runs at."""
    if command in QUIET_COMMANDS and "log_level" not in settings.model_fields_set:
        return settings.model_copy(update={"log_level": "warning"})
    return settings


# --- commands ------------------------------------------------------------------------------------------


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown(), end="")
        return 0
    shown = effective_settings(settings)
    print(json.dumps(shown, indent=2, default=str))
    print(f"mouthpiece: data directory {settings.data_dir}: {data_dir_origin(settings)}", file=sys.stderr)
    for warning in credential_warnings(settings, shown):
        print(f"mouthpiece: warning: {warning}", file=sys.stderr)
    return 0


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
    settings, options = _local_checkpoint(settings, _options(args))
    _check_inputs(settings, args.audio, list(args.avatars), args.output)
    return asyncio.run(_render(settings, args.audio, list(args.avatars), args.output, options, args.name))


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
    code = asyncio.run(
        _render(
            settings, ASSETS_DIR / "jfk.flac", [ASSETS_DIR / "astronaut.png"], args.output, options, "demo"
        )
    )
    if code == 0:
        print(f"The demo video is at {args.output.resolve()}")
    return code


async def _render(
    settings: Settings, audio: Path, avatars: list[Path], output: Path, options: JobOptions, name: str | None
) -> int:
    stack = await Stack.open(settings)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        if stack.owner:
            tasks = await stack.run_workers(list(settings.chain), stop)
        status = await _submit_and_wait(stack, audio, avatars, options, name)
        # a batch where some avatars failed still hands over the videos that were made
        inputs = [audio, *avatars]
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
    return 0


def _details(stack: Stack, status: JobStatus) -> list[str]:
    """The full reasons of a job's failures that are not the user's own mistake (for operators)."""
    if users_fault(status.code):
        return []
    records = read_records(stack.store, stack.settings, status.job_id)
    failed = [r for r in records if r.state == State.failed and r.reason]
    return list(dict.fromkeys(f"{r.stage}: {r.reason}" for r in failed))


async def _submit_and_wait(
    stack: Stack, audio: Path, avatars: list[Path], options: JobOptions, name: str | None
) -> JobStatus:
    settings = stack.settings
    asked = Submission(audio=audio, avatars=tuple(avatars), options=options, name=name)
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

    def note(self, progress: Progress) -> None:
        self.fraction[progress.stage] = progress.fraction

    def show(self, status: JobStatus) -> None:
        stage = status.stage or "queued"
        pct = self.fraction.get(stage)
        done = " ".join(f"{s} {t:.1f}s" for s, t in status.timings.items())
        line = (
            f"[{self.job_id}] {status.state.value}: {stage}{f' {pct:.0%}' if pct is not None else ''}  {done}"
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
    options = _options(args)
    _check_inputs(settings, args.audio, list(args.avatars))
    asked = Submission(audio=args.audio, avatars=tuple(args.avatars), options=options, name=args.name)
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
        lines.append(
            f"No jobs yet: drop a voice clip into {settings.inbox}, or run `mouthpiece submit VOICE [PHOTO]`."
        )
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
    """The table less its ticking columns (a log gets a new table only when something happened)."""
    return "\n".join(line[:76] + line[84:] if line.startswith("j") else line for line in text.splitlines())


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
    """``0.93`` or ``0.41 FLAGGED (the voice comes 180 ms after the mouth moves)``, with the offset."""
    text = f"{quality.score:.2f}"
    if quality.offset_ms is not None:
        text += f", audio offset {quality.offset_ms:+.0f} ms"
    if quality.flagged:
        text += " FLAGGED"
    if quality.problems:
        text += f" ({'; '.join(quality.problems)})"
    return text


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
    from pipeline.registry import get_stage

    store = open_store(settings)
    for stage in settings.chain:  # seed what the stages rely on (validate: the default avatar)
        get_stage(stage).prepare_store(store, settings)
    print(f"buckets ready: {settings.bucket_inputs}, {settings.bucket_work}, {settings.bucket_outputs}")
    if settings.nats_url:  # the stream must exist before MinIO publishes into it
        asyncio.run(_ensure_stream(settings))
        print(f"stream ready: {settings.stream} ({settings.subject_prefix}.stage.>)")
    if settings.store == "s3" and settings.event_source == "minio":
        for line in configure_bucket_notifications(settings):
            print(line)
    if settings.event_source == "seaweedfs":
        print(f"events: `mouthpiece bridge` follows the SeaweedFS filer at {settings.seaweedfs_filer}")
    return 0


async def _ensure_stream(settings: Settings) -> None:
    from pipeline.bus import NatsBus

    assert settings.nats_url is not None
    bus = await NatsBus.connect(settings.nats_url, settings)
    await bus.close()


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline import models

    for name in args.fetch:
        path = models.fetch_model(settings, name, args.url)
        print(f"fetched {name} -> {path}")
    print(f"Model directory: {settings.models}")
    print(f"None of these files is needed by {models.DEFAULT_JOB}: {models.PACKAGED}.")
    missing = models.missing_neural(("torch", "face_alignment", "diffusers", "transformers"))
    if missing:
        print(f"The neural extra is not installed ({models.NEURAL_EXTRA}): no {' or '.join(missing)}.")
    for model, path, present, digest in models.model_status(settings):
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
    "render",
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


def cmd_discord(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.discord.commands import register

    names = register(settings)
    print(f"registered {len(names)} command(s): {', '.join('/' + n for n in names)}")
    return 0


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "up": cmd_up,
    "render": cmd_render,
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
    "dead-letters": cmd_dead_letters,
    "init": cmd_init,
    "models": cmd_models,
    "ingress": cmd_ingress,
    "discord": cmd_discord,
}


if __name__ == "__main__":
    sys.exit(main())
