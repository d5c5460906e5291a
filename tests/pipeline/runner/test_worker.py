"""The runner's contract, on the in-memory bus and on a real nats-server (see conftest.py): every
message ends acked, naked or termed in one place; a task never runs twice at once; attempts are runs;
failures are recorded with their code; a stopping worker hands work back; cancels stop work."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from pipeline.contracts import Claim, JobSpec, JobStatus, Owner, Run, State
from pipeline.control import cancel_job
from pipeline.errors import InvalidInput, RetryableError, StorageError
from pipeline.keys import output_key, subject_for
from pipeline.messages import for_people
from pipeline.runner import Worker
from pipeline.stage import HeldOutside, StageContext
from pipeline.status import job_status
from tests.pipeline.runner.conftest import Deliver, Harness, Ingest, dead_owner, job_of, slow


def test_a_job_runs_each_stage_once_and_leaves_nothing_on_the_bus(harness: Harness) -> None:
    """An upload runs the first stage once, its manifest runs the next once; both records are done
    with one run each, and every message was acknowledged."""
    ingest, deliver = Ingest(), Deliver()

    async def body(h: Harness) -> None:
        async with h.serving(h.worker(ingest), h.worker(deliver)):
            info = await h.upload()
            job = job_of(info)
            await h.until(lambda: (r := h.record(job, "publish")) and r.state == State.done)
            assert await h.pending() == 0 or await h.until(lambda: True)
            await asyncio.sleep(0.2)
            assert await h.pending() == 0
        first, last = h.record(job, "validate"), h.record(job, "publish")
        assert first and last and first.attempt == 1 and last.attempt == 1
        assert [r.outcome for r in last.runs] == ["done"]
        status = JobStatus.model_validate_json(
            h.store.get(h.settings.bucket_outputs, output_key(job, "status.json"))
        )
        assert status.state == State.done

    harness.run(body)
    assert len(ingest.calls) == 1 and len(deliver.calls) == 1


def test_the_same_upload_announced_twice_runs_once(harness: Harness) -> None:
    """Two notifications of one object version (two message ids) make one job and one run."""
    ingest = Ingest()

    async def body(h: Harness) -> None:
        async with h.serving(h.worker(ingest), h.worker(Deliver())):
            info = await h.upload(again=True)
            await h.until(lambda: (r := h.record(job_of(info), "publish")) and r.state == State.done)
            await asyncio.sleep(0.3)
            assert await h.pending() == 0

    harness.run(body)
    assert len(ingest.calls) == 1


def test_a_second_message_for_a_running_task_is_never_run(harness: Harness) -> None:
    """A duplicate manifest event arriving while a worker with two slots runs the task is acked, not
    run (the claim is atomic)."""
    deliver = Deliver(slow(0.5))
    harness.settings = harness.settings.model_copy(update={"concurrency": {"publish": 2}})

    async def body(h: Harness) -> None:
        async with h.serving(h.worker(Ingest()), h.worker(deliver)):
            info = await h.upload()
            job = job_of(info)
            await h.until(lambda: deliver.calls)
            from pipeline.keys import manifest_key

            twin = await asyncio.to_thread(
                h.store.stat, h.settings.bucket_work, manifest_key(job, "a0", "validate")
            )
            assert twin is not None
            await h.announce(twin, msg_id="duplicate-manifest")
            await h.until(lambda: (r := h.record(job, "publish")) and r.state == State.done)
            await asyncio.sleep(0.4)

    harness.run(body)
    assert len(deliver.calls) == 1


def test_bad_input_fails_the_job_with_its_code_and_nothing_is_handed_on(harness: Harness) -> None:
    """A permanent error terms the message: a failed record with the error's code and reason, the
    status says failed in words for people, no manifest is written."""

    def refuse(ctx: StageContext, inputs: Any) -> None:
        raise InvalidInput("face.png is not an image or a video", code="not_media")

    async def body(h: Harness) -> None:
        async with h.serving(h.worker(Ingest(refuse))):
            info = await h.upload()
            record = await h.until(
                lambda: (r := h.record(job_of(info), "validate")) and r.state == State.failed and r
            )
            assert record.code == "not_media" and record.reason == "face.png is not an image or a video"
            assert not [k for k in h.keys(h.settings.bucket_work) if k.endswith("manifest.json")]
            key = output_key(job_of(info), "status.json")
            status = await h.until(
                lambda: (
                    h.store.stat(h.settings.bucket_outputs, key)
                    and JobStatus.model_validate_json(h.store.get(h.settings.bucket_outputs, key))
                )
            )
            assert status.state == State.failed and status.code == "not_media"
            assert "face.png" in (status.reason or "")

    harness.run(body)


def test_failures_of_the_environment_are_retried_then_dead_lettered_after_the_runs(harness: Harness) -> None:
    """A retryable error naks with backoff; after max_deliver runs the task is dead-lettered, its record
    failed with every run; the job's status (read by operators) says what happened with the reference,
    the public sentence (Discord, webhooks) only the catalogue's words (no technical reason)."""
    ingest = Ingest(lambda ctx, inputs: (_ for _ in ()).throw(RetryableError("S3 said 503", defer=0.0)))

    async def body(h: Harness) -> None:
        async with h.serving(h.worker(ingest)):
            info = await h.upload()
            job = job_of(info)
            record = await h.until(lambda: (r := h.record(job, "validate")) and r.state == State.failed and r)
            letters = await h.until(lambda: h.keys(h.settings.bucket_work, "dead-letter/validate/"))
        assert record.code == "gave_up" and len(record.runs) == 3
        assert record.reason and record.reason.startswith("gave up after 3 runs: run 1 retry (S3 said 503)")
        letter = json.loads(h.store.get(h.settings.bucket_work, letters[0]))
        assert letter["job_id"] == job
        status = JobStatus.model_validate_json(
            h.store.get(h.settings.bucket_outputs, output_key(job, "status.json"))
        )
        assert status.reason and "reference " + job in status.reason and "S3 said 503" in status.reason
        public = for_people(record.code, record.reason, job)
        assert "reference " + job in public and "503" not in public

    harness.run(body)
    assert len(ingest.calls) == 3


