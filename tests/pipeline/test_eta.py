"""Time left: timings learned from finished runs, estimates folded from stage records, the line people
read, a smoother that never lets the time left jump back up, and a real batch on an embedded stack."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from pipeline import eta
from pipeline.contracts import JobOptions, JobRecord, StageRate, StageRecord, State, Timings
from pipeline.media import ffmpeg_binary
from pipeline.stack import Stack
from pipeline.status import job_status, read_job, read_records
from pipeline.storage import open_store
from pipeline.submit import Submission, submit
from tests.conftest import make_settings

CHAIN = ["validate", "detect", "render", "enhance", "publish"]


def _record(task: str, stage: str, state: State, progress: float | None = None) -> StageRecord:
    return StageRecord(job_id="j" + "0" * 19, task=task, stage=stage, state=state, progress=progress)


def _job(tasks: int) -> JobRecord:
    return JobRecord(
        job_id="j" + "0" * 19, source_bucket="inputs", source_key="jobs/x/job.json", name="x",
        tasks={f"a{i}": f"c{i}" for i in range(tasks)}, chain=CHAIN,
    )  # fmt: skip


def _timings(**rates: float) -> Timings:
    return Timings(
        rates={k.replace("__", "/"): StageRate(seconds_per_audio_second=v) for k, v in rates.items()}
    )


def test_learning_keeps_a_moving_average_per_stage_and_renderer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = open_store(settings)
    assert eta.read_timings(store, settings).rates == {}
    eta.learn(store, settings, "render", "viseme", audio=10.0, seconds=20.0)
    eta.learn(store, settings, "render", "viseme", audio=10.0, seconds=30.0)
    eta.learn(store, settings, "render", "wav2lip", audio=1.0, seconds=8.0)  # counted as MIN_AUDIO s
    rates = eta.read_timings(store, settings).rates
    assert rates["render/viseme"].samples == 2
    assert rates["render/viseme"].seconds_per_audio_second == pytest.approx(0.7 * 2.0 + 0.3 * 3.0)
    assert rates["render/wav2lip"].seconds_per_audio_second == pytest.approx(4.0)


def test_batch_estimate_counts_every_video_left() -> None:
    """Video 2 of 3 at render 40 %: what is left of its render and later stages, plus all of video 3."""
    timings = _timings(validate=0.1, detect=0.2, render__viseme=1.0, enhance=0.5, publish=0.1)
    records = [_record("job", "validate", State.done)]
    for stage in CHAIN[1:]:
        records.append(_record("a0", stage, State.done))
    records += [_record("a1", "detect", State.done), _record("a1", "render", State.running, 0.4)]
    est = eta.estimate(CHAIN, _job(3), records, timings, 10.0, "viseme")
    assert (est.video, est.videos, est.stage, est.fraction) == (2, 3, "render", 0.4)
    # a1: 0.6 * 10 render + 5 enhance + 1 publish = 12; a2: detect 2 + render 10 + 5 + 1 = 18
    assert est.seconds == pytest.approx(30.0)
    assert eta.progress_line(est) == "video 2 of 3 · render 40 % · about 30 s left"


def test_no_measurement_means_no_estimate_said_honestly() -> None:
    timings = _timings(validate=0.1, detect=0.2, enhance=0.5, publish=0.1)  # render never measured
    records = [_record("job", "validate", State.done), _record("a0", "detect", State.running, 0.5)]
    est = eta.estimate(CHAIN, _job(1), records, timings, 10.0, "viseme")
    assert est.seconds is None
    assert eta.progress_line(est) == "detect 50 % · no time estimate yet (nothing measured here so far)"
    # a renderer measured elsewhere does not stand in for this one
    est = eta.estimate(CHAIN, _job(1), records, _timings(**{"render__wav2lip": 1.0}), 10.0, "viseme")
    assert est.seconds is None


def test_failed_videos_are_not_waited_for() -> None:
    timings = _timings(validate=0.1, detect=0.2, render__viseme=1.0, enhance=0.5, publish=0.1)
    records = [_record("job", "validate", State.done), _record("a0", "detect", State.failed)]
    records.append(_record("a1", "detect", State.running, 0.0))
    est = eta.estimate(CHAIN, _job(2), records, timings, 10.0, "viseme")
    assert est.video == 2 and est.seconds == pytest.approx(2 + 10 + 5 + 1)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(3, "a few seconds left"), (42, "about 40 s left"), (90, "about 1 min 30 s left"),
     (121, "about 2 min left"), (725, "about 12 min left"), (3900, "about 1 h 5 min left")],
)  # fmt: skip
def test_durations_in_words(seconds: float, words: str) -> None:
    assert eta.duration_words(seconds) == words


def test_smoother_lets_time_fall_but_not_jump_back_up() -> None:
    now = [0.0]
    smoother = eta.Smoother(clock=lambda: now[0])
    assert smoother.show("j", 100.0) == 100.0
    now[0] = 10.0
    assert smoother.show("j", 60.0) == 60.0  # falls freely
    now[0] = 20.0
    shown = smoother.show("j", 200.0)  # a wild jump up: projected 50, a quarter of the rest
    assert shown == pytest.approx(50 + 150 * eta.RISE)
    assert smoother.show("j", None) is None


@pytest.mark.slow
def test_a_batch_shows_video_k_of_n_and_an_estimate_that_does_not_jump_back(
    tmp_path: Path, assets: Path
) -> None:
    """A real embedded stack (the whole chain, the viseme renderer) runs a 3-avatar batch twice: the first
    starts with no measurements (the line says so), the second has an estimate from the first's timings
    throughout; sampled every 0.2 s, the video count never goes down and the time left never jumps back
    up wildly."""
    settings = make_settings(tmp_path)
    voice = tmp_path / "v.flac"
    subprocess.run(
        [ffmpeg_binary(settings), "-v", "error", "-i", str(assets / "jfk.flac"), "-t", "8", str(voice)],
        check=True,
    )
    faces = []
    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    for i in range(3):
        path = tmp_path / f"f{i}.{'jpg' if i % 2 else 'png'}"
        cv2.imwrite(str(path), np.ascontiguousarray(np.roll(face, 20 * i, axis=1)))
        faces.append(path)

    async def run_batch(stack: Stack, nonce: str) -> tuple[list[str], list[tuple[float, float | None]]]:
        options = JobOptions(renderer="viseme")
        asked = Submission(audio=voice, avatars=tuple(faces), nonce=nonce, options=options)
        submitted = await asyncio.to_thread(submit, stack.store, settings, asked)
        lines, samples = [], []
        deadline = time.monotonic() + 240
        smoother = eta.Smoother()
        while time.monotonic() < deadline:
            status = await asyncio.to_thread(job_status, stack.store, settings, submitted.job_id)
            if status is not None and status.finished:
                assert status.state == State.done, status.reason
                return lines, samples
            job = await asyncio.to_thread(read_job, stack.store, settings, submitted.job_id)
            records = await asyncio.to_thread(read_records, stack.store, settings, submitted.job_id)
            line = await asyncio.to_thread(
                eta.job_line, stack.store, settings, submitted.job_id, job, records, "viseme", None, smoother
            )
            lines.append(line)
            samples.append((time.monotonic(), smoother._shown.get(submitted.job_id, (None,))[0]))
            await asyncio.sleep(0.2)
        raise TimeoutError("the batch did not finish")

    async def main() -> tuple[list[str], list[str], list[tuple[float, float | None]]]:
        stack = await Stack.open(settings)
        stop = asyncio.Event()
        workers = await stack.run_workers(list(settings.chain), stop)
        try:
            first, _ = await run_batch(stack, "one")
            second, samples = await run_batch(stack, "two")
            return first, second, samples
        finally:
            stop.set()
            await asyncio.gather(*workers)
            await stack.close()

    first, second, samples = asyncio.run(main())
    assert first and "no time estimate yet" in first[0]
    assert "time left known once the voice clip is read" in second[0] or second[0].startswith("video ")
    rates = eta.read_timings(open_store(settings), settings).rates
    assert set(rates) == {"validate", "detect", "render/viseme", "enhance", "publish"}
    assert rates["publish"].samples == 6  # three videos a batch
    with_videos = [line for line in second if line.startswith("video ")]
    assert all("no time estimate" not in line for line in with_videos), with_videos
    assert with_videos, second
    counts = [int(line.split()[1]) for line in with_videos]
    assert counts == sorted(counts) and all(line.split()[3] == "3" for line in with_videos)
    assert any(" left" in line and "no time estimate" not in line for line in with_videos)
    shown = [s for _, s in samples if s is not None]
    assert len(shown) >= 2
    for before, after in itertools.pairwise(shown):
        assert after <= before * 1.25 + 2.0, (before, after)  # never jumps back up wildly


def test_status_follow_shows_the_time_left_under_a_running_job(tmp_path: Path) -> None:
    """The live table has a '~' line with the time left under each running job; a log (no terminal) gets
    a new table only when something other than the ticking columns and that line changed."""
    from datetime import UTC, datetime

    from pipeline.cli.jobs import _status_table, _without_elapsed
    from pipeline.console.index import JobSummary

    now = datetime.now(UTC)
    running = JobSummary(
        job_id="j" + "1" * 19, name="contest", source="CLI", state="running", stage="render", reason=None,
        created_at=now, updated_at=now, tasks=3, eta="video 2 of 3 · render 40 % · about 1 min 30 s left",
    )  # fmt: skip

    class Index:
        def __init__(self) -> None:
            self.progress: dict[str, dict[str, float]] = {}
            self.drops: list[object] = []

        def page(self, number: int, size: int) -> tuple[list[JobSummary], int]:
            return [running], 1

        def counts(self) -> dict[str, int]:
            return {"running": 1}

    table = _status_table(make_settings(tmp_path), Index(), 20, live=True)
    assert f"{'':21} ~ video 2 of 3 · render 40 % · about 1 min 30 s left" in table.splitlines()
    running.eta = "video 2 of 3 · render 60 % · about 1 min left"
    assert _without_elapsed(
        _status_table(make_settings(tmp_path), Index(), 20, live=True)
    ) == _without_elapsed(table)


def test_discord_edits_say_which_video_and_stop_once_every_video_is_publishing(tmp_path: Path) -> None:
    """The forwarder's line for a batch names the video and the time left; while some videos still render
    it goes on (one video being published does not stop it); once every video reached publish it is None
    (publish's own edits must stay last)."""
    from pipeline.contracts import Manifest, MediaInfo, Progress
    from pipeline.discord.progress import ProgressForwarder
    from pipeline.keys import job_record_key, manifest_key
    from pipeline.status import write_record

    settings = make_settings(tmp_path)
    store = open_store(settings)
    job = _job(3)
    store.put(settings.bucket_work, job_record_key(job.job_id), job.model_dump_json().encode())
    for key, rate in {
        "validate": 0.1,
        "detect": 0.2,
        "render/viseme": 1.0,
        "enhance": 0.5,
        "publish": 0.1,
    }.items():
        stage, _, renderer = key.partition("/")
        eta.learn(store, settings, stage, renderer or None, audio=10.0, seconds=rate * 10.0)
    write_record(store, settings, _record("job", "validate", State.done))
    for stage in CHAIN[1:4]:
        write_record(store, settings, _record("a0", stage, State.done))
    write_record(store, settings, _record("a0", "publish", State.running, 0.1))
    write_record(store, settings, _record("a1", "detect", State.done))
    write_record(store, settings, _record("a1", "render", State.running, 0.4))
    forwarder = ProgressForwarder(settings, store, api=None)  # type: ignore[arg-type]
    note = Progress(job_id=job.job_id, task="a1", stage="render", fraction=0.5)
    line = forwarder._line(note)  # a0 is the first video not finished
    assert line == "Video 1 of 3 · publish 10 % · time left known once the voice clip is read"
    media = MediaInfo(audio_seconds=10.0, fps=25.0, width=512, height=512, frames=1, still=True)
    manifest = Manifest(
        job_id=job.job_id, task="a0", stage="validate", spec_key="x", avatar_name="c0", media=media
    )
    store.put(
        settings.bucket_work, manifest_key(job.job_id, "a0", "validate"), manifest.model_dump_json().encode()
    )
    eta.SMOOTHER.forget(job.job_id)
    # a0: 0.9 of publish (1 s); a1: half its render (5) + enhance 5 + publish 1; a2: 2 + 10 + 5 + 1
    assert forwarder._line(note) == "Video 1 of 3 · publish 10 % · about 30 s left"
    for task in ("a1", "a2"):
        write_record(store, settings, _record(task, "publish", State.running, 0.0))
    assert forwarder._line(note) is None
