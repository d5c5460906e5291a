"""Prometheus metrics of one process (``/metrics``, text format; docs/metrics.md lists every metric).

Stage metrics are observed from outside the runner: ``ObservedStore`` wraps the store a worker writes
through and reads what the runner records anyway — a stage record whose last run has ended (outcome,
duration, failure code), the render manifest (frames and seconds: frames/s), publication markers and
intents (outcomes per destination kind). The runner needs no hook, and what is counted is exactly what
is recorded. Queue gauges are read at scrape time from the bus: JetStream consumer info (pending,
ack-pending, waiting pulls) for ``NatsBus``, the messages held for ``MemoryBus``. Job counts by state come
from the console's job index, in the process that serves the console.

Each process has its own registry (not prometheus-client's global one), so tests and several stacks in
one process never mix their counts.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from pipeline.bus import Bus, durable_name
from pipeline.bus.memory import MemoryBus, subject_matches
from pipeline.config import Settings
from pipeline.contracts import Manifest, StageRecord, State
from pipeline.errors import MouthpieceError
from pipeline.keys import JOB_ID_PATTERN, manifest_key, parse_manifest_key, pools_of, subject_for
from pipeline.storage.base import ObjectInfo, ObjectStore, WrappedStore

log = structlog.get_logger("mouthpiece.metrics")
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The classic text format (0.0.4): every Prometheus version reads it."""

DURATION_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
FPS_BUCKETS = (1, 2, 5, 10, 15, 25, 50, 100, 200, 500, 1000)
_RECORD = re.compile(rf"jobs/({JOB_ID_PATTERN})/records/([a-z0-9]+)\.([a-z]+)\.json")  # fullmatch
_PUBLISHED = re.compile(rf"jobs/({JOB_ID_PATTERN})/([a-z0-9]+)/published/([a-z_]+)-[0-9a-f]+\.json")
_VIDEO_OUT = re.compile(rf"{JOB_ID_PATTERN}/[^/]+\.mp4")


