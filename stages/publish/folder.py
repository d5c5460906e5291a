"""Publishing into a folder on the publishing worker (the embedded default's output folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.config import Settings
from pipeline.contracts import FolderDestination
from pipeline.errors import PermanentError


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


def publish_to_folder(
    settings: Settings, destination: FolderDestination, video: Path, filename: str, job_id: str
) -> str:
    """Copy the video in atomically (a reader never sees half a file); never overwrite another job's."""
    folder = folder_of(settings, destination)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    if target.exists():
        target = folder / f"{target.stem}-{job_id[1:9]}{target.suffix}"
    part = folder / f".{target.name}.part"
    shutil.copyfile(video, part)
    os.replace(part, target)
    return str(target)


def write_failure_note(
    settings: Settings, destination: FolderDestination, name: str, job_id: str, reason: str
) -> Path:
    """``<name>.failed.txt`` in the folder, saying why the job failed."""
    folder = folder_of(settings, destination)
    folder.mkdir(parents=True, exist_ok=True)
    note = folder / f"{name}.failed.txt"
    note.write_text(f"mouthpiece could not make this video (job {job_id}).\n\nReason: {reason}\n")
    return note
