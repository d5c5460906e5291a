"""How much work one demo job does besides its real work: object writes, hash passes, bytes hashed.

Runs `mouthpiece demo` in this process (its private stack runs every stage here) with counters on the
store's writes and reads and on every SHA-256 / MD5 object, then prints the figures. Run it from any
checkout to compare versions:

    python bench/bench_work.py            # this checkout
    python bench/bench_work.py --list     # and every object written, in order
    (cd /tmp/old-checkout && PYTHONPATH=. python /path/to/bench/bench_work.py)

A "hash pass" is one hash object that consumed at least 64 KiB (media and artifacts, not key names).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

BIG = 64 * 1024
_lock = threading.Lock()
counts: Counter[str] = Counter()
written: list[str] = []


class _Counting:
    """A hash object that counts the bytes it consumes."""

    def __init__(self, algo: str, real: Any, data: bytes = b"") -> None:
        self.algo, self.real, self.seen = algo, real, 0
        if data:
            self.update(data)

    def update(self, data: bytes) -> None:
        self.seen += len(data)
        self.real.update(data)

    def hexdigest(self) -> str:
        with _lock:
            counts[f"{self.algo} bytes"] += self.seen
            if self.seen >= BIG:
                counts[f"{self.algo} passes"] += 1
        return str(self.real.hexdigest())

    def digest(self) -> bytes:
        self.hexdigest()
        return bytes(self.real.digest())


def _wrap(algo: str) -> Any:
    original = getattr(hashlib, algo)

    def make(data: bytes = b"", **kwargs: Any) -> _Counting:
        return _Counting(algo, original(**kwargs), data)

    return make


def _count_store() -> None:
    from pipeline.storage.local import LocalStore

    put, download, get = LocalStore.put, LocalStore.download, LocalStore.get

    def counted_put(self: Any, bucket: str, key: str, data: Any, **kwargs: Any) -> Any:
        info = put(self, bucket, key, data, **kwargs)
        with _lock:
            counts["object writes"] += 1
            counts[f"writes to {bucket}"] += 1
            counts["bytes written"] += info.size
            written.append(f"{bucket}/{key}")
        return info

    def counted_download(self: Any, bucket: str, key: str, dest: Path) -> Any:
        info = download(self, bucket, key, dest)
        with _lock:
            counts["downloads (copies out of the store)"] += 1
            counts["bytes downloaded"] += info.size
        return info

    def counted_get(self: Any, bucket: str, key: str) -> bytes:
        data = get(self, bucket, key)
        with _lock:
            counts["small reads (get)"] += 1
        return data

    LocalStore.put, LocalStore.download, LocalStore.get = counted_put, counted_download, counted_get  # type: ignore[method-assign]


def main() -> int:
    hashlib.sha256 = _wrap("sha256")  # type: ignore[assignment]
    hashlib.md5 = _wrap("md5")  # type: ignore[assignment]
    _count_store()
    from pipeline.cli import main as cli

    listing = "--list" in sys.argv
    extra = [a for a in sys.argv[1:] if a != "--list"]

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo.mp4"
        args = ["--data-dir", str(Path(tmp) / "data"), "--log-level", "error", "demo", "-o", str(out)]
        code = cli(args + extra)
        size = out.stat().st_size if out.exists() else 0
    print(f"demo job {' '.join(extra)}: exit {code}, video {size / 1e6:.2f} MB")
    for name in sorted(counts):
        value = counts[name]
        shown = f"{value / 1e6:.1f} MB" if "bytes" in name else str(value)
        print(f"  {name:38} {shown}")
    if listing:
        print("objects written:", *written, sep="\n  ")
    return code


if __name__ == "__main__":
    sys.exit(main())