class Metrics:
    """The metrics of one process. ``exposition()`` is the body of ``GET /metrics``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage_runs = Counter(
            "mouthpiece_stage_runs", "Stage runs that ended, by outcome", ["stage", "outcome"], registry=r
        )
        self.stage_seconds = Histogram(
            "mouthpiece_stage_duration_seconds",
            "How long stage runs took, by outcome",
            ["stage", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.failures = Counter(
            "mouthpiece_failures", "Tasks that failed for good, by stage and reason code", ["stage", "code"],
            registry=r,
        )  # fmt: skip
        self.render_fps = Histogram(
            "mouthpiece_render_frames_per_second",
            "Frames rendered per second of render stage time, per task",
            ["renderer"],
            buckets=FPS_BUCKETS,
            registry=r,
        )
        self.render_frames = Counter("mouthpiece_render_frames", "Frames rendered", ["renderer"], registry=r)
        self.publish = Counter(
            "mouthpiece_publish",
            "Publications by destination kind and outcome (published, failed)",
            ["kind", "outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "mouthpiece_queue_depth", "Messages waiting for a stage's pool", ["stage", "pool"], registry=r
        )
        self.ack_pending = Gauge(
            "mouthpiece_queue_ack_pending",
            "Messages handed to workers and not yet acknowledged",
            ["stage", "pool"],
            registry=r,
        )
        self.waiting_pulls = Gauge(
            "mouthpiece_queue_waiting_pulls",
            "Pull requests waiting on a stage's pool (idle worker slots)",
            ["stage", "pool"],
            registry=r,
        )
        self.backlog = Gauge(
            "mouthpiece_backlog",
            "Messages waiting or in flight for a stage's pool (what the deployment scales on)",
            ["stage", "pool"],
            registry=r,
        )
        self.jobs = Gauge("mouthpiece_jobs", "Jobs known to the console, by state", ["state"], registry=r)
        self.failed_drops = Gauge(
            "mouthpiece_failed_drops", "Drops that never became a job (recent records)", registry=r
        )
        self.console_uploads = Counter(
            "mouthpiece_console_submissions", "Jobs submitted through the console, by outcome", ["outcome"],
            registry=r,
        )  # fmt: skip
        self._seen: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._frames: dict[tuple[str, str], tuple[str, int]] = {}
        self._lock = threading.Lock()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # --- observing what the runner records ----------------------------------------------------------
    def observe_put(self, bucket: str, key: str, data: bytes | Path, store: ObjectStore) -> None:
        """Count what a write says; never raises (metrics must not break a worker)."""
        try:
            self._observe(bucket, key, data, store)
        except Exception:
            log.exception("metrics_observe_failed", key=key)

    def _observe(self, bucket: str, key: str, data: bytes | Path, store: ObjectStore) -> None:
        s = self.settings
        if bucket == s.bucket_outputs and _VIDEO_OUT.fullmatch(key) and self._first(("out", key)):
            self.publish.labels("bucket", "published").inc()
            return
        if bucket != s.bucket_work or not isinstance(data, bytes):
            return
        if _RECORD.fullmatch(key):
            self._record(StageRecord.model_validate_json(data), store)
        elif (parsed := parse_manifest_key(key)) is not None and parsed[2] == "render":
            manifest = Manifest.model_validate_json(data)
            with self._lock:
                self._frames[(manifest.job_id, manifest.task)] = _frames_of(manifest)
        elif (
            (m := _PUBLISHED.fullmatch(key))
            and not key.endswith(".intent.json")
            and self._first(("pub", key))
        ):
            self.publish.labels(m.group(3), "published").inc()

    def _record(self, record: StageRecord, store: ObjectStore) -> None:
        run = record.runs[-1] if record.runs else None
        ident = (record.job_id, record.task, record.stage)
        if run is not None and run.ended_at is not None and self._first(("run", *ident, str(run.n))):
            seconds = max(0.0, (run.ended_at - run.started_at).total_seconds())
            self.stage_runs.labels(record.stage, run.outcome).inc()
            self.stage_seconds.labels(record.stage, run.outcome).observe(seconds)
            if record.stage == self.settings.chain[-1] and run.outcome != "done":
                self._unpublished(record, store)
            if record.stage == "render" and run.outcome == "done":
                self._render(record, store)
        if record.state == State.failed and self._first(("failed", *ident, str(record.attempt))):
            self.failures.labels(record.stage, record.code or "internal").inc()

    def _unpublished(self, record: StageRecord, store: ObjectStore) -> None:
        """A publish run that did not finish: each destination it meant to send to and did not
        (an intent without a marker) counts as a failed publication of its kind."""
        prefix = f"jobs/{record.job_id}/{record.task}/published/"
        keys = {i.key for i in store.list(self.settings.bucket_work, prefix)}
        for intent in sorted(k for k in keys if k.endswith(".intent.json")):
            if intent.removesuffix(".intent.json") + ".json" not in keys:
                kind = intent.rsplit("/", 1)[-1].rsplit("-", 1)[0]
                self.publish.labels(kind, "failed").inc()

    def _render(self, record: StageRecord, store: ObjectStore) -> None:
        """Frames/s of a render run that ended well: the frames its manifest (written just before the
        record) says it made, over the record's seconds."""
        with self._lock:
            found = self._frames.pop((record.job_id, record.task), None)
        if found is None:  # the manifest was written by another process (or before this one started)
            try:
                key = manifest_key(record.job_id, record.task, "render")
                found = _frames_of(Manifest.model_validate_json(store.get(self.settings.bucket_work, key)))
            except (MouthpieceError, ValueError):
                return
        renderer, frames = found
        if not record.seconds or not frames:
            return
        self.render_frames.labels(renderer).inc(frames)
        self.render_fps.labels(renderer).observe(frames / record.seconds)

    def _first(self, ident: tuple[str, ...]) -> bool:
        """True the first time ``ident`` is seen (records are rewritten; each end counts once)."""
        with self._lock:
            if ident in self._seen:
                return False
            self._seen[ident] = None
            if len(self._seen) > 50_000:
                self._seen.popitem(last=False)
            return True

    # --- queues, read at scrape time -----------------------------------------------------------------
    async def refresh_queues(self, bus: Bus, stages: list[str] | None = None) -> list[QueueStats]:
        """Read the queue of each stage's pools from the bus into the gauges; returns the figures."""
        rows = await queue_stats(bus, self.settings, stages)
        for row in rows:
            self.queue_depth.labels(row.stage, row.pool).set(row.pending)
            self.ack_pending.labels(row.stage, row.pool).set(row.ack_pending)
            self.waiting_pulls.labels(row.stage, row.pool).set(row.waiting)
        return rows

    def set_backlog(self, rows: Iterable[Any]) -> None:
        """Set ``mouthpiece_backlog`` (and the queue gauges) from ``backlog.PoolBacklog`` rows."""
        for row in rows:
            self.backlog.labels(row.stage, row.pool).set(row.backlog)
            self.queue_depth.labels(row.stage, row.pool).set(row.pending)
            self.ack_pending.labels(row.stage, row.pool).set(row.in_flight)

    def set_jobs(self, counts: Mapping[str, int]) -> None:
        for state in State:
            self.jobs.labels(state.value).set(counts.get(state.value, 0))