def test_a_crash_of_the_stage_code_is_retried_and_the_retry_counts_as_a_run(harness: Harness) -> None:
    """An unexpected exception is retried like an environment failure; the record shows both runs."""
    failures = [RuntimeError("bug")]

    def flaky(ctx: StageContext, inputs: Any) -> None:
        if failures:
            raise failures.pop()

    async def body(h: Harness) -> None:
        async with h.serving(h.worker(Ingest(flaky))):
            info = await h.upload()
            record = await h.until(
                lambda: (r := h.record(job_of(info), "validate")) and r.state == State.done and r
            )
        assert record.attempt == 2 and [r.outcome for r in record.runs] == ["retry", "done"]
        assert "RuntimeError('bug')" in (record.runs[0].reason or "")

    harness.run(body)


def test_a_dead_owners_task_is_taken_over_at_once_and_its_run_counts(harness: Harness) -> None:
    """A claim held by a process on this host that has died is taken over by the next message at once
    (not after a lease): the dead run is recorded as crashed, the new one is run 2."""
    ingest = Ingest()

    async def body(h: Harness) -> None:
        info = await asyncio.to_thread(h.raw.put, h.settings.bucket_inputs, "audio/a.flac", b"voice")
        job = job_of(info)
        owner = dead_owner()
        crashed = Claim(
            job_id=job,
            task="job",
            stage="validate",
            owner=owner,
            message="1",
            runs=[Run(n=1, worker=owner.worker)],
        )
        await h.put_claim(job, "job", "validate", crashed)
        async with h.serving(h.worker(ingest)):
            await h.announce(info)
            record = await h.until(lambda: (r := h.record(job, "validate")) and r.state == State.done and r)
        assert [r.outcome for r in record.runs] == ["crashed", "done"] and record.attempt == 2

    harness.run(body)
    assert len(ingest.calls) == 1


