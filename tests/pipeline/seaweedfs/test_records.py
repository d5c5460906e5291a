"""Filer metadata events → created objects: which events mean a new object, and its S3 ETag."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from pipeline.seaweedfs import filer_pb
from pipeline.seaweedfs.records import MULTIPART_EVENT, PUT_EVENT, created_object, entry_etag, flatten


def entry(
    name: str, *, etag: str | None = None, md5: bytes = b"", directory: bool = False, **extended: bytes
) -> Any:
    message = filer_pb.messages()["Entry"](name=name, is_directory=directory)
    message.attributes.file_size = 1000
    message.attributes.mtime = 1_790_000_000
    message.attributes.md5 = md5
    if etag is not None:
        message.extended["Seaweed-X-Amz-ETag"] = etag.encode()
    for key, value in extended.items():
        message.extended[key.replace("_", "-")] = value
    return message


def event(directory: str, old: Any = None, new: Any = None, new_parent: str = "", ts: int = 1) -> Any:
    response = filer_pb.messages()["SubscribeMetadataResponse"](directory=directory, ts_ns=ts)
    note = response.event_notification
    note.SetInParent()
    if old is not None:
        note.old_entry.CopyFrom(old)
    if new is not None:
        note.new_entry.CopyFrom(new)
    note.new_parent_path = new_parent or (directory if new is not None else "")
    return response


def test_a_new_file_in_a_bucket_is_a_created_object_with_its_s3_etag() -> None:
    """A create under /buckets/<bucket>/ → (Put, object) with bucket, key, size and the stored ETag."""
    found = created_object(event("/buckets/inputs/audio", new=entry("hello world.flac", etag="398533d4")))
    assert found is not None
    name, info = found
    assert (name, info.bucket, info.key, info.size, info.etag) == (
        PUT_EVENT,
        "inputs",
        "audio/hello world.flac",
        1000,
        "398533d4",
    )


def test_directories_deletions_tags_parts_and_system_files_are_not_objects() -> None:
    """Folders, deletes, metadata-only updates, multipart parts and .system entries create nothing."""
    same = entry("a.flac", etag="e1")
    assert created_object(event("/buckets/inputs", new=entry("audio", directory=True))) is None
    assert created_object(event("/buckets/inputs/audio", old=same)) is None
    assert (
        created_object(
            event("/buckets/inputs/audio", old=same, new=entry("a.flac", etag="e1", X_Amz_Tagging_a=b"b"))
        )
        is None
    )
    assert created_object(event("/buckets/inputs/.uploads/u1", new=entry("0001.part", etag="p1"))) is None
    assert created_object(event("/buckets/.system/owners", new=entry("x", etag="e"))) is None
    assert created_object(event("/elsewhere/inputs", new=entry("a.flac", etag="e"))) is None
    assert created_object(filer_pb.messages()["SubscribeMetadataResponse"](ts_ns=5)) is None  # heartbeat


def test_new_content_and_moves_are_created_objects() -> None:
    """An overwrite with another ETag, and a move into a bucket path, are new objects."""
    replaced = created_object(
        event("/buckets/inputs/audio", old=entry("a.flac", etag="e1"), new=entry("a.flac", etag="e2"))
    )
    moved = created_object(
        event(
            "/buckets/tmp",
            old=entry("x", etag="e1"),
            new=entry("a.flac", etag="e1"),
            new_parent="/buckets/inputs/audio",
        )
    )
    assert replaced is not None and replaced[1].etag == "e2"
    assert moved is not None and (moved[1].bucket, moved[1].key) == ("inputs", "audio/a.flac")


def test_multipart_completion_is_named_as_minio_names_it() -> None:
    """An object carrying an upload id was completed from parts: CompleteMultipartUpload."""
    found = created_object(
        event("/buckets/inputs/audio", new=entry("big.wav", etag="abc-2", X_Seaweedfs_Upload_Id=b"u"))
    )
    assert found is not None and found[0] == MULTIPART_EVENT


def test_etag_falls_back_to_md5_then_chunks_as_seaweedfs_does() -> None:
    """No stored ETag: the MD5 attribute in hex; no MD5: one chunk's MD5, or MD5 of the chunk MD5s + -N."""
    digest = hashlib.md5(b"x").digest()
    assert entry_etag(entry("a", md5=digest)) == digest.hex()
    one = entry("a")
    one.chunks.add(e_tag=base64.b64encode(digest).decode(), size=1)
    assert entry_etag(one) == digest.hex()
    two = entry("a")
    parts = [hashlib.md5(b"1").digest(), hashlib.md5(b"2").digest()]
    for part in parts:
        two.chunks.add(e_tag=base64.b64encode(part).decode(), size=1)
    assert entry_etag(two) == f"{hashlib.md5(b''.join(parts)).hexdigest()}-2"


def test_batched_responses_are_flattened_in_order() -> None:
    """A response carrying a backlog batch yields itself, then each batched event."""
    first = event("/buckets/inputs/audio", new=entry("1", etag="a"), ts=1)
    first.events.add().CopyFrom(event("/buckets/inputs/audio", new=entry("2", etag="b"), ts=2))
    assert [r.ts_ns for r in flatten(first)] == [1, 2]
