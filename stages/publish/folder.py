"""Publishing into a folder on the publishing worker (the embedded default's output folder).

Which folders a job may name is ``pipeline.destinations.output_folder``'s decision (the output folder,
or inside ``output_dirs``); validate has checked it before any work, and it is checked again here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.config import Settings
from pipeline.contracts import FolderDestination
from pipeline.destinations import output_folder
from pipeline.errors import InvalidInput


def folder_of(settings: Settings, destination: FolderDestination) -> Path:
    """The directory a folder destination names; ``InvalidInput`` for a folder that is not allowed."""
    return output_folder(settings, destination)


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
