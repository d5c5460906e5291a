"""Publishing into a folder on the publishing worker (the embedded default's output folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import Settings
from pipeline.contracts import FolderDestination
from pipeline.errors import PermanentError
from pipeline.stage import sha256_file


def folder_of(settings: Settings, destination: FolderDestination) -> Path:
    """The directory a folder destination names: none → the output folder; relative → under the data dir.

    Specs come from uploads: a folder outside the output folder and the operator's
    ``output_dirs`` is refused, so an upload cannot make the worker write anywhere it may write.
    """
    if destination.path is None:
        return settings.outbox
    given = Path(destination.path)
    path = (given if given.is_absolute() else settings.data_dir / given).resolve()
    allowed = [settings.outbox.resolve(), *(Path(p).expanduser().resolve() for p in settings.output_dirs)]
    if not any(path == root or root in path.parents for root in allowed):
        raise PermanentError(
            f"the job asks to publish into {destination.path}, which is not an allowed output folder"
        )
    return path


class IntentStore(Protocol):
    """Where a publication's intent is kept (``stages.publish.Intent``)."""

    def read(self) -> dict[str, Any] | None: ...
    def write(self, data: dict[str, Any]) -> None: ...


def publish_to_folder(
    settings: Settings,
    destination: FolderDestination,
    video: Path,
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
    intent.write({"path": str(target), "size": video.stat().st_size, "sha256": sha256_file(video)})
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
    """``<name>.failed.txt`` in the folder, saying why the job failed."""
    folder = folder_of(settings, destination)
    folder.mkdir(parents=True, exist_ok=True)
    note = folder / f"{name}.failed.txt"
    note.write_text(f"mouthpiece could not make this video (job {job_id}).\n\nReason: {reason}\n")
    return note
