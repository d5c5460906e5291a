"""Metrics: counted from what the runner records (stage records, the render manifest, publication
markers), queue gauges from the bus, and the right counts after real jobs through a real stack."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from pipeline.bus.memory import MemoryBus
from pipeline.console import Console
from pipeline.contracts import ArtifactRef, Manifest, MediaInfo, Run, StageRecord, State
from pipeline.ingress.http import build_app
from pipeline.keys import manifest_key, published_key, record_key
from pipeline.metrics import Metrics, ObservedStore, metrics_app, queue_stats
from pipeline.stack import Stack
from pipeline.storage import open_store
from pipeline.submit import Submission, submit
from tests.conftest import make_settings
from tests.pipeline.test_stack import wait_done

JOB = "j" + "a" * 19


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels (parsed as Prometheus parses it)."""
    text = metrics.exposition().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def record(stage: str, state: State, outcome: str, n: int = 1, code: str | None = None) -> StageRecord:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    runs = [Run(n=n, worker="w", started_at=start, ended_at=start + timedelta(seconds=3), outcome=outcome)]
    return StageRecord(job_id=JOB, task="a0", stage=stage, state=state, attempt=n, code=code, runs=runs)


def test_runs_durations_and_failures_are_counted_once_per_run(tmp_path: Path) -> None:
    """A record whose last run ended counts that run (outcome, seconds) once, however often it is
    written again; a failed record counts its code; heartbeat writes (running) count nothing."""
    settings = make_settings(tmp_path)
    metrics = Metrics(settings)
    store = ObservedStore(open_store(settings), metrics)
    running = StageRecord(
        job_id=JOB, task="a0", stage="detect", state=State.running, runs=[Run(n=1, worker="w")]
    )
    for rec in [running, record("detect", State.queued, "retry"), record("detect", State.queued, "retry")]:
        store.put(settings.bucket_work, record_key(JOB, "a0", "detect"), rec.model_dump_json().encode())
    failed = record("detect", State.failed, "failed", n=2, code="no_face")
    for _ in range(2):
        store.put(settings.bucket_work, record_key(JOB, "a0", "detect"), failed.model_dump_json().encode())
    got = samples(metrics)
    assert got[("mouthpiece_stage_runs_total", (("outcome", "retry"), ("stage", "detect")))] == 1
    assert got[("mouthpiece_stage_runs_total", (("outcome", "failed"), ("stage", "detect")))] == 1
    assert got[("mouthpiece_stage_duration_seconds_count", (("outcome", "failed"), ("stage", "detect")))] == 1
    assert got[("mouthpiece_stage_duration_seconds_sum", (("outcome", "failed"), ("stage", "detect")))] == 3.0
    assert got[("mouthpiece_failures_total", (("code", "no_face"), ("stage", "detect")))] == 1


def test_render_frames_per_second_and_publications_by_kind(tmp_path: Path) -> None:
    """A render run that ended well gives frames/s (its manifest's frames over the record's seconds);
    each publication marker counts
    a publication of its destination's kind; a publish run that ends without its marker counts the
    intent as failed."""
    settings = make_settings(tmp_path)
    metrics = Metrics(settings)
    store = ObservedStore(open_store(settings), metrics)
    ref = ArtifactRef(bucket="work", key="k", sha256="0" * 64, size=1)
    manifest = Manifest(
        job_id=JOB, task="a0", stage="render", spec_key="s", avatar_name="a.png",
        media=MediaInfo(audio_seconds=4, fps=25, width=2, height=2, frames=1, still=True),
        artifacts={"video": ref}, info={"renderer": "viseme", "frames": 100},
    )  # fmt: skip
    store.put(settings.bucket_work, manifest_key(JOB, "a0", "render"), manifest.model_dump_json().encode())
    rendered = record("render", State.done, "done").model_copy(update={"seconds": 2.0})
    store.put(settings.bucket_work, record_key(JOB, "a0", "render"), rendered.model_dump_json().encode())
    store.put(settings.bucket_work, published_key(JOB, "a0", "folder-0123456789abcdef"), b"{}")
    store.put(settings.bucket_outputs, f"{JOB}/greeting.mp4", b"video")
    intent = (
        published_key(JOB, "a1", "discord_webhook-00112233aabbccdd").removesuffix(".json") + ".intent.json"
    )
    store.put(settings.bucket_work, intent, b"{}")
    publish_failed = record("publish", State.queued, "retry").model_copy(update={"task": "a1"})
    store.put(
        settings.bucket_work, record_key(JOB, "a1", "publish"), publish_failed.model_dump_json().encode()
    )
    got = samples(metrics)
    assert got[("mouthpiece_render_frames_per_second_count", (("renderer", "viseme"),))] == 1
    assert got[("mouthpiece_render_frames_per_second_sum", (("renderer", "viseme"),))] == 50.0
    assert got[("mouthpiece_render_frames_total", (("renderer", "viseme"),))] == 100
    assert got[("mouthpiece_publish_total", (("kind", "folder"), ("outcome", "published")))] == 1
    assert got[("mouthpiece_publish_total", (("kind", "bucket"), ("outcome", "published")))] == 1
    assert got[("mouthpiece_publish_total", (("kind", "discord_webhook"), ("outcome", "failed")))] == 1


