"""Failed drops: entries of the watched folder that never became a job.

The folder ingress moves such an entry to ``inbox/.failed/`` with a ``WHY.txt`` and also writes a small
``FailedDrop`` record to ``work/drops/failed/<time>-<id>.json``, so people see it where they look for
their jobs (the console's job list, ``mouthpiece status``) and not only in a folder.
"""

from __future__ import annotations

import hashlib
from itertools import islice

from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.contracts import FailedDrop
from pipeline.errors import ObjectNotFound
from pipeline.storage.base import ObjectStore

PREFIX = "drops/failed/"


def failed_drop_key(drop: FailedDrop) -> str:
    """``drops/failed/<UTC time>-<short digest>.json``: key order is time order."""
    digest = hashlib.sha256(f"{drop.name}\n{drop.at.isoformat()}".encode()).hexdigest()[:10]
    return f"{PREFIX}{drop.at:%Y%m%dT%H%M%S%f}-{digest}.json"


def record_failed_drop(store: ObjectStore, settings: Settings, drop: FailedDrop) -> str:
    """Store the record; returns its key."""
    key = failed_drop_key(drop)
    store.put(settings.bucket_work, key, drop.model_dump_json().encode(), content_type="application/json")
    return key


def list_failed_drops(store: ObjectStore, settings: Settings, limit: int = 50) -> list[FailedDrop]:
    """The newest ``limit`` failed drops, newest first (an unreadable record is skipped)."""
    keys = [info.key for info in store.list(settings.bucket_work, PREFIX) if info.key.endswith(".json")]
    drops = []
    for key in islice(reversed(keys), limit):
        try:
            drops.append(FailedDrop.model_validate_json(store.get(settings.bucket_work, key)))
        except (ObjectNotFound, ValidationError):
            continue
    return drops
