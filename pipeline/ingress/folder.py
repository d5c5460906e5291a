"""The watched folder: drop files in, get a video in the output folder.

What a drop can be (entries directly inside the folder):

- ``hello.flac`` alone: a job with the default avatar;
- ``hello.flac`` with ``hello.png`` (or ``hello.*.png``, ``hello.mp4``, ...): that audio with those avatars;
- a folder holding one audio file and one or more images/videos (or a job spec);
- ``job.json`` / ``job.yaml``: a job spec; the media it names are relative to it.

An entry is taken only when it is completely written: no file in it is open for writing (inotify
close-write, or a rename into the folder), it has been quiet for ``settle_seconds``, and its sizes did
not change between two looks (the only signal on network mounts, where ``watch_polling`` is used).
Taken entries move to ``.done/`` and ``<name>.processing`` appears in their place until the job is over
(``pipeline.ingress.markers``; a job that made no video then moves its drop on to ``.failed/``); entries
that cannot become a job move to ``.failed/`` with a note saying why (``WHY.txt``), and the same note goes
to the output folder as ``<name>.failed.txt``.

The folder is a trust boundary (anyone who can write into it can start jobs), so it takes regular files
only: a link (to ``/etc/passwd``, ``/dev/zero``, a voice outside the folder, another folder), a named
pipe, a device or a socket is refused with a note, never opened. Files are opened with ``O_NOFOLLOW |
O_NONBLOCK`` and checked again on the open descriptor, copied into a private staging folder with a byte
cap (``max_input_bytes``; specs 1 MB), and submitted from there, so nothing can be swapped in between the
check and the read and no read can block the watcher. A spec's destinations are checked against the
deployment's allow-lists when it is taken. Any error in one entry moves that entry aside with a note and
never stops the others; an image or video whose voice clip never comes gets a note after
``avatar_wait_seconds``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from pipeline.config import Settings
from pipeline.contracts import FolderDestination, JobOptions
from pipeline.errors import DropRefused, MouthpieceError, RetryableError
from pipeline.ingress.drop import Drop, DropReader, identity
from pipeline.ingress.safe import copy_regular, sizes
from pipeline.ingress.settle import Settling
from pipeline.ingress.shelves import Shelves
from pipeline.owner import scratch_name, scratch_root
from pipeline.storage.base import ObjectStore
from pipeline.submit import Submission, Submitted, submit

log = structlog.get_logger("mouthpiece.folder")
TICK_SECONDS = 0.25
"""How often the inbox is looked at for entries that are complete."""
SWEEP_SECONDS = 1.0
"""How often the markers of drops in flight are checked: each check folds its job's status (a read of
the job and its records, many requests on S3), so not on every tick."""
OUR_SIDE = "because of a problem on our side: drop it again later, or ask the operator (the log says why)"


class FolderIngress:
    """Watches ``settings.inbox`` and submits complete drops through ``store``."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        on_submit: Callable[[Submitted, Drop], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.inbox = settings.inbox
        self.on_submit = on_submit
        self.settling = Settling(settings.inbox, settings.settle_seconds)
        self.reader = DropReader(settings, self.settling)
        self.shelves = Shelves(settings, store, self.settling)
        self.markers = self.shelves.markers
        self._stop = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> FolderIngress:
        for sub in ("", ".done", ".failed"):
            (self.inbox / sub).mkdir(parents=True, exist_ok=True)
        # watchdog's recursive inotify watch adds a folder moved into the inbox twice (its own event and
        # the scan of the new folder) and warns that the second replaces the first: expected, harmless
        warnings.filterwarnings("ignore", message="Callback with id .* already exists for watch")
        observer: BaseObserver = PollingObserver(timeout=1.0) if self.settings.watch_polling else Observer()
        observer.schedule(
            _Handler(self.settling, self.settings.watch_polling), str(self.inbox), recursive=True
        )
        observer.start()
        self._observer = observer
        for path in self.inbox.iterdir():  # dropped while we were not running
            self.touch(path)
        self._thread = threading.Thread(target=self._loop, name="folder-ingress", daemon=True)
        self._thread.start()
        log.info("watching_folder", inbox=str(self.inbox), polling=self.settings.watch_polling)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        swept = 0.0
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick()
                if time.monotonic() - swept >= SWEEP_SECONDS:
                    swept = time.monotonic()
                    self.markers.sweep()
            except Exception:  # the watcher must survive anything one drop does
                log.exception("folder_tick_failed")

    def touch(self, path: Path, *, writing: bool | None = None) -> None:
        """Something happened to ``path`` (what the watcher reports; tests call it directly)."""
        self.settling.touch(path, writing=writing)

    # --- taking drops -----------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[Submitted]:
        """Submit every entry that is complete; returns what was submitted (for tests). One entry's
        trouble never stops the others: each is taken, refused or set aside on its own."""
        now = time.monotonic() if now is None else now
        submitted = []
        for name in self.settling.ready(now):
            path = self.inbox / name
            if not os.path.lexists(path):
                self.settling.forget_entry(name)
                continue
            result = self._take(name, path, now)
            if result is not None:
                submitted.append(result)
        return submitted

    def _take(self, name: str, path: Path, now: float) -> Submitted | None:
        members = [path]
        try:
            drop = self.reader.drop_for(name, path, now)
            if drop is None:
                return None  # an avatar waiting for its audio, or a spec's file waiting for the spec
            members = drop.members
            submitted = self.submit(drop)
        except RetryableError as exc:
            log.warning("drop_retry", entry=name, reason=exc.reason)
            self.settling.defer(name)
            return None
        except (DropRefused, MouthpieceError) as exc:
            self.shelves.set_aside(name, self.reader.with_named_files(path, members), str(exc), exc.code)
            return None
        except Exception:
            log.exception("drop_failed", entry=name)
            self.shelves.set_aside(
                name, self.reader.with_named_files(path, members), f"{name} could not be taken {OUR_SIDE}"
            )
            return None
        try:
            self.shelves.archive(drop, submitted)
        except OSError:  # submitted: never again (the same drop would be the same job anyway)
            log.exception("drop_archive_failed", entry=name, job_id=submitted.job_id)
            self.settling.stuck(name, sizes(path))
        return submitted

    def submit(self, drop: Drop) -> Submitted:
        """Submit ``drop`` from private copies of its files; the same drop (same files, sizes and times)
        is the same job however often it is submitted."""
        spec = drop.spec
        destinations = list(spec.destinations) if spec else []
        if not any(isinstance(d, FolderDestination) for d in destinations):
            destinations.append(FolderDestination())
        root = scratch_root(self.settings.data_dir)
        with tempfile.TemporaryDirectory(prefix=scratch_name("mp-inbox"), dir=root) as tmp:
            staged = self._stage(drop, Path(tmp))
            asked = Submission(
                audio=staged.get(drop.audio) if drop.audio else None,
                avatars=tuple(staged[a] for a in drop.avatars),
                name=(spec.name if spec else None) or drop.name,
                options=spec.options if spec else JobOptions(),
                destinations=tuple(destinations),
                speech=spec.speech if spec else None,
                source="folder",
                nonce=identity(drop),
                characters=tuple(drop.characters),
                library=spec.library if spec else None,
            )
            submitted = submit(self.store, self.settings, asked)
        log.info("drop_submitted", entry=drop.name, job_id=submitted.job_id, avatars=len(drop.avatars))
        if self.on_submit is not None:
            self.on_submit(submitted, drop)
        return submitted

    def _stage(self, drop: Drop, tmp: Path) -> dict[Path, Path]:
        """Private copies of the drop's media (same file names), read safely with a byte cap."""
        staged = {}
        for index, path in enumerate([*([drop.audio] if drop.audio else []), *drop.avatars]):
            target = tmp / str(index) / path.name
            target.parent.mkdir()
            copy_regular(path, target, self.settings.max_input_bytes, self.shelves.shown(path))
            staged[path] = target
        return staged


class _Handler(FileSystemEventHandler):
    """Watchdog events to ``Settling``: with inotify a written file is 'closed' at the end; polling (for
    network mounts) never says closed, so there only quiet time and stable sizes count."""

    def __init__(self, settling: Settling, polling: bool) -> None:
        self.settling = settling
        self.polling = polling

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = Path(str(event.src_path))
        kind = event.event_type
        if kind == "moved":
            self.settling.closed(src)
            self.settling.touch(Path(str(event.dest_path)), writing=False)
        elif kind == "deleted":
            self.settling.closed(src)
        elif kind == "modified" and not event.is_directory:
            self.settling.touch(src, writing=not self.polling)
        elif kind == "closed":
            self.settling.touch(src, writing=False)
        elif kind == "created":
            # not 'writing': a file moved in from another filesystem arrives as 'created' alone
            self.settling.touch(src)
