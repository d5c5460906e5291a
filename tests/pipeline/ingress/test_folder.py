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
        ingress.touch(ingress.inbox / name)
    shutil.copy(assets / "jfk.flac", ingress.inbox / "hello.flac")
    shutil.copy(assets / "astronaut.png", ingress.inbox / "hello.png")
    ingress.touch(ingress.inbox / "hello.flac")
    ingress.touch(ingress.inbox / "hello.png")
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
    ingress.touch(ingress.inbox / "solo.flac")
    [submitted] = settle(ingress)
    assert spec_of(ingress, submitted.spec_key).avatars == []


def test_file_still_being_written_is_not_taken(ingress: FolderIngress, assets: Path) -> None:
    """A file open for writing (no close-write yet) is left alone until it is closed."""
    target = ingress.inbox / "slow.flac"
    target.write_bytes((assets / "jfk.flac").read_bytes()[:1000])
    ingress.touch(target, writing=True)
    assert settle(ingress) == []
    ingress.touch(target, writing=False)
    assert len(settle(ingress)) == 1


def test_growing_file_waits_for_stable_size(tmp_path: Path, assets: Path) -> None:
    """In polling mode (network mounts) a file whose size still changes is not taken."""
    settings = make_settings(tmp_path, settle_seconds=0.0, watch_polling=True)
    settings.inbox.mkdir(parents=True)
    ingress = FolderIngress(settings, open_store(settings))
    target = settings.inbox / "grow.flac"
    data = (assets / "jfk.flac").read_bytes()
    target.write_bytes(data[:10_000])
    ingress.touch(target)
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
        ingress.touch(ingress.inbox / name)
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
    ingress.touch(drop / "speech.flac")
    [submitted] = settle(ingress)
    assert sorted(spec_of(ingress, submitted.spec_key).avatars) == ["one.png", "two.png"]


def test_bad_drops_are_moved_aside_with_a_reason(ingress: FolderIngress) -> None:
    """An unsupported file and a broken spec go to .failed/ with WHY.txt, and a note in the outbox."""
    (ingress.inbox / "notes.docx").write_bytes(b"PK\x03\x04")
    (ingress.inbox / "broken.json").write_text(json.dumps({"avatars": ["x.png"]}))
    for name in ("notes.docx", "broken.json"):
        ingress.touch(ingress.inbox / name)
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
    ingress.touch(ingress.inbox / "later.png")
    assert settle(ingress) == []
    assert (ingress.inbox / "later.png").exists()
    shutil.copy(assets / "jfk.flac", ingress.inbox / "later.flac")
    ingress.touch(ingress.inbox / "later.flac")
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
        ingress.touch(ingress.inbox / name)
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
    drop = ingress.reader.drop_for("once.flac", ingress.inbox / "once.flac")
    assert drop is not None
    assert ingress.submit(drop).job_id == ingress.submit(drop).job_id


# --- hostile and careless drops (issue 9): regular files only, nothing blocks, nothing wedges ---------


