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

import errno
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from pipeline.config import Settings
from pipeline.contracts import FailedDrop, FolderDestination, JobOptions, JobSpec
from pipeline.destinations import check_destinations
from pipeline.drops import record_failed_drop
from pipeline.errors import DropRefused, MouthpieceError, RetryableError
from pipeline.ingress.markers import MARKER_SUFFIX, Markers
from pipeline.specfile import MAX_SPEC_BYTES, load_spec_data, parse_spec
from pipeline.storage.base import ObjectStore
from pipeline.submit import (
    AUDIO_EXTS,
    IMAGE_EXTS,
    SPEC_EXTS,
    VIDEO_EXTS,
    Submission,
    Submitted,
    submit,
    timestamp,
    too_large,
    what_it_is,
)

log = structlog.get_logger("mouthpiece.folder")
TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", ".download", ".partial", "~")
AVATAR_EXTS = IMAGE_EXTS | VIDEO_EXTS
MAX_FOLDER_ENTRIES = 200
"""Files and subfolders a dropped folder may hold (a job takes one voice and at most 32 avatars)."""
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
LINK_HINT = "copy the file itself into the folder instead of linking to it"
OUR_SIDE = "because of a problem on our side: drop it again later, or ask the operator (the log says why)"


@dataclass
class _Entry:
    last_event: float
    sizes: dict[str, int] | None = None
    waiting_since: float | None = None


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
        self._stuck: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self.markers = Markers(settings, store)

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
                self.markers.sweep()
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
        if rel.parts[0].endswith(MARKER_SUFFIX):  # our own sign that a drop is being worked on
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
        """Submit every entry that is complete; returns what was submitted (for tests). One entry's
        trouble never stops the others: each is taken, refused or set aside on its own."""
        now = time.monotonic() if now is None else now
        submitted = []
        for name in self._ready(now):
            path = self.inbox / name
            if not os.path.lexists(path):
                with self._lock:
                    self._entries.pop(name, None)
                continue
            result = self._take(name, path, now)
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
                if stable and self._stuck.get(name) != sizes:
                    ready.append(name)
        return sorted(ready)

    def _take(self, name: str, path: Path, now: float) -> Submitted | None:
        members = [path]
        try:
            drop = self._drop_for(name, path, now)
            if drop is None:
                return None  # an avatar waiting for its audio, or a spec's file waiting for the spec
            members = drop.members
            submitted = self._submit(drop)
        except RetryableError as exc:
            log.warning("drop_retry", entry=name, reason=exc.reason)
            with self._lock:
                if name in self._entries:
                    self._entries[name].last_event = time.monotonic()
            return None
        except (DropRefused, MouthpieceError) as exc:
            self._set_aside(name, self._with_named_files(path, members), str(exc), exc.code)
            return None
        except Exception:
            log.exception("drop_failed", entry=name)
            self._set_aside(
                name, self._with_named_files(path, members), f"{name} could not be taken {OUR_SIDE}"
            )
            return None
        try:
            self._archive(drop, submitted)
        except OSError:  # submitted: never again (the same drop would be the same job anyway)
            log.exception("drop_archive_failed", entry=name, job_id=submitted.job_id)
            self._stuck[name] = _sizes(path)
        return submitted

    def _drop_for(self, name: str, path: Path, now: float | None = None) -> Drop | None:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise DropRefused(f"{name} is a link, and links are not taken: {LINK_HINT}", code="inbox_link")
        if stat.S_ISDIR(st.st_mode):
            return self._folder_drop(name, path)
        kind = what_it_is(st.st_mode)
        if kind is not None:
            raise DropRefused(
                f"{name} is {kind}, not a file: drop the voice clip, picture or job spec file itself",
                code="inbox_not_a_file",
            )
        ext = path.suffix.lower()
        if ext in SPEC_EXTS:
            drop = self._spec_drop(path, self.inbox)
            return None if any(self._busy(m) for m in drop.members if m != path) else drop
        if ext in AUDIO_EXTS:
            avatars = self._companions(path)
            if any(self._busy(a) for a in avatars) or self._named_by_a_spec(path):
                return None  # a companion is still arriving, or a spec will take this file
            return Drop(name=path.stem, audio=path, avatars=avatars, members=[path, *avatars])
        if ext in AVATAR_EXTS:
            self._wait_for_audio(name, path, now)
            return None
        raise DropRefused(
            f"{name} is not a supported file: drop an audio file ({', '.join(sorted(AUDIO_EXTS))}),"
            " with images or videos named after it, a folder, or a job spec (.json/.yaml)",
            code="inbox_unsupported",
        )

    def _with_named_files(self, path: Path, members: list[Path]) -> list[Path]:
        """A refused spec takes the files it names along (they would otherwise be taken alone, as jobs
        with the default avatar, which the spec never asked for)."""
        if members != [path] or path.suffix.lower() not in SPEC_EXTS:
            return members
        named = [m for m in _spec_refs(path) if m.parent == self.inbox and os.path.lexists(m)]
        return [path, *(m for m in named if m != path)]

    def _named_by_a_spec(self, path: Path) -> bool:
        """Whether a job spec lying in the folder names this file (then the spec's job takes it)."""
        for spec in _entries_in(self.inbox):
            if spec.suffix.lower() in SPEC_EXTS and path in _spec_members(spec):
                return True
        return False

    def _companions(self, audio: Path) -> list[Path]:
        """Entries dropped beside an audio file and named after it (``hello.png``, ``hello.2.jpg``), of
        any kind: a link or pipe among them refuses the whole drop when it is read."""
        stem = audio.stem
        return sorted(
            p
            for p in _entries_in(self.inbox)
            if p.suffix.lower() in AVATAR_EXTS and (p.stem == stem or p.name.startswith(stem + "."))
        )

    def _busy(self, path: Path) -> bool:
        with self._lock:
            entry = self._entries.get(path.name)
            recent = entry is not None and time.monotonic() - entry.last_event < self.settings.settle_seconds
            return recent or path in self._open

    def _wait_for_audio(self, name: str, path: Path, now: float | None) -> None:
        """An image or video waits for its voice clip, up to ``avatar_wait_seconds``; then a note."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entries.setdefault(name, _Entry(last_event=now))
            if entry.waiting_since is None:
                entry.waiting_since = now
                log.info(
                    "avatar_waiting_for_audio", avatar=name, hint=f"drop {path.stem}.mp3 (or .wav, .flac...)"
                )
            waited = now - entry.waiting_since
        if waited >= self.settings.avatar_wait_seconds:
            raise DropRefused(
                f"{name} waited {_duration(waited)} for a voice clip and none came: drop it again together"
                f" with {path.stem}.mp3 (or .wav, .flac, ...), or put both into a folder",
                code="avatar_without_audio",
            )

    def _folder_drop(self, name: str, folder: Path) -> Drop:
        files = _walk(folder, name)
        specs = [p for p in files if p.suffix.lower() in SPEC_EXTS]
        if specs:
            drop = self._spec_drop(specs[0], folder)
            return Drop(name=name, audio=drop.audio, avatars=drop.avatars, spec=drop.spec, members=[folder])
        audios = [p for p in files if p.suffix.lower() in AUDIO_EXTS]
        if len(audios) != 1:
            found = ", ".join(p.name for p in audios) or "none"
            raise DropRefused(
                f"folder {name} must hold exactly one audio file (found: {found})", code="folder_audio_count"
            )
        avatars = [p for p in files if p.suffix.lower() in AVATAR_EXTS]
        return Drop(name=name, audio=audios[0], avatars=avatars, members=[folder])

    def _spec_drop(self, spec_path: Path, base: Path) -> Drop:
        spec = parse_spec(_read_small(spec_path, MAX_SPEC_BYTES), spec_path.name)
        check_destinations(self.settings, spec.destinations, f"job spec {spec_path.name}")
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

    def _submit(self, drop: Drop) -> Submitted:
        spec = drop.spec
        destinations = list(spec.destinations) if spec else []
        if not any(isinstance(d, FolderDestination) for d in destinations):
            destinations.append(FolderDestination())
        nonce = _identity(drop)
        scratch = self.settings.data_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mp-inbox-", dir=scratch) as tmp:
            staged = self._stage(drop, Path(tmp))
            asked = Submission(
                audio=staged.get(drop.audio) if drop.audio else None,
                avatars=tuple(staged[a] for a in drop.avatars),
                name=(spec.name if spec else None) or drop.name,
                options=spec.options if spec else JobOptions(),
                destinations=tuple(destinations),
                speech=spec.speech if spec else None,
                source="folder",
                nonce=nonce,
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
            _copy_regular(path, target, self.settings.max_input_bytes, self._shown(path))
            staged[path] = target
        return staged

    def _shown(self, path: Path) -> str:
        """How a file is named in a note: relative to the inbox (``batch/face.png``), as the user sees it."""
        try:
            return str(path.relative_to(self.inbox))
        except ValueError:
            return path.name

    def _archive(self, drop: Drop, submitted: Submitted) -> None:
        target = _unique(self.inbox / ".done" / f"{timestamp()}-{_short(drop.name)}-{submitted.job_id}")
        try:  # the marker first, so the inbox never looks as if the drop had vanished
            files = [self._shown(m) for m in drop.members]
            self.markers.place(_short(drop.name), submitted.job_id, files, target)
        except OSError:  # only a sign for people: the job runs without it
            log.exception("drop_marker_failed", entry=drop.name, job_id=submitted.job_id)
        self._move_all(drop.members, target)

    def _set_aside(self, name: str, members: list[Path], reason: str, code: str | None = None) -> None:
        """``_reject``; if even that fails (a full disk, no permission), the entry is left alone until it
        changes, so one stuck entry cannot make the watcher try it again and again."""
        try:
            target = self._reject(name, members, reason)
            self._record(name, reason, code, target)
        except OSError:
            log.exception("drop_reject_failed", entry=name, reason=reason)
            self._stuck[name] = _sizes(self.inbox / name)

    def _record(self, name: str, reason: str, code: str | None, target: Path) -> None:
        """The durable record of the failed drop (the console and `mouthpiece status` list it)."""
        drop = FailedDrop(name=name[:300], reason=reason, code=code, moved_to=str(target))
        try:
            record_failed_drop(self.store, self.settings, drop)
        except Exception:  # the note and the moved files already tell the user; the record is extra
            log.exception("failed_drop_record_failed", entry=name)

    def _reject(self, name: str, members: list[Path], reason: str) -> Path:
        target = _unique(self.inbox / ".failed" / f"{timestamp()}-{_short(name)}")
        self._move_all(members, target)
        (target / "WHY.txt").write_text(reason + "\n")
        outbox = self.settings.outbox
        outbox.mkdir(parents=True, exist_ok=True)
        (outbox / f"{_short(Path(name).stem)}.failed.txt").write_text(
            f"mouthpiece could not take {name}.\n\nReason: {reason}\n"
        )
        log.warning("drop_rejected", entry=name, reason=reason)
        return target

    def _move_all(self, members: list[Path], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for member in members:
            with self._lock:
                self._entries.pop(member.relative_to(self.inbox).parts[0], None)
                self._stuck.pop(member.relative_to(self.inbox).parts[0], None)
            if os.path.lexists(member):  # a link is moved as the link, never followed
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


# --- reading the folder safely (lstat only; nothing here follows a link or opens a file) ---------------


def _entries_in(folder: Path) -> Iterator[Path]:
    """The entries directly inside ``folder`` (not hidden), whatever their kind."""
    with os.scandir(folder) as it:
        for entry in it:
            if not entry.name.startswith("."):
                yield Path(entry.path)


def _walk(folder: Path, name: str) -> list[Path]:
    """The regular files in a dropped folder (hidden ones skipped); ``DropRefused`` for a link, a pipe, a
    device or a socket inside it, or for more than ``MAX_FOLDER_ENTRIES`` entries."""
    files: list[Path] = []
    pending, seen = [folder], 0
    while pending:
        with os.scandir(pending.pop()) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                seen += 1
                if seen > MAX_FOLDER_ENTRIES:
                    raise DropRefused(
                        f"folder {name} holds more than {MAX_FOLDER_ENTRIES} files: a job takes one voice "
                        "clip and at most 32 avatars",
                        code="folder_too_many",
                    )
                mode = entry.stat(follow_symlinks=False).st_mode
                shown = f"{name}/{Path(entry.path).relative_to(folder)}"
                if stat.S_ISLNK(mode):
                    raise DropRefused(
                        f"{shown} is a link, and links are not taken: {LINK_HINT}", code="inbox_link"
                    )
                if stat.S_ISDIR(mode):
                    pending.append(Path(entry.path))
                elif (kind := what_it_is(mode)) is not None:
                    raise DropRefused(
                        f"{shown} is {kind}, not a file: put only files into the folder",
                        code="inbox_not_a_file",
                    )
                else:
                    files.append(Path(entry.path))
    return sorted(files)


def _sizes(path: Path) -> dict[str, int]:
    """What the entry looks like now (names and sizes, by lstat), to see when it stops changing."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            return {path.name: st.st_size, "mode": st.st_mode}
        sizes = {}
        for count, (root, dirs, names) in enumerate(os.walk(path)):  # os.walk never follows links
            for item in [*dirs, *names]:
                item_path = os.path.join(root, item)
                sizes[item_path] = os.lstat(item_path).st_size
            if count > MAX_FOLDER_ENTRIES or len(sizes) > MAX_FOLDER_ENTRIES:
                break
        return sizes
    except OSError:
        return {"unreadable": -1}


