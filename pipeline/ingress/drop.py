"""What an inbox entry amounts to: a ``Drop`` (the audio, the avatars, the spec, the entries it takes
along), read with the safe functions of ``pipeline.ingress.safe``; ``DropRefused`` with a sentence for
the user when it cannot be a job."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from pipeline.characters import PREFIX, is_reference
from pipeline.config import Settings
from pipeline.contracts import JobSpec
from pipeline.destinations import check_destinations
from pipeline.errors import DropRefused, MouthpieceError
from pipeline.ingress.safe import LINK_HINT, entries_in, read_small, walk
from pipeline.ingress.settle import Settling
from pipeline.specfile import MAX_SPEC_BYTES, load_spec_data, parse_spec
from pipeline.submit import AUDIO_EXTS, IMAGE_EXTS, SPEC_EXTS, VIDEO_EXTS, what_it_is

log = structlog.get_logger("mouthpiece.folder")
AVATAR_EXTS = IMAGE_EXTS | VIDEO_EXTS


@dataclass
class Drop:
    """What an entry amounts to: the files to submit, and how."""

    name: str
    audio: Path | None
    avatars: list[Path]
    spec: JobSpec | None = None
    characters: list[str] = field(default_factory=list)
    """Library characters the spec names (``character:<name>``: no file in the inbox)."""
    members: list[Path] = field(default_factory=list)


class DropReader:
    """Reads inbox entries into drops; ``settling`` says which neighbours are still arriving."""

    def __init__(self, settings: Settings, settling: Settling) -> None:
        self.settings = settings
        self.inbox = settings.inbox
        self.settling = settling

    def drop_for(self, name: str, path: Path, now: float | None = None) -> Drop | None:
        """The drop the entry ``name`` makes; None while it waits (an avatar for its voice, a voice for the
        spec that names it, a spec for its files); ``DropRefused`` when it can never be a job."""
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
            return None if any(self.settling.busy(m) for m in drop.members if m != path) else drop
        if ext in AUDIO_EXTS:
            avatars = self._companions(path)
            if any(self.settling.busy(a) for a in avatars) or self._named_by_a_spec(path):
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

    def with_named_files(self, path: Path, members: list[Path]) -> list[Path]:
        """A refused spec takes the files it names along (they would otherwise be taken alone, as jobs
        with the default avatar, which the spec never asked for)."""
        if members != [path] or path.suffix.lower() not in SPEC_EXTS:
            return members
        named = [m for m in _spec_refs(path) if m.parent == self.inbox and os.path.lexists(m)]
        return [path, *(m for m in named if m != path)]

    def _named_by_a_spec(self, path: Path) -> bool:
        """Whether a job spec lying in the folder names this file (then the spec's job takes it)."""
        for spec in entries_in(self.inbox):
            if spec.suffix.lower() in SPEC_EXTS and path in _spec_members(spec):
                return True
        return False

    def _companions(self, audio: Path) -> list[Path]:
        """Entries dropped beside an audio file and named after it (``hello.png``, ``hello.2.jpg``), of
        any kind: a link or pipe among them refuses the whole drop when it is read."""
        stem = audio.stem
        return sorted(
            p
            for p in entries_in(self.inbox)
            if p.suffix.lower() in AVATAR_EXTS and (p.stem == stem or p.name.startswith(stem + "."))
        )

    def _wait_for_audio(self, name: str, path: Path, now: float | None) -> None:
        """An image or video waits for its voice clip, up to ``avatar_wait_seconds``; then a note."""
        first, waited = self.settling.waited(name, time.monotonic() if now is None else now)
        if first:
            log.info(
                "avatar_waiting_for_audio", avatar=name, hint=f"drop {path.stem}.mp3 (or .wav, .flac...)"
            )
        if waited >= self.settings.avatar_wait_seconds:
            raise DropRefused(
                f"{name} waited {_duration(waited)} for a voice clip and none came: drop it again together"
                f" with {path.stem}.mp3 (or .wav, .flac, ...), or put both into a folder",
                code="avatar_without_audio",
            )

    def _folder_drop(self, name: str, folder: Path) -> Drop:
        files = walk(folder, name)
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
        spec = parse_spec(read_small(spec_path, MAX_SPEC_BYTES), spec_path.name)
        check_destinations(self.settings, spec.destinations, f"job spec {spec_path.name}")
        audio = _named(spec_path, spec.audio) if spec.audio else None
        avatars = [_named(spec_path, a) for a in spec.avatars if not is_reference(a)]
        members = [spec_path, *([audio] if audio else []), *avatars]
        return Drop(
            name=spec_path.stem,
            audio=audio,
            avatars=avatars,
            spec=spec,
            characters=[a.removeprefix(PREFIX) for a in spec.avatars if is_reference(a)],
            members=[m for m in members if m.parent == base],
        )


def identity(drop: Drop) -> str:
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


def _spec_refs(spec_path: Path) -> list[Path]:
    """Where the files a spec names would be, read loosely (a spec refused for another field still says
    which files it meant); no checks, empty when it cannot be read at all."""
    try:
        data = load_spec_data(read_small(spec_path, MAX_SPEC_BYTES), spec_path.name)
    except (DropRefused, MouthpieceError, OSError):
        return []
    if not isinstance(data, dict):
        return []
    avatars = data.get("avatars") if isinstance(data.get("avatars"), list) else []
    refs = [
        r
        for r in [data.get("audio"), *(avatars or [])[:64]]
        if isinstance(r, str) and r and not is_reference(r)
    ]
    return [Path(os.path.normpath(spec_path.parent / ref)) for ref in refs if not Path(ref).is_absolute()]


def _spec_members(spec_path: Path) -> set[Path]:
    """The files a spec in the folder names (best effort: an unreadable spec names nothing here; it is
    reported when its own turn comes)."""
    try:
        spec = parse_spec(read_small(spec_path, MAX_SPEC_BYTES), spec_path.name)
        refs = [*([spec.audio] if spec.audio else []), *(a for a in spec.avatars if not is_reference(a))]
        return {_named(spec_path, ref) for ref in refs}
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


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes} minutes" if minutes >= 2 else f"{max(1, round(seconds))} seconds"
