"""The reconciliation sweep on a real local store: orphaned inputs, manifests whose next stage never
started, records whose heartbeat stopped — each announced again; finished jobs never."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.contracts import JobStatus, Manifest, MediaInfo, StageRecord, State, job_id_for
from pipeline.events import parse_event
from pipeline.keys import manifest_key, output_key, record_key, spec_key
from pipeline.reconcile import Reconciler
from pipeline.storage import open_store
from pipeline.storage.emitting import EmittingStore
from tests.conftest import make_settings

LATER = datetime.now(UTC) + timedelta(hours=1)


class Announced:
    """What the sweep put on the bus: (subject, bucket/key) of each announcement."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, subject: str, payload: bytes, msg_id: str) -> None:
        event = parse_event(payload)[0]
        self.items.append((subject.rsplit(".stage.", 1)[1], f"{event.object.bucket}/{event.object.key}"))


@pytest.fixture
def world(tmp_path: Path) -> tuple[Settings, EmittingStore, Announced]:
    settings = make_settings(tmp_path, reconcile_grace=60.0, reconcile_stuck_after=300.0)
    announced = Announced()
    return settings, EmittingStore(open_store(settings), settings, announced), announced


def manifest(job_id: str, stage: str) -> bytes:
    media = MediaInfo(audio_seconds=1.0, fps=25.0, width=2, height=2, frames=1, still=True)
    m = Manifest(
        job_id=job_id, task="a0", stage=stage, spec_key=spec_key(job_id), avatar_name="a", media=media
    )
    return m.model_dump_json().encode()


def test_an_input_that_missed_its_event_is_announced_after_the_grace_period(world) -> None:
    """An upload with no job is announced once it is older than reconcile_grace, not before."""
    settings, store, announced = world
    store.inner.put(settings.bucket_inputs, "audio/lost.flac", b"voice")
    assert Reconciler(store, settings).sweep(datetime.now(UTC)) == []
    assert Reconciler(store, settings).sweep(LATER) == ["audio/lost.flac"]
    assert announced.items == [("validate", f"{settings.bucket_inputs}/audio/lost.flac")]


def test_a_manifest_whose_next_stage_never_started_is_announced_again(world) -> None:
    """detect's manifest with no render record, quiet for reconcile_stuck_after: announced to render.
    With a render record it is left alone."""
    settings, store, announced = world
    job, other = "j" + "1" * 19, "j" + "2" * 19
    for j in (job, other):
        store.inner.put(settings.bucket_work, manifest_key(j, "a0", "detect"), manifest(j, "detect"))
    record = StageRecord(job_id=other, task="a0", stage="render", state=State.done)
    store.inner.put(
        settings.bucket_work, record_key(other, "a0", "render"), record.model_dump_json().encode()
    )
    assert Reconciler(store, settings).sweep(LATER) == [manifest_key(job, "a0", "detect")]
    assert announced.items == [("render", f"{settings.bucket_work}/{manifest_key(job, 'a0', 'detect')}")]


def test_a_record_whose_heartbeat_stopped_gets_its_trigger_announced(world) -> None:
    """A running record silent for reconcile_stuck_after (its message was lost): its trigger again."""
    settings, store, announced = world
    job = "j" + "3" * 19
    key = manifest_key(job, "a0", "validate")
    store.inner.put(settings.bucket_work, key, manifest(job, "validate"))
    stale = StageRecord(
        job_id=job, task="a0", stage="detect", state=State.running, trigger=f"{settings.bucket_work}/{key}",
        heartbeat_at=datetime.now(UTC) - timedelta(hours=2),
    )  # fmt: skip
    store.inner.put(settings.bucket_work, record_key(job, "a0", "detect"), stale.model_dump_json().encode())
    assert Reconciler(store, settings).sweep(LATER) == [key]
    assert announced.items == [("detect", f"{settings.bucket_work}/{key}")]


def test_finished_jobs_are_never_announced_even_with_their_work_deleted(world) -> None:
    """A job whose outputs/<job>/status.json says done: its old upload (work records gone) and its
    manifests are left alone."""
    settings, store, announced = world
    info = store.inner.put(settings.bucket_inputs, "audio/old.flac", b"voice")
    job = job_id_for(info.bucket, info.key, info.etag)
    done = JobStatus(job_id=job, state=State.done)
    store.inner.put(settings.bucket_outputs, output_key(job, "status.json"), done.model_dump_json().encode())
    store.inner.put(settings.bucket_work, manifest_key(job, "a0", "detect"), manifest(job, "detect"))
    assert Reconciler(store, settings).sweep(LATER) == []
    assert announced.items == []
    assert (
        json.loads(store.inner.get(settings.bucket_outputs, output_key(job, "status.json")))["state"]
        == "done"
    )


@pytest.mark.integration
def test_the_reconcile_service_logs_every_sweep_at_the_default_level(tmp_path: Path, nats_url: str) -> None:
    """`mouthpiece reconcile --every 1s` with no log level set writes a `reconcile_sweep` line per sweep
    (how many inputs it announced, how long it took): an operator sees it working, not only when it acts."""
    import os
    import signal
    import subprocess
    import sys
    import time

    settings = make_settings(tmp_path)
    open_store(settings)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "MOUTHPIECE_NATS_URL": nats_url,
        "MOUTHPIECE_DATA_DIR": str(settings.data_dir),
        "MOUTHPIECE_STREAM": settings.stream,
        "MOUTHPIECE_SUBJECT_PREFIX": settings.subject_prefix,
        "MOUTHPIECE_LOG_FORMAT": "json",
    }
    env.pop("MOUTHPIECE_LOG_LEVEL", None)
    log = tmp_path / "reconcile.log"

    def sweeps() -> list[dict[str, object]]:
        lines = log.read_text().splitlines() if log.exists() else []
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if e.get("event") == "reconcile_sweep"]

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "reconcile", "--every", "1s"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while len(sweeps()) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    found = sweeps()
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert len(found) >= 2 and found[0]["announced"] == 0 and found[0]["level"] == "info", log.read_text()
