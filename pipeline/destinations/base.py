"""What a destination target is (``Target``: publish, tell a failure) and what it is given.

A target does not know stages: it is handed the publishing task's world as a ``Publication`` (the
settings, the store, the job and task, a scratch folder, a logger: a ``StageContext`` is one), the
finished video as a ``Delivery``, and the ``Intent`` record of an earlier run that may have published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import Settings
from pipeline.contracts import ArtifactRef, Destination
from pipeline.errors import ObjectNotFound
from pipeline.keys import slug
from pipeline.storage.base import ObjectStore


class Publication(Protocol):
    """The publishing task's world, as a target sees it."""

    settings: Settings
    store: ObjectStore
    job_id: str
    task: str
    workdir: Path
    log: Any

    def save_bytes(
        self, data: bytes, name: str, content_type: str, *, key: str | None = None, bucket: str | None = None
    ) -> ArtifactRef: ...


def safe_name(text: str) -> str:
    """An output file name: the user's words kept (any script), nothing a file system minds."""
    return slug(text, 80, keep=".", fallback="video", letters="any")


@dataclass(frozen=True)
class Delivery:
    """The finished video of one task: the file, its output name, its SHA-256, its length and the name
    of its avatar (a batch's captions name it)."""

    video: Path
    filename: str
    sha256: str
    seconds: float
    avatar_name: str = ""


class Intent:
    """``published/<destination>.intent.json``: what a run is about to publish, written before it
    does, so a run after a crash knows what the crashed one may have done."""

    def __init__(self, store: ObjectStore, bucket: str, key: str) -> None:
        self.store, self.bucket, self.key = store, bucket, key

    def read(self) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(self.store.get(self.bucket, self.key))
        except ObjectNotFound:
            return None
        return found

    def write(self, data: dict[str, Any]) -> None:
        self.store.put(self.bucket, self.key, json.dumps(data).encode())


class Target(Protocol):
    """One kind of destination (``pipeline.destinations.targets.TARGETS`` maps a spec's ``kind`` to it)."""

    fault_point: str
    """The test hook (``pipeline.faults``) passed right after a publication, before its marker."""

    def publish(self, ctx: Publication, destination: Destination, delivery: Delivery, intent: Intent) -> str:
        """Put the video there (exactly once, with ``intent``'s help); where it went, without secrets."""
        ...

    def tell_failure(
        self,
        settings: Settings,
        destination: Destination,
        name: str,
        job_id: str,
        code: str | None,
        reason: str | None,
    ) -> None:
        """Tell the destination that job ``name`` failed, in the catalogue's words. Best effort: never raises."""
        ...
