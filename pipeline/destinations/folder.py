"""Publishing into a folder on the publishing worker (the embedded default's output folder).

Which folders a job may name is ``pipeline.destinations.output_folder``'s decision (the output folder,
or inside ``output_dirs``); validate has checked it before any work, and it is checked again here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import Settings
from pipeline.contracts import Destination, FolderDestination
from pipeline.destinations import output_folder
from pipeline.destinations.base import Delivery, Intent, Publication, safe_name
from pipeline.errors import ConfigError, InvalidInput
from pipeline.messages import for_operators
from pipeline.stage import sha256_file
from pipeline.status import read_job


class FolderTarget:
    """Folder destinations as a ``Target``: the video copied in exactly once; a note when a job fails."""

    fault_point = "publish.after_copy"

    def publish(self, ctx: Publication, destination: Destination, delivery: Delivery, intent: Intent) -> str:
        if not isinstance(destination, FolderDestination):
            raise ConfigError(f"not a folder destination: {destination.kind}")
        where = publish_to_folder(
            ctx.settings, destination, delivery.video, delivery.sha256, delivery.filename, ctx.job_id, intent
        )
        job = read_job(ctx.store, ctx.settings, ctx.job_id)  # a retry's video replaces the failed run's note
        remove_failure_note(ctx.settings, destination, safe_name(job.name if job else ctx.job_id), ctx.job_id)
        return where

    def tell_failure(
        self,
        settings: Settings,
        destination: Destination,
        name: str,
        job_id: str,
        code: str | None,
        reason: str | None,
    ) -> None:
        if isinstance(destination, FolderDestination):
            note = for_operators(code, reason, job_id)  # the folders are the operator's own
            write_failure_note(settings, destination, name, job_id, note)


def folder_of(settings: Settings, destination: FolderDestination) -> Path:
    """The directory a folder destination names; ``InvalidInput`` for a folder that is not allowed."""
    return output_folder(settings, destination)


class IntentStore(Protocol):
    """Where a publication's intent is kept (``pipeline.destinations.base.Intent``)."""

    def read(self) -> dict[str, Any] | None: ...
    def write(self, data: dict[str, Any]) -> None: ...


def publish_to_folder(
    settings: Settings,
    destination: FolderDestination,
    video: Path,
    digest: str,
    filename: str,
    job_id: str,
    intent: IntentStore,
) -> str:
    """Copy the video in atomically (a reader never sees half a file), exactly once.

    The target name is chosen once and written to the intent before copying: ``<name>.mp4``, or
    ``<name>-<job>.mp4`` when another job's file has that name. A run after a crash reuses the intent's
    target, so the job's own earlier copy is recognised (same size and content) and not copied twice.
    """
    folder = folder_of(settings, destination)
    folder.mkdir(parents=True, exist_ok=True)
    earlier = intent.read()
    if earlier is not None and "path" in earlier:
        target = Path(earlier["path"])
        if _same_file(target, earlier):
            return str(target)  # the crashed run's copy is complete: it is this job's video
        if not target.exists():
            return _copy_in(video, target, job_id)
    target = _free_target(folder, filename, job_id)
    intent.write({"path": str(target), "size": video.stat().st_size, "sha256": digest})
    return _copy_in(video, target, job_id)


def _copy_in(video: Path, target: Path, job_id: str) -> str:
    part = target.parent / f".{target.name}.{job_id}.part"
    shutil.copyfile(video, part)
    os.replace(part, target)
    return str(target)


def _free_target(folder: Path, filename: str, job_id: str) -> Path:
    target = folder / filename
    return target if not target.exists() else folder / f"{target.stem}-{job_id[1:9]}{target.suffix}"


def _same_file(path: Path, intent: dict[str, Any]) -> bool:
    return (
        path.is_file()
        and path.stat().st_size == intent.get("size")
        and sha256_file(path) == intent.get("sha256")
    )


def write_failure_note(
    settings: Settings, destination: FolderDestination, name: str, job_id: str, reason: str
) -> Path:
    """``<name>.failed.txt`` in the folder, saying why the job failed. A folder the job may not name
    (the likely reason it failed) gets nothing: the note goes to the output folder instead."""
    try:
        folder = folder_of(settings, destination)
    except InvalidInput:
        folder = settings.outbox
    folder.mkdir(parents=True, exist_ok=True)
    note = folder / f"{name[:100]}.failed.txt"
    note.write_text(f"mouthpiece could not make this video (job {job_id}).\n\nReason: {reason}\n")
    return note


def remove_failure_note(settings: Settings, destination: FolderDestination, name: str, job_id: str) -> None:
    """The ``<name>.failed.txt`` an earlier run of this job left (it failed, then a retry published the
    video): removed, so the folder does not say both. A note of another job by that name stays."""
    try:
        folder = folder_of(settings, destination)
    except InvalidInput:
        folder = settings.outbox
    note = folder / f"{name[:100]}.failed.txt"
    try:
        with note.open(encoding="utf-8", errors="replace") as f:
            mine = f"(job {job_id})" in f.read(300)
        if mine:
            note.unlink()
    except OSError:
        return
