"""What a stage is given: ``StageContext``, and how stages are found (``load_stage``).

A stage is a module with ``run(ctx, inputs) -> outputs`` and, optionally, ``warm_up(settings, models)``
(called once when a worker starts, to load models before the first message) and
``prepare_store(store, settings)`` (called once at start, to seed objects the stage relies on). ``inputs`` is an ``Upload``
for the first stage and the previous stage's ``Manifest`` for the others; ``outputs`` is the list of
manifests to write (the runner writes them, last, and acknowledges the message). A stage never touches
the bus; it raises errors from ``pipeline.errors`` and the runner decides what happens.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.config import Settings
from pipeline.contracts import ArtifactRef
from pipeline.errors import PermanentError, RetryableError
from pipeline.keys import artifact_key
from pipeline.storage.base import ObjectStore

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

STAGE_MODULES = {
    "validate": "stages.validate",
    "detect": "stages.detect",
    "render": "stages.render",
    "enhance": "stages.enhance",
    "publish": "stages.publish",
}


class StageCancelled(RetryableError):
    """The worker stopped while the stage ran; the message goes to another worker."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, defer=0.0)


def load_stage(name: str) -> ModuleType:
    """Import the module of stage ``name`` (lazily: a worker imports only its own stage)."""
    try:
        return importlib.import_module(STAGE_MODULES[name])
    except KeyError:
        raise PermanentError(f"no stage called {name!r}; known: {', '.join(STAGE_MODULES)}") from None


class ModelCache:
    """Models loaded once per worker process, on first use, shared by that process's jobs."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str, factory: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._items:
                self._items[name] = factory()
            item: T = self._items[name]
            return item


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class StageContext:
    """One delivery's world: settings, the store, who it is for, a scratch folder, logging, progress."""

    settings: Settings
    store: ObjectStore
    job_id: str
    task: str
    stage: str
    log: Any
    workdir: Path
    models: ModelCache = field(default_factory=ModelCache)
    on_progress: Callable[[float, str], None] = lambda fraction, note: None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def progress(self, fraction: float, note: str = "") -> None:
        """Report 0..1 progress. Raises ``StageCancelled`` once the worker has given up on this
        delivery (drain time over), so long work stops at its next report."""
        if self.cancelled.is_set():
            raise StageCancelled("the worker is stopping")
        self.on_progress(min(1.0, max(0.0, fraction)), note)

    # --- reading artifacts ---------------------------------------------------------------------------
    def fetch(self, ref: ArtifactRef, name: str | None = None) -> Path:
        """Download an artifact into the scratch folder and check its SHA-256."""
        dest = self.workdir / (name or ref.key.rsplit("/", 1)[-1])
        self.store.download(ref.bucket, ref.key, dest)
        if sha256_file(dest) != ref.sha256:
            raise RetryableError(f"{ref.bucket}/{ref.key} does not match its checksum", key=ref.key)
        return dest

    def load(self, ref: ArtifactRef, model: type[M]) -> M:
        """Read a JSON artifact as a pydantic model."""
        data = self.store.get(ref.bucket, ref.key)
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise RetryableError(f"{ref.bucket}/{ref.key} does not match its checksum", key=ref.key)
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            raise PermanentError(f"{ref.key} is not a valid {model.__name__}: {exc}", key=ref.key) from exc

    # --- writing artifacts ---------------------------------------------------------------------------
    def save(
        self, path: Path, name: str, content_type: str, *, key: str | None = None, bucket: str | None = None
    ) -> ArtifactRef:
        """Upload a file as this task's artifact ``name`` (or at ``key``); returns its reference."""
        return self._put(path, sha256_file(path), content_type, key or self.key(name), bucket)

    def save_bytes(
        self, data: bytes, name: str, content_type: str, *, key: str | None = None, bucket: str | None = None
    ) -> ArtifactRef:
        return self._put(data, hashlib.sha256(data).hexdigest(), content_type, key or self.key(name), bucket)

    def save_model(self, model: BaseModel, name: str, *, key: str | None = None) -> ArtifactRef:
        data = model.model_dump_json(indent=1).encode()
        return self.save_bytes(data, name, "application/json", key=key)

    def _put(
        self, data: bytes | Path, digest: str, content_type: str, key: str, bucket: str | None
    ) -> ArtifactRef:
        bucket = bucket or self.settings.bucket_work
        info = self.store.put(bucket, key, data, content_type=content_type, metadata={"sha256": digest})
        return ArtifactRef(bucket=bucket, key=key, sha256=digest, size=info.size, content_type=content_type)

    def key(self, name: str) -> str:
        """The work-bucket key of this task's artifact ``name``."""
        return artifact_key(self.job_id, self.task, name)

    def cached(self, key: str, content_type: str | None = None) -> ArtifactRef | None:
        """A content-addressed artifact already in the work bucket, or None (reuse across jobs)."""
        info = self.store.stat(self.settings.bucket_work, key)
        if info is None or "sha256" not in info.metadata:
            return None
        return ArtifactRef(
            bucket=self.settings.bucket_work,
            key=key,
            sha256=info.metadata["sha256"],
            size=info.size,
            content_type=content_type or info.content_type,
        )
