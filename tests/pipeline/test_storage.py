"""The object-store contract, run against both backends: the local store and S3 (a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from pipeline.errors import InvalidKey, ObjectNotFound
from pipeline.metrics import Metrics, observed
from pipeline.storage import ObjectStore, open_store
from pipeline.storage.base import LocalFiles, Presigner
from pipeline.storage.emitting import EmittingStore
from pipeline.storage.local import LocalStore
from pipeline.testing import StageEnvironment
from tests.conftest import make_settings, s3_settings

BUCKETS = ("inputs", "work", "outputs")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store_and_bucket(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ObjectStore, str]:
    if request.param == "local":
        settings = make_settings(tmp_path)
    else:
        settings = s3_settings(tmp_path, request.getfixturevalue("s3_server"))
    return open_store(settings), settings.bucket_work


def test_put_get_stat_roundtrip(store_and_bucket: tuple[ObjectStore, str]) -> None:
    """Bytes written come back byte-identical; stat reports size, MD5 ETag, type and metadata."""
    store, bucket = store_and_bucket
    data = b"hello mouthpiece\n" * 100
    info = store.put(bucket, "a/b/c.txt", data, content_type="text/plain", metadata={"sha256": "x1"})
    assert info.size == len(data)
    assert info.etag == hashlib.md5(data).hexdigest()
    assert store.get(bucket, "a/b/c.txt") == data
    st = store.stat(bucket, "a/b/c.txt")
    assert st is not None and st.content_type == "text/plain" and st.metadata.get("sha256") == "x1"


def test_missing_objects(store_and_bucket: tuple[ObjectStore, str]) -> None:
    """A missing key: stat is None, get and download raise ObjectNotFound."""
    store, bucket = store_and_bucket
    assert store.stat(bucket, "nope/none.bin") is None
    with pytest.raises(ObjectNotFound):
        store.get(bucket, "nope/none.bin")
    with pytest.raises(ObjectNotFound):
        store.download(bucket, "nope/none.bin", Path("/tmp/never-written-mp"))


def test_file_upload_and_download(store_and_bucket: tuple[ObjectStore, str], tmp_path: Path) -> None:
    """Files go up and come down intact, including one large enough for a multipart S3 upload."""
    store, bucket = store_and_bucket
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * (12 * 4096))  # 12 MiB: more than one 8 MiB part
    info = store.put(bucket, "media/big.bin", src)
    assert info.size == src.stat().st_size
    dest = tmp_path / "out" / "big.bin"
    store.download(bucket, "media/big.bin", dest)
    assert dest.read_bytes() == src.read_bytes()


def test_list_by_prefix_in_key_order(store_and_bucket: tuple[ObjectStore, str]) -> None:
    """list() yields exactly the keys under the prefix, sorted as S3 sorts them."""
    store, bucket = store_and_bucket
    for key in ["p/b.txt", "p/a-c.txt", "p/a/b.txt", "q/x.txt", "pz.txt"]:
        store.put(bucket, key, key.encode())
    assert [i.key for i in store.list(bucket, "p/")] == ["p/a-c.txt", "p/a/b.txt", "p/b.txt"]
    assert [i.key for i in store.list(bucket, "p")] == ["p/a-c.txt", "p/a/b.txt", "p/b.txt", "pz.txt"]


def test_keys_with_spaces_plus_and_unicode(store_and_bucket: tuple[ObjectStore, str]) -> None:
    """Keys are opaque strings: spaces, '+', '%' and non-ASCII survive every operation."""
    store, bucket = store_and_bucket
    key = "audio/my voice+take 1 %20 – Zoë.flac"
    store.put(bucket, key, b"x")
    assert store.get(bucket, key) == b"x"
    assert [i.key for i in store.list(bucket, "audio/")] == [key]


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs/path", "a\x00b", "a//b", "", "dir/", "./a"])
def test_unsafe_keys_rejected(store_and_bucket: tuple[ObjectStore, str], key: str) -> None:
    """Keys that could escape a bucket directory or are malformed are refused before any I/O."""
    store, bucket = store_and_bucket
    with pytest.raises(InvalidKey):
        store.put(bucket, key, b"x")


def test_overwrite_replaces_whole_object(store_and_bucket: tuple[ObjectStore, str]) -> None:
    """A second put replaces the object; readers see the old or the new content, never a mix."""
    store, bucket = store_and_bucket
    old, new = b"A" * 200_000, b"B" * 300_000
    store.put(bucket, "x/obj", old)
    seen: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(store.get(bucket, "x/obj"))

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(5):
        store.put(bucket, "x/obj", new)
        store.put(bucket, "x/obj", old)
    stop.set()
    thread.join()
    assert seen and all(s in (old, new) for s in seen)


def test_local_store_sees_files_dropped_by_hand(tmp_path: Path) -> None:
    """A file copied straight into a bucket directory is an object with a correct ETag."""
    store = LocalStore(tmp_path)
    store.ensure_buckets(BUCKETS)
    (tmp_path / "inputs" / "audio").mkdir()
    (tmp_path / "inputs" / "audio" / "hand.wav").write_bytes(b"RIFF")
    info = store.stat("inputs", "audio/hand.wav")
    assert info is not None and info.etag == hashlib.md5(b"RIFF").hexdigest()
    # and a later change behind the store's back gets a fresh ETag, not the stale sidecar's
    store.put("inputs", "audio/hand.wav", b"RIFF")
    (tmp_path / "inputs" / "audio" / "hand.wav").write_bytes(b"RIFF2")
    info2 = store.stat("inputs", "audio/hand.wav")
    assert info2 is not None and info2.etag == hashlib.md5(b"RIFF2").hexdigest()


def test_local_concurrent_writers_of_one_key_leave_a_consistent_object(tmp_path: Path) -> None:
    """Two threads writing the same key at once: no error, and the metadata always matches the data
    (a stale checksum on a cache entry would poison every later job)."""
    store = LocalStore(tmp_path)
    store.ensure_buckets(BUCKETS)
    for _ in range(50):
        barrier = threading.Barrier(2)
        errors: list[Exception] = []

        def write(i: int, barrier: threading.Barrier = barrier, errors: list[Exception] = errors) -> None:
            data = f"content-{i}-".encode() * (100 + i)
            barrier.wait()
            try:
                store.put("work", "k.json", data, metadata={"sha256": hashlib.sha256(data).hexdigest()})
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        info = store.stat("work", "k.json")
        assert not errors
        assert info is not None
        assert info.metadata.get("sha256") == hashlib.sha256(store.get("work", "k.json")).hexdigest()


def test_wrappers_have_exactly_their_stores_capabilities(
    store_and_bucket: tuple[ObjectStore, str], tmp_path: Path
) -> None:
    """The announcing and counting wrappers offer what the store under them offers, no more: in place
    reads only around the local store, download links only around S3. So an artifact saved through them
    on S3 carries its SHA-256 and a later job finds it in the cache (it did not, when every announcing
    store claimed to be local)."""
    store, bucket = store_and_bucket
    sent: list[str] = []
    settings = make_settings(tmp_path / "settings", bucket_work=bucket)
    wrapped = observed(EmittingStore(store, settings, lambda s, p, m: sent.append(s)), Metrics(settings))
    assert isinstance(wrapped, LocalFiles) == isinstance(store, LocalFiles)
    assert isinstance(wrapped, Presigner) == isinstance(store, Presigner)
    assert isinstance(store, LocalFiles) != isinstance(store, Presigner)
    env = StageEnvironment(settings, store=wrapped)
    ctx = env.context(workdir=tmp_path / "scratch")
    saved = ctx.save_bytes(b"speech timing", "x.json", "application/json", key="cache/speech/abc.json")
    assert saved.sha256 == hashlib.sha256(b"speech timing").hexdigest()
    assert ctx.cached("cache/speech/abc.json") == saved