def test_a_silent_owner_elsewhere_keeps_its_task_until_four_heartbeats_pass(harness: Harness) -> None:
    """An owner on another host is trusted while its heartbeat is fresh (the message is naked back),
    and taken over once it has been silent for four heartbeat intervals."""
    ingest = Ingest()

    async def body(h: Harness) -> None:
        info = await asyncio.to_thread(h.raw.put, h.settings.bucket_inputs, "audio/a.flac", b"voice")
        job = job_of(info)
        far = Owner(host="elsewhere", boot="x", pid=1, started=1, worker="elsewhere:1:x")
        claim = Claim(
            job_id=job,
            task="job",
            stage="validate",
            owner=far,
            message="1",
            runs=[Run(n=1, worker=far.worker)],
        )
        await h.put_claim(job, "job", "validate", claim)
        async with h.serving(h.worker(ingest)):
            started = time.monotonic()
            await h.announce(info)
            await h.until(lambda: ingest.calls)
            waited = time.monotonic() - started
        assert waited >= 4 * h.settings.heartbeat_seconds * 0.8
        record = h.record(job, "validate")
        assert record and [r.outcome for r in record.runs] == ["crashed", "done"]

    harness.run(body)


def test_a_worker_whose_claim_was_taken_writes_nothing(harness: Harness) -> None:
    """If another worker takes the claim over mid-run (this one was thought dead), the stage is told
    to stop at its next progress report and nothing it made is handed on."""
    ingest = Ingest(slow(0.8))

    async def body(h: Harness) -> None:
        async with h.serving(h.worker(ingest)):
            info = await h.upload()
            job = job_of(info)
            await h.until(lambda: ingest.calls)
            from pipeline.runner.records import claim_key

            key = claim_key("validate", job, "job")
            value, revision = await h.claims.get(key)  # type: ignore[misc]
            thief = Claim.model_validate_json(value)
            thief.owner = Owner(host="elsewhere", boot="x", pid=2, started=2, worker="elsewhere:2:thief")
            assert await h.claims.update(key, thief.model_dump_json().encode(), revision)
            await asyncio.sleep(0.6)
        assert not [k for k in h.keys(h.settings.bucket_work) if k.endswith("manifest.json")]
        record = h.record(job, "validate")
        assert record is not None and record.state == State.running  # the thief's run is the task's now

    harness.run(body)


def test_a_task_out_of_runs_is_dead_lettered_without_running(harness: Harness) -> None:
    """A message for a task whose earlier runs used up the budget is dead-lettered, not run."""
    ingest = Ingest()

    async def body(h: Harness) -> None:
        info = await asyncio.to_thread(h.raw.put, h.settings.bucket_inputs, "audio/a.flac", b"voice")
        job = job_of(info)
        runs = [Run(n=i, worker="w", outcome="crashed", reason="worker w died") for i in (1, 2, 3)]
        await h.put_claim(
            job,
            "job",
            "validate",
            Claim(job_id=job, task="job", stage="validate", state="released", runs=runs),
        )
        async with h.serving(h.worker(ingest)):
            await h.announce(info)
            record = await h.until(lambda: (r := h.record(job, "validate")) and r.state == State.failed and r)
        assert record.reason and record.reason.startswith(
            "gave up after 3 runs: run 1 crashed (worker w died)"
        )

    harness.run(body)
    assert ingest.calls == []


def test_a_restarted_worker_takes_back_its_predecessors_tasks_at_start(harness: Harness) -> None:
    """At start a worker releases the claims its dead predecessor on this host held and announces their
    triggers again, so they run without waiting for the bus to redeliver."""
    ingest = Ingest()

    async def body(h: Harness) -> None:
        info = await asyncio.to_thread(h.raw.put, h.settings.bucket_inputs, "audio/a.flac", b"voice")
        job = job_of(info)
        owner = dead_owner()
        claim = Claim(
            job_id=job, task="job", stage="validate", owner=owner, message="1",
            trigger=f"{info.bucket}/{info.key}", runs=[Run(n=1, worker=owner.worker)],
        )  # fmt: skip
        await h.put_claim(job, "job", "validate", claim)
        async with h.serving(h.worker(ingest)):  # note: no event for the upload is published
            record = await h.until(lambda: (r := h.record(job, "validate")) and r.state == State.done and r)
        assert [r.outcome for r in record.runs] == ["crashed", "done"]

    harness.run(body)


