"""The console's job index: cheap summaries from stored statuses, a directory scan for job ids, and
updates driven by bus messages rather than by reading the store on every page."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline.console.index import JobIndex, job_ids, source_label, summarize
from pipeline.contracts import State
from pipeline.events import build_event
from pipeline.status import list_jobs
from tests.conftest import make_settings
from tests.pipeline.console.conftest import Harness, make_job


def test_summaries_and_the_fast_scan_agree_with_the_store(tmp_path: Path, assets: Path) -> None:
    """The directory scan finds the same jobs as the store's listing; a finished job's summary comes
    from its stored status (name, source, state, outputs, elapsed time)."""
    h = Harness(make_settings(tmp_path))
    jobs = {make_job(h, assets, State.done, nonce=str(i), age=30) for i in range(3)}
    failed = make_job(h, assets, State.failed, nonce="f")
    assert set(job_ids(h.store, h.settings)) == set(list_jobs(h.store, h.settings)) == jobs | {failed}
    done = summarize(h.store, h.settings, next(iter(jobs)))
    assert done is not None and (done.name, done.source, done.state) == ("greeting", "folder", "done")
    assert done.outputs and 0 < done.elapsed() < 30
    bad = summarize(h.store, h.settings, failed)
    assert (
        bad is not None
        and bad.state == "failed"
        and bad.reason.startswith("astronaut.png has no face in it.")
    )


def test_source_labels() -> None:
    """Where a job came from, in one word."""
    assert [source_label(s) for s in ("folder", "console", "cli", "discord:123", None)] == [
        "folder", "console", "CLI", "Discord", "bucket",
    ]  # fmt: skip


def test_a_new_upload_and_progress_notes_reach_listeners(tmp_path: Path, assets: Path) -> None:
    """A spec's storage event on the stage subjects makes the index fold that job and tell listeners;
    a progress note is passed on as it comes."""
    h = Harness(make_settings(tmp_path))
    index = JobIndex(h.settings, h.store)

    async def go() -> list[tuple[str, dict]]:
        await index.start(h.bus)
        queue = index.listen()
        while not index.loaded:
            await asyncio.sleep(0.01)
        job = make_job(h, assets, State.running, failed_stage="render")
        spec = next(i for i in h.store.list(h.settings.bucket_inputs, "jobs/") if i.key.endswith("/job.json"))
        await h.bus.notify(f"{h.settings.subject_prefix}.stage.validate", build_event(spec))
        got = [await asyncio.wait_for(queue.get(), 5)]
        note = f'{{"job_id": "{job}", "task": "a0", "stage": "render", "fraction": 0.25}}'
        await h.bus.notify(f"{h.settings.subject_prefix}.progress.{job}", note.encode())
        got.append(await asyncio.wait_for(queue.get(), 5))
        await index.close()
        return got

    (kind, summary), (kind2, note) = asyncio.run(go())
    assert kind == "job" and summary["state"] == "running" and summary["stage"] == "render"
    assert kind2 == "progress" and note["fraction"] == 0.25
    assert index.progress[summary["job_id"]] == {"a0/render": 0.25}
