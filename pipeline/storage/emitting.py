"""The ``client`` event source: a store wrapper that publishes the bucket notification itself.

For the local store, and for S3 servers without bucket notifications (SeaweedFS, plain AWS with no
queue), every successful ``put`` whose key matches the routing table is followed by the MinIO-format
record on the stage's subject, with a deterministic ``Nats-Msg-Id``. If publishing fails the ``put``
raises, so the caller retries the write (or the reconciliation sweep re-emits an orphaned input).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.config import Settings
from pipeline.events import build_event, message_id
from pipeline.keys import event_subject
from pipeline.storage.base import ObjectInfo, ObjectStore, WrappedStore

Publish = Callable[[str, bytes, str], None]
"""publish(subject, payload, msg_id); blocks until the bus has stored the message."""


class EmittingStore(WrappedStore):
    """``ObjectStore`` that announces routed writes on the bus, as MinIO would."""

    def __init__(self, inner: ObjectStore, settings: Settings, publish: Publish) -> None:
        super().__init__(inner)
        self.settings = settings
        self.publish = publish

    def after_put(self, info: ObjectInfo, data: bytes | Path) -> None:
        self.announce(info)

    def announce(self, info: ObjectInfo) -> bool:
        """Publish the notification for an existing object if a route matches; True if published."""
        subject = event_subject(self.settings, info.bucket, info.key)
        if subject is None:
            return False
        self.publish(subject, build_event(info), message_id(info.bucket, info.key, info.etag))
        return True
