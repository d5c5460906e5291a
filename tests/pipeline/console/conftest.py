"""Console test helpers: the console app in-process (httpx's ASGI transport) on the local store and the
in-memory bus, and jobs laid out in the store as the runner lays them out."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import imageio_ffmpeg
import pytest
from starlette.applications import Starlette

from pipeline.bus.memory import MemoryBus
from pipeline.config import Settings
from pipeline.console import Console
from pipeline.contracts import REVEAL, Destination, JobOptions, JobRecord, JobSpec, Run, StageRecord, State
from pipeline.keys import job_record_key, output_key, spec_key
from pipeline.status import write_record, write_status
from pipeline.storage import open_store
from pipeline.storage.base import ObjectStore
from pipeline.storage.emitting import EmittingStore
from pipeline.submit import Submission, submit

BASE = "http://127.0.0.1:8080"


@pytest.fixture(scope="session")
def small_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-second H.264 video (ffmpeg's test pattern)."""
    out = tmp_path_factory.mktemp("media") / "clip.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
         "-t", "1", "-pix_fmt", "yuv420p", "-c:v", "libx264", str(out)],
        check=True,
    )  # fmt: skip
    return out


class Harness:
    """A console with its store, bus and the notifications its retries announced."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: ObjectStore = open_store(settings)
        self.bus = MemoryBus()
        self.announced: list[tuple[str, bytes, str]] = []
        self.announcer = EmittingStore(self.store, settings, lambda s, p, m: self.announced.append((s, p, m)))
        self.console = Console(settings, self.store, self.bus, announcer=self.announcer)
        self.app = Starlette(routes=self.console.routes())

    def client(self, base_url: str = BASE, **kwargs: object) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url=base_url, **kwargs)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Harness]:
    harness = Harness(settings)
    try:
        yield harness
    finally:
        await harness.console.close()


async def csrf_of(client: httpx.AsyncClient) -> str:
    """The session's CSRF token (and the session cookie, kept by the client)."""
    response = await client.get("/api/session")
    return str(response.json()["csrf"])


def make_job(
    harness: Harness,
    assets: Path,
    state: State = State.done,
    *,
    failed_stage: str = "detect",
    video: Path | None = None,
    destinations: list[Destination] | None = None,
    nonce: str = "",
    age: float = 60.0,
) -> str:
    """A job laid out as the runner leaves it: inputs and spec uploaded (through ``pipeline.submit.submit``), the
    resolved spec, job record and stage records in the work bucket, outputs when done."""
    s, store = harness.settings, harness.store
    submitted = submit(store, s, Submission(
        audio=assets / "jfk.flac", avatars=(assets / "astronaut.png",), name="greeting",
        options=JobOptions(subtitles="soft"), destinations=tuple(destinations or ()), source="folder", nonce=nonce,
    ))  # fmt: skip
    job_id = submitted.job_id
    spec = JobSpec.model_validate_json(store.get(s.bucket_inputs, submitted.spec_key))
    store.put(s.bucket_work, spec_key(job_id), spec.model_dump_json(context=REVEAL).encode())
    start = datetime.now(UTC) - timedelta(seconds=age)
    record = JobRecord(
        job_id=job_id, source_bucket=s.bucket_inputs, source_key=submitted.spec_key, name="greeting",
        tasks={"a0": "astronaut.png"}, chain=list(s.chain), created_at=start,
    )  # fmt: skip
    store.put(s.bucket_work, job_record_key(job_id), record.model_dump_json().encode())
    for i, stage in enumerate(s.chain):
        task = "job" if i == 0 else "a0"
        stage_state = State.done
        if state == State.failed and stage == failed_stage:
            stage_state = State.failed
        elif state in (State.failed, State.running) and i > s.chain.index(failed_stage):
            break
        elif state == State.running and stage == failed_stage:
            stage_state = State.running
        began = start + timedelta(seconds=i)
        ended = None if stage_state == State.running else began + timedelta(seconds=0.5)
        outcome = {State.done: "done", State.failed: "failed", State.running: "running"}[stage_state]
        write_record(
            store, s,
            StageRecord(
                job_id=job_id, task=task, stage=stage, state=stage_state, started_at=began,
                finished_at=ended, seconds=0.5 if ended else None, progress=0.4 if ended is None else 1.0,
                code="no_face" if stage_state == State.failed else None,
                reason="astronaut.png has no face in it" if stage_state == State.failed else None,
                trigger=f"{s.bucket_inputs}/{submitted.spec_key}",
                outputs=[f"outputs/{job_id}/greeting.mp4"] if stage == s.chain[-1] and ended else [],
                runs=[Run(n=1, worker="host:1:abc", started_at=began, ended_at=ended, outcome=outcome)],
            ),
        )  # fmt: skip
    if state == State.done:
        store.put(s.bucket_outputs, output_key(job_id, "greeting.mp4"), video or assets / "jfk.flac")
        store.put(
            s.bucket_outputs,
            output_key(job_id, "greeting.vtt"),
            b"WEBVTT\n\n00:00.000 --> 00:01.000\nAnd so\n",
        )
    write_status(store, s, job_id)
    return job_id
