"""The ``client`` event source: a store wrapper that publishes the bucket notification itself.

For the local store, and for S3 servers without bucket notifications (SeaweedFS, plain AWS with no
queue), every successful ``put`` whose key matches the routing table is followed by the MinIO-format
record on the stage's subject, with a deterministic ``Nats-Msg-Id``. If publishing fails the ``put``
raises, so the caller retries the write (or the reconciliation sweep re-emits an orphaned input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import StorageError
from pipeline.events import build_event, message_id
from pipeline.keys import event_subject
from pipeline.storage.base import LocalFiles, ObjectInfo, ObjectStore, Presigner

Publish = Callable[[str, bytes, str], None]
"""publish(subject, payload, msg_id); blocks until the bus has stored the message."""


class EmittingStore:
    """``ObjectStore`` that announces routed writes on the bus, as MinIO would."""

    def __init__(self, inner: ObjectStore, settings: Settings, publish: Publish) -> None:
        self.inner = inner
        self.settings = settings
        self.publish = publish

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
        self.announce(info)
        return info

    def announce(self, info: ObjectInfo) -> bool:
        """Publish the notification for an existing object if a route matches; True if published."""
        subject = event_subject(self.settings, info.bucket, info.key)
        if subject is None:
            return False
        self.publish(subject, build_event(info), message_id(info.bucket, info.key, info.etag))
        return True

    def get(self, bucket: str, key: str) -> bytes:
        return self.inner.get(bucket, key)

    def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        return self.inner.download(bucket, key, dest)

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        return self.inner.stat(bucket, key)

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(bucket, prefix)

    def local_path(self, bucket: str, key: str) -> Path | None:
        return self.inner.local_path(bucket, key) if isinstance(self.inner, LocalFiles) else None

    def presigned_url(self, bucket: str, key: str, expires_seconds: int) -> str:
        if not isinstance(self.inner, Presigner):
            raise StorageError("this store cannot make download links")
        return self.inner.presigned_url(bucket, key, expires_seconds)