def _identity(drop: Drop) -> str:
    """A nonce naming this drop (its files' names, sizes and times): retrying a drop after a crash
    submits the same job again, while dropping the same files another time makes a new one."""
    parts = []
    for member in sorted(drop.members):
        paths = [member]
        if stat.S_ISDIR(os.lstat(member).st_mode):
            paths += sorted(Path(root) / n for root, _, names in os.walk(member) for n in names)
        for path in paths:
            st = os.lstat(path)
            parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _open_regular(path: Path, shown: str) -> tuple[int, os.stat_result]:
    """An fd of ``path`` opened without following a link or waiting on a pipe, checked on the fd to be
    a regular file (so nothing swapped in after an lstat gets read); ``DropRefused`` otherwise."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DropRefused(
                f"{shown} is a link, and links are not taken: {LINK_HINT}", code="inbox_link"
            ) from None
        if exc.errno == errno.ENOENT:
            raise RetryableError(f"{shown} disappeared while it was being taken", defer=1.0) from None
        raise DropRefused(
            f"{shown} cannot be read ({exc.strerror}): check its permissions", code="inbox_unreadable"
        ) from None
    st = os.fstat(fd)
    kind = what_it_is(st.st_mode)
    if kind is not None:
        os.close(fd)
        raise DropRefused(f"{shown} is {kind}, not a file: drop the file itself", code="inbox_not_a_file")
    return fd, st


def _read_small(path: Path, limit: int) -> bytes:
    """A small file's bytes (a spec), read safely; ``DropRefused`` when larger than ``limit``."""
    fd, st = _open_regular(path, path.name)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DropRefused(
            f"job spec {path.name} is {st.st_size // 1024} KB; a spec is a small JSON or YAML file",
            code="spec_too_large",
        )
    return data


