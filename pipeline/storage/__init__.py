"""Object storage behind one small protocol: a local-filesystem store and a MinIO/S3 store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.storage.base import ObjectInfo, ObjectStore, Presigner

if TYPE_CHECKING:
    from pipeline.config import StorageSettings

__all__ = ["ObjectInfo", "ObjectStore", "Presigner", "open_store"]


def open_store(settings: StorageSettings) -> ObjectStore:
    """The configured backend with the three buckets created (no event publishing: see ``emitting``)."""
    buckets = (settings.bucket_inputs, settings.bucket_work, settings.bucket_outputs)
    if settings.store == "s3":
        from pipeline.storage.s3 import S3Store

        s3 = S3Store.from_settings(settings)
        s3.ensure_buckets(buckets)
        return s3
    from pipeline.storage.local import LocalStore

    local = LocalStore(settings.data_dir / "buckets")
    local.ensure_buckets(buckets)
    return local
