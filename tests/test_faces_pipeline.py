"""Faces through the whole pipeline: the published video's quality report (in sync as published, 200 ms
off once its audio is delayed) and its summary in the status; a clip whose middle 2 s show no face is
made, with those frames left as they were."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.cli.jobs import _describe
from pipeline.config import Settings
from pipeline.contracts import JobOptions, QualityReport, State
from pipeline.media import FrameWriter, decode_frames, ffmpeg_binary, normalize_audio
from pipeline.storage import open_store
from pipeline.submit import Submission, submit
from stages.lib.faces.landmarks import DlibDetector
from stages.lib.quality import measure
from tests.conftest import make_settings
from tests.pipeline.test_stack import run_with_stack, wait_done

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
FPS = 25.0


def run_job(settings: Settings, **fields: Any) -> Any:
    asked = Submission(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    async def body(stack: Any) -> Any:
        submitted = await asyncio.to_thread(submit, stack.store, settings, asked)
        return await wait_done(stack, submitted.job_id, timeout=300)

    return run_with_stack(settings, body)


def outputs(settings: Settings, job_id: str) -> dict[str, str]:
    store = open_store(settings)
    return {i.key.rsplit("/", 1)[-1]: i.key for i in store.list(settings.bucket_outputs, f"{job_id}/")}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, assets: Path, nats_url: str) -> dict[str, Any]:
    """One real job with the defaults: the astronaut photo speaking JFK (viseme, subtle motion)."""
    tmp = tmp_path_factory.mktemp("published")
    settings = make_settings(tmp, nats_url=nats_url)
    status = run_job(
        settings,
        audio=assets / "jfk.flac",
        avatars=[assets / "astronaut.png"],
        options=JobOptions(transcript=TRANSCRIPT),
    )
    assert status.state == State.done, status.reason
    files = outputs(settings, status.job_id)
    store = open_store(settings)
    video = tmp / "published.mp4"
    store.download(settings.bucket_outputs, files["jfk.mp4"], video)
    report = QualityReport.model_validate_json(store.get(settings.bucket_outputs, files["jfk.quality.json"]))
    return {"status": status, "video": video, "report": report, "settings": settings}


def test_published_report_is_in_sync_and_in_the_status(published: dict[str, Any]) -> None:
    """The report published next to the video finds the audio within ±40 ms of the mouth, on every
    frame's landmarks, and little change away from the face; the job status carries its summary and
    `mouthpiece status` shows it."""
    report: QualityReport = published["report"]
    assert report.offset_ms is not None and abs(report.offset_ms) <= 40.0, report
    assert report.method == "landmarks" and report.face_frames == report.frames
    assert report.outside_change is not None and report.outside_change < 3.0  # the photo kept its identity
    assert not report.flagged and report.score >= 0.8, report.problems
    quality = published["status"].tasks["a0"].quality
    assert quality is not None and quality.score == report.score and not published["status"].flagged
    assert "quality: " in _describe(published["status"])


def test_published_video_with_delayed_audio_reads_200_ms(published: dict[str, Any], tmp_path: Path) -> None:
    """The published video remuxed with its audio 200 ms late: 200 ± 40 ms; as published: ±40 ms."""
    video: Path = published["video"]
    late = tmp_path / "late.mp4"
    ffmpeg = ffmpeg_binary(published["settings"])
    args = [ffmpeg, "-y", "-loglevel", "error", "-i", str(video), "-itsoffset", "0.2", "-i", str(video)]
    subprocess.run([*args, "-map", "0:v", "-map", "1:a", "-c", "copy", str(late)], check=True)
    detector = DlibDetector()
    assert measure(late, landmarker=detector).offset_ms == pytest.approx(200.0, abs=40.0)
    as_published = measure(video, landmarker=detector).offset_ms
    assert as_published is not None and abs(as_published) <= 40.0


def test_frames_without_a_face_pass_through(
    tmp_path: Path, assets: Path, data_dir: Path, nats_url: str
) -> None:
    """A 6 s video: the astronaut for 2 s, a cup of coffee for 2 s, the astronaut again. The job succeeds,
    and the coffee frames of the published video match the clip (after encoding), where a mouth drawn at a
    guessed place would not."""
    settings = make_settings(tmp_path, nats_url=nats_url)
    face = cv2.cvtColor(cv2.imread(str(assets / "astronaut.png")), cv2.COLOR_BGR2RGB)
    cup = cv2.resize(cv2.cvtColor(cv2.imread(str(data_dir / "coffee.jpg")), cv2.COLOR_BGR2RGB), (512, 512))
    clip = tmp_path / "clip.mp4"
    with FrameWriter(settings, clip, 512, 512, FPS, intermediate=False) as writer:
        for i in range(150):
            frame = cup if 50 <= i < 100 else np.roll(face, i % 50 - 25, axis=1)
            writer.write(np.ascontiguousarray(frame))
    voice = tmp_path / "voice.wav"
    normalize_audio(settings, assets / "jfk.flac", voice)
    import soundfile

    samples, rate = soundfile.read(str(voice), dtype="float32")  # the first 6 s of the speech
    soundfile.write(str(tmp_path / "six.wav"), samples[: 6 * rate], rate)
    status = run_job(
        settings, audio=tmp_path / "six.wav", avatars=[clip], options=JobOptions(transcript=None)
    )
    assert status.state == State.done, status.reason
    store = open_store(settings)
    video = tmp_path / "out.mp4"
    store.download(
        settings.bucket_outputs,
        next(k for n, k in outputs(settings, status.job_id).items() if n.endswith(".mp4")),
        video,
    )
    made, source = list(decode_frames(video)), list(decode_frames(clip))
    mouth = (slice(120, 200), slice(170, 290))  # where the face (and so a drawn mouth) was
    for i in range(53, 97):  # the coffee frames, away from the cuts
        assert np.abs(made[i][mouth].astype(float) - source[i][mouth]).mean() < 4.0, i
    spoken = [np.abs(made[i][mouth].astype(float) - source[i][mouth]).max() for i in range(110, 140)]
    assert max(spoken) > 40  # the face frames do get a mouth
