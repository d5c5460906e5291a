"""The watched folder: drop files in, get a video in the output folder.

What a drop can be (entries directly inside the folder):

- ``hello.flac`` alone: a job with the default avatar;
- ``hello.flac`` with ``hello.png`` (or ``hello.*.png``, ``hello.mp4``, ...): that audio with those avatars;
- a folder holding one audio file and one or more images/videos (or a job spec);
- ``job.json`` / ``job.yaml``: a job spec; the media it names are relative to it.

An entry is taken only when it is completely written: no file in it is open for writing (inotify
close-write, or a rename into the folder), it has been quiet for ``settle_seconds``, and its sizes did
not change between two looks (the only signal on network mounts, where ``watch_polling`` is used).
Taken entries move to ``.done/``; entries that cannot become a job move to ``.failed/`` with a note
saying why, and the same note goes to the output folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import yaml
from pydantic import ValidationError
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from pipeline.config import Settings
from pipeline.contracts import FolderDestination, JobSpec
from pipeline.errors import MouthpieceError, RetryableError
from pipeline.storage.base import ObjectStore
from pipeline.submit import (
    AUDIO_EXTS,
    IMAGE_EXTS,
    SPEC_EXTS,
    VIDEO_EXTS,
    Submitted,
    submit_files,
    timestamp,
)

log = structlog.get_logger("mouthpiece.folder")
TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", ".download", ".partial", "~")
AVATAR_EXTS = IMAGE_EXTS | VIDEO_EXTS


class DropError(Exception):
    """A drop that cannot become a job; the message is the note the user gets."""


@dataclass
class _Entry:
    last_event: float
    sizes: dict[str, int] | None = None
    waiting_logged: bool = False


@dataclass
class Drop:
    """What an entry amounts to: the files to submit, and how."""

    name: str
    audio: Path | None
    avatars: list[Path]
    spec: JobSpec | None = None
    members: list[Path] = field(default_factory=list)


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
        self._entries: dict[str, _Entry] = {}
        self._open: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> FolderIngress:
        for sub in ("", ".done", ".failed"):
            (self.inbox / sub).mkdir(parents=True, exist_ok=True)
        observer: BaseObserver = PollingObserver(timeout=1.0) if self.settings.watch_polling else Observer()
        observer.schedule(_Handler(self), str(self.inbox), recursive=True)
        observer.start()
        self._observer = observer
        for path in self.inbox.iterdir():  # dropped while we were not running
            self._touch(path)
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
        while not self._stop.wait(0.25):
            try:
                self.tick()
            except Exception:  # the watcher must survive anything one drop does
                log.exception("folder_tick_failed")

    # --- events -----------------------------------------------------------------------------------------
    def _entry_of(self, path: Path) -> str | None:
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return None
        if not rel.parts or rel.parts[0].startswith(".") or path.name.endswith(TEMP_SUFFIXES):
            return None
        return rel.parts[0]

    def _touch(self, path: Path, *, writing: bool | None = None) -> None:
        name = self._entry_of(path)
        if name is None:
            return
        with self._lock:
            entry = self._entries.setdefault(name, _Entry(last_event=time.monotonic()))
            entry.last_event, entry.sizes = time.monotonic(), None
            if writing is True:
                self._open.add(path)
            elif writing is False:
                self._open.discard(path)

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._open.discard(path)

    # --- taking drops -----------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[Submitted]:
        """Submit every entry that is complete; returns what was submitted (for tests)."""
        now = time.monotonic() if now is None else now
        submitted = []
        for name in self._ready(now):
            path = self.inbox / name
            if not path.exists():
                with self._lock:
                    self._entries.pop(name, None)
                continue
            result = self._take(name, path)
            if result is not None:
                submitted.append(result)
        return submitted

    def _ready(self, now: float) -> list[str]:
        ready = []
        with self._lock:
            for name, entry in list(self._entries.items()):
                path = self.inbox / name
                if now - entry.last_event < self.settings.settle_seconds:
                    continue
                if any(p == path or path in p.parents for p in self._open):
                    continue
                sizes = _sizes(path)
                stable = entry.sizes is not None and sizes == entry.sizes
                entry.sizes = sizes
                if stable:
                    ready.append(name)
        return sorted(ready)

    def _take(self, name: str, path: Path) -> Submitted | None:
        try:
            drop = self._drop_for(name, path)
            if drop is None:
                return None  # an avatar waiting for its audio
            submitted = self._submit(drop)
        except RetryableError as exc:
            log.warning("drop_retry", entry=name, reason=exc.reason)
            with self._lock:
                self._entries[name].last_event = time.monotonic()
            return None
        except (DropError, MouthpieceError) as exc:
            self._reject(name, [path], str(exc))
            return None
        self._archive(drop, submitted)
        return submitted

    def _drop_for(self, name: str, path: Path) -> Drop | None:
        if path.is_dir():
            return _folder_drop(name, path)
        ext = path.suffix.lower()
        if ext in SPEC_EXTS:
            drop = _spec_drop(path, self.inbox)
            return None if any(self._busy(m) for m in drop.members if m != path) else drop
        if ext in AUDIO_EXTS:
            avatars = self._companions(path)
            if any(self._busy(a) for a in avatars) or self._named_by_a_spec(path):
                return None  # a companion is still arriving, or a spec will take this file
            return Drop(name=path.stem, audio=path, avatars=avatars, members=[path, *avatars])
        if ext in AVATAR_EXTS:
            self._note_waiting(name, path)
            return None
        raise DropError(
            f"{name} is not a supported file: drop an audio file ({', '.join(sorted(AUDIO_EXTS))}),"
            " with images or videos named after it, a folder, or a job spec (.json/.yaml)"
        )

    def _named_by_a_spec(self, path: Path) -> bool:
        """Whether a job spec lying in the folder names this file (then the spec's job takes it)."""
        for spec in self.inbox.iterdir():
            if spec.is_file() and spec.suffix.lower() in SPEC_EXTS:
                try:
                    if path in _spec_drop(spec, self.inbox).members:
                        return True
                except DropError:
                    continue  # a broken spec is reported when its own turn comes
        return False

    def _companions(self, audio: Path) -> list[Path]:
        """Avatars dropped beside an audio file and named after it (``hello.png``, ``hello.2.jpg``)."""
        stem = audio.stem
        return sorted(
            p
            for p in self.inbox.iterdir()
            if p.is_file()
            and p.suffix.lower() in AVATAR_EXTS
            and (p.stem == stem or p.name.startswith(stem + "."))
        )

    def _busy(self, path: Path) -> bool:
        with self._lock:
            entry = self._entries.get(path.name)
            recent = entry is not None and time.monotonic() - entry.last_event < self.settings.settle_seconds
            return recent or path in self._open

    def _note_waiting(self, name: str, path: Path) -> None:
        with self._lock:
            entry = self._entries[name]
            if not entry.waiting_logged:
                entry.waiting_logged = True
                log.info(
                    "avatar_waiting_for_audio", avatar=name, hint=f"drop {path.stem}.mp3 (or .wav, .flac...)"
                )

    def _submit(self, drop: Drop) -> Submitted:
        spec = drop.spec
        destinations = list(spec.destinations) if spec else []
        if not any(isinstance(d, FolderDestination) for d in destinations):
            destinations.append(FolderDestination())
        submitted = submit_files(
            self.store,
            self.settings,
            audio=drop.audio,
            avatars=drop.avatars,
            name=(spec.name if spec else None) or drop.name,
            options=spec.options if spec else None,
            destinations=destinations,
            speech=spec.speech if spec else None,
            source="folder",
            nonce=_identity(drop),
        )
        log.info("drop_submitted", entry=drop.name, job_id=submitted.job_id, avatars=len(drop.avatars))
        if self.on_submit is not None:
            self.on_submit(submitted, drop)
        return submitted

    def _archive(self, drop: Drop, submitted: Submitted) -> None:
        target = self.inbox / ".done" / f"{timestamp()}-{drop.name}-{submitted.job_id}"
        self._move_all(drop.members, target)

    def _reject(self, name: str, members: list[Path], reason: str) -> None:
        target = self.inbox / ".failed" / f"{timestamp()}-{name}"
        self._move_all(members, target)
        (target / "WHY.txt").write_text(reason + "\n")
        outbox = self.settings.outbox
        outbox.mkdir(parents=True, exist_ok=True)
        (outbox / f"{Path(name).stem}.failed.txt").write_text(
            f"mouthpiece could not take {name}.\n\nReason: {reason}\n"
        )
        log.warning("drop_rejected", entry=name, reason=reason)

    def _move_all(self, members: list[Path], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for member in members:
            with self._lock:
                self._entries.pop(member.relative_to(self.inbox).parts[0], None)
            if member.exists():
                shutil.move(str(member), str(target / member.name))


class _Handler(FileSystemEventHandler):
    def __init__(self, ingress: FolderIngress) -> None:
        self.ingress = ingress

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = Path(str(event.src_path))
        kind = event.event_type
        if kind == "moved":
            self.ingress._forget(src)
            self.ingress._touch(Path(str(event.dest_path)), writing=False)
        elif kind == "deleted":
            self.ingress._forget(src)
        elif kind == "modified" and not event.is_directory:
            # with inotify a file being written gets 'closed' at the end; polling never says closed
            self.ingress._touch(src, writing=not self.ingress.settings.watch_polling)
        elif kind == "closed":
            self.ingress._touch(src, writing=False)
        elif kind == "created":
            # not 'writing': a file moved in from another filesystem arrives as 'created' alone
            self.ingress._touch(src)


def _identity(drop: Drop) -> str:
    """A nonce naming this drop (its files' names, sizes and times): retrying a drop after a crash
    submits the same job again, while dropping the same files another time makes a new one."""
    parts = []
    for member in sorted(drop.members):
        for path in [member, *sorted(member.rglob("*"))] if member.is_dir() else [member]:
            st = path.stat()
            parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _sizes(path: Path) -> dict[str, int]:
    if path.is_file():
        return {path.name: path.stat().st_size}
    return {str(p): p.stat().st_size for p in path.rglob("*") if p.is_file()}


def _folder_drop(name: str, folder: Path) -> Drop:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    specs = [p for p in files if p.suffix.lower() in SPEC_EXTS]
    if specs:
        drop = _spec_drop(specs[0], folder)
        return Drop(name=name, audio=drop.audio, avatars=drop.avatars, spec=drop.spec, members=[folder])
    audios = [p for p in files if p.suffix.lower() in AUDIO_EXTS]
    if len(audios) != 1:
        found = ", ".join(p.name for p in audios) or "none"
        raise DropError(f"folder {name} must hold exactly one audio file (found: {found})")
    avatars = [p for p in files if p.suffix.lower() in AVATAR_EXTS]
    return Drop(name=name, audio=audios[0], avatars=avatars, members=[folder])


def _spec_drop(spec_path: Path, base: Path) -> Drop:
    try:
        raw = spec_path.read_text()
        data = yaml.safe_load(raw) if spec_path.suffix.lower() in (".yaml", ".yml") else json.loads(raw)
        spec = JobSpec.model_validate(data)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DropError(f"{spec_path.name} is not a readable job spec: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DropError(
            f"{spec_path.name} is not a valid job spec: {'.'.join(map(str, err['loc']))}: {err['msg']}"
        ) from exc
    audio = _named(spec_path, spec.audio) if spec.audio else None
    avatars = [_named(spec_path, a) for a in spec.avatars]
    members = [spec_path, *([audio] if audio else []), *avatars]
    return Drop(
        name=spec_path.stem,
        audio=audio,
        avatars=avatars,
        spec=spec,
        members=[m for m in members if m.parent == base],
    )


def _named(spec_path: Path, ref: str) -> Path:
    """A file a spec names, relative to the spec; never outside the spec's folder."""
    path = (spec_path.parent / ref).resolve()
    if spec_path.parent.resolve() not in path.parents:
        raise DropError(f"{spec_path.name} names {ref}, which is outside its folder")
    if not path.is_file():
        raise DropError(f"{spec_path.name} names {ref}, which is not in the folder")
    return path
