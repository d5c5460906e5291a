"""The quality report (stages.quality) on a real video made here — the astronaut speaking JFK, muxed with
ffmpeg — and on the same video with its audio delayed; the summary in the job status."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from pipeline import ASSETS_DIR
from pipeline.config import load_settings
from pipeline.contracts import (
    FaceFrame,
    FaceTrack,
    JobOptions,
    JobRecord,
    JobSpec,
    Manifest,
    MediaInfo,
    Motion,
    QualityReport,
    StageRecord,
    State,
)
from pipeline.errors import InvalidInput
from pipeline.keys import artifact_key
from pipeline.media import FrameWriter, ffmpeg_binary, mux
from pipeline.stage import StageContext
from pipeline.status import fold, with_quality
from pipeline.storage.local import LocalStore
from pipeline.testing import StageEnvironment
from stages.lib.faces.landmarks import DlibDetector, face_box
from stages.quality import assess, measure
from stages.render.base import SAMPLE_RATE, RenderRequest
from stages.render.motion import Animated
from stages.render.viseme import VisemeRenderer
from stages.timing import timing_from_audio

FPS = 25.0
TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """The bundled public-domain face photo, RGB."""
    return cv2.cvtColor(np.asarray(cv2.imread(str(ASSETS_DIR / "astronaut.png"))), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def talking_video(tmp_path_factory: pytest.TempPathFactory, jfk: np.ndarray, astronaut: np.ndarray) -> Path:
    """The astronaut photo speaking the JFK clip (viseme renderer, subtle motion) as an MP4 with sound."""
    folder = tmp_path_factory.mktemp("quality")
    settings = load_settings(None, data_dir=folder)
    (found,) = DlibDetector().detect(astronaut)
    assert found.landmarks is not None
    face = FaceFrame(
        box=face_box(found.landmarks), landmarks=[(float(x), float(y)) for x, y in found.landmarks]
    )
    n = math.ceil(len(jfk) / SAMPLE_RATE * FPS)
    track = FaceTrack(detector="dlib", width=512, height=512, fps=FPS, frames=[face])
    request = RenderRequest(
        jfk, FPS, n, track, JobOptions(transcript=TRANSCRIPT), speech=timing_from_audio(jfk, TRANSCRIPT),
        motion=Motion.subtle, seed=5, still=True,
    )  # fmt: skip
    silent, wav, video = folder / "silent.mp4", folder / "voice.wav", folder / "talking.mp4"
    with FrameWriter(settings, silent, 512, 512, FPS) as writer:
        for frame in Animated(VisemeRenderer()).render(
            request, ((i, astronaut, face) for i in range(n)), lambda _: None
        ):
            writer.write(frame)
    soundfile.write(str(wav), jfk, SAMPLE_RATE)
    mux(settings, silent, wav, video, len(jfk) / SAMPLE_RATE)
    return video


def delayed(video: Path, seconds: float, folder: Path) -> Path:
    """The same MP4 with its audio track starting ``seconds`` later (a stream copy, no re-encode)."""
    out = folder / f"delayed-{seconds:+.2f}.mp4"
    ffmpeg = ffmpeg_binary(load_settings(None, data_dir=folder))
    args = [
        ffmpeg,
        "-y",
        "-loglevel",
        "error",
        "-i",
        str(video),
        "-itsoffset",
        f"{seconds}",
        "-i",
        str(video),
    ]
    subprocess.run([*args, "-map", "0:v", "-map", "1:a", "-c", "copy", str(out)], check=True)
    return out


def test_report_of_a_good_video(talking_video: Path) -> None:
    """In sync, still in the pauses, no drift: a high score, nothing flagged, landmarks on every frame."""
    report = measure(talking_video, landmarker=DlibDetector())
    assert report.offset_ms is not None and abs(report.offset_ms) <= 40.0, report
    assert report.offset_confidence > 0.4 and report.method == "landmarks"
    assert report.face_frames == report.frames == 275
    assert report.silence_motion is not None and report.silence_motion < 0.3
    assert abs(report.duration_drift_ms) < 45 and report.mouth_flicker is not None
    assert report.score > 0.8 and not report.flagged and report.problems == []


def test_audio_delayed_by_200_ms_is_measured(talking_video: Path, tmp_path: Path) -> None:
    """Remuxed with the audio 200 ms late: the analyzer reads 200 ± 40 ms and flags the video."""
    report = measure(delayed(talking_video, 0.2, tmp_path), landmarker=DlibDetector(), threshold=0.5)
    assert report.offset_ms == pytest.approx(200.0, abs=40.0)
    assert report.flagged and any("after the mouth" in p for p in report.problems)


def test_status_carries_the_summary(tmp_path: Path) -> None:
    """A task's quality.json in the work bucket shows up in the job status, and a flagged one flags the job."""
    settings = load_settings(None, data_dir=tmp_path)
    store = LocalStore(tmp_path / "store")
    store.ensure_buckets([settings.bucket_work])
    report = QualityReport(score=0.3, flagged=True, threshold=0.5, offset_ms=180.0, problems=["late"])
    key = artifact_key("j0000000000000000001", "a0", "quality.json")
    store.put(settings.bucket_work, key, report.model_dump_json().encode())
    job = JobRecord(
        job_id="j0000000000000000001",
        source_bucket="in",
        source_key="k",
        name="n",
        tasks={"a0": "x.png"},
        chain=["validate", "publish"],
    )
    record = StageRecord(job_id=job.job_id, task="a0", stage="publish", state=State.done)
    status = with_quality(store, settings, fold(job.job_id, job, [record], job.chain))
    quality = status.tasks["a0"].quality
    assert quality is not None and quality.flagged and quality.offset_ms == 180.0 and status.flagged


def _context(tmp_path: Path) -> StageContext:
    settings = load_settings(None, data_dir=tmp_path / "data")
    store = LocalStore(tmp_path / "store")
    store.ensure_buckets([settings.bucket_work])
    workdir = tmp_path / "work"
    workdir.mkdir()
    return StageEnvironment(settings, store).context(
        job_id="j0000000000000000002", stage="enhance", workdir=workdir
    )


def _manifest() -> Manifest:
    media = MediaInfo(audio_seconds=11.0, fps=FPS, width=512, height=512, frames=1, still=True)
    return Manifest(
        job_id="j0000000000000000002",
        task="a0",
        stage="render",
        spec_key="k",
        avatar_name="host.png",
        media=media,
    )


def test_low_quality_flags_or_fails_as_the_job_asks(talking_video: Path, tmp_path: Path) -> None:
    """The enhance stage's call: a video 200 ms out of sync is flagged under min_quality; with
    fail_on_low_quality the job fails, saying why in words and naming the avatar."""
    late = delayed(talking_video, 0.2, tmp_path)
    ctx = _context(tmp_path)
    spec = JobSpec(audio="voice.wav", options=JobOptions(min_quality=0.6))
    report = assess(ctx, _manifest(), late, spec)
    assert report.flagged and report.threshold == 0.6
    failing = JobSpec(audio="voice.wav", options=JobOptions(min_quality=0.6, fail_on_low_quality=True))
    with pytest.raises(InvalidInput, match=r"host\.png scored 0\.\d\d for quality.*after the mouth moves"):
        assess(ctx, _manifest(), late, failing)
