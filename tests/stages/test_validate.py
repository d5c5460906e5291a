"""validate+transcode on real media: what it accepts, how it normalizes, and what it refuses (and says)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.contracts import SpeechTiming, StageRecord, State, job_id_for
from pipeline.errors import InvalidInput, RetryableError
from pipeline.media import decode_frames, load_audio, probe
from pipeline.status import fold
from pipeline.storage import open_store
from pipeline.storage.base import ObjectInfo, ObjectStore
from pipeline.testing import StageEnvironment
from stages.validate import prepare_store
from tests.conftest import make_settings


def upload(store: ObjectStore, settings: Settings, key: str, data: bytes | Path) -> ObjectInfo:
    return store.put(settings.bucket_inputs, key, data)


def validate(settings: Settings, store: ObjectStore, up: ObjectInfo) -> list:
    env = StageEnvironment(settings, store)
    return env.run("validate", up, job_id=job_id_for(up.bucket, up.key, up.etag), task="job")


@pytest.fixture
def env(tmp_path: Path) -> tuple[Settings, ObjectStore]:
    settings = make_settings(tmp_path)
    store = open_store(settings)
    prepare_store(store, settings)
    return settings, store


def spec_with(
    store: ObjectStore, settings: Settings, folder: str, files: dict[str, Path | bytes], spec: str
) -> ObjectInfo:
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
            "v.flac is 1.1 MB; the limit is 0.1 MB",
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
    """A text file named .png is not an image, and the reason says which file and what it is."""
    settings, store = env
    up = spec_with(
        store,
        settings,
        "jobs/t",
        {"v.flac": assets / "jfk.flac", "me.png": b"hello, not a picture\n" * 9},
        "audio: v.flac\navatars: [me.png]\n",
    )
    with pytest.raises(InvalidInput, match=r"^me\.png is a text file, not an image or video: send a \.png"):
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
    with FrameWriter(settings, clip, 640, 480, fps, intermediate=False) as writer:  # at the minimum height
        for i in range(frames):
            writer.write(np.full((480, 640, 3), (i * 5) % 255, np.uint8))
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


# --- hostile and everyday inputs (issue 9): rotation, non-raster files, absurd sizes, wording ----------

TOOL_WORDS = ("@ 0x", "error code", "Invalid data", "ValidationError", "pydantic", "Traceback", "errno")


def plain(reason: str) -> bool:
    """A refusal a person reads: no ffmpeg stderr, validation-library wording or server path in it."""
    return not any(w.lower() in reason.lower() for w in TOOL_WORDS) and "/tmp/" not in reason


def _portrait_marked(width: int, height: int) -> np.ndarray:
    """A portrait picture as it should be seen: white, with a red band across the top."""
    picture = np.full((height, width, 3), 255, np.uint8)
    picture[: height // 8] = (220, 20, 20)
    return picture


def _first_avatar_frame(settings: Settings, store: ObjectStore, m: object) -> np.ndarray:
    clip = settings.data_dir / "first.mp4"
    store.download(settings.bucket_work, m.artifacts["avatar"].key, clip)  # type: ignore[attr-defined]
    return next(iter(decode_frames(clip)))


def _upright(frame: np.ndarray) -> bool:
    """Red band on top, white at the bottom: the picture is the right way up."""
    h, w, _ = frame.shape
    top, bottom = frame[h // 32, w // 2].astype(int), frame[h - h // 16, w // 2].astype(int)
    return top[0] > 180 and top[1] < 80 and bottom.min() > 200


def test_phone_photo_with_exif_orientation_stays_a_portrait(
    env: tuple[Settings, ObjectStore], assets: Path, tmp_path: Path
) -> None:
    """A JPEG stored landscape (600×512) with EXIF orientation 6 is a 512×600 portrait: the normalized
    avatar is 512×600 and upright (red band on top), not a squashed 600×512."""
    from PIL import Image

    settings, store = env
    stored = Image.fromarray(_portrait_marked(512, 600)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = tmp_path / "phone.jpg"
    stored.save(jpeg, exif=exif.tobytes(), quality=95)
    assert Image.open(jpeg).size == (600, 512)
    assert (probe(jpeg).width, probe(jpeg).height, probe(jpeg).rotation) == (512, 600, 270)
    up = spec_with(
        store, settings, "jobs/exif", {"v.flac": assets / "jfk.flac", "phone.jpg": jpeg},
        "audio: v.flac\navatars: [phone.jpg]\n",
    )  # fmt: skip
    [m] = validate(settings, store, up)
    assert (m.media.width, m.media.height) == (512, 600)
    frame = _first_avatar_frame(settings, store, m)
    assert frame.shape[:2] == (600, 512) and _upright(frame)


def test_portrait_phone_video_with_display_rotation_stays_a_portrait(
    env: tuple[Settings, ObjectStore], assets: Path, tmp_path: Path
) -> None:
    """A phone video stored 480×410 with a display rotation of 90° is a 410×480 portrait: probe says so,
    and the normalized clip is 410×480 and upright (never copied with the rotation left in it)."""
    import subprocess

    from pipeline.media import FrameWriter, ffmpeg_binary

    settings, store = env
    stored = np.ascontiguousarray(np.rot90(_portrait_marked(410, 480), k=-1))  # 480 wide, 410 high
    plain_clip, phone = tmp_path / "sensor.mp4", tmp_path / "phone.mp4"
    with FrameWriter(settings, plain_clip, 480, 410, 25.0, intermediate=False) as writer:
        for _ in range(25):
            writer.write(stored)
    subprocess.run(
        [ffmpeg_binary(settings), "-v", "error", "-display_rotation", "90", "-i", str(plain_clip),
         "-c", "copy", str(phone)],
        check=True,
    )  # fmt: skip
    info = probe(phone)
    assert (info.width, info.height, info.rotation) == (410, 480, 90)
    up = spec_with(
        store, settings, "jobs/phone", {"v.flac": assets / "jfk.flac", "phone.mp4": phone},
        "audio: v.flac\navatars: [phone.mp4]\n",
    )  # fmt: skip
    [m] = validate(settings, store, up)
    assert (m.media.width, m.media.height) == (410, 480) and not m.media.still
    frame = _first_avatar_frame(settings, store, m)
    assert frame.shape[:2] == (480, 410) and _upright(frame)


def test_svg_named_png_is_refused_in_a_sentence(env: tuple[Settings, ObjectStore], assets: Path) -> None:
    """An SVG drawing named .png is refused as what it is, not an AttributeError and not retried."""
    settings, store = env
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle r="20"/></svg>\n'
    up = spec_with(
        store, settings, "jobs/svg", {"v.flac": assets / "jfk.flac", "logo.png": svg},
        "audio: v.flac\navatars: [logo.png]\n",
    )  # fmt: skip
    with pytest.raises(InvalidInput) as caught:
        validate(settings, store, up)
    assert caught.value.reason.startswith("logo.png is an SVG drawing, not an image or video: send a .png")
    assert plain(caught.value.reason)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width``×``height`` (its pixel data is a token: it must never be read)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (
            40_000,
            "huge.png is too large: its picture has 1600 million pixels; the limit is 4096 pixels a side",
        ),
        (9_000, "huge.png is 9000×9000 pixels; the limit is 4096 pixels a side"),
    ],
)
def test_enormous_picture_is_too_large_not_undecodable(
    env: tuple[Settings, ObjectStore], assets: Path, side: int, message: str
) -> None:
    """A 40000×40000 (or 9000×9000) PNG is refused for its size, from its header, without decoding."""
    settings, store = env
    up = spec_with(
        store, settings, f"jobs/huge{side}", {"v.flac": assets / "jfk.flac", "huge.png": _png_header_only(side, side)},
        "audio: v.flac\navatars: [huge.png]\n",
    )  # fmt: skip
    with pytest.raises(InvalidInput) as caught:
        validate(settings, store, up)
    assert caught.value.reason.startswith(message) and plain(caught.value.reason)


def test_short_clip_is_too_short_and_broken_audio_has_no_tool_words(
    env: tuple[Settings, ObjectStore], assets: Path, tmp_path: Path
) -> None:
    """A 0.1 s clip is refused as too short (not 'no audible audio'); a FLAC cut after 3 KB is refused
    without ffmpeg's stderr in the reason."""
    import subprocess

    from pipeline.media import ffmpeg_binary

    settings, store = env
    short = tmp_path / "blip.wav"
    subprocess.run(
        [ffmpeg_binary(settings), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=0.1",
         str(short)],
        check=True,
    )  # fmt: skip
    up = spec_with(store, settings, "jobs/short", {"blip.wav": short}, "audio: blip.wav\n")
    with pytest.raises(
        InvalidInput, match=r"^blip\.wav is too short \(0\.10 s\): send a voice clip of at least"
    ):
        validate(settings, store, up)
    cut = (assets / "jfk.flac").read_bytes()[:3000]
    up = spec_with(store, settings, "jobs/cut", {"cut.flac": cut}, "audio: cut.flac\n")
    with pytest.raises(InvalidInput) as caught:
        validate(settings, store, up)
    assert caught.value.reason.startswith("cut.flac ") and plain(caught.value.reason)


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.integration)])
def test_refusals_name_the_file_as_the_user_named_it(
    tmp_path: Path, assets: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Submitted as 'Grüße Foto.png' (stored under a key-safe slug; the name travels as object metadata,
    on the local store and on S3), a broken photo is refused by that name, not by its slug."""
    from pipeline.submit import Submission, submit
    from tests.conftest import s3_settings

    if backend == "s3":
        settings = s3_settings(tmp_path, request.getfixturevalue("s3_server"))
    else:
        settings = make_settings(tmp_path)
    store = open_store(settings)
    prepare_store(store, settings)
    photo = tmp_path / "Grüße Foto.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    submitted = submit(store, settings, Submission(audio=assets / "jfk.flac", avatars=(photo,)))
    info = store.stat(settings.bucket_inputs, submitted.spec_key)
    assert info is not None
    up = info
    with pytest.raises(InvalidInput) as caught:
        validate(settings, store, up)
    assert caught.value.reason.startswith("Grüße Foto.png ") and "Gr-e" not in caught.value.reason


def test_spec_naming_a_place_it_may_not_publish_to_fails_before_any_work(
    tmp_path: Path, assets: Path
) -> None:
    """A spec whose folder destination is not allowed fails in validate: no media converted, nothing in
    outputs/<job>/; its failure note goes to the output folder, not to the folder it named."""
    from pipeline.destinations.targets import tell_failure

    settings = make_settings(tmp_path)
    store = open_store(settings)
    prepare_store(store, settings)
    elsewhere = tmp_path / "elsewhere"
    up = spec_with(
        store, settings, "jobs/away", {"v.flac": assets / "jfk.flac", "f.png": assets / "astronaut.png"},
        f"name: away\naudio: v.flac\navatars: [f.png]\ndestinations: [{{kind: folder, path: {elsewhere}}}]\n",
    )  # fmt: skip
    job_id = job_id_for(up.bucket, up.key, up.etag)
    with pytest.raises(InvalidInput, match="not an allowed output folder") as caught:
        validate(settings, store, up)
    assert not list(store.list(settings.bucket_work, "cache/"))
    assert not list(store.list(settings.bucket_outputs, f"{job_id}/"))
    tell_failure(settings, store, job_id, caught.value.code, caught.value.reason)
    assert not elsewhere.exists()
    note = (settings.outbox / "away.failed.txt").read_text()
    assert "not an allowed output folder" in note


def test_spec_paths_outside_the_folder_are_refused_in_words(env: tuple[Settings, ObjectStore]) -> None:
    """A spec naming ../../etc/passwd is refused with a sentence about the spec, not about object keys."""
    settings, store = env
    up = spec_with(store, settings, "jobs/up", {}, "audio: ../../etc/passwd\n")
    with pytest.raises(InvalidInput) as caught:
        validate(settings, store, up)
    assert caught.value.reason.startswith("job spec job.yaml names '../../etc/passwd', which is not a file")
    assert "object key" not in caught.value.reason


def test_the_same_text_is_synthesized_once_and_cached_by_content(env: tuple[Settings, ObjectStore]) -> None:
    """Two jobs with the same text and voice share one synthesized clip (same key, same bytes); another
    text makes another."""
    settings, store = env
    first = validate(
        settings, store, spec_with(store, settings, "jobs/one", {}, "speech: 'See you at noon.'\n")
    )
    again = validate(
        settings, store, spec_with(store, settings, "jobs/two", {}, "speech: 'See you at noon.'\n")
    )
    other = validate(
        settings, store, spec_with(store, settings, "jobs/three", {}, "speech: 'See you soon.'\n")
    )
    audio = [m[0].artifacts["audio"] for m in (first, again, other)]
    assert audio[0].key.startswith("cache/media/tts-") and audio[0] == audio[1]
    assert audio[2].key != audio[0].key and audio[2].sha256 != audio[0].sha256


def test_the_job_started_when_validate_began_not_when_it_ended(
    env: tuple[Settings, ObjectStore], assets: Path
) -> None:
    """The job record's start is the start of validate's run (its running record), so a job's start time
    does not jump forward when validate finishes."""
    from datetime import UTC, datetime, timedelta

    from pipeline.contracts import JobRecord
    from pipeline.keys import job_record_key
    from pipeline.status import write_record

    settings, store = env
    up = spec_with(
        store,
        settings,
        "jobs/t",
        {"v.flac": assets / "jfk.flac", "f.png": assets / "astronaut.png"},
        "audio: v.flac\navatars: [f.png]\n",
    )
    job_id = job_id_for(up.bucket, up.key, up.etag)
    began = datetime.now(UTC) - timedelta(seconds=42)
    write_record(
        store,
        settings,
        StageRecord(job_id=job_id, task="job", stage="validate", state=State.running, started_at=began),
    )
    validate(settings, store, up)
    record = JobRecord.model_validate_json(store.get(settings.bucket_work, job_record_key(job_id)))
    assert record.created_at == began


def test_small_photo_is_enlarged_to_the_minimum_height(tmp_path: Path, assets: Path) -> None:
    """A 256 px photo becomes a 480 px clip (Lanczos; the manifest says from what size), sharper than a
    blocky enlargement; with ``min_height`` 0 it stays 256 px; a 512 px photo is never enlarged."""
    small = cv2.resize(cv2.imread(str(assets / "astronaut.png")), (256, 256), interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", small)
    assert ok
    for floor, size, upscaled in ((480, (480, 480), (256, 256)), (0, (256, 256), None)):
        settings = make_settings(tmp_path / f"h{floor}", min_height=floor)
        store = open_store(settings)
        prepare_store(store, settings)
        up = spec_with(
            store, settings, "jobs/s", {"v.flac": assets / "jfk.flac", "s.png": png.tobytes()},
            "audio: v.flac\navatars: [s.png]\n",
        )  # fmt: skip
        [m] = validate(settings, store, up)
        assert (m.media.width, m.media.height) == size and m.media.upscaled_from == upscaled
        notes = m.info.get("notes", [])
        assert notes == (["s.png is 256×256 pixels; it was enlarged to 480×480 so the mouth and the "
                          "subtitles have room (a larger picture looks sharper)"] if upscaled else [])  # fmt: skip
        clip = settings.data_dir / "s.mp4"
        store.download(settings.bucket_work, m.artifacts["avatar"].key, clip)
        frame = next(iter(decode_frames(clip)))
        assert frame.shape[:2] == size[::-1]
        if upscaled:  # Lanczos keeps edges: far from a nearest-neighbour copy's 2-pixel steps
            steps = np.abs(np.diff(frame.astype(int), axis=1)).sum(axis=2)
            assert np.mean(steps[:, 1::2] == 0) < 0.5


def _flash_and_beep(settings: Settings, folder: Path, delayed: str) -> Path:
    """A 3 s clip whose picture flashes white and whose sound beeps at the same moment, 1.0 s into the
    container, with the ``delayed`` stream ("audio" or "video") starting 0.18 s late in the container
    (``-itsoffset``: an edit list, as phones write): its own flash or beep is 0.18 s earlier in it."""
    import subprocess

    from pipeline.media import ffmpeg_binary

    at = {"audio": 1.0, "video": 1.0}
    at[delayed] -= 0.18
    picture, sound = folder / "picture.mp4", folder / "sound.m4a"
    ffmpeg = [ffmpeg_binary(settings), "-v", "error", "-y"]
    flash = f"drawbox=c=white:t=fill:enable='between(t,{at['video'] - 0.001:.3f},{at['video'] + 0.039:.3f})'"
    subprocess.run(
        [*ffmpeg, "-f", "lavfi", "-i", "color=c=gray:s=160x120:r=25:d=3", "-vf", flash,
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(picture)],
        check=True,
    )  # fmt: skip
    beep = f"'if(between(t,{at['audio']:.2f},{at['audio'] + 0.1:.2f}),0.8*sin(2*PI*1000*t),0)'"
    subprocess.run(
        [*ffmpeg, "-f", "lavfi", "-i", f"aevalsrc={beep}:s=48000:d=3", "-c:a", "aac", str(sound)], check=True
    )
    clip = folder / f"{delayed}-late.mp4"
    offset = {"audio": ["-i", str(picture), "-itsoffset", "0.18", "-i", str(sound)],
              "video": ["-itsoffset", "0.18", "-i", str(picture), "-i", str(sound)]}[delayed]  # fmt: skip
    subprocess.run([*ffmpeg, *offset, "-map", "0:v", "-map", "1:a", "-c", "copy", str(clip)], check=True)
    return clip


@pytest.mark.parametrize("delayed", ["audio", "video"])
def test_a_stream_that_starts_late_in_its_container_keeps_its_moment(
    env: tuple[Settings, ObjectStore], tmp_path: Path, delayed: str
) -> None:
    """A phone video used as voice and avatar, one of its streams starting 180 ms into the container:
    the beep and the flash that play together in the input are still together after validate (the
    beep 1.0 s into the voice, the flash on frame 25), not 180 ms (4–5 frames) apart."""
    settings, store = env
    clip = _flash_and_beep(settings, tmp_path, delayed)
    up = spec_with(
        store, settings, "jobs/offset", {"clip.mp4": clip}, "audio: clip.mp4\navatars: [clip.mp4]\n"
    )
    [m] = validate(settings, store, up)
    wav, avatar = tmp_path / "voice.wav", tmp_path / "avatar.mp4"
    store.download(settings.bucket_work, m.artifacts["audio"].key, wav)
    store.download(settings.bucket_work, m.artifacts["avatar"].key, avatar)
    samples = load_audio(wav)
    beep = int(np.argmax(np.abs(samples) > 0.2)) / 16_000
    assert beep == pytest.approx(1.0, abs=0.01)
    brightness = [float(f.mean()) for f in decode_frames(avatar)]
    # 180 ms is 4.5 frames: a delayed picture's flash plays at 1.02 s, half-way between frames 25 and 26
    assert int(np.argmax(brightness)) in ((25,) if delayed == "audio" else (25, 26)) and max(brightness) > 200


def test_a_speech_job_this_server_cannot_speak_tells_the_operator_the_fix(
    env: tuple[Settings, ObjectStore], tmp_path: Path
) -> None:
    """A `speech:` job where no voice can speak it (here: Piper forced, no Piper voice for German): the
    job's status — read by operators (CLI, folder notes, console) — says what is missing and the exact
    pip command; the public sentence (Discord) keeps only the reference."""
    from pipeline import install_hint
    from pipeline.errors import ConfigError
    from pipeline.messages import for_operators, for_people

    settings, store = env
    settings = settings.model_copy(update={"tts_engine": "piper"})
    up = upload(
        store, settings, "jobs/say/job.yaml", b"speech: Guten Morgen zusammen.\noptions: {language: de}\n"
    )
    with pytest.raises(ConfigError) as caught:
        validate(settings, store, up)
    text = for_operators(caught.value.code, caught.value.reason, "j1")
    assert "no Piper voice for de" in text and install_hint("voice") in text, text
    assert "pip install" not in for_people(caught.value.code, caught.value.reason, "j1")


# --- the speech timed beside the avatars (issue 27) --------------------------------------------------


def _clip_at_30_fps(settings: Settings, seconds: float) -> Path:
    """A moving 640×480 clip at 30 fps: validate converts it (not a copy), as it does phone videos."""
    from pipeline.media import FrameWriter

    clip = settings.data_dir / "moving30.mp4"
    with FrameWriter(settings, clip, 640, 480, 30.0, intermediate=False) as writer:
        for i in range(int(seconds * 30)):
            frame = np.full((480, 640, 3), 90, np.uint8)
            cv2.circle(frame, (100 + 4 * i % 440, 240), 60, (200, 160, 140), -1)
            writer.write(frame)
    return clip


def test_the_speech_is_timed_while_the_avatar_is_converted(
    env: tuple[Settings, ObjectStore], assets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whisper's timing of the voice runs in its own thread while the avatar video is converted (each
    spied on, both real), so the stage takes about the longer of the two; the manifest still carries
    the one speech timing, and progress never goes back."""
    import threading
    import time

    import stages.validate as validate_module

    settings, store = env
    spans: dict[str, tuple[float, float, str]] = {}

    def spied(name: str, real):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.monotonic()
            try:
                return real(*args, **kwargs)
            finally:
                spans[name] = (start, time.monotonic(), threading.current_thread().name)

        return call

    monkeypatch.setattr(
        validate_module, "normalize_avatar", spied("avatar", validate_module.normalize_avatar)
    )
    monkeypatch.setattr(
        validate_module, "job_speech_timing", spied("speech", validate_module.job_speech_timing)
    )
    up = spec_with(
        store,
        settings,
        "jobs/beside",
        {"v.flac": assets / "jfk.flac", "me.mp4": _clip_at_30_fps(settings, 6.0)},
        "audio: v.flac\navatars: [me.mp4]\n",
    )
    stage_env = StageEnvironment(settings, store)
    [m] = stage_env.run("validate", up, job_id=job_id_for(up.bucket, up.key, up.etag), task="job")
    (a0, a1, avatar_thread), (s0, s1, speech_thread) = spans["avatar"], spans["speech"]
    assert speech_thread != avatar_thread
    assert s0 < a1 and a0 < s1, f"no overlap: avatar {a0:.2f}-{a1:.2f}, speech {s0:.2f}-{s1:.2f}"
    timing = SpeechTiming.model_validate_json(
        store.get(m.artifacts["speech"].bucket, m.artifacts["speech"].key)
    )
    assert timing.source == "whisper" and len(timing.words) == 22
    shown = [fraction for fraction, _ in stage_env.progress]
    assert shown == sorted(shown) and any(note == "timing the speech" for _, note in stage_env.progress)


def test_a_refused_avatar_stops_the_speech_timing_and_is_what_is_said(
    env: tuple[Settings, ObjectStore], assets: Path
) -> None:
    """A refused avatar beside a long voice: the refusal is the avatar's, said without waiting for
    Whisper to hear the whole voice, and no timing thread outlives the stage's run."""
    import threading
    import time

    import soundfile

    settings, store = env
    speech, rate = soundfile.read(str(assets / "jfk.flac"))
    long_voice = settings.data_dir / "long.wav"
    soundfile.write(str(long_voice), np.tile(speech, (30, 1))[: 300 * rate], rate)  # 5 minutes
    up = spec_with(
        store,
        settings,
        "jobs/refused",
        {"v.wav": long_voice, "me.png": b"hello, not a picture\n" * 9},
        "audio: v.wav\navatars: [me.png]\n",
    )
    started = time.monotonic()
    with pytest.raises(InvalidInput, match=r"^me\.png is a text file"):
        validate(settings, store, up)
    assert time.monotonic() - started < 60  # hearing 5 minutes takes minutes here
    assert not [t for t in threading.enumerate() if t.name.startswith("speech-timing")]
