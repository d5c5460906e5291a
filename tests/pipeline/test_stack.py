"""Jobs through the embedded stack (a real nats-server, real stages): MinIO-format notifications,
duplicates, failures in people's words, dead letters, heartbeats longer than ack_wait, retry, reconcile.
The runner's contract in detail is tests/pipeline/runner."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from pipeline.config import Settings
from pipeline.contracts import JobSpec, State
from pipeline.events import build_event, message_id
from pipeline.keys import subject_for
from pipeline.stack import Stack
from pipeline.stage import Stage
from pipeline.status import job_status, read_record
from pipeline.submit import Submission, submit, submit_spec
from tests.conftest import make_settings
from tests.pipeline.test_events import MINIO_RECORD

pytestmark = pytest.mark.integration


def short_chain(tmp: Path, nats_url: str, **overrides: Any) -> Settings:
    return make_settings(tmp, nats_url=nats_url, chain=["validate", "publish"], **overrides)


def run_with_stack(settings: Settings, body: Callable[[Stack], Awaitable[Any]], workers: bool = True) -> Any:
    async def main() -> Any:
        stack = await Stack.open(settings)
        stop = asyncio.Event()
        tasks = await stack.run_workers(list(settings.chain), stop) if workers else []
        try:
            return await body(stack)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await stack.close()

    return asyncio.run(main())


async def wait_done(stack: Stack, job_id: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await asyncio.to_thread(job_status, stack.store, stack.settings, job_id)
        if status is not None and status.finished:
            return status
        await asyncio.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish")


def minio_record(bucket: str, key: str, etag: str, size: int) -> bytes:
    """A notification in MinIO's own format (copied from a MinIO server), for ``key``."""
    record = json.loads(json.dumps(MINIO_RECORD))
    record["Key"] = f"{bucket}/{key}"
    record["Records"][0]["s3"]["bucket"]["name"] = bucket
    obj = record["Records"][0]["s3"]["object"]
    obj.update(key=quote_plus(key), eTag=etag, size=size)
    return json.dumps(record).encode()


def test_same_notification_twice_makes_one_job(tmp_path: Path, nats_url: str, assets: Path) -> None:
    """A MinIO-format notification for a key with spaces and '+' routes to validate; repeated (MinIO
    sends no message id) it runs the job once; with our deterministic Nats-Msg-Id, JetStream drops
    the repeat before any worker sees it."""
    settings = short_chain(tmp_path, nats_url)

    async def body(stack: Stack) -> None:
        raw = stack.announcer.inner
        info = await asyncio.to_thread(
            raw.put, settings.bucket_inputs, "audio/hello voice+1.flac", assets / "jfk.flac"
        )
        subject = subject_for(settings, "validate")
        minio_payload = minio_record(info.bucket, info.key, info.etag, info.size)
        for _ in range(2):  # exactly what MinIO publishes: escaped key, no message id
            await stack.bus.publish(subject, minio_payload)
        first = await stack.bus.publish(
            subject, build_event(info), msg_id=message_id(info.bucket, info.key, info.etag)
        )
        again = await stack.bus.publish(
            subject, build_event(info), msg_id=message_id(info.bucket, info.key, info.etag)
        )
        assert first is True and again is False
        from pipeline.contracts import job_id_for

        status = await wait_done(stack, job_id_for(info.bucket, info.key, info.etag))
        assert status.state == State.done, status.reason
        await asyncio.sleep(1.0)  # let the duplicates be consumed

    with capture_logs(processors=[merge_contextvars]) as logs:
        run_with_stack(settings, body)
    validate_runs = [e for e in logs if e["event"] == "stage_done" and e.get("stage") == "validate"]
    skipped = [e for e in logs if e["event"] == "duplicate_skipped" and e.get("stage") == "validate"]
    assert len(validate_runs) == 1
    assert len(skipped) == 2
    videos = [i.key for i in (make_store(settings)).list(settings.bucket_outputs) if i.key.endswith(".mp4")]
    assert len(videos) == 1 and videos[0].endswith("/hello-voice-1.mp4")


def make_store(settings: Settings) -> Any:
    from pipeline.storage import open_store

    return open_store(settings)


def test_corrupt_input_fails_with_reason_and_worker_serves_next(
    tmp_path: Path, nats_url: str, assets: Path
) -> None:
    """A text file renamed .png fails its job with a reason naming the file, publishes nothing, and
    the same workers go on to finish the next job."""
    settings = short_chain(tmp_path, nats_url)
    fake = tmp_path / "face.png"
    fake.write_text("this is not an image at all\n" * 20)

    async def body(stack: Stack) -> tuple[Any, Any]:
        bad = await asyncio.to_thread(
            submit, stack.store, settings, Submission(audio=assets / "jfk.flac", avatars=(fake,), name="bad")
        )
        bad_status = await wait_done(stack, bad.job_id)
        good = await asyncio.to_thread(
            submit,
            stack.store,
            settings,
            Submission(audio=assets / "jfk.flac", avatars=(assets / "astronaut.png",)),
        )
        return bad_status, await wait_done(stack, good.job_id)

    bad_status, good_status = run_with_stack(settings, body)
    assert bad_status.state == State.failed
    assert "face.png" in bad_status.reason and "image or video" in bad_status.reason
    outputs = [i.key for i in make_store(settings).list(settings.bucket_outputs, f"{bad_status.job_id}/")]
    assert outputs == [f"{bad_status.job_id}/status.json"]
    assert good_status.state == State.done and good_status.outputs
    summary = f"{good_status.job_id}/status.json"
    for _ in range(50):  # written just after the last stage's done record
        published = json.loads(make_store(settings).get(settings.bucket_outputs, summary))
        if published["state"] == "done":
            break
        time.sleep(0.1)
    assert published["state"] == "done"


