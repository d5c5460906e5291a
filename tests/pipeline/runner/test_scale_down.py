"""A stage Job SIGTERMed mid-run (a node drain, a scale-down), as a real process on a real nats-server.

The rule (runbooks/scaling-render.md): every stage runs as a KEDA ScaledJob, which a scale-down never
SIGTERMs; what can still SIGTERM a Job (an eviction) gets the drain — 3600 s, under a 3660 s grace. A
run that fits the drain finishes in place; one longer than the drain is handed back within the drain
(nothing written, the message back on the queue, its backlog still counted) and the next Job finishes it
once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.backlog import read_backlog
from pipeline.bus import NatsBus
from pipeline.config import Settings
from pipeline.contracts import State
from tests.conftest import make_settings
from tests.pipeline.runner.conftest import Harness, job_of

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def job_process(settings: Settings, nats_url: str, run_seconds: float, log: Path) -> subprocess.Popen[bytes]:
    """`worker validate --max-messages 1` whose stage works ``run_seconds`` (tests/.../job_worker.py)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MOUTHPIECE_NATS_URL": nats_url,
        "MOUTHPIECE_DATA_DIR": str(settings.data_dir),
        "MOUTHPIECE_STREAM": settings.stream,
        "MOUTHPIECE_SUBJECT_PREFIX": settings.subject_prefix,
        "MOUTHPIECE_CHAIN": json.dumps(settings.chain),
        "MOUTHPIECE_ACK_WAIT": str(settings.ack_wait),
        "MOUTHPIECE_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "MOUTHPIECE_DRAIN_SECONDS": str(settings.drain_seconds),
        "MOUTHPIECE_LOG_FORMAT": "json",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.pipeline.runner.job_worker", str(run_seconds)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def settings_for(tmp_path: Path, drain: float) -> Settings:
    return make_settings(
        tmp_path, chain=["validate", "publish"], heartbeat_seconds=0.5, ack_wait=5.0, drain_seconds=drain
    )


async def running(h: Harness, job: str, timeout: float = 60.0) -> None:
    await h.until(lambda: (r := h.record(job, "validate")) and r.state == State.running, timeout=timeout)


def sigterm_and_wait(proc: subprocess.Popen[bytes], log: Path) -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    assert code == 0, log.read_text()[-3000:]
    return time.monotonic() - started


def test_a_run_longer_than_the_drain_is_handed_back_and_the_next_job_finishes_it_once(
    tmp_path: Path, nats_url: str
) -> None:
    """drain 2 s, run 30 s: SIGTERM mid-run → the Job exits within the drain (far inside its grace),
    writes no manifest, its record says handed_back and queued, the backlog KEDA reads still counts the
    message; a second Job then runs it to the end: runs [handed_back, done], one manifest."""
    settings = settings_for(tmp_path, drain=2.0)
    h = Harness("nats", settings, nats_url)
    log = tmp_path / "jobs.log"

    async def body(h: Harness) -> None:
        first = job_process(settings, nats_url, 30.0, log)
        try:
            info = await h.upload()
            job = job_of(info)
            await running(h, job)
            waited = await asyncio.to_thread(sigterm_and_wait, first, log)
        finally:
            first.kill() if first.poll() is None else None
        assert waited < settings.drain_seconds + 5.0, waited
        record = h.record(job, "validate")
        assert record is not None and record.state == State.queued
        assert [r.outcome for r in record.runs] == ["handed_back"]
        assert not [k for k in h.keys(settings.bucket_work) if k.endswith("manifest.json")]
        assert isinstance(h.bus, NatsBus)
        (row,) = [r for r in await read_backlog(h.bus, settings) if r.stage == "validate"]
        assert row.backlog == 1  # KEDA starts the next Job for it

        second = job_process(settings, nats_url, 0.5, log)
        code = await asyncio.to_thread(second.wait, 60)
        assert code == 0, log.read_text()[-3000:]
        record = h.record(job, "validate")
        assert record is not None and record.state == State.done
        assert [r.outcome for r in record.runs] == ["handed_back", "done"]
        assert len([k for k in h.keys(settings.bucket_work) if k.endswith("manifest.json")]) == 1

    h.run(body)


def test_a_run_that_fits_the_drain_finishes_in_place_after_sigterm(tmp_path: Path, nats_url: str) -> None:
    """drain 30 s, run 4 s: SIGTERM a second into the run → the Job finishes the run, acknowledges it and
    exits 0; one run, done, nothing left on the bus."""
    settings = settings_for(tmp_path, drain=30.0)
    h = Harness("nats", settings, nats_url)
    log = tmp_path / "job.log"

    async def body(h: Harness) -> None:
        proc = job_process(settings, nats_url, 4.0, log)
        try:
            info = await h.upload()
            job = job_of(info)
            await running(h, job)
            await asyncio.sleep(1.0)
            waited = await asyncio.to_thread(sigterm_and_wait, proc, log)
        finally:
            proc.kill() if proc.poll() is None else None
        assert 1.0 < waited < settings.drain_seconds, waited
        record = h.record(job, "validate")
        assert record is not None and record.state == State.done
        assert [r.outcome for r in record.runs] == ["done"]
        assert isinstance(h.bus, NatsBus)
        (row,) = [r for r in await read_backlog(h.bus, settings) if r.stage == "validate"]
        assert row.backlog == 0

    h.run(body)
