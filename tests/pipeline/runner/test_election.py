"""A worker rides out a NATS JetStream leader election: a real 3-node nats-server cluster on loopback
(stream and claim bucket with 3 replicas), a real worker process (``tests/pipeline/runner/job_worker.py``:
what ``mouthpiece worker validate --max-messages 1`` runs, with the stage swapped for a test stage that
counts its runs in a file), and the node leading the work stream, the claim bucket and the stage's
consumer SIGKILLed while the stage runs. The worker must keep running (no exit on ``nats: timeout``),
finish the job, and run the stage exactly once: one run in the record, one line in the runs file, the
message acknowledged (nothing pending or unacknowledged for the stage once the cluster has a new
leader), the claim removed, and the next stage's message stored once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest

from pipeline.bus import NatsBus, durable_name, ensure_consumers
from pipeline.bus.natsserver import free_port, nats_server_binary
from pipeline.config import Settings
from pipeline.contracts import State
from pipeline.runner.records import claim_key
from tests.conftest import make_settings
from tests.pipeline.runner.conftest import Harness, job_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Cluster:
    """Three JetStream nats-server nodes (n0, n1, n2) routed to each other on loopback."""

    root: Path
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    routes: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    monitors: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=lambda: [None, None, None])

    def url(self, i: int) -> str:
        return f"nats://127.0.0.1:{self.ports[i]}"

    def start(self, i: int) -> None:
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)
        args = [nats_server_binary(), "-js", "-sd", str(self.root / f"n{i}"), "-n", f"n{i}"]
        args += ["-a", "127.0.0.1", "-p", str(self.ports[i]), "-m", str(self.monitors[i])]
        args += ["--cluster_name", "election", "--cluster", f"nats://127.0.0.1:{self.routes[i]}"]
        args += ["--routes", routes]
        with (self.root / f"n{i}.log").open("ab") as out:
            self.procs[i] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def healthy(self, i: int) -> bool:
        url = f"http://127.0.0.1:{self.monitors[i]}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def jetstream_answers(url: str) -> bool:
    """Whether the cluster's JetStream API answers (it has elected its meta leader)."""
    nc = await nats.connect(url)
    try:
        await nc.jetstream(timeout=2).account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "nats")
    nodes.root.mkdir()
    try:
        for i in range(3):
            nodes.start(i)
        deadline = time.monotonic() + 60
        while not (all(nodes.healthy(i) for i in range(3)) and asyncio.run(jetstream_answers(nodes.url(0)))):
            assert time.monotonic() < deadline, "the NATS cluster did not come up"
            time.sleep(0.2)
        yield nodes
    finally:
        nodes.stop()


def worker_process(
    settings: Settings, nats_url: str, run_seconds: float, runs_file: Path, log: Path
) -> subprocess.Popen[bytes]:
    """`worker validate --max-messages 1` whose stage works ``run_seconds`` and counts its runs."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MOUTHPIECE_NATS_URL": nats_url,
        "MOUTHPIECE_DATA_DIR": str(settings.data_dir),
        "MOUTHPIECE_STREAM": settings.stream,
        "MOUTHPIECE_SUBJECT_PREFIX": settings.subject_prefix,
        "MOUTHPIECE_STREAM_REPLICAS": str(settings.stream_replicas),
        "MOUTHPIECE_CHAIN": json.dumps(settings.chain),
        "MOUTHPIECE_ACK_WAIT": str(settings.ack_wait),
        "MOUTHPIECE_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "MOUTHPIECE_BUS_PATIENCE": str(settings.bus_patience),
        "MOUTHPIECE_LOG_FORMAT": "json",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.pipeline.runner.job_worker", str(run_seconds), str(runs_file)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


async def leaders(nc: nats.NATS, settings: Settings) -> dict[str, str | None]:
    """The nodes leading the work stream, the claim bucket and the stage's consumer."""
    js = nc.jetstream(timeout=5)
    stream = await js.stream_info(settings.stream)
    claims = await js.stream_info(f"KV_{settings.stream}_claims")
    consumer = await js.consumer_info(settings.stream, durable_name("validate"))
    return {
        "stream": stream.cluster.leader if stream.cluster else None,
        "claims": claims.cluster.leader if claims.cluster else None,
        "consumer": consumer.cluster.leader if consumer.cluster else None,
    }