def test_missing_media_is_retried_then_dead_lettered(tmp_path: Path, nats_url: str) -> None:
    """A spec naming audio that never arrives is retried max_deliver times, then dead-lettered with a
    failure record that says what is missing."""
    settings = short_chain(tmp_path, nats_url, max_deliver=2, backoff=[0.2])

    async def body(stack: Stack) -> Any:
        spec = JobSpec(audio="never-uploaded.flac")
        submitted = await asyncio.to_thread(submit_spec, stack.store, settings, spec, "jobs/lost/job.json")
        return await wait_done(stack, submitted.job_id, timeout=40)

    status = run_with_stack(settings, body)
    assert status.state == State.failed and status.code == "gave_up"
    # status is read by operators: what happened and where to look, not "something went wrong"
    assert status.reason is not None and "never-uploaded.flac" in status.reason
    assert f"reference {status.job_id}" in status.reason and "The log has the detail" in status.reason
    record = read_record(make_store(settings), settings, status.job_id, "job", "validate")
    assert record is not None and record.reason is not None
    assert record.reason.startswith("gave up after 2 runs") and "never-uploaded.flac" in record.reason
    letters = list(make_store(settings).list(settings.bucket_work, "dead-letter/validate/"))
    assert len(letters) == 1
    letter = json.loads(make_store(settings).get(settings.bucket_work, letters[0].key))
    assert letter["job_id"] == status.job_id


class _SlowStage(Stage):
    name = "validate"
    takes_upload = True

    def __init__(self, seconds: float, calls: list[float]) -> None:
        self.seconds, self.calls = seconds, calls

    def run(self, ctx: Any, inputs: Any) -> list[Any]:
        self.calls.append(time.monotonic())
        for i in range(int(self.seconds * 10)):
            time.sleep(0.1)
            ctx.progress(i / (self.seconds * 10))
        return []


def test_heartbeats_keep_a_long_job_from_being_redelivered(
    tmp_path: Path, nats_url: str, assets: Path
) -> None:
    """A stage that runs 4x longer than ack_wait is not redelivered meanwhile (in_progress heartbeats)."""
    settings = short_chain(tmp_path, nats_url, ack_wait=1.0)
    calls: list[float] = []

    async def body(stack: Stack) -> Any:
        worker = stack.worker("validate")
        worker.impl = _SlowStage(4.0, calls)
        stop = asyncio.Event()
        serving = asyncio.create_task(worker.serve(stop))
        second = stack.worker("validate")  # another worker on the same durable consumer
        second.impl = _SlowStage(4.0, calls)
        serving2 = asyncio.create_task(second.serve(stop))
        info = await asyncio.to_thread(
            stack.store.put, settings.bucket_inputs, "audio/a.flac", assets / "jfk.flac"
        )
        from pipeline.contracts import job_id_for

        job_id = job_id_for(info.bucket, info.key, info.etag)
        for _ in range(100):
            record = await asyncio.to_thread(read_record, stack.store, settings, job_id, "job", "validate")
            if record is not None and record.state == State.done:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(serving, serving2)
        return record

    record = run_with_stack(settings, body, workers=False)
    assert record is not None and record.state == State.done
    assert len(calls) == 1


def test_retry_runs_a_dead_lettered_job_after_the_cause_is_fixed(
    tmp_path: Path, nats_url: str, assets: Path
) -> None:
    """`mouthpiece retry`: once the missing audio is uploaded, the failed job runs to the end."""
    from pipeline.reconcile import retry_job

    settings = short_chain(tmp_path, nats_url, max_deliver=1)

    async def body(stack: Stack) -> Any:
        spec = JobSpec(audio="late.flac")
        submitted = await asyncio.to_thread(submit_spec, stack.store, settings, spec, "jobs/late/job.json")
        assert (await wait_done(stack, submitted.job_id)).state == State.failed
        await asyncio.to_thread(
            stack.store.put, settings.bucket_inputs, "jobs/late/late.flac", assets / "jfk.flac"
        )
        triggers = await asyncio.to_thread(retry_job, stack.announcer, settings, submitted.job_id)
        assert triggers == [f"{settings.bucket_inputs}/jobs/late/job.json"]
        await asyncio.sleep(0.5)
        return await wait_done(stack, submitted.job_id)

    status = run_with_stack(settings, body)
    assert status.state == State.done, status.reason


def test_reconcile_sweep_starts_inputs_that_missed_their_event(
    tmp_path: Path, nats_url: str, assets: Path
) -> None:
    """An input written with no event (bus down, or copied in by hand) is found and started."""
    from pipeline.contracts import job_id_for
    from pipeline.reconcile import sweep

    settings = short_chain(tmp_path, nats_url, reconcile_grace=0.0)

    async def body(stack: Stack) -> Any:
        info = await asyncio.to_thread(
            stack.announcer.inner.put, settings.bucket_inputs, "audio/orphan.flac", assets / "jfk.flac"
        )
        keys = await asyncio.to_thread(sweep, stack.announcer, settings)
        assert keys == ["audio/orphan.flac"]
        status = await wait_done(stack, job_id_for(info.bucket, info.key, info.etag))
        assert await asyncio.to_thread(sweep, stack.announcer, settings) == []  # it has a job now
        return status

    assert run_with_stack(settings, body).state == State.done
