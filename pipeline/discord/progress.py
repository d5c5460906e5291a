"""The progress forwarder: turns the pipeline's progress notes into edits of Discord's deferred replies.

It listens to ``<prefix>.progress.*`` on the bus. For a job whose spec has a Discord interaction
destination it edits the reply ("Video 2 of 5 · render 40 % · about 1 min 30 s left", ``pipeline.eta``),
at most once every ``min_interval`` seconds per job, and never once every task of the job has reached its
last stage (the publish stage's final edits must stay last).
Specs are read from the store once per job and cached; jobs without an interaction are cached as such.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

import structlog
from pydantic import ValidationError

from pipeline.bus import Bus
from pipeline.config import Settings
from pipeline.contracts import DiscordInteractionDestination, Progress
from pipeline.discord.api import DiscordApi
from pipeline.errors import MouthpieceError
from pipeline.eta import job_line, renderer_of
from pipeline.keys import progress_subject
from pipeline.status import read_job, read_records, read_spec
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.discord.progress")

TOKEN_LIFETIME = timedelta(minutes=15)


def token_alive(destination: DiscordInteractionDestination, now: datetime | None = None) -> bool:
    """Whether the interaction token can still be used (15 minutes from the interaction, less a margin)."""
    created = destination.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    expires = created + TOKEN_LIFETIME - timedelta(seconds=20)
    return (now or datetime.now(UTC)) < expires


class ProgressForwarder:
    """Forwards progress notes to Discord; ``start`` subscribes it on a bus."""

    def __init__(
        self, settings: Settings, store: ObjectStore, api: DiscordApi, *, min_interval: float = 3.0
    ) -> None:
        self.settings = settings
        self.store = store
        self.api = api
        self.min_interval = min_interval
        self._destinations: OrderedDict[str, DiscordInteractionDestination | None] = OrderedDict()
        self._last_edit: dict[str, float] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, bus: Bus) -> None:
        # a queue group: with several ingress replicas, one of them edits each message
        await bus.subscribe(
            progress_subject(self.settings, "*"), self.on_note, queue="mouthpiece-discord-progress"
        )

    async def on_note(self, data: bytes) -> None:
        """Handle one progress note without blocking the subscription (the edit runs as a task)."""
        try:
            note = Progress.model_validate_json(data)
        except ValidationError:
            return
        if note.job_id in self._busy or not self._due(note.job_id):
            return
        self._busy.add(note.job_id)
        task = asyncio.create_task(self._forward(note))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait for the edits in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _due(self, job_id: str) -> bool:
        last = self._last_edit.get(job_id)
        return last is None or time.monotonic() - last >= self.min_interval

    async def _forward(self, note: Progress) -> None:
        try:
            destination = await asyncio.to_thread(self._destination, note.job_id)
            if destination is None or not token_alive(destination) or note.stage == self.settings.chain[-1]:
                return
            text = await asyncio.to_thread(self._line, note)
            if text is None:
                return
            self._mark_edited(note.job_id)
            await asyncio.to_thread(
                self.api.edit_original,
                destination.application_id,
                destination.token.get_secret_value(),
                text,
            )
        except MouthpieceError as exc:  # progress is best effort; the final edit is what matters
            log.info("progress_edit_skipped", job_id=note.job_id, reason=exc.reason)
        finally:
            self._busy.discard(note.job_id)

    def _mark_edited(self, job_id: str) -> None:
        self._last_edit[job_id] = time.monotonic()
        if len(self._last_edit) > 1000:  # forget the oldest jobs; they finished long ago
            for old in sorted(self._last_edit, key=self._last_edit.__getitem__)[:500]:
                del self._last_edit[old]

    def _destination(self, job_id: str) -> DiscordInteractionDestination | None:
        """The job's interaction destination (cached), or None when it has none."""
        if job_id in self._destinations:
            return self._destinations[job_id]
        spec = read_spec(self.store, self.settings, job_id)  # no spec yet: raises, nothing cached
        found = next((d for d in spec.destinations if isinstance(d, DiscordInteractionDestination)), None)
        self._destinations[job_id] = found
        while len(self._destinations) > 1000:
            self._destinations.popitem(last=False)
        return found

    def _line(self, note: Progress) -> str | None:
        """The reply's progress line ("Video 2 of 5 · render 40 % · about 1 min left", ``pipeline.eta``),
        or None once every task has reached the last stage (its edits must stay last)."""
        records = read_records(self.store, self.settings, note.job_id)
        job = read_job(self.store, self.settings, note.job_id)
        last = self.settings.chain[-1]
        at_last = {r.task for r in records if r.stage == last}
        if at_last and (job is None or at_last >= set(job.tasks)):
            return None
        live = {f"{note.task if note.stage != self.settings.chain[0] else 'job'}/{note.stage}": note.fraction}
        renderer = renderer_of(self.store, self.settings, note.job_id)
        line = job_line(self.store, self.settings, note.job_id, job, records, renderer, live)
        return line[:1].upper() + line[1:]