async def gather_leaders(nc: nats.NATS, settings: Settings) -> str:
    """Move the claim bucket's and the consumer's leadership to the stream leader's node (a step-down
    naming it as the preferred successor), so that killing that one node makes every kind of bus call
    of a running worker wait for an election. Returns that node's name."""
    for _ in range(20):
        found = await leaders(nc, settings)
        target = found["stream"]
        assert target is not None
        if found["claims"] == found["consumer"] == target:
            return target
        body = json.dumps({"placement": {"preferred": target}}).encode()
        api = "$JS.API"
        if found["claims"] != target:
            await nc.request(f"{api}.STREAM.LEADER.STEPDOWN.KV_{settings.stream}_claims", body, timeout=5)
        if found["consumer"] != target:
            subject = f"{api}.CONSUMER.LEADER.STEPDOWN.{settings.stream}.{durable_name('validate')}"
            await nc.request(subject, body, timeout=5)
        await asyncio.sleep(1.0)
    raise AssertionError(f"could not gather the leaders on one node: {await leaders(nc, settings)}")


def events(log: Path) -> list[dict[str, object]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found


def test_a_worker_rides_out_the_election_that_follows_a_killed_stream_leader(
    tmp_path: Path, cluster: Cluster
) -> None:
    """The node leading the stream, the claim bucket and the consumer is SIGKILLed 0.5 s into a 4 s
    run: the worker process logs the bus as unavailable, waits for the new leaders, finishes the job
    and exits 0 after its one message; the stage ran once, its record has one run (done), the claim is
    gone, the message is acknowledged (nothing pending or unacknowledged for validate, also after an
    ack_wait), and the next stage's message is stored once."""
    settings = make_settings(
        tmp_path,
        chain=["validate", "publish"],
        stream_replicas=3,
        heartbeat_seconds=0.5,
        ack_wait=5.0,
        bus_patience=60.0,
    )
    runs_file, log = tmp_path / "runs.txt", tmp_path / "worker.log"

    async def body(h: Harness, index: int) -> None:
        assert isinstance(h.bus, NatsBus)
        # the worker talks to the node that will be killed: it must also reconnect to another one
        proc = worker_process(settings, cluster.url(index), 4.0, runs_file, log)
        try:
            info = await h.upload()
            job = job_of(info)
            await h.until(lambda: (r := h.record(job, "validate")) and r.state == State.running, 60)
            await asyncio.sleep(0.5)
            cluster.kill(index)
            code = await asyncio.to_thread(proc.wait, 120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        said = events(log)
        names = [e.get("event") for e in said]
        assert code == 0, log.read_text()[-4000:]
        assert "stage_done" in names and "worker_stopped" in names, names
        # the election was felt (a call waited) and ridden out, not skipped past
        assert any(n in ("bus_unavailable", "pull_failed") for n in names), names
        assert "bus_gave_up" not in names, log.read_text()[-4000:]
        # exactly once: one run of the stage's code, one run on record, done
        assert runs_file.read_text().splitlines() == [f"{job} 1"]
        record = h.record(job, "validate")
        assert record is not None and record.state == State.done, record
        assert [r.outcome for r in record.runs] == ["done"], record.runs
        assert await h.claims.get(claim_key("validate", job, "job")) is None
        # acknowledged, not merely out of sight: still nothing after an ack_wait would have redelivered it
        await asyncio.sleep(settings.ack_wait + 1)
        js = h.bus.js
        validate = await js.consumer_info(settings.stream, durable_name("validate"))
        assert (validate.num_pending, validate.num_ack_pending, validate.num_redelivered) == (0, 0, 0)
        publish = await js.consumer_info(settings.stream, durable_name("publish"))
        assert publish.num_pending == 1, publish

    async def main() -> None:
        harness = Harness("nats", settings, cluster.url(0))
        await harness.open()
        try:
            assert isinstance(harness.bus, NatsBus)
            await ensure_consumers(harness.bus.js, settings)
            target = await gather_leaders(harness.bus.nc, settings)
            if target == "n0":  # the test itself talks to a node that stays up
                await harness.bus.close()
                harness = Harness("nats", settings, cluster.url(1))
                await harness.open()
            await body(harness, int(target.removeprefix("n")))
        finally:
            await harness.bus.close()

    asyncio.run(main())