def _frames_of(manifest: Manifest) -> tuple[str, int]:
    frames = manifest.info.get("frames")
    return str(manifest.info.get("renderer") or "unknown"), frames if isinstance(frames, int) else 0


@dataclass(frozen=True)
class QueueStats:
    stage: str
    pool: str
    pending: int
    ack_pending: int
    waiting: int
    busy: int = 0


async def queue_stats(bus: Bus, settings: Settings, stages: list[str] | None = None) -> list[QueueStats]:
    """Per stage and pool: messages waiting, handed out and not acknowledged, pull requests waiting,
    and tasks running now (claims held). A consumer no worker has created yet counts as empty."""
    rows = []
    busy = await _busy_by_stage(bus)
    for stage in stages or settings.chain:
        for pool in pools_of(stage):
            pending, acking, waiting = await _consumer_figures(bus, settings, stage, pool)
            rows.append(
                QueueStats(
                    stage, pool, pending, acking, waiting, busy.get(stage, 0) if pool == "default" else 0
                )
            )
    return rows


async def _consumer_figures(bus: Bus, settings: Settings, stage: str, pool: str) -> tuple[int, int, int]:
    if isinstance(bus, MemoryBus):
        return _memory_figures(bus, settings, stage, pool)
    js = getattr(bus, "js", None)
    if js is None:
        return 0, 0, 0
    try:
        info = await js.consumer_info(settings.stream, durable_name(stage, pool))
    except Exception:  # not created yet (no worker ever served this pool), or the bus is away
        return 0, 0, 0
    return int(info.num_pending or 0), int(info.num_ack_pending or 0), int(info.num_waiting or 0)


def _memory_figures(bus: MemoryBus, settings: Settings, stage: str, pool: str) -> tuple[int, int, int]:
    subject = subject_for(settings, stage, pool)
    mine = [m for m in list(bus._messages.values()) if subject_matches(subject, m.subject)]
    held = sum(1 for m in mine if m.deadline is not None)
    return len(mine) - held, held, 0


async def _busy_by_stage(bus: Bus) -> dict[str, int]:
    """Running claims per stage (a claim key is ``<stage>.<job>.<task>``)."""
    claims = getattr(bus, "claims", None)
    if claims is None:
        return {}
    counts: dict[str, int] = {}
    try:
        keys = await claims.keys("")
    except Exception:
        return {}
    for key in keys:
        found = await _claim_state(claims, key)
        if found == "running":
            stage = key.split(".", 1)[0]
            counts[stage] = counts.get(stage, 0) + 1
    return counts


async def _claim_state(claims: Any, key: str) -> str | None:
    try:
        value = await claims.get(key)
        return None if value is None else str(json.loads(value[0]).get("state"))
    except Exception:
        return None


# --- the store wrapper -------------------------------------------------------------------------------------


class ObservedStore(WrappedStore):
    """An ``ObjectStore`` that hands every write to ``Metrics.observe_put`` after it succeeded."""

    def __init__(self, inner: ObjectStore, metrics: Metrics) -> None:
        super().__init__(inner)
        self.metrics = metrics

    def after_put(self, info: ObjectInfo, data: bytes | Path) -> None:
        self.metrics.observe_put(info.bucket, info.key, data, self.inner)


def observed(store: ObjectStore, metrics: Metrics | None) -> ObjectStore:
    return store if metrics is None else ObservedStore(store, metrics)


# --- a worker's own listener -------------------------------------------------------------------------------


def metrics_app(metrics: Metrics, refresh: Callable[[], Any] | None = None) -> Any:
    """A one-route ASGI app serving ``GET /metrics`` (``mouthpiece worker`` with ``metrics_port``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        if refresh is not None:
            await refresh()
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])])


__all__ = [
    "CONTENT_TYPE",
    "Metrics",
    "ObservedStore",
    "QueueStats",
    "metrics_app",
    "observed",
    "queue_stats",
]
