"""``<name>.processing``: the watched folder's sign that a drop is being worked on.

When the folder ingress submits a drop it writes ``<name>.processing`` into the inbox (the drop's files
move to ``.done/`` at the same moment), saying which job it became and how to follow it. The marker goes
once the job is over — done, failed or cancelled — and by then the job's outcome is in the output folder:
the video, or ``<name>.failed.txt`` saying why not. A drop whose job failed (or was cancelled) and made no
video moves on from ``.done/`` to ``.failed/`` with a ``WHY.txt``, beside the drops refused at the door:
``.done/`` holds what became videos, ``.failed/`` what did not: a drop whose job is retried and done moves
back to ``.done/`` (and publish removes the job's old ``.failed.txt`` note).

The ingress that wrote a marker removes it (``Markers.sweep``, from its watcher loop): it is the one
component that knows the inbox, the job's status folds all its tasks (a batch is over when its last
avatar is), and the markers are files, so a restarted ``mouthpiece up`` picks up where the last one
stopped. The status turns final a moment before the last stage's failure note is written, so a marker is
removed only once the job has been seen finished for ``GRACE_SECONDS``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog

from pipeline.config import Settings
from pipeline.contracts import JobStatus, State
from pipeline.status import finished_before, job_status
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.folder")
MARKER_SUFFIX = ".processing"
GRACE_SECONDS = 1.0
"""How long a job must have been seen finished before its marker goes: its failure note is written just
after its status turns final."""


def _retried_job(why: str) -> str | None:
    """The job id in a ``WHY.txt`` (its ``(job ID: mouthpiece status ID)`` line)."""
    found = re.search(r"\(job (j[0-9a-f]+): mouthpiece status", why)
    return found.group(1) if found else None


def marker_text(job_id: str, files: list[str], archive: str, outbox: Path) -> str:
    """What the marker says: to a person first; the ``job:`` and ``archive:`` lines are read back."""
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"mouthpiece is making a video from {', '.join(files)}.\n"
        f"When it is done this file goes away, and the video (or a .failed.txt note saying why not) is\n"
        f"in {outbox}.\n\n"
        f"job: {job_id}\n"
        f"started: {started}\n"
        f"follow it: mouthpiece status {job_id}\n"
        f"archive: {archive}\n"
    )


def _field(text: str, name: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(f"{name}: "):
            return line.removeprefix(f"{name}: ").strip()
    return None


class Markers:
    """The ``.processing`` markers of one inbox."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store
        self.inbox = settings.inbox
        self._finished_since: dict[str, float] = {}

    def place(self, name: str, job_id: str, files: list[str], archive: Path) -> Path:
        """Write ``<name>.processing`` (``<name>-2.processing``... when a drop of that name is still
        being worked on); ``archive`` is where the drop's files are kept (inside the inbox)."""
        target, n = self.inbox / f"{name}{MARKER_SUFFIX}", 1
        while os.path.lexists(target):
            n += 1
            target = self.inbox / f"{name}-{n}{MARKER_SUFFIX}"
        shown = str(archive.relative_to(self.inbox))
        part = self.inbox / f".{target.name}.part"  # hidden while written: the watcher skips it
        part.write_text(marker_text(job_id, files, shown, self.settings.outbox))
        os.replace(part, target)
        return target

    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove the markers of jobs that are over (seen finished for ``GRACE_SECONDS``), moving a failed
        job's drop from ``.done/`` to ``.failed/``, and a drop whose job was retried and is now done back
        from ``.failed/`` to ``.done/``; returns the markers removed."""
        now = time.monotonic() if now is None else now
        removed = []
        for marker in sorted(self.inbox.glob(f"*{MARKER_SUFFIX}")):
            if self._over(marker, now):
                removed.append(marker)
        self._recovered()
        return removed

    def _recovered(self) -> None:
        """Drops in ``.failed/`` whose job (named in their ``WHY.txt``) is done now, after a retry: back
        to ``.done/``, without the ``WHY.txt`` (``.failed/`` holds what did not become videos)."""
        for why in sorted(self.inbox.glob(".failed/*/WHY.txt")):
            try:
                job_id = _retried_job(why.read_text(encoding="utf-8", errors="replace")[-400:])
            except OSError:
                continue
            status = finished_before(self.store, self.settings, job_id) if job_id else None
            if job_id is None or status is None or status.state != State.done:
                continue
            target = self.inbox / ".done" / why.parent.name
            try:
                why.unlink()
                shutil.move(
                    str(why.parent), str(target if not target.exists() else f"{target}-{job_id[1:9]}")
                )
            except OSError:
                log.exception("drop_restore_failed", drop=why.parent.name, job_id=job_id)
                continue
            log.info("drop_recovered", drop=why.parent.name, job_id=job_id)

    def _over(self, marker: Path, now: float) -> bool:
        try:
            text = marker.read_text()
        except OSError:
            return False
        job_id = _field(text, "job")
        status = job_status(self.store, self.settings, job_id) if job_id else None
        if job_id is None or status is None or not status.finished:
            return False
        seen = self._finished_since.setdefault(job_id, now)
        if now - seen < GRACE_SECONDS:
            return False
        if status.state != State.done and not status.outputs:
            self._to_failed(_field(text, "archive"), status)
        marker.unlink(missing_ok=True)
        self._finished_since.pop(job_id, None)
        log.info("drop_finished", marker=marker.name, job_id=job_id, state=status.state.value)
        return True

    def _to_failed(self, archive: str | None, status: JobStatus) -> None:
        """The drop of a job that made no video: from ``.done/`` to ``.failed/``, with ``WHY.txt``."""
        source = self.inbox / archive if archive else None
        if source is None or not source.is_dir() or source.parent != self.inbox / ".done":
            return
        target = self.inbox / ".failed" / source.name
        try:
            target.parent.mkdir(exist_ok=True)
            shutil.move(str(source), str(target))
            reason = status.reason or f"the job {status.state.value}"
            (target / "WHY.txt").write_text(
                f"{reason}\n\n(job {status.job_id}: mouthpiece status {status.job_id})\n"
            )
        except OSError:  # the marker still goes: the outbox note says why, the log says what went wrong
            log.exception("drop_move_failed", archive=archive, job_id=status.job_id)
