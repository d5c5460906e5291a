"""validate+transcode on real media: what it accepts, how it normalizes, and what it refuses (and says)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.contracts import SpeechTiming, StageRecord, State, Upload, job_id_for
from pipeline.errors import InvalidInput, RetryableError
from pipeline.media import decode_frames, load_audio, probe
from pipeline.runner import run_inline
from pipeline.status import fold
from pipeline.storage import open_store
from pipeline.storage.base import ObjectStore
from stages.validate import prepare_store
from tests.conftest import make_settings


def upload(store: ObjectStore, settings: Settings, key: str, data: bytes | Path) -> Upload:
    info = store.put(settings.bucket_inputs, key, data)
    return Upload(bucket=info.bucket, key=key, etag=info.etag, size=info.size)


def validate(settings: Settings, store: ObjectStore, up: Upload) -> list:
    return run_inline(settings, store, "validate", up, job_id_for(up.bucket, up.key, up.etag), "job")


@pytest.fixture
def env(tmp_path: Path) -> tuple[Settings, ObjectStore]:
    settings = make_settings(tmp_path)
    store = open_store(settings)
    prepare_store(store, settings)
    return settings, store


def spec_with(
    store: ObjectStore, settings: Settings, folder: str, files: dict[str, Path | bytes], spec: str
) -> Upload:
    for name, data in files.items():
        store.put(settings.bucket_inputs, f"{folder}/{name}", data)
    return upload(store, settings, f"{folder}/job.yaml", spec.encode())


def test_voice_and_photo_are_normalized(env: tuple[Settings, ObjectStore], assets: Path) -> None:
    """44.1 kHz stereo FLAC → 16 kHz mono WAV of the same length; a photo → a one-frame H.264 clip."""
    settings, store = env
    up = spec_with(
        store,
        settings,
        "jobs/a",
        {"v.flac": assets / "jfk.flac", "f.png": assets / "astronaut.png"},
        "audio: v.flac\navatars: [f.png]\n",
    )
    [m] = validate(settings, store, up)
    assert m.task == "a0" and m.avatar_name == "f.png"
    assert m.media.still and m.media.frames == 1 and (m.media.width, m.media.height) == (512, 512)
    assert abs(m.media.audio_seconds - 11.0) < 0.01
    wav, clip = Path(settings.data_dir / "w.wav"), Path(settings.data_dir / "c.mp4")
    store.download(settings.bucket_work, m.artifacts["audio"].key, wav)
    store.download(settings.bucket_work, m.artifacts["avatar"].key, clip)
    assert probe(wav).sample_rate == 16_000 and probe(wav).channels == 1 and len(load_audio(wav)) == 176_000
    assert probe(clip).video_codec == "h264"


def test_lone_voice_gets_the_default_avatar(env: tuple[Settings, ObjectStore], assets: Path) -> None:
    """audio/<clip> alone → one task with the default avatar, published to the output folder."""
    settings, store = env
    [m] = validate(settings, store, upload(store, settings, "audio/hi there.flac", assets / "jfk.flac"))
    assert m.avatar_name == "avatar.png"


def test_same_media_are_converted_once(env: tuple[Settings, ObjectStore], assets: Path) -> None:
    """Two jobs on the same files share the content-addressed normalized media."""
    settings, store = env
    first = validate(settings, store, upload(store, settings, "audio/one.flac", assets / "jfk.flac"))[0]
    second = validate(settings, store, upload(store, settings, "audio/two.flac", assets / "jfk.flac"))[0]
    assert first.artifacts["audio"].key == second.artifacts["audio"].key
    assert first.artifacts["avatar"].key == second.artifacts["avatar"].key
    assert first.artifacts["speech"].key == second.artifacts["speech"].key  # timed once


def test_every_task_gets_the_one_speech_timing(env: tuple[Settings, ObjectStore], assets: Path) -> None:
    """Two avatars, one voice: both tasks carry the same ``speech`` artifact, timed from the audio."""
    settings, store = env
    up = spec_with(
        store, settings, "jobs/two", {"v.flac": assets / "jfk.flac", "f.png": assets / "astronaut.png"},
        "audio: v.flac\navatars: [f.png, f.png]\noptions: {language: en}\n",
    )  # fmt: skip
    first, second = validate(settings, store, up)
    assert first.artifacts["speech"] == second.artifacts["speech"]
    timing = SpeechTiming.model_validate_json(store.get(settings.bucket_work, first.artifacts["speech"].key))
    assert timing.language == "en" and len(timing.words) >= 20 and timing.visemes and timing.speech


def test_speech_text_is_spoken_by_piper_and_timed_by_what_it_says(
    env: tuple[Settings, ObjectStore],
) -> None:
    """A ``speech:`` job: Piper speaks the speakable text, the task's notes name the engine and voice,
    and the timing's words are the written text (digits, emoji dropped) timed by the spoken words."""
    settings, store = env
    up = spec_with(store, settings, "jobs/say", {}, "speech: 'Doors open at 7pm 🎉 see you there!'\n")
    [task] = validate(settings, store, up)
    assert task.info["notes"] == ["speech synthesized by Piper, voice en_US-joe-medium"]
    timing = SpeechTiming.model_validate_json(store.get(settings.bucket_work, task.artifacts["speech"].key))
    assert [w.text for w in timing.words] == ["Doors", "open", "at", "7pm", "see", "you", "there!"]
    assert timing.source == "transcript" and all(w.end > w.start for w in timing.words[:3])


