"""Bucket-notification records: building them (client event source) and reading them (any source).

The payload is exactly what MinIO publishes to a NATS JetStream target: ``EventName``, ``Key``
(``bucket/key``, not escaped) and ``Records`` whose ``s3.object.key`` is URL-escaped (``/`` → ``%2F``,
space → ``+``). Our store, in ``client`` mode, publishes the identical record after each write.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote_plus, unquote_plus

from pydantic import ValidationError

from pipeline.contracts import CREATED_EVENTS, BucketEvent, S3Bucket, S3Entity, S3Object, S3Record
from pipeline.errors import InvalidInput
from pipeline.keys import check_key
from pipeline.storage.base import ObjectInfo


@dataclass(frozen=True)
class ObjectEvent:
    """One decoded record: what happened (``name``) to which object version (``object``)."""

    name: str
    object: ObjectInfo

    @property
    def created(self) -> bool:
        return self.name in CREATED_EVENTS

    @property
    def message_id(self) -> str:
        """Deterministic ``Nats-Msg-Id``: the same object version is delivered once per dedup window."""
        return message_id(self.object.bucket, self.object.key, self.object.etag)


def message_id(bucket: str, key: str, etag: str) -> str:
    raw = f"{bucket}/{key}/{etag}"
    # NATS headers are single-line ASCII: keep readable keys, hash anything exotic
    if raw.isascii() and raw.isprintable() and len(raw) <= 512:
        return raw
    return f"{bucket}/sha256:{hashlib.sha256(raw.encode()).hexdigest()}/{etag}"


def build_event(info: ObjectInfo, name: str = "s3:ObjectCreated:Put") -> bytes:
    """The MinIO-format notification for a write of ``info`` (client event source)."""
    now = datetime.now(UTC)
    record = S3Record(
        eventTime=now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        eventName=name,
        s3=S3Entity(
            bucket=S3Bucket(name=info.bucket, arn=f"arn:aws:s3:::{info.bucket}"),
            object=S3Object(
                key=quote_plus(info.key),
                size=info.size,
                eTag=info.etag,
                contentType=info.content_type,
                userMetadata={"content-type": info.content_type},
                sequencer=f"{int(now.timestamp() * 1e6):X}",
            ),
        ),
        source={"host": "mouthpiece", "port": "", "userAgent": "mouthpiece"},
    )
    event = BucketEvent(EventName=name, Key=f"{info.bucket}/{info.key}", Records=[record])
    return event.model_dump_json().encode()


def parse_event(payload: bytes) -> list[ObjectEvent]:
    """Decode a notification into its object events. Raises ``InvalidInput`` for a malformed one."""
    try:
        event = BucketEvent.model_validate_json(payload)
    except ValidationError as exc:
        raise InvalidInput(f"not a bucket notification: {exc.errors()[0]['msg']}") from exc
    out = []
    for record in event.Records:
        key = check_key(unquote_plus(record.s3.object.key))
        out.append(
            ObjectEvent(
                name=record.eventName if record.eventName.startswith("s3:") else f"s3:{record.eventName}",
                object=ObjectInfo(
                    bucket=record.s3.bucket.name,
                    key=key,
                    size=record.s3.object.size,
                    etag=record.s3.object.eTag.strip('"'),
                    content_type=record.s3.object.contentType,
                ),
            )
        )
    return out
