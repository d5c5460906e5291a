"""Submitting a job: upload its media into the inputs bucket, then its spec (last: the spec's storage
event starts the job). Used by the CLI, the watched folder and the HTTP ingress.

Media are stored under key-safe names (``slug``); the name the user gave each file travels with the
object as its ``filename`` metadata (percent-encoded UTF-8, so S3 headers stay ASCII), and validate names
files by it in every refusal (``original_name``): "Grüße Foto.png", not "Gr-e-Foto.png". Only regular
files are read, each at most ``max_input_bytes``; a folder, pipe or device given as a file is refused
with a sentence before anything is opened.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.contracts import REVEAL, Destination, JobOptions, JobSpec, job_id_for
from pipeline.errors import InvalidInput
from pipeline.keys import slug
from pipeline.storage.base import ObjectInfo, ObjectStore

AUDIO_EXTS = {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif", ".aiff"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}
SPEC_EXTS = {".json", ".yaml", ".yml"}
NAME_LIMIT = 120
"""Longest job name (``JobSpec.name``); a name made from a file's name is shortened to it."""
MAX_AVATARS = 32
FILENAME_METADATA = "filename"
"""Object metadata key holding the file's name as the user gave it (percent-encoded UTF-8)."""


@dataclass(frozen=True)
class Submitted:
    job_id: str
    spec_key: str


def _digest(paths: list[Path], extra: str, limit: int) -> str:
    h = hashlib.sha256(extra.encode())
    for path in paths:
        h.update(path.name.encode())
        # non-blocking: a file swapped for a pipe since it was checked must not hang us
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidInput(
                    f"{path.name} is not a regular file: give the file itself", code="not_a_file"
                )
            read = 0
            while read <= limit and (chunk := f.read(1024 * 1024)):
                h.update(chunk)
                read += len(chunk)
    return h.hexdigest()[:10]


# --- local files and names --------------------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def what_it_is(mode: int) -> str | None:
    """'a folder', 'a named pipe', ... for anything that is not a regular file; None for a file."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def check_inputs(
    settings: Settings, audio: Path | None, avatars: Sequence[Path], shown: Mapping[Path, str] | None = None
) -> None:
    """At most ``MAX_AVATARS`` avatars, no job spec among the media (uploaded beside the job's own spec
    it would start a second job), and every file a readable regular file within the size limit
    (``check_local_file``; a refusal names the file as ``shown`` gives it, else as given)."""
    if len(avatars) > MAX_AVATARS:
        raise InvalidInput(
            f"{len(avatars)} avatars were given; a job takes at most {MAX_AVATARS}: split them into several jobs",
            code="too_many_avatars",
        )
    for path in [p for p in [audio, *avatars] if p is not None]:
        name = (shown or {}).get(path) or str(path)
        if path.suffix.lower() in SPEC_EXTS:  # its object's key would end like a spec's
            raise InvalidInput(
                f"{name} is a job spec, not a voice clip or picture: give it alone, as the job",
                code="spec_as_media",
            )
        check_local_file(path, settings, (shown or {}).get(path))


def check_local_file(path: Path, settings: Settings, shown: str | None = None) -> os.stat_result:
    """``path``'s stat if it is a readable, non-empty regular file within ``max_input_bytes`` (links are
    followed: this is for files a person names on their own machine); else ``InvalidInput`` naming it as
    ``shown`` (default: the path as given)."""
    name = shown or str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InvalidInput(f"{name} does not exist: check the path", code="file_missing") from None
    except OSError as exc:
        raise InvalidInput(
            f"{name} cannot be opened ({exc.strerror}): check the path", code="file_unreadable"
        ) from None
    kind = what_it_is(st.st_mode)
    if kind is not None:
        raise InvalidInput(
            f"{name} is {kind}, not a file: give the voice clip or picture file itself", code="not_a_file"
        )
    if not os.access(path, os.R_OK):
        raise InvalidInput(
            f"{name} cannot be read (no permission): check who owns it", code="file_unreadable"
        )
    if st.st_size == 0:
        raise InvalidInput(
            f"{name} is empty: send the file again once it is completely saved", code="file_empty"
        )
    if st.st_size > settings.max_input_bytes:
        raise InvalidInput(too_large(name, st.st_size, settings.max_input_bytes), code="file_too_large")
    return st


def too_large(name: str, size: int, limit: int) -> str:
    """The sentence for a file over the size limit."""
    return f"{name} is {_megabytes(size)}; the limit is {_megabytes(limit)}: send a shorter or smaller file"


def _megabytes(size: int) -> str:
    mb = size / 1024 / 1024
    return f"{mb:.1f} MB" if mb < 10 else f"{mb:.0f} MB"


def job_name(text: str) -> str:
    """A job name from a file name or a title: whitespace tidied, at most ``NAME_LIMIT`` characters."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return cleaned[:NAME_LIMIT].rstrip() or "job"


