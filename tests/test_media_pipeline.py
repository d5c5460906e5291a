"""The media stages through the whole pipeline, with a real photo and real speech: lips move with the
words, nothing else in the picture moves, subtitles follow the transcript, batch jobs, reuse, no face."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.contracts import JobOptions, Manifest, Motion, State, SubtitleMode
from pipeline.keys import manifest_key
from pipeline.media import decode_frames, load_audio, normalize_audio
from pipeline.stack import Stack
from pipeline.submit import Submission, submit
from tests.conftest import make_settings
from tests.pipeline.test_stack import run_with_stack, wait_done
from tests.test_e2e import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def face_box(image_rgb: np.ndarray) -> tuple[int, int, int, int]:
    """The face in the test photo, found independently of the pipeline (OpenCV's frontal cascade)."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = cascade.detectMultiScale(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(60, 60))
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return int(x), int(y), int(w), int(h)


def loudness_envelope(audio: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    hop = 16_000 / fps
    return np.array(
        [np.sqrt(np.mean(audio[int(i * hop) : int((i + 1) * hop)] ** 2) + 1e-12) for i in range(n_frames)]
    )


def run_job(settings: Any, **fields: Any) -> tuple[Any, Stack | None]:
    async def body(stack: Stack) -> Any:
        asked = Submission(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        submitted = await asyncio.to_thread(submit, stack.store, settings, asked)
        return await wait_done(stack, submitted.job_id, timeout=300)

    return run_with_stack(settings, body)


@pytest.fixture(scope="module")
def talking(tmp_path_factory: pytest.TempPathFactory, assets: Path, nats_url: str) -> dict[str, Any]:
    """One real job: the astronaut photo speaking the JFK clip, with the transcript, soft subtitles."""
    tmp = tmp_path_factory.mktemp("talking")
    settings = make_settings(tmp, nats_url=nats_url)
    status = run_job(
        settings,
        audio=assets / "jfk.flac",
        avatars=[assets / "astronaut.png"],
        # a still head: these tests isolate the mouth (blinks and head motion: tests/test_faces_pipeline.py)
        options=JobOptions(transcript=TRANSCRIPT, subtitles=SubtitleMode.soft, motion=Motion.none),
    )
    assert status.state == State.done, status.reason
    from pipeline.storage import open_store

    store = open_store(settings)
    files = {
        i.key.rsplit("/", 1)[-1]: i.key for i in store.list(settings.bucket_outputs, f"{status.job_id}/")
    }
    video = tmp / "out.mp4"
    store.download(settings.bucket_outputs, next(k for n, k in files.items() if n.endswith(".mp4")), video)
    wav = tmp / "voice.wav"
    normalize_audio(settings, assets / "jfk.flac", wav)
    srt = store.get(settings.bucket_outputs, next(k for n, k in files.items() if n.endswith(".srt"))).decode()
    vtt = store.get(settings.bucket_outputs, next(k for n, k in files.items() if n.endswith(".vtt"))).decode()
    return {
        "frames": list(decode_frames(video)),
        "audio": load_audio(wav),
        "srt": srt,
        "vtt": vtt,
        "files": files,
    }


def test_mouth_moves_with_the_loudness_of_the_speech(talking: dict[str, Any], assets: Path) -> None:
    """The mouth region's change over time follows the voice's loudness envelope (Pearson r > 0.5)."""
    frames = talking["frames"]
    x, y, w, h = face_box(frames[0])
    mouth = (slice(y + int(0.62 * h), y + int(0.95 * h)), slice(x + int(0.25 * w), x + int(0.75 * w)))
    ref = frames[0][mouth].astype(np.float32)
    change = np.array([np.abs(f[mouth].astype(np.float32) - ref).mean() for f in frames])
    envelope = loudness_envelope(talking["audio"], len(frames), 25.0)
    r = float(np.corrcoef(change, envelope)[0, 1])
    assert r > 0.5, f"mouth motion does not follow the speech (r = {r:.2f})"


def test_nothing_outside_the_lower_face_changes(talking: dict[str, Any]) -> None:
    """Outside the lower face every frame matches the first (mean absolute difference < 2/255)."""
    frames = talking["frames"]
    x, y, w, h = face_box(frames[0])
    keep = np.ones(frames[0].shape[:2], bool)
    keep[y + h // 2 : min(frames[0].shape[0], y + int(1.35 * h)), max(0, x - w // 4) : x + w + w // 4] = False
    first = frames[0].astype(np.float32)
    worst = max(float(np.abs(f.astype(np.float32) - first)[keep].mean()) for f in frames)
    assert worst < 2.0, f"pixels outside the lower face changed by {worst:.2f}/255 on average"


def _cues(srt: str) -> list[tuple[float, float, str]]:
    cues = []
    for block in srt.strip().split("\n\n"):
        lines = block.splitlines()
        start, end = re.findall(r"(\d+):(\d+):(\d+),(\d+)", lines[1])
        to_s = lambda t: int(t[0]) * 3600 + int(t[1]) * 60 + int(t[2]) + int(t[3]) / 1000  # noqa: E731
        cues.append((to_s(start), to_s(end), " ".join(lines[2:])))
    return cues


def test_subtitles_follow_the_transcript(talking: dict[str, Any]) -> None:
    """The .srt beside the video has the transcript's words, in cues inside the speech; .vtt too."""
    cues = _cues(talking["srt"])
    assert " ".join(c[2] for c in cues).split() == TRANSCRIPT.split()
    duration = len(talking["audio"]) / 16_000
    assert all(0.0 <= s < e <= duration + 0.05 for s, e, _ in cues)
    assert cues[0][0] >= 0.1  # the clip starts with a short silence
    assert talking["vtt"].startswith("WEBVTT")


def test_no_face_fails_the_job_and_publishes_nothing(
    tmp_path: Path, assets: Path, data_dir: Path, nats_url: str
) -> None:
    """A photo without a face → a failed job saying so, naming the file; no video anywhere."""
    settings = make_settings(tmp_path, nats_url=nats_url)
    status = run_job(settings, audio=assets / "jfk.flac", avatars=[data_dir / "coffee.jpg"])
    assert status.state == State.failed
    assert "no face found in coffee.jpg" in status.reason
    from pipeline.storage import open_store

    outputs = [i.key for i in open_store(settings).list(settings.bucket_outputs)]
    assert not [k for k in outputs if k.endswith(".mp4")]


def test_one_audio_three_avatars_make_three_videos(tmp_path: Path, assets: Path, data_dir: Path) -> None:
    """Batch: `render` with one voice and three avatars writes three videos into the output folder."""
    flipped = tmp_path / "mirror.png"
    cv2.imwrite(str(flipped), cv2.flip(cv2.imread(str(assets / "astronaut.png")), 1))
    out = tmp_path / "videos"
    args = [
        "render",
        str(assets / "jfk.flac"),
        str(assets / "astronaut.png"),
        str(flipped),
        str(data_dir / "cartoon_face.png"),
        "-o",
        str(out),
    ]
    result = run_cli(args, tmp_path, timeout=600, MOUTHPIECE_CONCURRENCY=json.dumps({"render": 2}))
    assert result.returncode == 0, result.stderr[-2000:]
    videos = sorted(p.name for p in out.glob("*.mp4"))
    assert videos == ["jfk-astronaut.mp4", "jfk-cartoon_face.mp4", "jfk-mirror.mp4"]


def test_rerun_with_another_renderer_reuses_media_and_face_tracks(
    tmp_path: Path, assets: Path, nats_url: str
) -> None:
    """Content-addressed artifacts: a second job on the same files (another renderer) gets the same
    normalized media and face track objects instead of recomputing them."""
    settings = make_settings(tmp_path, nats_url=nats_url)
    first = run_job(settings, audio=assets / "jfk.flac", avatars=[assets / "astronaut.png"])
    second = run_job(
        settings,
        audio=assets / "jfk.flac",
        avatars=[assets / "astronaut.png"],
        options=JobOptions(renderer="none"),
    )
    assert first.state == second.state == State.done and first.job_id != second.job_id
    from pipeline.storage import open_store

    store = open_store(settings)

    def detected(job_id: str) -> Manifest:
        key = manifest_key(job_id, "a0", "detect")
        return Manifest.model_validate_json(store.get(settings.bucket_work, key))

    a, b = detected(first.job_id), detected(second.job_id)
    for role in ("audio", "avatar", "faces"):
        assert a.artifacts[role].key == b.artifacts[role].key, role
    assert len(list(store.list(settings.bucket_work, "cache/faces/"))) == 1