def test_job_status_lists_the_notes_of_its_stages() -> None:
    """Notes the stages put in their manifests reach the job's status once each."""
    records = [
        StageRecord(job_id="j1", task=task, stage=stage, state=State.done, notes=notes)
        for task, stage, notes in (("a0", "detect", ["voice A"]), ("a1", "detect", ["voice A"]), ("a0", "enhance", ["voice A", "font"]))
    ]  # fmt: skip
    assert fold("j1", None, records, ["validate", "detect", "enhance", "publish"]).notes == [
        "voice A",
        "font",
    ]


@pytest.mark.parametrize(
    ("limits", "files", "spec", "message"),
    [
        (
            {"max_audio_seconds": 5.0},
            {"v.flac": "jfk.flac"},
            "audio: v.flac\n",
            "v.flac is 11 s long; the limit is 5 s",
        ),
        (
            {"max_input_side": 256},
            {"v.flac": "jfk.flac", "big.png": "astronaut.png"},
            "audio: v.flac\navatars: [big.png]\n",
            "big.png is 512×512 pixels; the limit is 256",
        ),
        (
            {"max_input_bytes": 100_000},
            {"v.flac": "jfk.flac"},
            "audio: v.flac\n",
            "v.flac is 1 MB; the limit is 0 MB",
        ),
        ({}, {"v.png": "astronaut.png"}, "audio: v.png\n", "v.png has no sound in it"),
        (
            {},
            {"v.flac": "jfk.flac", "s.flac": "jfk.flac"},
            "audio: v.flac\navatars: [s.flac]\n",
            "s.flac is not an image or a video",
        ),
        ({}, {}, "audio: [unclosed\n", "job.yaml is not valid YAML"),
        ({}, {}, "avatars: [x.png]\n", "exactly one of 'audio'"),
        ({}, {}, "audio: ../../etc/passwd\n", "'..'"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason_naming_the_file(
    tmp_path: Path, assets: Path, limits: dict, files: dict[str, str], spec: str, message: str
) -> None:
    """Too long, too big, too large, not audio, not an image, broken spec, unsafe path: InvalidInput."""
    settings = make_settings(tmp_path, **limits)
    store = open_store(settings)
    prepare_store(store, settings)
    up = spec_with(store, settings, "jobs/bad", {n: assets / f for n, f in files.items()}, spec)
    with pytest.raises(InvalidInput) as caught:
        validate(settings, store, up)
    assert message in caught.value.reason


def test_text_renamed_to_png_is_refused(env: tuple[Settings, ObjectStore], assets: Path) -> None:
    """A text file named .png is not an image, and the reason says which file."""
    settings, store = env
    up = spec_with(
        store,
        settings,
        "jobs/t",
        {"v.flac": assets / "jfk.flac", "me.png": b"hello, not a picture\n" * 9},
        "audio: v.flac\navatars: [me.png]\n",
    )
    with pytest.raises(InvalidInput, match=r"me\.png could not be decoded as an image or video"):
        validate(settings, store, up)


def test_media_named_but_not_uploaded_is_retried(env: tuple[Settings, ObjectStore]) -> None:
    """A spec that arrives before its media is retryable (the upload may still be on its way)."""
    settings, store = env
    up = spec_with(store, settings, "jobs/early", {}, "audio: later.flac\n")
    with pytest.raises(RetryableError, match=r"later\.flac"):
        validate(settings, store, up)


def test_transparent_avatar_is_flattened_onto_white(env: tuple[Settings, ObjectStore], assets: Path) -> None:
    """A sticker-like PNG with a transparent background gets a white background, not black garbage."""
    settings, store = env
    rgba = np.zeros((200, 200, 4), np.uint8)
    cv2.circle(rgba, (100, 100), 60, (40, 120, 200, 255), -1)
    ok, png = cv2.imencode(".png", rgba)
    assert ok
    up = spec_with(
        store,
        settings,
        "jobs/alpha",
        {"v.flac": assets / "jfk.flac", "s.png": png.tobytes()},
        "audio: v.flac\navatars: [s.png]\n",
    )
    [m] = validate(settings, store, up)
    clip = settings.data_dir / "a.mp4"
    store.download(settings.bucket_work, m.artifacts["avatar"].key, clip)
    frame = next(iter(decode_frames(clip)))
    assert frame[5, 5].min() > 235


@pytest.mark.parametrize(("fps", "frames", "normalized_frames"), [(25.0, 40, 40), (30.0, 48, 40)])
def test_video_avatars_become_constant_25_fps(
    env: tuple[Settings, ObjectStore], assets: Path, fps: float, frames: int, normalized_frames: int
) -> None:
    """A 1.6 s video avatar: already H.264 at 25 fps → copied frame for frame; at 30 fps → resampled."""
    from pipeline.media import FrameWriter, already_normalized

    settings, store = env
    clip = settings.data_dir / f"v{fps:g}.mp4"
    with FrameWriter(settings, clip, 160, 120, fps, intermediate=False) as writer:
        for i in range(frames):
            writer.write(np.full((120, 160, 3), (i * 5) % 255, np.uint8))
    assert already_normalized(settings, probe(clip)) is (fps == 25.0)
    up = spec_with(
        store,
        settings,
        f"jobs/v{fps:g}",
        {"v.flac": assets / "jfk.flac", "me.mp4": clip},
        "audio: v.flac\navatars: [me.mp4]\n",
    )
    [m] = validate(settings, store, up)
    assert not m.media.still and m.media.frames == normalized_frames and m.media.fps == 25.0