def _copy_regular(src: Path, dst: Path, limit: int, shown: str) -> None:
    """Copy a regular file (never a link, pipe or device) of at most ``limit`` bytes to ``dst``."""
    fd, st = _open_regular(src, shown)
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise DropRefused(too_large(shown, st.st_size, limit), code="file_too_large")
        copied = 0
        with dst.open("wb") as out:
            while chunk := f.read(1024 * 1024):
                copied += len(chunk)
                if copied > limit:
                    raise DropRefused(too_large(shown, copied, limit), code="file_too_large")
                out.write(chunk)


def _spec_refs(spec_path: Path) -> list[Path]:
    """Where the files a spec names would be, read loosely (a spec refused for another field still says
    which files it meant); no checks, empty when it cannot be read at all."""
    try:
        data = load_spec_data(_read_small(spec_path, MAX_SPEC_BYTES), spec_path.name)
    except (DropRefused, MouthpieceError, OSError):
        return []
    if not isinstance(data, dict):
        return []
    avatars = data.get("avatars") if isinstance(data.get("avatars"), list) else []
    refs = [r for r in [data.get("audio"), *(avatars or [])[:64]] if isinstance(r, str) and r]
    return [Path(os.path.normpath(spec_path.parent / ref)) for ref in refs if not Path(ref).is_absolute()]


