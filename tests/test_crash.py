"""Crashes, as an operator meets them: `mouthpiece up` killed with SIGKILL at chosen moments (the
``MOUTHPIECE_FAULTS`` hook, pipeline/faults.py, or a kill from outside), then started again.

Promises under test (docs/architecture.md, "The runner's guarantees"): a crash costs one run, not the
job; runs, not deliveries, use the budget; a task never runs twice at once; a video is published once
per destination (the folder: exactly once; a channel webhook: at least once); scratch folders of dead
processes are removed; an interrupted task resumes within two heartbeats of the restart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import load_settings
from pipeline.contracts import StageRecord, State
from pipeline.media import ffmpeg_binary
from pipeline.status import list_jobs, read_record
from pipeline.storage import open_store
from tests.pipeline.discord.conftest import FakeDiscord, ThreadServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MOUTHPIECE = [sys.executable, "-m", "pipeline.cli"]
HEARTBEAT = 1.0


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Path:
    """The first 3 s of the bundled speech: enough to render, quick to process."""
    out = tmp_path_factory.mktemp("voice") / "voice.flac"
    settings = load_settings(None, data_dir=out.parent / "x")
    subprocess.run(
        [ffmpeg_binary(settings), "-v", "error", "-i", str(assets / "jfk.flac"), "-t", "3", str(out)],
        check=True,
    )
    return out


class Up:
    """`mouthpiece up` in a data directory, started and killed as an operator would."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.data = root / ".mouthpiece"
        self.env = {
            **os.environ,
            "MOUTHPIECE_LOG_FORMAT": "json",
            "MOUTHPIECE_SETTLE_SECONDS": "0.3",
            "MOUTHPIECE_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "MOUTHPIECE_RECONCILE_INTERVAL": "0",
            "MOUTHPIECE_DATA_DIR": str(self.data),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.log = root / "up.log"

    def start(self) -> Up:
        self.started = time.monotonic()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*MOUTHPIECE, "up", "--no-ingress"], cwd=self.root, stdout=log, stderr=log, env=self.env
            )
        wait_for(lambda: (self.data / "inbox").is_dir(), 60, self)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait_exit(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- looking ------------------------------------------------------------------------------------------
    def store(self) -> Any:
        return open_store(self.settings())

    def settings(self) -> Any:
        return load_settings(None, data_dir=self.data)

    def job(self) -> str | None:
        jobs = list_jobs(self.store(), self.settings())
        return jobs[0] if jobs else None

    def record(self, stage: str, task: str = "a0") -> StageRecord | None:
        job = self.job()
        return read_record(self.store(), self.settings(), job, task, stage) if job else None

    def dead_letters(self) -> list[str]:
        return [i.key for i in self.store().list("work", "dead-letter/")]

    def logged(self, event: str) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                lines.append(json.loads(line))
        return lines


def wait_for(check: Callable[[], Any], timeout: float, up: Up | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    tail = up.log.read_text(errors="replace")[-3000:] if up else ""
    raise TimeoutError(f"condition not met in {timeout} s\n{tail}")


def drop(up: Up, voice: Path, face: Path, options: dict[str, Any] | None = None, **spec: Any) -> None:
    """Drop a folder with a voice, a face and a job spec into the inbox (renamed in, as whole)."""
    folder = up.root / "drop"
    folder.mkdir()
    shutil.copy(voice, folder / "voice.flac")
    shutil.copy(face, folder / "face.png")
    body = {"name": "crash", "audio": "voice.flac", "avatars": ["face.png"], "options": options or {}, **spec}
    (folder / "job.json").write_text(json.dumps(body))
    os.rename(folder, up.data / "inbox" / "crash")


def done(up: Up) -> bool:
    record = up.record("publish")
    return record is not None and record.state == State.done


def test_two_crashes_at_render_start_cost_two_runs_not_the_job(
    tmp_path: Path, voice: Path, assets: Path
) -> None:
    """`up` killed twice just as render starts: after each restart the task is taken back at once;
    the job finishes, render's record shows 3 runs (2 crashed), and nothing is dead-lettered."""
    up = Up(tmp_path, MOUTHPIECE_FAULTS=json.dumps({"render.start": 2}))
    up.start()
    drop(up, voice, assets / "astronaut.png", {"renderer": "none"})
    for _ in range(2):
        assert up.wait_exit() == -signal.SIGKILL
        up.start()
    try:
        wait_for(lambda: done(up), 120, up)
    finally:
        up.stop()
    record = up.record("render")
    assert record is not None and record.attempt == 3
    assert [r.outcome for r in record.runs] == ["crashed", "crashed", "done"]
    assert up.dead_letters() == []
    assert len(list((up.data / "outbox").glob("*.mp4"))) == 1
    assert not [p for p in (up.data / "tmp").iterdir() if p.name.startswith("mp-")]  # scratch of the dead


def test_crashes_up_to_the_run_budget_dead_letter_the_task_saying_how_many_runs(
    tmp_path: Path, voice: Path, assets: Path
) -> None:
    """With MAX_DELIVER=3, three crashes at render start use up the budget: the fourth delivery is
    dead-lettered without running, its reason says 3 runs, and the outbox gets the failure note — in the
    operator's words (the outbox is the operator's): what happened, the reference, and the fix."""
    up = Up(tmp_path, MOUTHPIECE_FAULTS=json.dumps({"render.start": 3}), MOUTHPIECE_MAX_DELIVER="3")
    up.start()
    drop(up, voice, assets / "astronaut.png", {"renderer": "none"})
    for _ in range(3):
        assert up.wait_exit() == -signal.SIGKILL
        up.start()
    try:
        letters = wait_for(up.dead_letters, 60, up)
    finally:
        up.stop()
    letter = json.loads(up.store().get("work", letters[0]))
    assert letter["reason"].startswith("gave up after 3 runs: run 1 crashed")
    record = up.record("render")
    assert record is not None and record.state == State.failed and len(record.runs) == 3
    note = (up.data / "outbox" / "crash.failed.txt").read_text()
    assert f"reference {record.job_id}" in note and "after 3 runs: run 1 crashed" in note
    assert f"`mouthpiece retry {record.job_id}`" in note


def test_a_task_redone_after_a_crash_runs_once_downstream(tmp_path: Path, voice: Path, assets: Path) -> None:
    """Detect killed after writing its manifest but before its done record is redone after the restart
    and writes its manifest again: render (two slots) gets two messages for one task and runs it once."""
    up = Up(
        tmp_path,
        MOUTHPIECE_FAULTS=json.dumps({"detect.after_manifest": 1}),
        MOUTHPIECE_CONCURRENCY=json.dumps({"render": 2}),
    )
    up.start()
    drop(up, voice, assets / "astronaut.png")
    assert up.wait_exit() == -signal.SIGKILL
    up.start()
    try:
        wait_for(lambda: done(up), 180, up)
        time.sleep(2 * HEARTBEAT)
    finally:
        up.stop()
    detect, render = up.record("detect"), up.record("render")
    assert detect is not None and [r.outcome for r in detect.runs] == ["crashed", "done"]
    assert render is not None and [r.outcome for r in render.runs] == ["done"]
    started = [e for e in up.logged("stage_started") if e.get("stage") == "render"]
    assert len(started) == 1
    assert len(list((up.data / "outbox").glob("*.mp4"))) == 1


def test_a_crash_between_the_folder_copy_and_its_marker_leaves_one_video(
    tmp_path: Path, voice: Path, assets: Path
) -> None:
    """`up` killed after the video was copied into the outbox but before the publication marker: after
    the restart the job's own copy is recognised, and the outbox holds exactly one video."""
    up = Up(tmp_path, MOUTHPIECE_FAULTS=json.dumps({"publish.after_copy": 1}))
    up.start()
    drop(up, voice, assets / "astronaut.png", {"renderer": "none"})
    assert up.wait_exit() == -signal.SIGKILL
    assert len(list((up.data / "outbox").glob("*.mp4"))) == 1
    up.start()
    try:
        wait_for(lambda: done(up), 60, up)
    finally:
        up.stop()
    assert [p.name for p in (up.data / "outbox").glob("*.mp4")] == ["crash.mp4"]
    record = up.record("publish")
    assert record is not None and [r.outcome for r in record.runs] == ["crashed", "done"]


def test_a_crash_between_a_webhook_post_and_its_marker_posts_again(
    tmp_path: Path, voice: Path, assets: Path
) -> None:
    """Channel webhooks are at least once (docs/architecture.md): Discord takes no idempotency key, so a
    crash after Discord answered but before the marker was written posts the video a second time —
    never zero times. Without a crash it is posted once."""
    fake = FakeDiscord()
    server = ThreadServer(fake.app()).start()
    try:
        hook = f"{server.origin}/api/webhooks/123456/{'t' * 60}"
        up = Up(
            tmp_path,
            MOUTHPIECE_FAULTS=json.dumps({"publish.after_post": 1}),
            MOUTHPIECE_DISCORD_WEBHOOK_HOSTS=server.origin,
        )
        up.start()
        drop(
            up,
            voice,
            assets / "astronaut.png",
            {"renderer": "none"},
            destinations=[{"kind": "discord_webhook", "url": hook}],
        )
        assert up.wait_exit() == -signal.SIGKILL
        assert len(fake.with_files()) == 1
        up.start()
        try:
            wait_for(lambda: done(up), 60, up)
        finally:
            up.stop()
        assert len(fake.with_files()) == 2
        record = up.record("publish")
        assert record is not None and any(o.startswith("discord:webhook:message:") for o in record.outputs)
    finally:
        server.stop()


def test_an_interrupted_render_resumes_within_two_heartbeats_of_the_restart(
    tmp_path: Path, assets: Path, voice: Path
) -> None:
    """SIGKILL of `up` halfway through a render, then a restart: the render task starts again within
    two heartbeat intervals of the restarted render worker coming up. Prints the measured figures."""
    up = Up(tmp_path, MOUTHPIECE_FAULTS=json.dumps({"render.halfway": 1}))
    up.start()
    drop(up, voice, assets / "astronaut.png")
    assert up.wait_exit() == -signal.SIGKILL
    record = up.record("render")
    assert record is not None and record.state == State.running  # killed mid-render
    restarted = time.monotonic()
    up.start()
    try:
        wait_for(lambda: (r := up.record("render")) and len(r.runs) == 2, 60, up)
        resumed = time.monotonic()
        wait_for(lambda: done(up), 240, up)
    finally:
        up.stop()
    workers = [e for e in up.logged("worker_started") if e.get("stage") == "render"]
    record = up.record("render")
    assert record is not None and [r.outcome for r in record.runs] == ["crashed", "done"]
    gap = (record.runs[1].started_at - _utc(workers[-1]["timestamp"])).total_seconds()
    print(f"\nrecovery: {resumed - restarted:.2f} s from restart command to resumed render;"
          f" {gap:.2f} s from the render worker's start (heartbeat {HEARTBEAT:.1f} s)")  # fmt: skip
    assert gap <= 2 * HEARTBEAT


def _utc(stamp: str) -> Any:
    from datetime import UTC, datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
