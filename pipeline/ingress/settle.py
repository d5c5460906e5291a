"""When a drop is completely written: the watched folder's entries, their last events, the files still
open for writing, and the sizes seen at the last look. Thread-safe: the watchdog observer feeds it and
the ingress loop reads it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.ingress.markers import MARKER_SUFFIX
from pipeline.ingress.safe import sizes

TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", ".download", ".partial", "~")


@dataclass
class _Entry:
    last_event: float
    sizes: dict[str, int] | None = None
    waiting_since: float | None = None


class Settling:
    """An entry (a file or folder directly inside ``inbox``) is ready when nothing in it is open for
    writing, it has been quiet for ``settle_seconds``, and its sizes did not change between two looks."""

    def __init__(self, inbox: Path, settle_seconds: float) -> None:
        self.inbox = inbox
        self.settle_seconds = settle_seconds
        self._entries: dict[str, _Entry] = {}
        self._open: set[Path] = set()
        self._stuck: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def entry_of(self, path: Path) -> str | None:
        """The inbox entry ``path`` belongs to; None for hidden, temporary and marker files."""
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return None
        if not rel.parts or rel.parts[0].startswith(".") or path.name.endswith(TEMP_SUFFIXES):
            return None
        if rel.parts[0].endswith(MARKER_SUFFIX):  # our own sign that a drop is being worked on
            return None
        return rel.parts[0]

    def touch(self, path: Path, *, writing: bool | None = None) -> None:
        """Something happened to ``path``: its entry's quiet period starts again; ``writing`` says whether
        the file is now open for writing (True), closed (False) or unknown (None)."""
        name = self.entry_of(path)
        if name is None:
            return
        with self._lock:
            entry = self._entries.setdefault(name, _Entry(last_event=time.monotonic()))
            entry.last_event, entry.sizes = time.monotonic(), None
            if writing is True:
                self._open.add(path)
            elif writing is False:
                self._open.discard(path)

    def closed(self, path: Path) -> None:
        """``path`` is gone or moved away: it is no longer being written."""
        with self._lock:
            self._open.discard(path)

    def ready(self, now: float) -> list[str]:
        """The entries complete at ``now`` (each look records sizes for the next)."""
        ready = []
        with self._lock:
            for name, entry in list(self._entries.items()):
                path = self.inbox / name
                if now - entry.last_event < self.settle_seconds:
                    continue
                if any(p == path or path in p.parents for p in self._open):
                    continue
                seen = sizes(path)
                stable = entry.sizes is not None and seen == entry.sizes
                entry.sizes = seen
                if stable and self._stuck.get(name) != seen:
                    ready.append(name)
        return sorted(ready)

    def busy(self, path: Path) -> bool:
        """Whether the entry ``path`` is open or changed within the quiet period."""
        with self._lock:
            entry = self._entries.get(path.name)
            recent = entry is not None and time.monotonic() - entry.last_event < self.settle_seconds
            return recent or path in self._open

    def waited(self, name: str, now: float) -> tuple[bool, float]:
        """For an entry waiting for something (an avatar for its voice): whether it starts waiting now,
        and how long it has waited."""
        with self._lock:
            entry = self._entries.setdefault(name, _Entry(last_event=now))
            first = entry.waiting_since is None
            if entry.waiting_since is None:
                entry.waiting_since = now
            return first, now - entry.waiting_since

    def defer(self, name: str) -> None:
        """Look at ``name`` again after another quiet period (it could not be taken just now)."""
        with self._lock:
            if name in self._entries:
                self._entries[name].last_event = time.monotonic()

    def forget_entry(self, name: str) -> None:
        """``name`` left the inbox (taken, refused or deleted)."""
        with self._lock:
            self._entries.pop(name, None)
            self._stuck.pop(name, None)

    def stuck(self, name: str, seen: dict[str, int]) -> None:
        """``name`` could not be moved out of the inbox: leave it alone until it looks different."""
        with self._lock:
            self._stuck[name] = seen
