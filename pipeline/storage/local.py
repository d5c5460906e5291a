"""A local-filesystem object store: a bucket is a directory, a key a relative path under it.

Writes go to a temporary file in ``ROOT/.tmp`` and are renamed into place, so readers never see a
partial object. Content type, metadata and the ETag (MD5, as S3 computes it for single-part uploads) are
kept in a sidecar under ``ROOT/.meta``; the sidecar records the data file's size and mtime, so a file
changed behind the store's back (dropped in by hand) gets a fresh ETag.

Work done once: a write reads its data once, computing the MD5 ETag and the SHA-256 (kept as the
``sha256`` metadata unless the caller gave one) as it copies; an object written from another object of
this store is a hard link (objects are never changed in place, only replaced), with the source's hashes;
``local_path`` lets readers use an object's file where it is, without copying it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import InvalidKey, ObjectNotFound, StorageError
from pipeline.keys import check_key
from pipeline.storage.base import ObjectInfo

_CHUNK = 1024 * 1024


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Hashes:
    """MD5 (the ETag) and SHA-256 of the bytes passed through ``update``, in one pass."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        self.sha256.update(chunk)


def _check_bucket(bucket: str) -> str:
    if not bucket or bucket.startswith(".") or "/" in bucket or "\\" in bucket or "\x00" in bucket:
        raise InvalidKey(f"bucket name {bucket!r} is not allowed")
    return bucket