@pytest.mark.parametrize("abandon_idle_pulls", [False, True])
def test_stopping_finishes_the_run_in_flight(harness: Harness, abandon_idle_pulls: bool) -> None:
    """Setting stop (what SIGTERM does) while a stage runs lets it finish and acknowledge, also on a
    thrown-away bus (``abandon_idle_pulls`` cancels idle fetches only)."""
    ingest = Ingest(slow(0.6))

    async def body(h: Harness) -> None:
        worker = h.worker(ingest)
        worker.abandon_idle_pulls = abandon_idle_pulls
        async with h.serving(worker) as stop:
            info = await h.upload()
            await h.until(lambda: ingest.calls)
            stop.set()
        record = h.record(job_of(info), "validate")
        assert record is not None and record.state == State.done

    harness.run(body)


def test_a_worker_on_a_thrown_away_bus_stops_without_waiting_out_its_fetch(harness: Harness) -> None:
    """With ``abandon_idle_pulls`` (``mouthpiece render``'s private bus) stop cancels the idle slots'
    fetches at once, where a worker on a lasting bus lets its fetch run out (``pull_seconds``)."""

    async def stop_after_start(h: Harness, worker: Worker) -> float:
        stop = asyncio.Event()
        serving = asyncio.create_task(worker.serve(stop))
        await asyncio.sleep(0.5)  # started, and waiting in a fetch
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(serving, timeout=10)
        return time.monotonic() - started

    async def body(h: Harness) -> None:
        patient = h.worker(Ingest())
        patient.pull_seconds = 3.0
        assert await stop_after_start(h, patient) > 1.0
        quick = h.worker(Ingest())
        quick.pull_seconds, quick.abandon_idle_pulls = 3.0, True
        assert await stop_after_start(h, quick) < 1.0

    harness.run(body)


class _Warming(Ingest):
    """An Ingest whose warm-up takes ``seconds`` (a model loading), then raises ``error`` if given."""

    def __init__(self, seconds: float, error: Exception | None = None) -> None:
        super().__init__()
        self.seconds, self.error = seconds, error
        self.warmed: list[float] = []

    def warm_up(self, settings: Any, models: Any) -> None:
        time.sleep(self.seconds)
        self.warmed.append(time.monotonic())
        if self.error is not None:
            raise self.error


def test_a_worker_warming_while_serving_takes_the_job_before_its_models_are_loaded(harness: Harness) -> None:
    """With ``warm_while_serving`` (``mouthpiece render``) a job waiting at start runs while warm-up still
    loads; without it, only after. A warm-up that fails still ends the worker with its error."""
    from pipeline.errors import ConfigError

    async def body(h: Harness) -> None:
        await h.upload()
        eager = _Warming(1.5)
        worker = h.worker(eager)
        worker.warm_while_serving = True
        await asyncio.wait_for(worker.serve(asyncio.Event(), max_messages=1), timeout=20)
        assert eager.calls and eager.warmed and eager.calls[0] < eager.warmed[0]
        await h.upload(key="audio/b.flac")
        patient = _Warming(0.5)
        await asyncio.wait_for(h.worker(patient).serve(asyncio.Event(), max_messages=1), timeout=20)
        assert patient.calls and patient.warmed[0] < patient.calls[0]
        broken = h.worker(_Warming(0.2, ConfigError("the model file is damaged")))
        broken.warm_while_serving = True
        with pytest.raises(ConfigError, match="damaged"):
            await asyncio.wait_for(broken.serve(asyncio.Event()), timeout=20)

    harness.run(body)


class _Modelled(Ingest):
    """An Ingest that loads its own model at warm-up and uses it in a run, beside a model another stage
    of the process (enhance) uses too."""

    def warm_up(self, settings: Any, models: Any) -> None:
        models.get("mine", _Model)
        models.get("shared", _Model)

    def run(self, ctx: StageContext, inputs: Any) -> list[Any]:
        ctx.models.get("mine", _Model).used += 1
        return super().run(ctx, inputs)


class _Model(HeldOutside):
    def __init__(self) -> None:
        self.used = self.released = 0

    def let_go(self) -> None:
        self.released += 1


