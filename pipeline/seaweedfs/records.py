"""One filer metadata event → the S3 object it created, in the form the bus carries.

Pure functions of a ``SubscribeMetadataResponse``. An event means "object created" when it has a new
entry that is a file inside a bucket folder (``<buckets_dir>/<bucket>/<key>``) and either is new, moved
there, or has new content (another ETag). Directory entries, deletions, metadata-only updates (tags),
multipart parts under ``.uploads/`` and the system bucket ``.system`` mean nothing to us.

The ETag is computed exactly as SeaweedFS's S3 API reports it (``getObjectETag``): the stored
``Seaweed-X-Amz-ETag``, else the MD5 attribute, else one derived from the chunks. Job ids are derived
from it, so the bridge, the reconcile sweep (which lists the bucket over S3) and a client announcement of
the same object agree on the job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pipeline.storage.base import ObjectInfo

ETAG_KEY = "Seaweed-X-Amz-ETag"
UPLOAD_ID_KEY = "X-Seaweedfs-Upload-Id"
MULTIPART_EVENT = "s3:ObjectCreated:CompleteMultipartUpload"
PUT_EVENT = "s3:ObjectCreated:Put"


def flatten(response: Any) -> Iterator[Any]:
    """The response and the events batched into it (servers batch when a subscriber is far behind)."""
    yield response
    yield from response.events


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def entry_etag(entry: Any) -> str:
    """The S3 ETag of a filer entry (no quotes), as SeaweedFS's S3 gateway computes it."""
    stored = bytes(entry.extended.get(ETAG_KEY, b"")).decode(errors="replace").strip('"')
    if stored:
        return stored
    if entry.attributes.md5:
        return bytes(entry.attributes.md5).hex()
    chunks = list(entry.chunks)
    if len(chunks) == 1:
        return _b64(chunks[0].e_tag).hex()
    digests = b"".join(_b64(c.e_tag) for c in chunks)
    return f"{hashlib.md5(digests).hexdigest()}-{len(chunks)}"


def entry_size(entry: Any) -> int:
    ends = [c.offset + c.size for c in entry.chunks]
    return max([int(entry.attributes.file_size), *ends])


def split_path(path: str, buckets_dir: str) -> tuple[str, str] | None:
    """(bucket, key) of a filer path inside the buckets folder, or None."""
    prefix = buckets_dir.rstrip("/") + "/"
    if not path.startswith(prefix):
        return None
    bucket, _, key = path[len(prefix) :].partition("/")
    if not bucket or not key or bucket.startswith(".") or key.startswith(".uploads/"):
        return None
    return bucket, key


def created_object(response: Any, buckets_dir: str = "/buckets") -> tuple[str, ObjectInfo] | None:
    """(event name, object) when this metadata event created or replaced an object in a bucket."""
    if not response.HasField("event_notification"):
        return None
    event = response.event_notification
    if not event.HasField("new_entry") or event.new_entry.is_directory:
        return None
    new = event.new_entry
    directory = event.new_parent_path or response.directory
    where = split_path(f"{directory.rstrip('/')}/{new.name}", buckets_dir)
    if where is None or _unchanged(response, event):
        return None
    extended = dict(new.extended)
    info = ObjectInfo(
        bucket=where[0],
        key=where[1],
        size=entry_size(new),
        etag=entry_etag(new),
        content_type=new.attributes.mime or "application/octet-stream",
        modified=datetime.fromtimestamp(new.attributes.mtime, UTC) if new.attributes.mtime else None,
    )
    return (MULTIPART_EVENT if UPLOAD_ID_KEY in extended else PUT_EVENT), info


def _unchanged(response: Any, event: Any) -> bool:
    """An update in place whose content did not change (tags, ACLs, other metadata)."""
    if not event.HasField("old_entry"):
        return False
    same_place = event.old_entry.name == event.new_entry.name and (
        not event.new_parent_path or event.new_parent_path.rstrip("/") == response.directory.rstrip("/")
    )
    return same_place and entry_etag(event.old_entry) == entry_etag(event.new_entry)