class LocalStore:
    """``ObjectStore`` on a directory tree. Safe for several processes on one machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / ".tmp"
        self._meta = root / ".meta"

    def ensure_buckets(self, buckets: tuple[str, ...] | list[str]) -> None:
        for name in (*buckets, ".tmp", ".meta"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    # --- paths ------------------------------------------------------------------------------------
    def path_of(self, bucket: str, key: str) -> Path:
        """The data file of bucket/key (it may not exist)."""
        return self.root / _check_bucket(bucket) / check_key(key)

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self._meta / bucket / f"{key}.meta.json"

    def _bucket_dir(self, bucket: str) -> Path:
        path = self.root / _check_bucket(bucket)
        if not path.is_dir():
            raise StorageError(f"bucket {bucket} does not exist under {self.root}")
        return path

    # --- writes -----------------------------------------------------------------------------------
    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | Path,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        dest = self.path_of(bucket, key)
        self._bucket_dir(bucket)
        try:
            tmp, etag, sha256 = self._linked(data) or self._temp_copy(data)
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror or exc}", key=key) from exc
        try:
            st = tmp.stat()
            meta = {"sha256": sha256, **dict(metadata or {})}
            # data and sidecar change together: a concurrent writer of the same key (another thread
            # or process) waits, so the sidecar always describes the data beside it
            with self._key_lock(bucket, key):
                self._place(tmp, dest, key)
                return self._write_meta(bucket, key, st, etag, content_type, meta)
        finally:
            tmp.unlink(missing_ok=True)
            if tmp.parent.name.startswith("link-"):
                shutil.rmtree(tmp.parent, ignore_errors=True)

    def _linked(self, data: bytes | Path) -> tuple[Path, str, str] | None:
        """A hard link to ``data`` when it is an object file of this store (no copy, no hashing: its
        sidecar has both hashes), else None."""
        if isinstance(data, bytes):
            return None
        source = self._object_of(Path(data))
        if source is None:
            return None
        info = self.stat(*source)
        if info is None or "sha256" not in info.metadata:
            return None
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self._tmp, prefix="link-")) / "data"
        try:
            os.link(self.path_of(*source), tmp)
        except OSError:
            shutil.rmtree(tmp.parent, ignore_errors=True)
            return None
        return tmp, info.etag, info.metadata["sha256"]

    def _object_of(self, path: Path) -> tuple[str, str] | None:
        """(bucket, key) when ``path`` is an object file of this store."""
        try:
            relative = path.resolve().relative_to(self.root.resolve())
        except ValueError:
            return None
        parts = relative.parts
        if len(parts) < 2 or parts[0].startswith("."):
            return None
        return parts[0], "/".join(parts[1:])

    def local_path(self, bucket: str, key: str) -> Path | None:
        """The file holding bucket/key, to read in place (never to write: objects are replaced whole)."""
        path = self.path_of(bucket, key)
        return path if path.is_file() else None

    @contextlib.contextmanager
    def _key_lock(self, bucket: str, key: str) -> Iterator[None]:
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        name = hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:32]
        with open(locks / name, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _temp_copy(self, data: bytes | Path) -> tuple[Path, str, str]:
        """The data in a temporary file, and its MD5 and SHA-256, computed in the one read."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        tmp = Path(name)
        hashes = _Hashes()
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, bytes):
                    hashes.update(data)
                    out.write(data)
                else:
                    with Path(data).open("rb") as src:
                        while chunk := src.read(_CHUNK):
                            hashes.update(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, hashes.md5.hexdigest(), hashes.sha256.hexdigest()

    def _place(self, tmp: Path, dest: Path, key: str) -> None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir():
                raise InvalidKey(f"key {key!r} is a folder of other objects", key=key)
            os.replace(tmp, dest)
        except (NotADirectoryError, FileExistsError) as exc:
            raise InvalidKey(f"key {key!r} runs through an existing object", key=key) from exc
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror}", key=key) from exc

    def _write_meta(
        self,
        bucket: str,
        key: str,
        st: os.stat_result,
        etag: str,
        content_type: str,
        metadata: dict[str, str],
    ) -> ObjectInfo:
        """The sidecar, naming the data file it describes by inode, size and mtime (a rename keeps them)."""
        record = {
            "etag": etag,
            "content_type": content_type,
            "metadata": metadata,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ino": st.st_ino,
        }
        meta = self._meta_path(bucket, key)
        meta.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=meta.parent, prefix=f".{meta.name}.")
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(record))
        os.replace(name, meta)
        return self._info(bucket, key, st, record)

    # --- reads ------------------------------------------------------------------------------------
    def get(self, bucket: str, key: str) -> bytes:
        path = self.path_of(bucket, key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(bucket, key) from None

    def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        src = self.path_of(bucket, key)
        info = self.stat(bucket, key)
        if info is None:
            raise ObjectNotFound(bucket, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(src, part)
        os.replace(part, dest)
        return info

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        path = self.path_of(bucket, key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return self._info(bucket, key, st, self._read_meta(bucket, key, path, st))

    def _read_meta(self, bucket: str, key: str, path: Path, st: os.stat_result) -> dict[str, object]:
        try:
            record: dict[str, object] = json.loads(self._meta_path(bucket, key).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            record = {}
        same = (record.get("size"), record.get("mtime_ns"), record.get("ino"))
        if same != (st.st_size, st.st_mtime_ns, st.st_ino):
            # written behind our back (a file dropped in by hand): recompute
            record = {"etag": _md5_file(path), "content_type": "application/octet-stream", "metadata": {}}
        return record

    @staticmethod
    def _info(bucket: str, key: str, st: os.stat_result, record: Mapping[str, object]) -> ObjectInfo:
        meta = record.get("metadata")
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=st.st_size,
            etag=str(record["etag"]),
            content_type=str(record.get("content_type") or "application/octet-stream"),
            modified=datetime.fromtimestamp(st.st_mtime, UTC),
            metadata=dict(meta) if isinstance(meta, dict) else {},
        )

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._bucket_dir(bucket)
        # start the walk at the deepest folder the prefix names, not at the bucket root
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = base / folder if folder else base
        if not start.is_dir():
            return
        keys = sorted(
            p.relative_to(base).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        for key in keys:
            if key.startswith(prefix) and (info := self.stat(bucket, key)):
                yield info

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object (used by retention tooling and tests; not part of the protocol)."""
        self.path_of(bucket, key).unlink(missing_ok=True)
        self._meta_path(bucket, key).unlink(missing_ok=True)