def test_a_render_s_worker_gives_back_its_stage_s_own_models_once_idle(harness: Harness) -> None:
    """With ``release_models_when_idle`` (``mouthpiece render``: its one job does not come back) the
    models only this stage used are released once a fetch finds nothing after a run; a model another
    stage uses stays. A long-lived worker keeps its models."""
    from pipeline.stage import ModelCache

    async def body(h: Harness) -> None:
        for release in (True, False):
            cache = ModelCache()
            shared = cache.for_stage("enhance").get("shared", _Model)
            worker = h.worker(_Modelled(), models=cache)
            worker.release_models_when_idle = release
            async with h.serving(worker):
                await asyncio.sleep(0.3)  # idle before any run: nothing is released
                mine = cache.get("mine", _Model)
                assert mine.released == 0
                await h.upload(key=f"audio/{release}.flac")
                await h.until(lambda mine=mine: mine.used == 1)
                await asyncio.sleep(1.0)
            assert mine.released == (1 if release else 0) and shared.released == 0
            assert (cache.get("mine", _Model) is mine) is not release  # released: a new one loads

    harness.run(body)


def test_past_the_drain_time_the_run_is_handed_back_and_writes_nothing(harness: Harness) -> None:
    """When drain time runs out the stage stops at its next progress report, writes nothing, and the
    task goes back to the queue; the handed-back run does not use up the budget."""
    harness.settings = harness.settings.model_copy(update={"drain_seconds": 0.3})
    ingest = Ingest(slow(1.5))

    async def body(h: Harness) -> None:
        started = 0.0
        async with h.serving(h.worker(ingest)) as stop:
            info = await h.upload()
            await h.until(lambda: ingest.calls)
            started = time.monotonic()
            stop.set()
        waited = time.monotonic() - started
        assert waited < 2.5
        record = h.record(job_of(info), "validate")
        assert record is not None and record.state == State.queued
        assert [r.outcome for r in record.runs] == ["handed_back"]
        assert not [k for k in h.keys(h.settings.bucket_work) if k.endswith("manifest.json")]

    harness.run(body)


def test_a_cancelled_job_stops_running_and_is_not_started(harness: Harness) -> None:
    """Cancelling a job stops its running stage at the next progress report, records it cancelled,
    hands nothing on, and a task of it that has not started is never run."""
    deliver = Deliver(slow(5.0))

    async def body(h: Harness) -> None:
        async with h.serving(h.worker(Ingest()), h.worker(deliver)):
            info = await h.upload()
            job = job_of(info)
            await h.until(lambda: deliver.calls)
            status = await cancel_job(h.store, h.settings, h.bus, job, by="test")
            assert status.state == State.cancelled
            record = await h.until(
                lambda: (r := h.record(job, "publish")) and r.state == State.cancelled and r
            )
            assert record.code == "cancelled"
        later = await h.upload(key="audio/b.flac")
        await cancel_job(h.store, h.settings, h.bus, job_of(later), by="test")
        async with h.serving(h.worker(unstarted)):
            await asyncio.sleep(0.3)
            assert await h.pending() == 0
        later_status = await asyncio.to_thread(job_status, h.store, h.settings, job_of(later))
        assert later_status is not None and later_status.state == State.cancelled

    unstarted = Ingest()
    harness.run(body)
    assert len(deliver.calls) == 1 and unstarted.calls == []


def test_max_messages_and_idle_exit_end_a_worker(harness: Harness) -> None:
    """``max_messages`` ends serving after that many messages, also with slots for more at once (a
    Kubernetes Job for one message takes no second one beside it); ``idle_exit`` after quiet seconds."""

    async def body(h: Harness) -> None:
        await h.upload()
        await h.upload(key="audio/second.flac")
        h.settings = h.settings.model_copy(update={"concurrency": {"validate": 3}})
        worker = h.worker(Ingest(slow(0.3)))
        await asyncio.wait_for(worker.serve(asyncio.Event(), max_messages=1), timeout=10)
        assert worker.handled == 1
        second = h.worker(Ingest())
        await asyncio.wait_for(second.serve(asyncio.Event(), max_messages=1), timeout=10)
        assert second.handled == 1  # the other message was still there for the next Job
        idle = h.worker(Ingest())
        started = time.monotonic()
        await asyncio.wait_for(idle.serve(asyncio.Event(), idle_exit=0.5), timeout=10)
        assert time.monotonic() - started < 5

    harness.run(body)