def _spec_members(spec_path: Path) -> set[Path]:
    """The files a spec in the folder names (best effort: an unreadable spec names nothing here; it is
    reported when its own turn comes)."""
    try:
        spec = parse_spec(_read_small(spec_path, MAX_SPEC_BYTES), spec_path.name)
        return {_named(spec_path, ref) for ref in [*([spec.audio] if spec.audio else []), *spec.avatars]}
    except (DropRefused, MouthpieceError, OSError):
        return set()


def _named(spec_path: Path, ref: str) -> Path:
    """A file a spec names, relative to the spec; never outside the spec's folder, never a link."""
    folder = spec_path.parent
    path = Path(os.path.normpath(folder / ref))
    if Path(ref).is_absolute() or folder not in path.parents:
        raise DropRefused(
            f"{spec_path.name} names {ref}, which is outside its folder: name files that lie beside the spec",
            code="spec_path_outside",
        )
    try:
        mode = os.lstat(path).st_mode
    except (OSError, ValueError):
        raise DropRefused(
            f"{spec_path.name} names {ref!r}, which is not in the folder", code="spec_file_missing"
        ) from None
    if stat.S_ISLNK(mode) or any(
        stat.S_ISLNK(os.lstat(p).st_mode) for p in path.parents if folder in p.parents
    ):
        raise DropRefused(f"{spec_path.name} names {ref}, which is a link: {LINK_HINT}", code="inbox_link")
    if (kind := what_it_is(mode)) is not None:
        raise DropRefused(
            f"{spec_path.name} names {ref}, which is {kind}, not a file", code="inbox_not_a_file"
        )
    return path


def _short(name: str, limit: int = 120) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes (at a character boundary): archive and note names stay well
    under the file system's 255-byte limit whatever the user named the file."""
    data = name.encode()
    return name if len(data) <= limit else data[:limit].decode(errors="ignore").rstrip() or "drop"


def _unique(target: Path) -> Path:
    """``target``, or ``target-2``, ``-3``, ... if a folder of that name exists (two drops a second)."""
    candidate, n = target, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = target.with_name(f"{target.name}-{n}")
    return candidate


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes} minutes" if minutes >= 2 else f"{max(1, round(seconds))} seconds"