def tick_within(ingress: FolderIngress, seconds: float = 20.0) -> list:
    """Settle and tick in a thread; fail (instead of hanging) if a tick blocks."""
    import threading

    results: list = []
    worker = threading.Thread(target=lambda: results.extend(settle(ingress)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the watcher's tick blocked"
    return results


def failed_notes(ingress: FolderIngress) -> dict[str, str]:
    """Entry name → WHY.txt of everything moved to .failed/."""
    notes = {}
    for folder in (ingress.inbox / ".failed").iterdir():
        members = [p.name for p in folder.iterdir() if p.name != "WHY.txt"]
        for member in members:
            notes[member] = (folder / "WHY.txt").read_text()
    return notes


def test_links_are_refused_and_never_followed(ingress: FolderIngress, assets: Path, tmp_path: Path) -> None:
    """Links to /etc/passwd, /dev/zero, a voice outside the inbox and a folder outside it are moved to
    .failed/ as links, with a note; nothing of theirs reaches the inputs bucket; a good drop sorted after
    them is still taken."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(assets / "jfk.flac", outside / "voice.flac")
    shutil.copy(assets / "astronaut.png", outside / "face.png")
    links = {"passwd.flac": "/etc/passwd", "zero.flac": "/dev/zero", "voice.flac": outside / "voice.flac"}
    for name, target in links.items():
        (ingress.inbox / name).symlink_to(target)
    (ingress.inbox / "elsewhere").symlink_to(outside, target_is_directory=True)
    shutil.copy(assets / "jfk.flac", ingress.inbox / "zz-good.flac")
    for name in [*links, "elsewhere", "zz-good.flac"]:
        ingress.touch(ingress.inbox / name)
    [submitted] = tick_within(ingress)
    assert spec_of(ingress, submitted.spec_key).audio == "zz-good.flac"
    notes = failed_notes(ingress)
    assert set(notes) == {*links, "elsewhere"}
    assert all("is a link, and links are not taken" in why for why in notes.values())
    for folder in (ingress.inbox / ".failed").iterdir():
        assert all(p.is_symlink() for p in folder.iterdir() if p.name != "WHY.txt")
    stored = [i.key for i in ingress.store.list(ingress.settings.bucket_inputs)]
    assert all("zz-good" in key for key in stored)
    assert (outside / "voice.flac").exists() and (ingress.settings.outbox / "passwd.failed.txt").exists()


def test_a_named_pipe_does_not_block_the_watcher(ingress: FolderIngress, assets: Path) -> None:
    """A FIFO named x.flac (and one inside a dropped folder, and one a spec names) is refused without
    being opened; the tick returns and the good drop after it is taken."""
    import os

    os.mkfifo(ingress.inbox / "x.flac")
    (ingress.inbox / "batch").mkdir()
    os.mkfifo(ingress.inbox / "batch" / "speech.flac")
    os.mkfifo(ingress.inbox / "t-piped.png")
    (ingress.inbox / "spec.yaml").write_text("audio: y.flac\navatars: [t-piped.png]\n")
    shutil.copy(assets / "jfk.flac", ingress.inbox / "y.flac")
    shutil.copy(assets / "jfk.flac", ingress.inbox / "z.flac")
    for name in ("x.flac", "batch", "t-piped.png", "spec.yaml", "y.flac", "z.flac"):
        ingress.touch(ingress.inbox / name)
    [submitted] = tick_within(ingress)
    assert spec_of(ingress, submitted.spec_key).audio == "z.flac"
    notes = failed_notes(ingress)
    assert "x.flac is a named pipe, not a file" in notes["x.flac"]
    assert "batch/speech.flac is a named pipe, not a file" in notes["batch"]
    assert "spec.yaml names t-piped.png, which is a named pipe, not a file" in notes["spec.yaml"]
    assert notes["y.flac"] == notes["t-piped.png"] == notes["spec.yaml"]  # the spec took its files along


def test_long_names_neither_crash_nor_wedge(ingress: FolderIngress, assets: Path) -> None:
    """A voice clip with a 240-character name becomes a job (its name shortened to 120 characters) and is
    archived; a 240-character unsupported file goes to .failed/ with a note; the entry after both is taken."""
    long_voice, long_junk = "v" * 236 + ".flac", "j" * 235 + ".docx"
    shutil.copy(assets / "jfk.flac", ingress.inbox / long_voice)
    (ingress.inbox / long_junk).write_bytes(b"PK\x03\x04 not a voice")
    shutil.copy(assets / "jfk.flac", ingress.inbox / "zz.flac")
    for name in (long_voice, long_junk, "zz.flac"):
        ingress.touch(ingress.inbox / name)
    submitted = tick_within(ingress)
    specs = sorted((spec_of(ingress, s.spec_key) for s in submitted), key=lambda s: len(s.name or ""))
    assert [s.name for s in specs] == ["zz", "v" * 120]
    assert "is not a supported file" in failed_notes(ingress)[long_junk]
    assert not any((ingress.inbox / n).exists() for n in (long_voice, long_junk, "zz.flac"))
    assert len(list((ingress.inbox / ".done").iterdir())) == 2


def test_a_lone_avatar_gets_a_note_after_the_grace_period(tmp_path: Path, assets: Path) -> None:
    """A photo whose voice clip never comes waits avatar_wait_seconds, then goes to .failed/ with a note
    saying what to drop with it."""
    settings = make_settings(tmp_path, settle_seconds=0.2, avatar_wait_seconds=0.5)
    settings.inbox.mkdir(parents=True)
    ingress = FolderIngress(settings, open_store(settings))
    shutil.copy(assets / "astronaut.png", settings.inbox / "face.png")
    ingress.touch(settings.inbox / "face.png")
    assert settle(ingress) == [] and (settings.inbox / "face.png").exists()
    time.sleep(0.6)
    assert settle(ingress) == []
    why = failed_notes(ingress)["face.png"]
    assert why.startswith("face.png waited") and "drop it again together with face.mp3" in why
    assert (settings.outbox / "face.failed.txt").exists()


def test_oversize_files_and_refused_specs_say_why(tmp_path: Path, assets: Path) -> None:
    """A file over max_input_bytes is refused by its size (never read whole); a spec naming a loopback
    webhook is refused at the door, with the voice it named."""
    settings = make_settings(tmp_path, settle_seconds=0.2, max_input_bytes=200_000)
    settings.inbox.mkdir(parents=True)
    ingress = FolderIngress(settings, open_store(settings))
    shutil.copy(assets / "jfk.flac", settings.inbox / "big.flac")
    shutil.copy(assets / "astronaut.png", settings.inbox / "small.png")
    (settings.inbox / "hook.yaml").write_text(
        "audio: small.png\ndestinations: [{kind: discord_webhook, url: 'http://127.0.0.1:9/api/webhooks/1/x'}]\n"
    )
    for name in ("big.flac", "hook.yaml", "small.png"):
        ingress.touch(settings.inbox / name)
    assert settle(ingress) == []
    notes = failed_notes(ingress)
    assert notes["big.flac"].startswith("big.flac is 1.1 MB; the limit is 0.2 MB")
    assert (
        "the Discord webhook in job spec hook.yaml points at 127.0.0.1, which is not Discord"
        in notes["hook.yaml"]
    )
    assert notes["small.png"] == notes["hook.yaml"]
    assert not list(ingress.store.list(settings.bucket_inputs))


def test_watcher_survives_a_pipe_and_a_link_then_takes_a_good_drop(tmp_path: Path, assets: Path) -> None:
    """With the real watcher running, a FIFO and a link to /dev/zero dropped first do not wedge it."""
    import os

    def drop(inbox: Path) -> None:
        os.mkfifo(inbox / "a.flac")
        (inbox / "b.flac").symlink_to("/dev/zero")
        time.sleep(0.5)
        shutil.copy(assets / "jfk.flac", inbox / "c.flac")

    seen = submissions_while_watching(tmp_path, drop)
    assert len(seen) == 1


def test_a_refused_drop_leaves_a_record_people_can_list(ingress: FolderIngress) -> None:
    """Besides .failed/ and WHY.txt, a refused drop is recorded in the work bucket (what the console and
    `mouthpiece status` list), with its reason and code."""
    from pipeline.drops import list_failed_drops

    (ingress.inbox / "notes.docx").write_bytes(b"PK\x03\x04")
    ingress.touch(ingress.inbox / "notes.docx")
    assert settle(ingress) == []
    [drop] = list_failed_drops(ingress.store, ingress.settings)
    assert drop.name == "notes.docx" and drop.code == "inbox_unsupported"
    assert "not a supported file" in drop.reason and drop.moved_to and ".failed" in drop.moved_to


def test_a_folder_drop_prints_no_watchdog_warning(tmp_path: Path, assets: Path) -> None:
    """A folder dropped into the watched inbox (and archived into .done) is one job, and watchdog's
    "Callback with id ... already exists for watch" warning does not reach the terminal."""
    import warnings

    def drop(inbox: Path) -> None:
        staging = tmp_path / "staging"
        staging.mkdir()
        shutil.copy(assets / "jfk.flac", staging / "speech.flac")
        shutil.copy(assets / "astronaut.png", staging / "face.png")
        staging.rename(inbox / "batch")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = submissions_while_watching(tmp_path, drop)
        time.sleep(1.0)  # the archive move into .done happens after the submission
    assert len(seen) == 1
    assert [str(w.message) for w in caught if "already exists for watch" in str(w.message)] == []
