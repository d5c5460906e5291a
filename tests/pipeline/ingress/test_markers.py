"""Folder feedback: while a drop is worked on the inbox shows ``<name>.processing``; when its job is over
the marker goes and the outbox has the video, or ``<name>.failed.txt`` with the drop moved to
``.failed/`` beside a ``WHY.txt``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.ingress.folder import FolderIngress
from pipeline.ingress.markers import Markers
from pipeline.stack import Stack
from pipeline.storage import open_store
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


def drop(settings: Settings, files: dict[str, bytes]) -> None:
    """Write the files beside the inbox, then rename them in (whole files appear at once)."""
    staging = settings.data_dir / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
        os.rename(staging / name, settings.inbox / name)


def test_a_drop_shows_its_marker_then_its_outcome(tmp_path: Path, nats_url: str, assets: Path) -> None:
    """A good drop: hello.processing (naming its job) while it runs; then the video in the outbox, the
    marker gone, the files in .done/. A voice clip that is not audio: broken.processing, then
    broken.failed.txt in the outbox, the marker gone, the file in .failed/ with WHY.txt naming it."""
    settings = make_settings(tmp_path, nats_url=nats_url, chain=["validate", "publish"], settle_seconds=0.2)
    inbox, outbox = settings.inbox, settings.outbox

    async def main() -> str:
        stack = await Stack.open(settings)
        stop = asyncio.Event()
        tasks = await stack.run_workers(list(settings.chain), stop)
        folder = FolderIngress(settings, stack.store).start()
        try:
            drop(settings, {"hello.flac": (assets / "jfk.flac").read_bytes(), "hello.png": (assets / "astronaut.png").read_bytes()})  # fmt: skip
            await until(lambda: (inbox / "hello.processing").exists(), 30, "no marker for hello")
            # read while the job runs (validate+publish is quick: the outbox may have the video already)
            marker = (inbox / "hello.processing").read_text()
            await until(lambda: not (inbox / "hello.flac").exists(), 30, "hello.flac stayed in the inbox")
            await until(lambda: not (inbox / "hello.processing").exists(), 120, "hello's marker stayed")
            assert (outbox / "hello.mp4").stat().st_size > 10_000

            drop(settings, {"broken.flac": b"these are words, not a voice clip\n" * 50})
            await until(lambda: (inbox / "broken.processing").exists(), 30, "no marker for broken")
            await until(lambda: not (inbox / "broken.processing").exists(), 60, "broken's marker stayed")
            return marker
        finally:
            folder.stop()
            stop.set()
            await asyncio.gather(*tasks)
            await stack.close()

    marker = asyncio.run(main())
    job_line = next(line for line in marker.splitlines() if line.startswith("job: "))
    assert "hello.flac, hello.png" in marker and f"mouthpiece status {job_line[5:]}" in marker
    [done] = (inbox / ".done").iterdir()
    assert sorted(p.name for p in done.iterdir()) == ["hello.flac", "hello.png"]
    assert "broken.flac" in (outbox / "broken.failed.txt").read_text()
    [failed] = (inbox / ".failed").iterdir()
    assert sorted(p.name for p in failed.iterdir()) == ["WHY.txt", "broken.flac"]
    assert "broken.flac" in (failed / "WHY.txt").read_text()
    assert sorted(p.name for p in inbox.iterdir()) == [".done", ".failed"]


def test_a_marker_of_an_unknown_or_running_job_stays(tmp_path: Path) -> None:
    """A marker whose job has no status yet (just submitted, or submitted before a restart) is kept;
    markers are read from the folder, so a restarted watcher finds them."""
    settings = make_settings(tmp_path)
    settings.inbox.mkdir(parents=True)
    markers = Markers(settings, open_store(settings))
    placed = markers.place("hello", "j0000000000000000001", ["hello.flac"], settings.inbox / ".done" / "x")
    again = markers.place("hello", "j0000000000000000002", ["hello.flac"], settings.inbox / ".done" / "y")
    assert (placed.name, again.name) == ("hello.processing", "hello-2.processing")
    assert markers.sweep(now=time.monotonic() + 3600) == []
    assert sorted(p.name for p in settings.inbox.iterdir()) == ["hello-2.processing", "hello.processing"]


def test_a_retried_drop_that_succeeds_leaves_no_failure_behind(
    tmp_path: Path, nats_url: str, assets: Path
) -> None:
    """A lone voice clip fails (this server has no default avatar): hello.failed.txt in the outbox, the
    drop in .failed/. The operator restores the avatar and retries the job: the video arrives, the note
    goes from the outbox and the drop moves back from .failed/ to .done/."""
    from pipeline.reconcile import retry_job
    from stages.validate import DEFAULT_AVATAR_KEY

    settings = make_settings(tmp_path, nats_url=nats_url, chain=["validate", "publish"], settle_seconds=0.2)
    inbox, outbox = settings.inbox, settings.outbox

    async def main() -> None:
        stack = await Stack.open(settings)
        stop = asyncio.Event()
        tasks = await stack.run_workers(list(settings.chain), stop)
        local = open_store(settings)
        await until(lambda: local.local_path(settings.bucket_inputs, DEFAULT_AVATAR_KEY), 30, "no avatar")
        avatar = local.local_path(settings.bucket_inputs, DEFAULT_AVATAR_KEY)
        assert avatar is not None
        kept = avatar.read_bytes()
        avatar.unlink()
        folder = FolderIngress(settings, stack.store).start()
        try:
            drop(settings, {"hello.flac": (assets / "jfk.flac").read_bytes()})
            await until(lambda: (inbox / "hello.processing").exists(), 30, "no marker for hello")
            job = next(
                line[5:]
                for line in (inbox / "hello.processing").read_text().splitlines()
                if line.startswith("job: ")
            )
            await until(lambda: (outbox / "hello.failed.txt").exists(), 60, "no failure note")
            await until(lambda: any((inbox / ".failed").glob("*/WHY.txt")), 30, "the drop did not fail")
            stack.store.put(settings.bucket_inputs, DEFAULT_AVATAR_KEY, kept, content_type="image/png")
            assert await asyncio.to_thread(retry_job, stack.announcer, settings, job)
            await until(lambda: (outbox / "hello.mp4").exists(), 120, "the retried job made no video")
            await until(lambda: not any((inbox / ".failed").iterdir()), 30, "the drop stayed in .failed/")
        finally:
            folder.stop()
            stop.set()
            await asyncio.gather(*tasks)
            await stack.close()

    asyncio.run(main())
    assert not (outbox / "hello.failed.txt").exists()
    [done] = (inbox / ".done").iterdir()
    assert sorted(p.name for p in done.iterdir()) == ["hello.flac"]
