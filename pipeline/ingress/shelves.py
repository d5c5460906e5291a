"""Where taken and refused drops go: ``.done/`` (with a ``.processing`` marker in the drop's place) and
``.failed/`` (with ``WHY.txt``, a ``<name>.failed.txt`` note in the output folder and a failed-drop
record that the console and ``mouthpiece status`` list)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import structlog

from pipeline.config import Settings
from pipeline.contracts import FailedDrop
from pipeline.drops import record_failed_drop
from pipeline.ingress.drop import Drop
from pipeline.ingress.markers import Markers
from pipeline.ingress.safe import sizes
from pipeline.ingress.settle import Settling
from pipeline.storage.base import ObjectStore
from pipeline.submit import Submitted, timestamp

log = structlog.get_logger("mouthpiece.folder")


class Shelves:
    """Moves drops out of the inbox; ``settling`` forgets what moved, and remembers an entry that could
    not be moved (so it is not tried again until it changes)."""

    def __init__(self, settings: Settings, store: ObjectStore, settling: Settling) -> None:
        self.settings = settings
        self.store = store
        self.inbox = settings.inbox
        self.settling = settling
        self.markers = Markers(settings, store)

    def shown(self, path: Path) -> str:
        """How a file is named in a note: relative to the inbox (``batch/face.png``), as the user sees it."""
        try:
            return str(path.relative_to(self.inbox))
        except ValueError:
            return path.name

    def archive(self, drop: Drop, submitted: Submitted) -> None:
        """Move a submitted drop to ``.done/``, leaving a ``.processing`` marker in its place."""
        target = unique(self.inbox / ".done" / f"{timestamp()}-{short(drop.name)}-{submitted.job_id}")
        try:  # the marker first, so the inbox never looks as if the drop had vanished
            files = [self.shown(m) for m in drop.members]
            self.markers.place(short(drop.name), submitted.job_id, files, target)
        except OSError:  # only a sign for people: the job runs without it
            log.exception("drop_marker_failed", entry=drop.name, job_id=submitted.job_id)
        self._move_all(drop.members, target)

    def set_aside(self, name: str, members: list[Path], reason: str, code: str | None = None) -> None:
        """Refuse an entry: its files to ``.failed/`` with the reason. If even that fails (a full disk, no
        permission), the entry is left alone until it changes, so one stuck entry cannot make the watcher
        try it again and again."""
        try:
            target = self._reject(name, members, reason)
            self._record(name, reason, code, target)
        except OSError:
            log.exception("drop_reject_failed", entry=name, reason=reason)
            self.settling.stuck(name, sizes(self.inbox / name))

    def _record(self, name: str, reason: str, code: str | None, target: Path) -> None:
        """The durable record of the failed drop (the console and `mouthpiece status` list it)."""
        drop = FailedDrop(name=name[:300], reason=reason, code=code, moved_to=str(target))
        try:
            record_failed_drop(self.store, self.settings, drop)
        except Exception:  # the note and the moved files already tell the user; the record is extra
            log.exception("failed_drop_record_failed", entry=name)

    def _reject(self, name: str, members: list[Path], reason: str) -> Path:
        target = unique(self.inbox / ".failed" / f"{timestamp()}-{short(name)}")
        self._move_all(members, target)
        (target / "WHY.txt").write_text(reason + "\n")
        outbox = self.settings.outbox
        outbox.mkdir(parents=True, exist_ok=True)
        (outbox / f"{short(Path(name).stem)}.failed.txt").write_text(
            f"mouthpiece could not take {name}.\n\nReason: {reason}\n"
        )
        log.warning("drop_rejected", entry=name, reason=reason)
        return target

    def _move_all(self, members: list[Path], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for member in members:
            self.settling.forget_entry(member.relative_to(self.inbox).parts[0])
            if os.path.lexists(member):  # a link is moved as the link, never followed
                shutil.move(str(member), str(target / member.name))


def short(name: str, limit: int = 120) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes (at a character boundary): archive and note names stay well
    under the file system's 255-byte limit whatever the user named the file."""
    data = name.encode()
    return name if len(data) <= limit else data[:limit].decode(errors="ignore").rstrip() or "drop"


def unique(target: Path) -> Path:
    """``target``, or ``target-2``, ``-3``, ... if a folder of that name exists (two drops a second)."""
    candidate, n = target, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = target.with_name(f"{target.name}-{n}")
    return candidate
