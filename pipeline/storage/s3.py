"""The MinIO/S3 object store, on the ``minio`` client.

S3 writes are atomic by nature (an object appears whole when the upload completes). Objects over 5 MiB
are uploaded in parts; MinIO then reports ``s3:ObjectCreated:CompleteMultipartUpload``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from pydantic import SecretStr

from pipeline.config import StorageSettings
from pipeline.errors import ObjectNotFound, StorageError
from pipeline.keys import check_key
from pipeline.storage.base import ObjectInfo

T = TypeVar("T")
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "NotFound", "ResourceNotFound"}
_PART_SIZE = 8 * 1024 * 1024


def _secret(value: SecretStr | None) -> str | None:
    """The credential's text; None (no credentials: anonymous requests) when unset."""
    return value.get_secret_value() if value is not None else None


def _strip(etag: str | None) -> str:
    return (etag or "").strip('"')


class S3Store:
    """``ObjectStore`` on an S3 API (MinIO, SeaweedFS, AWS). Thread-safe, as the minio client is."""

    def __init__(self, client: Minio) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> S3Store:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            retries=urllib3.Retry(total=3, backoff_factor=0.3, status_forcelist=[500, 502, 503, 504]),
            maxsize=16,
        )
        client = Minio(
            settings.s3_endpoint,
            access_key=_secret(settings.s3_access_key),
            secret_key=_secret(settings.s3_secret_key),
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http,
        )
        return cls(client)

    def _call(self, what: str, bucket: str, key: str, fn: Callable[[], T]) -> T:
        """Run one client call, mapping its failures onto the error tree."""
        try:
            return fn()
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(bucket, key) from exc
            raise StorageError(f"S3 {what} {bucket}/{key} failed: {exc.code} {exc.message}", key=key) from exc
        except (urllib3.exceptions.HTTPError, OSError, ServerError, InvalidResponseError) as exc:
            raise StorageError(f"S3 {what} {bucket}/{key} failed: {exc}", key=key) from exc

    def ensure_buckets(self, buckets: tuple[str, ...] | list[str]) -> None:
        for bucket in buckets:
            if not self._call("bucket_exists", bucket, "", partial(self.client.bucket_exists, bucket)):
                try:
                    self.client.make_bucket(bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise StorageError(f"cannot create bucket {bucket}: {exc.code}") from exc

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | Path,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        meta: dict[str, str | list[str] | tuple[str]] = dict(metadata or {})

        def write() -> object:
            if isinstance(data, bytes):
                return self.client.put_object(
                    bucket, key, io.BytesIO(data), len(data), content_type=content_type, metadata=meta
                )
            return self.client.fput_object(
                bucket, key, str(data), content_type=content_type, metadata=meta, part_size=_PART_SIZE
            )

        self._call("put", bucket, key, write)
        info = self.stat(bucket, key)
        if info is None:
            raise StorageError(f"S3 put {bucket}/{key} succeeded but the object is not there", key=key)
        return info

    def get(self, bucket: str, key: str) -> bytes:
        check_key(key)

        def read() -> bytes:
            response = self.client.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("get", bucket, key, read)

    def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        check_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._call("download", bucket, key, lambda: self.client.fget_object(bucket, key, str(dest)))
        info = self.stat(bucket, key)
        if info is None:
            raise ObjectNotFound(bucket, key)
        return info

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            st = self._call("stat", bucket, key, lambda: self.client.stat_object(bucket, key))
        except ObjectNotFound:
            return None
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=st.size or 0,
            etag=_strip(st.etag),
            content_type=st.content_type or "application/octet-stream",
            modified=st.last_modified,
            metadata={
                k.lower().removeprefix("x-amz-meta-"): str(v)
                for k, v in (st.metadata or {}).items()
                if k.lower().startswith("x-amz-meta-")
            },
        )

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        objects = self._call(
            "list",
            bucket,
            prefix,
            lambda: list(self.client.list_objects(bucket, prefix=prefix, recursive=True)),
        )
        for obj in sorted(objects, key=lambda o: o.object_name or ""):
            if obj.object_name and not obj.is_dir:
                yield ObjectInfo(
                    bucket=bucket,
                    key=obj.object_name,
                    size=obj.size or 0,
                    etag=_strip(obj.etag),
                    modified=obj.last_modified,
                )

    def presigned_url(self, bucket: str, key: str, expires_seconds: int) -> str:
        check_key(key)
        return self._call(
            "presign",
            bucket,
            key,
            lambda: self.client.presigned_get_object(bucket, key, expires=timedelta(seconds=expires_seconds)),
        )

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object (retention tooling and tests; not part of the protocol)."""
        check_key(key)
        self._call("delete", bucket, key, lambda: self.client.remove_object(bucket, key))
