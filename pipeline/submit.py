"""Submitting a job: upload its media into the inputs bucket, then its spec (last: the spec's storage
event starts the job). Used by the CLI, the watched folder and the HTTP ingress.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from pipeline.config import Settings
from pipeline.contracts import REVEAL, Destination, JobOptions, JobSpec, job_id_for
from pipeline.storage.base import ObjectStore

AUDIO_EXTS = {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aif", ".aiff"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}
SPEC_EXTS = {".json", ".yaml", ".yml"}


@dataclass(frozen=True)
class Submitted:
    job_id: str
    spec_key: str


def slug(text: str, limit: int = 40) -> str:
    """A key-safe short name: letters, digits, '-', '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    return cleaned[:limit] or "job"


def _digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for path in paths:
        h.update(path.name.encode())
        with path.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                h.update(chunk)
    return h.hexdigest()[:10]


def submit_files(
    store: ObjectStore,
    settings: Settings,
    *,
    audio: Path | None,
    avatars: list[Path],
    name: str | None = None,
    options: JobOptions | None = None,
    destinations: list[Destination] | None = None,
    speech: str | None = None,
    source: str = "cli",
    nonce: str = "",
) -> Submitted:
    """Upload local files and a spec naming them; returns the job id the spec's event will create.

    The job folder is content-addressed (same files, options and nonce → same folder, same spec, same
    job), so submitting twice does not make two jobs; pass a ``nonce`` to force a fresh one.
    """
    options = options or JobOptions()
    media = [p for p in [audio, *avatars] if p is not None]
    title = name or (audio.stem if audio else "speech")
    extra = "|".join([options.model_dump_json(), speech or "", nonce])
    folder = f"jobs/{slug(title)}-{_digest(media, extra)}"
    names = _unique_names(media)
    for path, obj_name in zip(media, names, strict=True):
        store.put(settings.bucket_inputs, f"{folder}/{obj_name}", path, content_type=content_type_of(path))
    spec = JobSpec(
        name=title,
        audio=names[0] if audio else None,
        speech=speech,
        avatars=names[1:] if audio else names,
        options=options,
        destinations=destinations or [],
        source=source,
    )
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
        stem, suffix = slug(path.stem, 60), path.suffix.lower()
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
