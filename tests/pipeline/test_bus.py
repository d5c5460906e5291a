"""The bus on a real nats-server: ``mouthpiece init`` alone makes every stage pool's durable consumer with
the configuration the workers use, and a worker binds to it without changing it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.bus import NatsBus, consumer_config, consumer_differences, stage_consumers
from pipeline.config import Settings
from pipeline.keys import pools_of
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parent.parent.parent


def run_init(settings: Settings, nats_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``mouthpiece init`` as its own process, configured by the environment as a deployment does."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MOUTHPIECE_NATS_URL": nats_url,
        "MOUTHPIECE_DATA_DIR": str(settings.data_dir),
        "MOUTHPIECE_STREAM": settings.stream,
        "MOUTHPIECE_SUBJECT_PREFIX": settings.subject_prefix,
        "MOUTHPIECE_ACK_WAIT": str(settings.ack_wait),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "init"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.data_dir.parent,
    )


def test_init_alone_makes_every_consumer_with_the_workers_configuration(
    tmp_path: Path, nats_url: str
) -> None:
    """After `mouthpiece init` (no worker ever started) every stage's and pool's durable consumer exists,
    filtered to its subject, with exactly ``consumer_config``'s settings; a message published before any
    worker is counted as pending on its pool's consumer."""
    settings = make_settings(tmp_path, ack_wait=45.0)
    done = run_init(settings, nats_url)
    assert done.returncode == 0, done.stderr
    expected = stage_consumers(settings)
    assert {pool for stage, pool, _, _ in expected if stage == "render"} == set(pools_of("render"))
    assert len(expected) == sum(len(pools_of(s)) for s in settings.chain)

    async def main() -> dict[str, tuple[list[str], int]]:
        bus = await NatsBus.connect(nats_url, settings)
        try:
            await bus.publish(f"{settings.subject_prefix}.stage.render.neural", b"{}")
            found = {}
            for _, _, durable, subject in expected:
                info = await bus.js.consumer_info(settings.stream, durable)
                want = consumer_config(settings, durable, subject)
                found[durable] = (consumer_differences(info.config, want), int(info.num_pending or 0))
                assert info.config.durable_name == durable and info.config.filter_subject == subject
            return found
        finally:
            await bus.close()

    found = asyncio.run(main())
    assert {name: differs for name, (differs, _) in found.items()} == {d: [] for _, _, d, _ in expected}
    assert found["mouthpiece-render-neural"][1] == 1 and found["mouthpiece-render"][1] == 0
    assert "consumers ready: mouthpiece-validate" in done.stdout


def test_init_again_brings_consumers_to_the_settings_and_workers_never_change_them(
    tmp_path: Path, nats_url: str
) -> None:
    """init run again with another ack_wait updates the consumers in place (their messages stay); a
    worker of older settings binds to the consumer as it is and only reports the difference."""
    settings = make_settings(tmp_path, ack_wait=30.0)
    assert run_init(settings, nats_url).returncode == 0
    render = next(c for c in stage_consumers(settings) if c[2] == "mouthpiece-render")

    async def publish_one() -> None:
        bus = await NatsBus.connect(nats_url, settings)
        await bus.publish(render[3], b"{}")
        await bus.close()

    asyncio.run(publish_one())
    newer = make_settings(
        tmp_path, stream=settings.stream, subject_prefix=settings.subject_prefix, ack_wait=90.0
    )
    assert run_init(newer, nats_url).returncode == 0

    async def bind_as_older_worker() -> tuple[float, int, bytes]:
        bus = await NatsBus.connect(nats_url, settings)  # ack_wait 30 in this worker's settings
        try:
            consumer = await bus.consume(render[2], render[3])
            delivery = await consumer.next(timeout=5.0)
            assert delivery is not None
            await delivery.ack()
            info = await bus.js.consumer_info(settings.stream, render[2])
            return float(info.config.ack_wait or 0), int(info.num_pending or 0), delivery.data
        finally:
            await bus.close()

    ack_wait, pending, data = asyncio.run(bind_as_older_worker())
    assert (ack_wait, pending, data) == (90.0, 0, b"{}")
