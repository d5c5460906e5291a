"""The object-store protocol every backend implements, and the record it returns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object. ``etag`` is S3's (MD5 hex for single-part writes)."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str = "application/octet-stream"
    modified: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    """Buckets of objects. Writes are atomic: a reader sees the old object or the new one, never part.

    Every method validates ``key`` (see ``pipeline.keys.check_key``) and raises ``InvalidKey`` for an
    unsafe one, ``ObjectNotFound`` for a missing object, ``StorageError`` when the backend fails.
    """

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | Path,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` (bytes, or the file at a path) under bucket/key, replacing any old object."""
        ...

    def get(self, bucket: str, key: str) -> bytes:
        """The whole object in memory; for small objects (manifests, records, specs)."""
        ...

    def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        """Write the object to ``dest`` (atomically) and return its info; for media."""
        ...

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's info, or None if it does not exist."""
        ...

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""
        ...


@runtime_checkable
class LocalFiles(Protocol):
    """Stores whose objects are files on this machine (the local store): readers may use them in place.
    ``put`` of such a store records the object's ``sha256`` metadata itself, in the same read."""

    def local_path(self, bucket: str, key: str) -> Path | None: ...


@runtime_checkable
class Presigner(Protocol):
    """Stores that can hand out a time-limited download link (S3); the local store cannot."""

    def presigned_url(self, bucket: str, key: str, expires_seconds: int) -> str: ...


class WrappedStore:
    """An ``ObjectStore`` around another: reads pass straight through, and every successful ``put`` is
    followed by ``after_put`` (announcing it, counting it); subclasses override only that.

    Whatever else the wrapped store offers (``local_path``, ``presigned_url``, ``delete``...) is reached
    through ``__getattr__``, so a wrapper has exactly its store's capabilities: ``isinstance(w,
    LocalFiles)`` holds only around a local store, ``Presigner`` only around S3."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | Path,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        info = self.inner.put(bucket, key, data, content_type=content_type, metadata=metadata)
        self.after_put(info, data)
        return info

    def after_put(self, info: ObjectInfo, data: bytes | Path) -> None:
        """Called after ``put`` stored ``data``; an exception here makes the ``put`` raise (so the caller
        retries the write)."""

    def get(self, bucket: str, key: str) -> bytes:
        return self.inner.get(bucket, key)

    def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        return self.inner.download(bucket, key, dest)

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        return self.inner.stat(bucket, key)

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(bucket, prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
