"""``mouthpiece gc``: delete old artifacts safely (the retention job people run from cron).

Only finished jobs are touched, and only when nothing happened to them for ``older_than`` seconds. For
each such job the durable record ``outputs/<job>/status.json`` is written first, if it is missing: it is
what later keeps a re-announced input from running again (validate and the reconcile sweep consult it),
so deleting the job's work never re-renders or re-posts it. Then:

- ``work/jobs/<job>/`` is deleted (artifacts, manifests, records, the resolved spec with its secrets);
- with ``outputs``: the job's videos and subtitles, but never its ``status.json``;
- with ``inputs``: the object that started the job (a spec or a voice clip; media a spec names may be
  shared with other jobs and are left to bucket lifecycle rules);
- with ``cache``: entries of ``work/cache/`` older than ``older_than`` that no unfinished job refers to.

Jobs in flight are never touched, however old. ``dry_run`` reports without deleting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import structlog
from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.contracts import JobStatus, Manifest
from pipeline.errors import ConfigError, ObjectNotFound
from pipeline.keys import parse_manifest_key, status_key
from pipeline.reconcile import group_jobs
from pipeline.status import job_status, read_job, store_status, stored_status
from pipeline.storage.base import ObjectInfo, ObjectStore

log = structlog.get_logger("mouthpiece.gc")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@runtime_checkable
class Deleter(Protocol):
    def delete(self, bucket: str, key: str) -> None: ...


def parse_duration(text: str) -> float:
    """Seconds in ``7d``, ``12h``, ``30m``, ``90s`` or ``90``; ``ValueError`` otherwise."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (use 7d, 12h, 30m or 90s)")
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass
class GcReport:
    jobs: list[str] = field(default_factory=list)
    deleted: int = 0
    kept_unfinished: int = 0

    def line(self, dry_run: bool) -> str:
        verb = "would delete" if dry_run else "deleted"
        return (
            f"{verb} {self.deleted} object(s) of {len(self.jobs)} finished job(s); "
            f"{self.kept_unfinished} unfinished job(s) left alone"
        )


class Collector:
    def __init__(self, store: ObjectStore, settings: Settings, *, dry_run: bool = False) -> None:
        if not isinstance(store, Deleter):
            raise ConfigError("this store cannot delete objects")
        self.store, self.settings, self.dry_run = store, settings, dry_run
        self.deleter: Deleter = store
        self.report = GcReport()

    def run(self, older_than: float, *, outputs: bool, inputs: bool, cache: bool) -> GcReport:
        now = datetime.now(UTC)
        work = list(self.store.list(self.settings.bucket_work, "jobs/"))
        referenced: set[str] = set()
        for job_id, job in group_jobs(work).items():
            status = stored_status(self.store, self.settings, job_id) or self._record_status(job_id)
            if status is None or not status.finished:
                self.report.kept_unfinished += 1
                referenced |= self._references(job.manifests.values())
                continue
            if job.latest is not None and (now - job.latest).total_seconds() < older_than:
                continue
            self._collect(job_id, [i for i in work if i.key.startswith(f"jobs/{job_id}/")], outputs, inputs)
        if cache:
            self._cache(older_than, now, referenced)
        log.info("gc_done", dry_run=self.dry_run, jobs=len(self.report.jobs), deleted=self.report.deleted)
        return self.report

    def _record_status(self, job_id: str) -> JobStatus | None:
        """Fold the records, and write the durable record before anything of the job is deleted."""
        status = job_status(self.store, self.settings, job_id)
        if status is not None and status.finished and not self.dry_run:
            store_status(self.store, self.settings, status)
        return status

    def _collect(self, job_id: str, objects: list[ObjectInfo], outputs: bool, inputs: bool) -> None:
        self.report.jobs.append(job_id)
        if inputs and (job := read_job(self.store, self.settings, job_id)) is not None:
            self._delete(job.source_bucket, job.source_key)
        for info in objects:
            self._delete(info.bucket, info.key)
        if outputs:
            for info in self.store.list(self.settings.bucket_outputs, f"{job_id}/"):
                if info.key != status_key(job_id):
                    self._delete(info.bucket, info.key)

    def _cache(self, older_than: float, now: datetime, referenced: set[str]) -> None:
        for info in self.store.list(self.settings.bucket_work, "cache/"):
            old = info.modified is not None and (now - info.modified).total_seconds() >= older_than
            if old and info.key not in referenced:
                self._delete(info.bucket, info.key)

    def _references(self, manifests: Iterable[ObjectInfo]) -> set[str]:
        keys: set[str] = set()
        for info in manifests:
            if parse_manifest_key(info.key) is None:
                continue
            try:
                manifest = Manifest.model_validate_json(self.store.get(info.bucket, info.key))
            except (ObjectNotFound, ValidationError):
                continue
            keys |= {a.key for a in manifest.artifacts.values() if a.bucket == self.settings.bucket_work}
        return keys

    def _delete(self, bucket: str, key: str) -> None:
        self.report.deleted += 1
        if not self.dry_run:
            self.deleter.delete(bucket, key)


def collect(
    store: ObjectStore,
    settings: Settings,
    older_than: float,
    *,
    outputs: bool = False,
    inputs: bool = False,
    cache: bool = False,
    dry_run: bool = False,
) -> GcReport:
    """Delete what is older than ``older_than`` seconds, as the module docstring says."""
    return Collector(store, settings, dry_run=dry_run).run(
        older_than, outputs=outputs, inputs=inputs, cache=cache
    )