def name_metadata(name: str) -> dict[str, str]:
    """Object metadata recording the name the user gave a file."""
    return {FILENAME_METADATA: quote(name[:255], safe=" ._-()")}


def original_name(info: ObjectInfo | None, key: str, limit: int = 120) -> str:
    """The name the user gave the object at ``key`` (its ``filename`` metadata), else the key's last
    part; printable, and shortened in the middle past ``limit`` characters."""
    raw = (info.metadata.get(FILENAME_METADATA) if info is not None else None) or ""
    name = "".join(c for c in unquote(raw) if c.isprintable()).strip() or PurePosixPath(key).name
    return name if len(name) <= limit else f"{name[: limit // 2]}…{name[-(limit // 2 - 1) :]}"


@dataclass(frozen=True)
class Submission:
    """What someone asks for: local files and how to make them into a job (one value, built by each
    ingress: the CLI, the inbox, Discord, the console).

    ``labels`` are the names the user knows files by where they differ from the paths' (downloads
    saved under slugs); ``nonce`` forces a fresh job for the same files (see ``submit``).
    """

    audio: Path | None
    avatars: tuple[Path, ...] = ()
    name: str | None = None
    options: JobOptions = field(default_factory=JobOptions)
    destinations: tuple[Destination, ...] = ()
    speech: str | None = None
    source: str = "cli"
    nonce: str = ""
    labels: Mapping[Path, str] = field(default_factory=dict)
    characters: tuple[str, ...] = ()
    """Library characters by name (``character:<name>`` in the spec, after the files), in ``library``."""
    library: str | None = None


def submit(store: ObjectStore, settings: Settings, submission: Submission) -> Submitted:
    """Upload the submission's files and a spec naming them; returns the job id the spec's event will
    create.

    The job folder is content-addressed (same files, options and nonce → same folder, same spec, same
    job), so submitting twice does not make two jobs; a ``nonce`` forces a fresh one. Refusals (not a
    file, too large, too many avatars) are ``InvalidInput`` naming the file.
    """
    audio, avatars, name, labels = (
        submission.audio,
        list(submission.avatars),
        submission.name,
        submission.labels,
    )
    options, speech, nonce = submission.options, submission.speech, submission.nonce
    destinations, source = list(submission.destinations), submission.source
    media = [p for p in [audio, *avatars] if p is not None]
    shown = {p: labels.get(p) or p.name for p in media}
    check_inputs(settings, audio, avatars, shown)
    title = job_name(name or (audio.stem if audio else "speech"))
    chosen = [*([submission.library] if submission.library else []), *submission.characters]
    extra = "|".join([options.model_dump_json(), speech or "", nonce, *chosen])
    folder = f"jobs/{slug(title)}-{_digest(media, extra, settings.max_input_bytes)}"
    names = _unique_names(media)
    for path, obj_name in zip(media, names, strict=True):
        store.put(
            settings.bucket_inputs, f"{folder}/{obj_name}", path,
            content_type=content_type_of(path), metadata=name_metadata(shown[path]),
        )  # fmt: skip
    try:
        spec = JobSpec(
            name=title,
            audio=names[0] if audio else None,
            speech=speech,
            avatars=[*(names[1:] if audio else names), *(f"character:{c}" for c in submission.characters)],
            options=options,
            destinations=destinations,
            source=source,
            library=submission.library,
        )
    except ValidationError as exc:  # the callers check what people give; this is the last guard
        from pipeline.specfile import describe_validation_error

        raise InvalidInput(
            f"the job cannot be made: {describe_validation_error(exc)}", code="job_invalid"
        ) from None
    return submit_spec(store, settings, spec, f"{folder}/job.json")


def submit_spec(store: ObjectStore, settings: Settings, spec: JobSpec, key: str) -> Submitted:
    """Upload a spec whose media are already in the bucket (relative to ``key``'s folder)."""
    data = spec.model_dump_json(indent=1, context=REVEAL, exclude_defaults=False).encode()
    info = store.put(settings.bucket_inputs, key, data, content_type="application/json")
    return Submitted(job_id_for(settings.bucket_inputs, key, info.etag), key)


def _unique_names(paths: list[Path]) -> list[str]:
    """Object names for the files, made unique (two avatars may share a file name)."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        suffix = path.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,8}", path.suffix.lower()) else ""
        stem = slug(path.stem if suffix else path.name, 60)
        count = seen.get(stem + suffix, 0)
        seen[stem + suffix] = count + 1
        names.append(f"{stem}{'-' + str(count) if count else ''}{suffix}")
    return names


def content_type_of(path: Path | PurePosixPath) -> str:
    ext = path.suffix.lower()
    if ext in AUDIO_EXTS:
        return f"audio/{ext.lstrip('.')}"
    if ext in IMAGE_EXTS:
        return f"image/{'jpeg' if ext in ('.jpg', '.jpeg') else ext.lstrip('.')}"
    if ext in VIDEO_EXTS:
        return f"video/{ext.lstrip('.')}"
    return "application/octet-stream"


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
