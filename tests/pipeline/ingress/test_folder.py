"""The watched folder: which drops become jobs, when, and what happens to bad ones."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.contracts import FolderDestination, JobSpec
from pipeline.ingress.folder import FolderIngress
from pipeline.storage import open_store
from tests.conftest import make_settings


@pytest.fixture
def ingress(tmp_path: Path) -> FolderIngress:
    settings = make_settings(tmp_path, settle_seconds=0.2)
    settings.inbox.mkdir(parents=True)
    return FolderIngress(settings, open_store(settings))


def settle(ingress: FolderIngress) -> list:
    """Tick past the settle time twice (the size-stability check needs two looks)."""
    results = []
    for _ in range(3):
        time.sleep(0.25)
        results.extend(ingress.tick())
    return results


def spec_of(ingress: FolderIngress, key: str) -> JobSpec:
    return JobSpec.model_validate_json(ingress.store.get(ingress.settings.bucket_inputs, key))


def test_audio_with_named_photo_becomes_one_job(ingress: FolderIngress, assets: Path) -> None:
    """hello.flac + hello.png → one job with that avatar, output to the output folder; files archived."""
    for name in ("jfk.flac", "astronaut.png"):
        ingress._touch(ingress.inbox / name)
    shutil.copy(assets / "jfk.flac", ingress.inbox / "hello.flac")
    shutil.copy(assets / "astronaut.png", ingress.inbox / "hello.png")
    ingress._touch(ingress.inbox / "hello.flac")
    ingress._touch(ingress.inbox / "hello.png")
    [submitted] = settle(ingress)
    spec = spec_of(ingress, submitted.spec_key)
    assert spec.audio == "hello.flac" and spec.avatars == ["hello.png"]
    assert spec.destinations == [FolderDestination()]
    assert not (ingress.inbox / "hello.flac").exists()
    archived = list((ingress.inbox / ".done").iterdir())
    assert len(archived) == 1 and sorted(p.name for p in archived[0].iterdir()) == ["hello.flac", "hello.png"]


def test_lone_audio_uses_default_avatar(ingress: FolderIngress, assets: Path) -> None:
    """An audio file alone → a job with no avatars (the default avatar is used downstream)."""
    shutil.copy(assets / "jfk.flac", ingress.inbox / "solo.flac")
    ingress._touch(ingress.inbox / "solo.flac")
    [submitted] = settle(ingress)
    assert spec_of(ingress, submitted.spec_key).avatars == []


def test_file_still_being_written_is_not_taken(ingress: FolderIngress, assets: Path) -> None:
    """A file open for writing (no close-write yet) is left alone until it is closed."""
    target = ingress.inbox / "slow.flac"
    target.write_bytes((assets / "jfk.flac").read_bytes()[:1000])
    ingress._touch(target, writing=True)
    assert settle(ingress) == []
    ingress._touch(target, writing=False)
    assert len(settle(ingress)) == 1


def test_growing_file_waits_for_stable_size(tmp_path: Path, assets: Path) -> None:
    """In polling mode (network mounts) a file whose size still changes is not taken."""
    settings = make_settings(tmp_path, settle_seconds=0.0, watch_polling=True)
    settings.inbox.mkdir(parents=True)
    ingress = FolderIngress(settings, open_store(settings))
    target = settings.inbox / "grow.flac"
    data = (assets / "jfk.flac").read_bytes()
    target.write_bytes(data[:10_000])
    ingress._touch(target)
    assert ingress.tick() == []  # first look: no size history yet
    with target.open("ab") as f:
        f.write(data[10_000:20_000])
    assert ingress.tick() == []  # size changed since the last look
    target.write_bytes(data)
    assert ingress.tick() == []  # and again
    assert len(ingress.tick()) == 1  # two looks at the same size: taken


def test_job_spec_drop_names_its_media(ingress: FolderIngress, assets: Path) -> None:
    """A YAML spec naming files beside it becomes a job with its options and the output folder added."""
    shutil.copy(assets / "jfk.flac", ingress.inbox / "voice.flac")
    shutil.copy(assets / "astronaut.png", ingress.inbox / "face.png")
    (ingress.inbox / "job.yaml").write_text(
        "name: greeting\naudio: voice.flac\navatars: [face.png]\noptions:\n  style: photo\n  subtitles: soft\n"
    )
    for name in ("voice.flac", "face.png", "job.yaml"):
        ingress._touch(ingress.inbox / name)
    submitted = settle(ingress)
    assert len(submitted) == 1
    spec = spec_of(ingress, submitted[0].spec_key)
    assert spec.name == "greeting" and spec.options.subtitles.value == "soft"
    assert spec.avatars == ["face.png"]


def test_folder_drop(ingress: FolderIngress, assets: Path) -> None:
    """A folder with one audio and two photos → one job with two avatars (batch)."""
    drop = ingress.inbox / "batch"
    drop.mkdir()
    shutil.copy(assets / "jfk.flac", drop / "speech.flac")
    shutil.copy(assets / "astronaut.png", drop / "one.png")
    shutil.copy(assets / "astronaut.png", drop / "two.png")
    ingress._touch(drop / "speech.flac")
    [submitted] = settle(ingress)
    assert sorted(spec_of(ingress, submitted.spec_key).avatars) == ["one.png", "two.png"]


def test_bad_drops_are_moved_aside_with_a_reason(ingress: FolderIngress) -> None:
    """An unsupported file and a broken spec go to .failed/ with WHY.txt, and a note in the outbox."""
    (ingress.inbox / "notes.docx").write_bytes(b"PK\x03\x04")
    (ingress.inbox / "broken.json").write_text(json.dumps({"avatars": ["x.png"]}))
    for name in ("notes.docx", "broken.json"):
        ingress._touch(ingress.inbox / name)
    assert settle(ingress) == []
    failed = sorted((ingress.inbox / ".failed").iterdir())
    assert len(failed) == 2
    whys = {p.name.split("-", 1)[1]: (p / "WHY.txt").read_text() for p in failed}
    assert "not a supported file" in whys["notes.docx"]
    assert "exactly one of 'audio'" in whys["broken.json"]
    assert (ingress.settings.outbox / "notes.failed.txt").exists()


def test_avatar_alone_waits_for_its_audio(ingress: FolderIngress, assets: Path) -> None:
    """A photo dropped before its audio is kept; when the audio arrives both make one job."""
    shutil.copy(assets / "astronaut.png", ingress.inbox / "later.png")
    ingress._touch(ingress.inbox / "later.png")
    assert settle(ingress) == []
    assert (ingress.inbox / "later.png").exists()
    shutil.copy(assets / "jfk.flac", ingress.inbox / "later.flac")
    ingress._touch(ingress.inbox / "later.flac")
    [submitted] = settle(ingress)
    assert spec_of(ingress, submitted.spec_key).avatars == ["later.png"]


def submissions_while_watching(tmp_path: Path, drop: Callable[[Path], None]) -> list:
    """Run the real watcher (inotify), call ``drop(inbox)``, and return what was submitted within 10 s."""
    settings: Settings = make_settings(tmp_path, settle_seconds=0.3)
    seen: list = []
    ingress = FolderIngress(settings, open_store(settings), on_submit=lambda s, d: seen.append(s)).start()
    try:
        drop(settings.inbox)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        ingress.stop()
    return seen


def test_watcher_sees_real_filesystem_events(tmp_path: Path, assets: Path) -> None:
    """With the real inotify observer running, a file copied in is submitted without manual ticks."""
    seen = submissions_while_watching(
        tmp_path, lambda inbox: shutil.copy(assets / "jfk.flac", inbox / "live.flac")
    )
    assert len(seen) == 1


def test_spec_takes_the_files_it_names_even_when_they_sort_first(
    ingress: FolderIngress, assets: Path
) -> None:
    """a.flac + face.png + talk.yaml (naming both) → one job from the spec; the audio is not taken
    alone with the default avatar."""
    shutil.copy(assets / "jfk.flac", ingress.inbox / "a.flac")
    shutil.copy(assets / "astronaut.png", ingress.inbox / "face.png")
    (ingress.inbox / "talk.yaml").write_text("audio: a.flac\navatars: [face.png]\n")
    for name in ("a.flac", "face.png", "talk.yaml"):
        ingress._touch(ingress.inbox / name)
    submitted = settle(ingress)
    assert len(submitted) == 1
    assert spec_of(ingress, submitted[0].spec_key).avatars == ["face.png"]
    assert not (ingress.inbox / ".failed").exists()


def test_file_moved_in_from_another_filesystem_is_taken(tmp_path: Path, assets: Path) -> None:
    """A move from elsewhere arrives as a bare 'created' event (no close-write): it is still taken."""
    staged = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    source = staged / f"moved-{tmp_path.name}.flac"
    shutil.copy(assets / "jfk.flac", source)
    seen = submissions_while_watching(
        tmp_path, lambda inbox: shutil.move(str(source), str(inbox / "moved.flac"))
    )
    assert len(seen) == 1


def test_the_same_drop_retried_is_the_same_job(ingress: FolderIngress, assets: Path) -> None:
    """The drop's identity (names, sizes, times) names its job: submitting it again after a crash
    between submitting and archiving does not make a second job."""
    shutil.copy(assets / "jfk.flac", ingress.inbox / "once.flac")
    drop = ingress._drop_for("once.flac", ingress.inbox / "once.flac")
    assert drop is not None
    assert ingress._submit(drop).job_id == ingress._submit(drop).job_id