def test_neural_jobs_go_to_the_neural_pool(harness: Harness) -> None:
    """A job with a neural renderer is routed to render's neural pool: a default-pool worker never
    sees it, a neural worker runs it."""
    harness.settings = harness.settings.model_copy(update={"chain": ["validate", "render", "publish"]})
    ingest = Ingest(spec=JobSpec(audio="a.flac", options={"renderer": "wav2lip"}))
    cpu, gpu = Deliver(name="render"), Deliver(name="render")

    async def body(h: Harness) -> None:
        async with h.serving(
            h.worker(ingest), h.worker(cpu, pools=("default",)), h.worker(gpu, pools=("neural",))
        ):
            info = await h.upload()
            await h.until(lambda: (r := h.record(job_of(info), "render")) and r.state == State.done)
        assert subject_for(h.settings, "render", "neural").endswith(".stage.render.neural")

    harness.run(body)
    assert cpu.calls == [] and len(gpu.calls) == 1


def test_a_job_that_finished_before_is_not_run_again(harness: Harness) -> None:
    """The first stage consults outputs/<job>/status.json: an upload announced again after its work
    records were deleted (retention) neither re-renders nor re-posts."""
    ingest = Ingest()

    async def body(h: Harness) -> None:
        info = await asyncio.to_thread(h.raw.put, h.settings.bucket_inputs, "audio/a.flac", b"voice")
        job = job_of(info)
        done = JobStatus(job_id=job, state=State.done)
        await asyncio.to_thread(
            h.store.put,
            h.settings.bucket_outputs,
            output_key(job, "status.json"),
            done.model_dump_json().encode(),
        )
        async with h.serving(h.worker(ingest)):
            await h.announce(info)
            await h.until(lambda: True)
            await asyncio.sleep(0.5)
            assert await h.pending() == 0

    harness.run(body)
    assert ingest.calls == []


def test_a_malformed_message_is_dead_lettered(harness: Harness) -> None:
    """A message that is not a bucket notification is terminated and kept as a dead letter."""

    async def body(h: Harness) -> None:
        async with h.serving(h.worker(Ingest())):
            await h.bus.publish(subject_for(h.settings, "validate"), b"{not json")
            await h.until(lambda: h.keys(h.settings.bucket_work, "dead-letter/"))

    harness.run(body)


class FlakyStore:
    """The real store, with one injected failure: the first write of a stage record (a 503)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.failed = inner, False

    def put(self, bucket: str, key: str, data: Any, **kwargs: Any) -> Any:
        if "/records/" in key and not self.failed:
            self.failed = True
            raise StorageError("503 SlowDown")
        return self.inner.put(bucket, key, data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_storage_error_outside_the_stage_does_not_stop_the_worker(harness: Harness) -> None:
    """A store failure while recording (not inside the stage) naks that message; the worker goes on
    and the job finishes."""

    async def body(h: Harness) -> None:
        h.store = FlakyStore(h.store)
        async with h.serving(h.worker(Ingest())):
            info = await h.upload()
            await h.until(
                lambda: (r := h.record(job_of(info), "validate")) and r.state == State.done, timeout=20
            )

    harness.run(body)


def test_a_starting_worker_waits_out_a_bus_that_is_briefly_unavailable() -> None:
    """Listing the claims at start timing out twice (a NATS cluster electing a leader) is tried again,
    not fatal (the deploy test's killed leader made a render worker exit); past ``bus_patience`` the
    error stands, so a bus that is really gone still stops the worker."""
    from pipeline.errors import BusError
    from pipeline.runner import worker as worker_module

    tries: list[int] = []

    async def flaky() -> list[str]:
        tries.append(1)
        if len(tries) < 3:
            raise BusError("cannot list claims: TimeoutError()")
        return ["claim"]

    assert asyncio.run(worker_module._patiently(flaky, "reclaim", 60.0)) == ["claim"] and len(tries) == 3

    async def gone() -> list[str]:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        asyncio.run(worker_module._patiently(gone, "reclaim", 0.0))
