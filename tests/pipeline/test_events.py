"""Bucket-notification records: the exact MinIO format, in both directions."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import InvalidInput
from pipeline.events import build_event, message_id, parse_event
from pipeline.storage.base import ObjectInfo

# A record as MinIO publishes it to a NATS JetStream target (key URL-escaped, Key unescaped).
MINIO_RECORD = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "inputs/audio/my voice+take 1.flac",
    "Records": [
        {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2026-11-20T10:00:00.123Z",
            "eventName": "s3:ObjectCreated:Put",
            "userIdentity": {"principalId": "minioadmin"},
            "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "172.18.0.1"},
            "responseElements": {
                "x-amz-id-2": "dd9025b",
                "x-amz-request-id": "17A",
                "x-minio-origin-endpoint": "http://172.18.0.2:9000",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": {
                    "name": "inputs",
                    "ownerIdentity": {"principalId": "minioadmin"},
                    "arn": "arn:aws:s3:::inputs",
                },
                "object": {
                    "key": "audio%2Fmy+voice%2Btake+1.flac",
                    "size": 1152693,
                    "eTag": "0f343b0931126a20f133d67c2b018a3b",
                    "contentType": "audio/flac",
                    "userMetadata": {"content-type": "audio/flac"},
                    "sequencer": "17A3E6B6C5B0E1F8",
                },
            },
            "source": {
                "host": "172.18.0.1",
                "port": "",
                "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70",
            },
        }
    ],
}


def test_parse_minio_record_decodes_escaped_key() -> None:
    """'%2F' and '+' in s3.object.key decode to '/' and ' '; '%2B' decodes to '+'."""
    [event] = parse_event(json.dumps(MINIO_RECORD).encode())
    assert event.object.bucket == "inputs"
    assert event.object.key == "audio/my voice+take 1.flac"
    assert event.created and event.object.size == 1152693
    assert event.object.etag == "0f343b0931126a20f133d67c2b018a3b"


def test_built_event_has_minio_shape_and_roundtrips() -> None:
    """The client event source writes the same record shape, and it parses back to the object."""
    info = ObjectInfo("work", "jobs/j/a0/x y+z.manifest.json", 12, "abc", "application/json")
    payload = json.loads(build_event(info))
    assert payload["EventName"] == "s3:ObjectCreated:Put"
    assert payload["Key"] == "work/jobs/j/a0/x y+z.manifest.json"
    obj = payload["Records"][0]["s3"]["object"]
    assert obj["key"] == "jobs%2Fj%2Fa0%2Fx+y%2Bz.manifest.json"
    assert set(MINIO_RECORD["Records"][0]) == set(payload["Records"][0])
    [event] = parse_event(build_event(info))
    assert (event.object.bucket, event.object.key, event.object.etag) == ("work", info.key, "abc")


def test_tagging_and_delete_events_are_not_creations() -> None:
    """Only Put and CompleteMultipartUpload count as created; tagging, copy and delete do not."""
    for name, created in [
        ("s3:ObjectCreated:Put", True),
        ("s3:ObjectCreated:CompleteMultipartUpload", True),
        ("s3:ObjectCreated:PutTagging", False),
        ("s3:ObjectCreated:Copy", False),
        ("s3:ObjectRemoved:Delete", False),
    ]:
        record = json.loads(json.dumps(MINIO_RECORD))
        record["EventName"] = record["Records"][0]["eventName"] = name
        assert parse_event(json.dumps(record).encode())[0].created is created


def test_malformed_notifications_are_invalid_input() -> None:
    """Garbage, or a record with an unsafe key, is refused with InvalidInput, not a crash."""
    with pytest.raises(InvalidInput):
        parse_event(b"not json")
    bad = json.loads(json.dumps(MINIO_RECORD))
    bad["Records"][0]["s3"]["object"]["key"] = "..%2F..%2Fetc%2Fpasswd"
    with pytest.raises(InvalidInput):
        parse_event(json.dumps(bad).encode())


def test_message_ids_are_deterministic_and_header_safe() -> None:
    """The Nats-Msg-Id is bucket/key/etag; exotic keys are hashed into a single ASCII line."""
    assert message_id("inputs", "audio/a.flac", "e1") == "inputs/audio/a.flac/e1"
    exotic = message_id("inputs", "audio/Zoë\nnew line.flac", "e1")
    assert exotic.isascii() and "\n" not in exotic
    assert exotic == message_id("inputs", "audio/Zoë\nnew line.flac", "e1")
