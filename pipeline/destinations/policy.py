"""Which destinations a job may name on this deployment: the trust boundary between a job spec and the
places the pipeline writes to or sends requests to.

A spec may come from anyone who can put a file into the inputs bucket or the inbox, so its destinations
are checked here against the operator's settings, not trusted:

- a Discord webhook must be https on one of ``discord_webhook_hosts`` (port 443), or on an origin listed
  there (``http://127.0.0.1:9000``: tests, a relay), or on ``discord_api_base``'s origin (where interaction
  replies go anyway), with Discord's path shape (both in ``pipeline.webhooks``);
- an interaction reply goes to ``discord_api_base`` only; its id and token are checked for shape by the
  contract, and its fallback webhook like any webhook;
- a folder must be the output folder or inside it or inside one of ``output_dirs`` (after resolving
  links).

validate calls ``check_destinations`` before any work, publish again before it writes anything, and the
failure notices skip what is not allowed. Refusals are ``InvalidInput`` with a sentence for the user.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.config import Settings
from pipeline.contracts import (
    Destination,
    DiscordInteractionDestination,
    DiscordWebhookDestination,
    FolderDestination,
)
from pipeline.errors import InvalidInput

__all__ = [
    "WEBHOOK_HINT",
    "allowed_webhook",
    "check_destination",
    "check_destinations",
    "is_allowed",
    "output_folder",
    "webhook_allowed",
]
from pipeline.webhooks import WEBHOOK_HINT, allowed_webhook, webhook_allowed


def output_folder(settings: Settings, destination: FolderDestination, where: str = "the job") -> Path:
    """The directory a folder destination names: none → the output folder; relative → under the data dir.

    A folder outside the output folder and the operator's ``output_dirs`` is refused (``InvalidInput``),
    so an upload cannot make the worker write anywhere it may write. ``where`` names the spec in the
    refusal ("job spec team.yaml").
    """
    if destination.path is None:
        return settings.outbox
    given = (
        Path(destination.path).expanduser() if destination.path.startswith("~") else Path(destination.path)
    )
    try:
        path = (given if given.is_absolute() else settings.data_dir / given).resolve()
    except (ValueError, OSError, RuntimeError):
        path = None
    allowed = [settings.outbox.resolve(), *(Path(p).expanduser().resolve() for p in settings.output_dirs)]
    if path is None or not any(path == root or root in path.parents for root in allowed):
        shown = destination.path if len(destination.path) <= 80 else destination.path[:77] + "..."
        raise InvalidInput(
            f"{where} asks to publish into {shown}, which is not an allowed output folder: "
            "leave out the path to use the output folder",
            code="output_folder_not_allowed",
        )
    return path


def check_destination(settings: Settings, destination: Destination, where: str = "the job") -> None:
    """``InvalidInput`` if this deployment may not publish to ``destination``; the refusal names the spec
    as ``where`` ("job spec team.yaml")."""
    if isinstance(destination, FolderDestination):
        output_folder(settings, destination, where)
    elif isinstance(destination, DiscordWebhookDestination):
        allowed_webhook(settings, destination.url, f"the Discord webhook in {where}")
    elif isinstance(destination, DiscordInteractionDestination) and destination.fallback_webhook is not None:
        allowed_webhook(settings, destination.fallback_webhook, f"the fallback webhook in {where}")


def check_destinations(
    settings: Settings, destinations: Iterable[Destination], where: str = "the job"
) -> None:
    """``check_destination`` for each; the first refusal is raised."""
    for destination in destinations:
        check_destination(settings, destination, where)


def is_allowed(settings: Settings, destination: Destination) -> bool:
    """Whether ``check_destination`` passes (for best-effort notices, which skip what is not allowed)."""
    try:
        check_destination(settings, destination)
    except InvalidInput:
        return False
    return True
