"""The backlog KEDA scales on, read from a real 3-node NATS cluster (stream and consumers replicated 3
times) through `mouthpiece backlog --serve`: it rises with uploads, counts messages in flight, falls to
zero when the batch is done, and answers 503 (never a zero) when NATS cannot be read; `mouthpiece
backlog` prints the same document once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.bus import NatsBus
from pipeline.bus.natsserver import free_port, nats_server_binary
from pipeline.config import Settings
from pipeline.events import build_event
from pipeline.keys import subject_for
from pipeline.storage.base import ObjectInfo
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parent.parent.parent


class NatsCluster:
    """Three JetStream nats-servers on loopback, routed to each other as one cluster."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.client = [free_port() for _ in range(3)]
        self.routes = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client[0]}"

    def start(self) -> NatsCluster:
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)
        for i in range(3):
            store = self.root / f"n{i}"
            store.mkdir(parents=True, exist_ok=True)
            args = [
                nats_server_binary(),
                "-js",
                "-sd",
                str(store),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.client[i]),
            ]
            args += ["-n", f"n{i}", "--cluster_name", "mp", "--cluster", f"nats://127.0.0.1:{self.routes[i]}"]
            args += ["--routes", routes]
            with (self.root / f"n{i}.log").open("ab") as out:
                self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "nats").start()
    try:
        yield c
    finally:
        c.stop()


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} (last: {last!r})")


def render_row(base: str, pool: str = "default") -> dict[str, int]:
    status, doc = get(f"{base}/backlog")
    assert status == 200, doc
    return dict(doc["stages"]["render"][pool])


def upload_event(settings: Settings, i: int) -> bytes:
    info = ObjectInfo(
        bucket=settings.bucket_work, key=f"jobs/j{i:019x}/main/detect.json", size=10, etag=f"e{i}"
    )
    return build_event(info)


async def connect_when_ready(settings: Settings) -> NatsBus:
    """The cluster elects its JetStream meta leader a moment after start: retry until the stream is made."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await NatsBus.connect(settings.nats_url or "", settings)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def test_the_backlog_rises_with_uploads_counts_in_flight_work_and_falls_to_zero(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """Five render messages make render's backlog 5 (the other pools stay 0); two of them taken by a
    worker and not yet acknowledged still count (pending 3, in flight 2); when every message is acked
    the backlog is 0. /metrics says the same as mouthpiece_backlog. With NATS gone: 503 and the reason."""
    settings = make_settings(tmp_path, nats_url=cluster.url, stream_replicas=3, ack_wait=60.0)
    asyncio.run(_setup(settings))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MOUTHPIECE_NATS_URL": cluster.url,
        "MOUTHPIECE_STREAM": settings.stream,
        "MOUTHPIECE_SUBJECT_PREFIX": settings.subject_prefix,
        "MOUTHPIECE_STREAM_REPLICAS": "3",
        "MOUTHPIECE_ACK_WAIT": "60",
        "MOUTHPIECE_DATA_DIR": str(tmp_path / "backlog"),
        "MOUTHPIECE_LOG_FORMAT": "json",
    }
    args = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "backlog",
        "--serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log = (tmp_path / "backlog.log").open("wb")
    server = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(f"{base}/healthz")[0] == 200, 60, "the backlog service answering")
        assert render_row(base) == {"pending": 0, "in_flight": 0, "backlog": 0}
        asyncio.run(_batch(settings, base))
        once = subprocess.run(  # what an operator runs by hand prints the same document
            [sys.executable, "-m", "pipeline.cli", "backlog"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert once.returncode == 0, once.stderr
        assert json.loads(once.stdout) == get(f"{base}/backlog")[1]
        cluster.stop()
        _, doc = wait_until(
            lambda: (lambda r: r if r[0] == 503 else None)(get(f"{base}/backlog")), 60, "a 503 without NATS"
        )
        assert "cannot read consumer" in doc["error"]
    finally:
        server.terminate()
        server.wait(30)
        log.close()


async def _setup(settings: Settings) -> None:
    bus = await connect_when_ready(settings)
    info = await bus.js.stream_info(settings.stream)
    assert info.config.num_replicas == 3
    await bus.close()


async def _batch(settings: Settings, base: str) -> None:
    bus = await NatsBus.connect(settings.nats_url or "", settings)
    try:
        seen = []
        for i in range(5):  # uploads: each makes one message for render's default pool
            await bus.publish(subject_for(settings, "render"), upload_event(settings, i), msg_id=f"u{i}")
            seen.append(await asyncio.to_thread(render_row, base))
        assert [row["backlog"] for row in seen] == [1, 2, 3, 4, 5]
        status, doc = await asyncio.to_thread(get, f"{base}/backlog")
        assert doc["total"] == 5 and doc["stages"]["render"]["neural"]["backlog"] == 0
        assert all(
            pool["backlog"] == 0
            for s, pools in doc["stages"].items()
            if s != "render"
            for pool in pools.values()
        )

        consumer = await bus.consume("mouthpiece-render", subject_for(settings, "render"))
        running = [await consumer.next(timeout=5.0) for _ in range(2)]  # two renders start
        assert all(d is not None for d in running)
        row = await asyncio.to_thread(render_row, base)
        assert row == {"pending": 3, "in_flight": 2, "backlog": 5}
        status, text = await asyncio.to_thread(get, f"{base}/metrics")
        assert status == 200
        assert 'mouthpiece_backlog{pool="default",stage="render"} 5.0' in text.decode()

        for delivery in running:
            assert delivery is not None
            await delivery.ack()
        while (delivery := await consumer.next(timeout=2.0)) is not None:
            await delivery.ack()
        row = await asyncio.to_thread(render_row, base)
        assert row == {"pending": 0, "in_flight": 0, "backlog": 0}
        status, doc = await asyncio.to_thread(get, f"{base}/backlog")
        assert doc["total"] == 0
    finally:
        await bus.close()
