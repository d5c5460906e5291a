"""Setting up and looking after a deployment: ``config``, ``init``, ``models``, ``gc``, ``discord``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import structlog
from pydantic import SecretStr

from pipeline.config import (
    Settings,
    data_dir_origin,
    settings_markdown,
)
from pipeline.storage import open_store

log = structlog.get_logger("mouthpiece.cli")


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
