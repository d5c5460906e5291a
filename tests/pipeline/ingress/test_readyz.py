"""Readiness (/readyz) answers for NATS and the store; liveness (/healthz) only for the process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from pipeline.bus import NatsBus
from pipeline.bus.natsserver import EmbeddedNats, free_port
from pipeline.ingress.http import build_app
from pipeline.storage import open_store
from pipeline.storage.s3 import S3Store
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


async def ask(app: object, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        return await client.get(path)


def test_ready_while_nats_and_the_store_answer_and_not_after_nats_stops(tmp_path: Path) -> None:
    """200 with both checks true; once nats-server is gone, 503 naming nats, while /healthz stays 200."""

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        server = EmbeddedNats(tmp_path / "nats").start()
        settings = make_settings(tmp_path, nats_url=server.url)
        bus = await NatsBus.connect(server.url, settings)
        app = build_app(settings, open_store(settings), bus)
        ready = await ask(app, "/readyz")
        server.stop()
        await asyncio.sleep(0.3)
        gone, alive = await ask(app, "/readyz"), await ask(app, "/healthz")
        await bus.close()
        return ready, gone, alive

    ready, gone, alive = asyncio.run(main())
    assert ready.status_code == 200 and ready.json() == {"ok": True, "nats": True, "store": True}
    assert gone.status_code == 503 and gone.json()["nats"] is False and gone.json()["store"] is True
    assert alive.status_code == 200


def test_not_ready_when_the_store_does_not_answer(tmp_path: Path, nats_url: str) -> None:
    """An S3 endpoint nobody listens on makes /readyz answer 503 with store false."""

    async def main() -> httpx.Response:
        settings = make_settings(
            tmp_path, nats_url=nats_url, store="s3", s3_endpoint=f"127.0.0.1:{free_port()}"
        )
        bus = await NatsBus.connect(nats_url, settings)
        try:
            return await ask(build_app(settings, S3Store.from_settings(settings), bus), "/readyz")
        finally:
            await bus.close()

    answer = asyncio.run(main())
    assert answer.status_code == 503 and answer.json()["store"] is False and answer.json()["nats"] is True
