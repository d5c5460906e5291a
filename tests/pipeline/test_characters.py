"""The character library: names checked, media checked as every upload, records in the store, and job
specs naming characters resolved by validate (one task per character, the character's defaults)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from pipeline import characters
from pipeline.config import Settings
from pipeline.contracts import JobOptions, job_id_for
from pipeline.errors import InvalidInput
from pipeline.keys import character_key
from pipeline.storage import open_store
from pipeline.storage.base import ObjectStore
from pipeline.testing import StageEnvironment
from stages.validate import prepare_store
from tests.conftest import make_settings


@pytest.fixture
def env(tmp_path: Path) -> tuple[Settings, ObjectStore]:
    settings = make_settings(tmp_path, character_batch_limit=2, characters_per_library=4)
    store = open_store(settings)
    prepare_store(store, settings)
    return settings, store


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    """A JPEG (the astronaut) and a PNG (the same face mirrored), made here."""
    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    jpg, png = tmp_path / "astro.jpg", tmp_path / "mirror.png"
    cv2.imwrite(str(jpg), face)
    cv2.imwrite(str(png), np.ascontiguousarray(face[:, ::-1]))
    return {"jpg": jpg, "png": png}


@pytest.mark.parametrize(
    "name",
    ["", "x" * 33, "pi/rate", "../up", "all", "ALL", "-dash", "emoji 🦜", "a\x00b"],
)
def test_bad_names_are_refused_in_a_sentence(name: str) -> None:
    """Empty, too long, odd characters, starting with punctuation, or the reserved 'all'."""
    with pytest.raises(InvalidInput) as err:
        characters.check_name(name)
    assert err.value.code == "character_name_invalid"
    assert "Traceback" not in err.value.reason and len(err.value.reason) < 200


def test_good_names_keep_their_script_and_are_tidied() -> None:
    assert characters.check_name("  Captain   Hook ") == "Captain Hook"
    assert characters.check_name("Zoë_2") == "Zoë_2"
    assert characters.check_name("Ванька") == "Ванька"
    assert characters.handle("Captain Hook") == characters.handle("captain-hook") == "captain-hook"


def test_add_list_find_remove(env: tuple[Settings, ObjectStore], photos: dict[str, Path]) -> None:
    """A character is a record plus its picture; names are unique without case; remove deletes both."""
    settings, store = env
    pirate = characters.add_character(
        store, settings, "default", "Pirate", photos["jpg"], shown="astro.jpg", added_by="ana",
        defaults=characters.defaults_from(voice="en_US-joe-medium", style="cartoon"),
    )  # fmt: skip
    assert pirate.kind == "image" and pirate.media.startswith("characters/default/pirate/")
    assert store.stat(settings.bucket_inputs, pirate.media) is not None
    characters.add_character(store, settings, "default", "Ninja", photos["png"])
    assert [c.name for c in characters.list_characters(store, settings, "default")] == ["Ninja", "Pirate"]
    assert characters.list_characters(store, settings, "guild-1") == []  # libraries are separate
    with pytest.raises(InvalidInput, match="already in the library") as err:
        characters.add_character(store, settings, "default", "PIRATE", photos["png"])
    assert err.value.code == "character_exists"
    found = characters.get_character(store, settings, "default", "pIrAtE")
    assert found.added_by == "ana" and found.defaults.voice == "en_US-joe-medium"
    characters.remove_character(store, settings, "default", "pirate")
    assert store.stat(settings.bucket_inputs, pirate.media) is None
    assert store.stat(settings.bucket_inputs, character_key("default", "pirate")) is None
    with pytest.raises(InvalidInput, match="it has Ninja") as err:
        characters.get_character(store, settings, "default", "pirate")
    assert err.value.code == "character_unknown"


def test_media_is_checked_like_every_upload(
    env: tuple[Settings, ObjectStore], tmp_path: Path, photos: dict[str, Path]
) -> None:
    """Text named .png, an SVG, an empty file and a picture over max_input_side are refused, naming it."""
    settings, store = env
    text = tmp_path / "notes.png"
    text.write_text("hello, this is not a picture\n")
    svg = tmp_path / "draw.png"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>')
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path, code in ((text, "not_media"), (svg, "not_media"), (empty, "file_empty")):
        with pytest.raises(InvalidInput) as err:
            characters.add_character(store, settings, "default", "X", path)
        assert err.value.code == code and path.name in err.value.reason
    small = settings.model_copy(update={"max_input_side": 256})
    with pytest.raises(InvalidInput, match="512×512 pixels") as err:
        characters.add_character(store, small, "default", "Big", photos["png"])
    assert characters.list_characters(store, settings, "default") == []  # nothing half-added


def test_library_size_is_capped(env: tuple[Settings, ObjectStore], photos: dict[str, Path]) -> None:
    settings, store = env
    for name in ("a", "b", "c", "d"):
        characters.add_character(store, settings, "default", name, photos["png"])
    with pytest.raises(InvalidInput, match="full") as err:
        characters.add_character(store, settings, "default", "e", photos["png"])
    assert err.value.code == "character_library_full"


def test_all_is_capped_and_says_so(env: tuple[Settings, ObjectStore], photos: dict[str, Path]) -> None:
    settings, store = env
    for name in ("c", "a", "b"):
        characters.add_character(store, settings, "default", name, photos["png"])
    picked = characters.pick(store, settings, "default", "all")
    assert [c.name for c in picked.characters] == ["a", "b"] and picked.left_out == 1
    note = picked.cap_note(settings.character_batch_limit)
    assert note is not None and "at most 2" in note and "1 left out" in note
    assert characters.suggest(store, settings, "default", "") == ["all", "a", "b", "c"]
    assert characters.suggest(store, settings, "default", "B") == ["b"]


def test_defaults_apply_only_to_what_the_job_left_unset(
    env: tuple[Settings, ObjectStore], photos: dict[str, Path]
) -> None:
    settings, store = env
    hook = characters.add_character(
        store, settings, "default", "Hook", photos["png"],
        defaults=characters.defaults_from(voice="de", style="cartoon", motion="lively"),
    )  # fmt: skip
    merged = characters.apply_defaults(JobOptions(style="photo"), hook)  # type: ignore[arg-type]
    assert merged.style == "photo" and merged.voice == "de" and merged.motion == "lively"
    with pytest.raises(InvalidInput) as err:
        characters.defaults_from(style="watercolour")
    assert err.value.code == "character_options_invalid"


def _validate(settings: Settings, store: ObjectStore, spec: str, files: dict[str, Path]) -> list:
    for name, path in files.items():
        store.put(settings.bucket_inputs, f"jobs/c/{name}", path)
    up = store.put(settings.bucket_inputs, "jobs/c/job.yaml", spec.encode())
    env = StageEnvironment(settings, store)
    return env.run("validate", up, job_id=job_id_for(up.bucket, up.key, up.etag), task="job")


def test_a_spec_naming_characters_gets_one_task_each(
    env: tuple[Settings, ObjectStore], photos: dict[str, Path], assets: Path
) -> None:
    """``character:<name>`` beside a plain file; ``character:all`` capped; names shown per task."""
    settings, store = env
    for name in ("Pirate", "Ninja", "Robot"):
        characters.add_character(store, settings, "default", name, photos["png"])
    manifests = _validate(
        settings, store, "audio: v.flac\navatars: ['character:pirate', f.jpg]\n",
        {"v.flac": assets / "jfk.flac", "f.jpg": photos["jpg"]},
    )  # fmt: skip
    assert [m.avatar_name for m in manifests] == ["Pirate", "f.jpg"]
    manifests = _validate(
        settings, store, "audio: v.flac\navatars: ['character:all']\n", {"v.flac": assets / "jfk.flac"}
    )
    assert [m.avatar_name for m in manifests] == ["Ninja", "Pirate"]  # the cap is 2, by name
    [note] = manifests[0].info["notes"]  # shown in the job's status: the batch was capped
    assert note.startswith("The library has 3 characters; one batch makes at most 2 videos")


def test_a_spec_naming_an_unknown_character_is_refused(
    env: tuple[Settings, ObjectStore], photos: dict[str, Path], assets: Path
) -> None:
    settings, store = env
    characters.add_character(store, settings, "guild-42", "Pirate", photos["png"])
    with pytest.raises(InvalidInput, match="the library is empty") as err:  # default library: empty
        _validate(
            settings, store, "audio: v.flac\navatars: ['character:Pirate']\n", {"v.flac": assets / "jfk.flac"}
        )
    assert err.value.code == "character_unknown"
    [m] = _validate(
        settings, store, "audio: v.flac\nlibrary: guild-42\navatars: ['character:Pirate']\n",
        {"v.flac": assets / "jfk.flac"},
    )  # fmt: skip
    assert m.avatar_name == "Pirate"


def test_a_lone_character_brings_its_defaults_into_the_stored_spec(
    env: tuple[Settings, ObjectStore], photos: dict[str, Path], assets: Path
) -> None:
    from pipeline.status import read_spec

    settings, store = env
    characters.add_character(
        store, settings, "default", "Toon", photos["png"], defaults=characters.defaults_from(style="cartoon")
    )
    [m] = _validate(
        settings, store, "audio: v.flac\navatars: ['character:toon']\n", {"v.flac": assets / "jfk.flac"}
    )
    assert read_spec(store, settings, m.job_id).options.style == "cartoon"


def test_an_inbox_spec_naming_characters_becomes_a_job(
    tmp_path: Path, assets: Path, photos: dict[str, Path]
) -> None:
    """A job.yaml in the inbox naming ``character:pirate`` beside a file: the file is taken with it, the
    character is not looked for in the folder, and the submitted spec names both."""
    import shutil
    import time

    from pipeline.contracts import JobSpec
    from pipeline.ingress.folder import FolderIngress

    settings = make_settings(tmp_path, settle_seconds=0.2)
    settings.inbox.mkdir(parents=True)
    store = open_store(settings)
    characters.add_character(store, settings, "default", "Pirate", photos["png"])
    ingress = FolderIngress(settings, store)
    shutil.copy(assets / "jfk.flac", ingress.inbox / "voice.flac")
    shutil.copy(photos["jpg"], ingress.inbox / "me.jpg")
    (ingress.inbox / "job.yaml").write_text("audio: voice.flac\navatars: [me.jpg, 'character:pirate']\n")
    for name in ("voice.flac", "me.jpg", "job.yaml"):
        ingress.touch(ingress.inbox / name)
    submitted = []
    for _ in range(3):
        time.sleep(0.25)
        submitted.extend(ingress.tick())
    [job] = submitted
    spec = JobSpec.model_validate_json(store.get(settings.bucket_inputs, job.spec_key))
    assert spec.avatars == ["me.jpg", "character:pirate"] and spec.library is None
    assert not list((ingress.inbox / ".failed").glob("*")) if (ingress.inbox / ".failed").exists() else True


def test_a_moving_clip_can_be_a_character_within_the_length_limit(
    env: tuple[Settings, ObjectStore], photos: dict[str, Path], tmp_path: Path
) -> None:
    """A 2-second clip made with ffmpeg (the photo panning) is a video character; over max_video_seconds
    it is refused, saying the limit."""
    import subprocess

    from pipeline.media import ffmpeg_binary

    settings, store = env
    clip = tmp_path / "wave.mp4"
    subprocess.run(
        [ffmpeg_binary(settings), "-v", "error", "-loop", "1", "-i", str(photos["png"]), "-t", "2",
         "-vf", "crop=400:400:x='50+20*sin(t*3)':y=50,format=yuv420p", "-r", "25", str(clip)],
        check=True,
    )  # fmt: skip
    wave = characters.add_character(store, settings, "default", "Waver", clip)
    assert wave.kind == "video" and wave.media.endswith(".mp4")
    short = settings.model_copy(update={"max_video_seconds": 1.0})
    with pytest.raises(InvalidInput, match="is a 2 s video; the limit is 1 s") as err:
        characters.add_character(store, short, "default", "Longer", clip)
    assert err.value.code == "video_too_long"
