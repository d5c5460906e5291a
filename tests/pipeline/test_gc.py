"""`mouthpiece gc` on a real local store: only finished jobs lose their work; their durable status
stays (and is written first when missing); outputs and inputs only when asked; dry runs delete nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.contracts import JobRecord, StageRecord, State
from pipeline.gc import collect, parse_duration
from pipeline.keys import job_record_key, output_key, record_key
from pipeline.storage import ObjectStore, open_store
from tests.conftest import make_settings

DONE, BUSY = "j" + "d" * 19, "j" + "b" * 19


@pytest.fixture
def world(tmp_path: Path) -> tuple[Settings, ObjectStore]:
    settings = make_settings(tmp_path, chain=["validate", "publish"])
    store = open_store(settings)
    for job, state in ((DONE, State.done), (BUSY, State.running)):
        source = store.put(settings.bucket_inputs, f"audio/{job}.flac", b"voice")
        record = JobRecord(
            job_id=job, source_bucket=source.bucket, source_key=source.key, name=job, tasks={"a0": "a.png"},
            chain=["validate", "publish"],
        )  # fmt: skip
        store.put(settings.bucket_work, job_record_key(job), record.model_dump_json().encode())
        for stage in ("validate", "publish"):
            task = "job" if stage == "validate" else "a0"
            rec = StageRecord(
                job_id=job, task=task, stage=stage, state=state if stage == "publish" else State.done
            )
            store.put(settings.bucket_work, record_key(job, task, stage), rec.model_dump_json().encode())
        store.put(settings.bucket_work, f"jobs/{job}/a0/final.mp4", b"video")
        store.put(settings.bucket_outputs, output_key(job, f"{job}.mp4"), b"video")
    return settings, store


def keys(store: ObjectStore, bucket: str) -> set[str]:
    return {i.key for i in store.list(bucket)}


def test_finished_jobs_lose_their_work_but_keep_their_status(world) -> None:
    """gc --older-than 0: the done job's work is gone and its status.json is written (it was missing);
    the running job is untouched; outputs and inputs stay without the flags."""
    settings, store = world
    report = collect(store, settings, 0.0)
    assert report.jobs == [DONE] and report.kept_unfinished == 1
    work = keys(store, settings.bucket_work)
    assert not [k for k in work if k.startswith(f"jobs/{DONE}/")]
    assert f"jobs/{BUSY}/a0/final.mp4" in work
    assert output_key(DONE, "status.json") in keys(store, settings.bucket_outputs)
    assert output_key(DONE, f"{DONE}.mp4") in keys(store, settings.bucket_outputs)
    assert f"audio/{DONE}.flac" in keys(store, settings.bucket_inputs)


def test_outputs_and_inputs_go_only_when_asked_and_status_json_never(world) -> None:
    """--outputs --inputs: the video and the upload that started the job are deleted; status.json stays."""
    settings, store = world
    collect(store, settings, 0.0, outputs=True, inputs=True)
    assert keys(store, settings.bucket_outputs) >= {output_key(DONE, "status.json")}
    assert output_key(DONE, f"{DONE}.mp4") not in keys(store, settings.bucket_outputs)
    assert f"audio/{DONE}.flac" not in keys(store, settings.bucket_inputs)
    assert f"audio/{BUSY}.flac" in keys(store, settings.bucket_inputs)


def test_a_dry_run_and_a_young_job_delete_nothing(world) -> None:
    """--dry-run reports what would go; a job younger than --older-than is kept."""
    settings, store = world
    before = keys(store, settings.bucket_work)
    report = collect(store, settings, 0.0, dry_run=True, outputs=True)
    assert report.deleted > 0 and keys(store, settings.bucket_work) == before
    assert collect(store, settings, parse_duration("7d")).jobs == []
    assert keys(store, settings.bucket_work) == before


def test_durations_read_like_cron_people_write_them() -> None:
    """7d, 12h, 30m, 90s and plain seconds; anything else is refused with the accepted forms."""
    assert [parse_duration(t) for t in ("7d", "12h", "30m", "90s", "90")] == [604800, 43200, 1800, 90, 90]
    with pytest.raises(ValueError, match="7d, 12h, 30m or 90s"):
        parse_duration("a week")