def test_queue_figures_from_the_memory_bus_and_a_worker_listener(tmp_path: Path) -> None:
    """Waiting and handed-out messages per stage and pool (MemoryBus), into the gauges of a worker's own
    /metrics app."""
    settings = make_settings(tmp_path)
    metrics = Metrics(settings)
    bus = MemoryBus()

    async def go() -> str:
        for _ in range(3):
            await bus.publish(f"{settings.subject_prefix}.stage.render.neural", b"{}")
        consumer = await bus.consume(
            "mouthpiece-render-neural", f"{settings.subject_prefix}.stage.render.neural"
        )
        await consumer.next(0.1)
        rows = await queue_stats(bus, settings, ["render"])
        assert [(r.pool, r.pending, r.ack_pending) for r in rows] == [
            ("default", 0, 0),
            ("neural", 2, 1),
            ("musetalk", 0, 0),
        ]

        async def refresh() -> None:
            await metrics.refresh_queues(bus, ["render"])

        app = metrics_app(metrics, refresh)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
            return (await client.get("/metrics")).text

    text = asyncio.run(go())
    assert 'mouthpiece_queue_depth{pool="neural",stage="render"} 2.0' in text
    assert 'mouthpiece_queue_ack_pending{pool="neural",stage="render"} 1.0' in text


@pytest.mark.integration
@pytest.mark.slow
def test_two_jobs_through_a_real_stack_give_the_right_counts(
    tmp_path: Path, assets: Path, nats_url: str
) -> None:
    """Two jobs (3 s of the JFK clip, the viseme renderer) through every stage on a real nats-server:
    each stage counts 2 done runs and 2 durations, render 2 frames/s observations, the outputs bucket
    2 publications, no failures; the console's /metrics says 2 jobs done and empty queues."""
    settings = make_settings(tmp_path, nats_url=nats_url)
    voice = tmp_path / "three.wav"
    audio, rate = soundfile.read(assets / "jfk.flac")
    soundfile.write(voice, audio[int(0.3 * rate) : int(3.3 * rate)], rate)

    async def go() -> str:
        stack = await Stack.open(settings)
        stack.metrics = Metrics(settings)
        stop = asyncio.Event()
        tasks = await stack.run_workers(list(settings.chain), stop)
        console = Console(settings, stack.store, stack.bus, announcer=stack.announcer, metrics=stack.metrics)
        app = build_app(settings, stack.store, stack.bus, console=console)
        try:
            for nonce in ("one", "two"):
                submission = Submission(audio=voice, avatars=(assets / "astronaut.png",), nonce=nonce)
                submitted = await asyncio.to_thread(submit, stack.store, settings, submission)
                status = await wait_done(stack, submitted.job_id, timeout=180)
                assert status.state == State.done, status.reason
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
            ) as client:
                for _ in range(100):
                    text = (await client.get("/metrics")).text
                    if 'mouthpiece_jobs{state="done"} 2.0' in text:
                        break
                    await asyncio.sleep(0.1)
            return text
        finally:
            await console.close()
            stop.set()
            await asyncio.gather(*tasks)
            await stack.close()

    text = asyncio.run(go())
    assert stack_metrics_ok(text)


def stack_metrics_ok(text: str) -> bool:
    got = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            got[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    for stage in ("validate", "detect", "render", "enhance", "publish"):
        assert got[("mouthpiece_stage_runs_total", (("outcome", "done"), ("stage", stage)))] == 2, stage
        assert got[("mouthpiece_stage_duration_seconds_count", (("outcome", "done"), ("stage", stage)))] == 2
        assert got[("mouthpiece_stage_duration_seconds_sum", (("outcome", "done"), ("stage", stage)))] > 0
    assert got[("mouthpiece_render_frames_per_second_count", (("renderer", "viseme"),))] == 2
    assert got[("mouthpiece_render_frames_total", (("renderer", "viseme"),))] == 2 * 75
    assert got[("mouthpiece_publish_total", (("kind", "bucket"), ("outcome", "published")))] == 2
    assert not any(name == "mouthpiece_failures_total" for name, _ in got)
    assert got[("mouthpiece_jobs", (("state", "done"),))] == 2
    assert got[("mouthpiece_queue_depth", (("pool", "default"), ("stage", "render")))] == 0
    return True


def test_docs_and_the_dashboard_name_only_real_metrics(tmp_path: Path) -> None:
    """docs/metrics.md lists every metric the process exposes, and the Grafana dashboard queries only
    metrics that exist (a renamed metric fails here)."""
    import json
    import re

    root = Path(__file__).resolve().parents[2]
    metrics = Metrics(make_settings(tmp_path))
    names = {m.name for m in metrics.registry.collect()}
    exposed = {
        n + "_total" if m.type == "counter" else n for m in metrics.registry.collect() for n in [m.name]
    }
    doc = (root / "docs/metrics.md").read_text()
    for name in exposed:
        assert f"`{name}`" in doc, name
    dashboard = json.loads((root / "infra/grafana/mouthpiece.json").read_text())
    used = {
        re.sub(r"_(bucket|sum|count|total)$", "", word)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for word in re.findall(r"mouthpiece_[a-z_]+", target["expr"])
    }
    assert used and used <= names, used - names
