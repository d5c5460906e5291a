"""The enhance+subtitle stage on real media: the JFK speech (made quieter) and the astronaut photo."""

from __future__ import annotations

import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import soundfile
import structlog

import stages.enhance as enhance
import stages.validate as validate
from pipeline import ASSETS_DIR
from pipeline.config import Settings
from pipeline.contracts import (
    REVEAL,
    JobOptions,
    JobSpec,
    Manifest,
    MediaInfo,
    QualityReport,
    Span,
    SpeechTiming,
    SubtitleMode,
    TimedWord,
    job_id_for,
)
from pipeline.errors import FFmpegError
from pipeline.keys import spec_key
from pipeline.media import (
    PICTURE_FINAL,
    FinishJob,
    FrameWriter,
    Loudness,
    SubtitleFont,
    count_frames,
    decode_frames,
    finish_args,
    measure_loudness,
    normalize_audio,
    normalize_avatar,
    probe,
    stream_seconds,
    subtitle_style,
)
from pipeline.stage import ModelCache, StageContext
from pipeline.status import read_spec
from pipeline.storage.local import LocalStore
from pipeline.testing import StageEnvironment
from stages.enhance import burn_in_font
from stages.lib.speech import align as speech
from stages.lib.speech import recognition as whisper_module
from stages.lib.speech.recognition import LoadedWhisper
from stages.lib.speech.timing import speech_artifact
from tests.conftest import make_settings
from tests.stages.conftest import models_with

JFK_TRANSCRIPT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
SIZE = 256
FPS = 25.0
SHORT_TRANSCRIPT = "And so my fellow Americans,"  # what the first 2.5 s say
QUIET = 0.25  # -12 dB: the input sits near -28 LUFS, so reaching -16 takes real normalization


@dataclass
class RecordingLog:
    """A stand-in for the structlog logger that keeps (level, event, fields)."""

    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.events.append((level, event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def names(self, level: str) -> list[str]:
        return [event for lvl, event, _ in self.events if lvl == level]


@dataclass
class Inputs:
    """Media files made once per module by the project's own helpers."""

    audio: Path
    seconds: float
    short_audio: Path
    short_seconds: float
    rendered: Path
    avatar: Path


@dataclass
class Run:
    """One stage run: what it returned, its context and log, and the progress it reported."""

    manifest: Manifest
    ctx: StageContext
    log: RecordingLog
    progress: list[float]

    def path(self, role: str) -> Path:
        ref = self.manifest.artifacts[role]
        return self.ctx.store.path_of(ref.bucket, ref.key)  # type: ignore[attr-defined]


def quieter_wav(settings: Settings, src: Path, dst: Path, seconds: float | None = None) -> float:
    """``src`` normalized to 16 kHz mono (optionally cut to ``seconds``) and 12 dB quieter; its length."""
    normalize_audio(settings, src, dst)
    data, rate = soundfile.read(str(dst), dtype="float32")
    if seconds is not None:
        data = data[: int(seconds * rate)]
    soundfile.write(str(dst), data * QUIET, rate, subtype="PCM_16")
    return len(data) / rate


def rendered_video(settings: Settings, dst: Path, seconds: float) -> Path:
    """A stand-in for render's output: the astronaut with a 'mouth' patch changing every frame."""
    photo = cv2.imread(str(ASSETS_DIR / "astronaut.png"))
    assert photo is not None
    face = cv2.resize(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB), (SIZE, SIZE))
    with FrameWriter(settings, dst, SIZE, SIZE, FPS) as writer:
        for i in range(int(np.ceil(seconds * FPS))):
            frame = face.copy()
            frame[120:140, 110:150] = int(120 + 60 * np.sin(i / 3))
            writer.write(frame)
    return dst


WHISPER: list[LoadedWhisper] = []
"""The session's Whisper model, for ``run_stage`` (set by the autouse fixture below)."""


@pytest.fixture(scope="module", autouse=True)
def _whisper(whisper: LoadedWhisper) -> None:
    WHISPER[:] = [whisper]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    tmp = tmp_path_factory.mktemp("enhance-inputs")
    settings = make_settings(tmp, max_side=SIZE)
    seconds = quieter_wav(settings, ASSETS_DIR / "jfk.flac", tmp / "audio.wav")
    short_seconds = quieter_wav(settings, ASSETS_DIR / "jfk.flac", tmp / "short.wav", seconds=2.5)
    avatar = tmp / "avatar.mp4"
    normalize_avatar(settings, ASSETS_DIR / "astronaut.png", avatar, probe(ASSETS_DIR / "astronaut.png"))
    rendered = rendered_video(settings, tmp / "rendered.mp4", seconds)
    return Inputs(tmp / "audio.wav", seconds, tmp / "short.wav", short_seconds, rendered, avatar)


def run_stage(
    tmp: Path,
    inputs: Inputs,
    options: JobOptions,
    *,
    short: bool = False,
    render: bool = True,
    timing: SpeechTiming | None = None,
    info: dict[str, Any] | None = None,
    **settings: Any,
) -> Run:
    """Store a job (spec, audio, its speech timing, video or avatar) in a fresh local store and run the
    stage on it. The timing is made as validate makes it, unless one is given."""
    config = make_settings(tmp, max_side=SIZE, **settings)
    store = LocalStore(tmp / "store")
    store.ensure_buckets(["inputs", "work", "outputs"])
    job_id = "j" + uuid.uuid4().hex[:19]
    spec = JobSpec(audio="voice.wav", options=options)
    store.put("work", spec_key(job_id), spec.model_dump_json(context=REVEAL).encode())
    log, progress = RecordingLog(), []
    workdir = tmp / "scratch"
    workdir.mkdir()
    env = StageEnvironment(config, store, models_with(config, WHISPER[0]))
    ctx = env.context(job_id=job_id, stage="enhance", spec=spec, workdir=workdir)
    ctx.log, ctx.on_progress = log, lambda fraction, note: progress.append(fraction)
    audio, seconds = (inputs.short_audio, inputs.short_seconds) if short else (inputs.audio, inputs.seconds)
    artifacts = {"audio": ctx.save(audio, "audio.wav", "audio/wav")}
    if timing is not None:
        artifacts["speech"] = ctx.save_model(timing, "speech.json")
    else:  # what validate does: the task's one speech timing
        artifacts["speech"] = speech_artifact(ctx, artifacts["audio"], transcript=options.transcript)
    artifacts["avatar"] = ctx.save(inputs.avatar, "avatar.mp4", "video/mp4")
    if render:
        artifacts["video"] = ctx.save(inputs.rendered, "rendered.mp4", "video/mp4")
    media = MediaInfo(audio_seconds=seconds, fps=FPS, width=SIZE, height=SIZE, frames=1, still=True)
    manifest = Manifest(
        job_id=job_id, task="a0", stage="render", spec_key=spec_key(job_id), avatar_name="astronaut.png",
        media=media, artifacts=artifacts, info=info or {},
    )  # fmt: skip
    [out] = enhance.run(ctx, manifest)
    return Run(out, ctx, log, progress)


def frame_at(video: Path, seconds: float) -> np.ndarray:
    """The RGB frame shown at ``seconds``."""
    wanted = int(seconds * FPS)
    return next(f for i, f in enumerate(decode_frames(video)) if i == wanted).astype(np.float32)


def top_level_boxes(mp4: Path) -> list[str]:
    """The MP4's top-level box types, in file order."""
    data, boxes, offset = mp4.read_bytes(), [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        boxes.append(kind.decode("latin-1"))
        offset += size if size else len(data)
    return boxes


def empty_fontconfig(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make fontconfig find no fonts at all, as in a bare container (ffmpeg inherits the environment)."""
    conf = tmp / "fonts.conf"
    conf.write_text('<?xml version="1.0"?>\n<fontconfig></fontconfig>\n')
    monkeypatch.setenv("FONTCONFIG_FILE", str(conf))


def srt_cue_times(srt: Path) -> list[tuple[float, float]]:
    times = []
    for line in srt.read_text().splitlines():
        if " --> " in line:
            a, b = (p.replace(",", ".").split(":") for p in line.split(" --> "))
            times.append(
                (
                    int(a[0]) * 3600 + int(a[1]) * 60 + float(a[2]),
                    int(b[0]) * 3600 + int(b[1]) * 60 + float(b[2]),
                )
            )
    return times


# --- soft subtitles from the transcript (one run, several checks) -----------------------------------


@pytest.fixture(scope="module")
def soft(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> Run:
    options = JobOptions(subtitles=SubtitleMode.soft, transcript=JFK_TRANSCRIPT)
    return run_stage(tmp_path_factory.mktemp("soft"), inputs, options)


def test_final_is_h264_aac_faststart_as_long_as_the_audio(soft: Run, inputs: Inputs) -> None:
    """``final`` is H.264 yuv420p + AAC 48 kHz with the moov box before the media data, and lasts as
    long as the voice (within 0.05 s)."""
    final = soft.path("final")
    info = probe(final)
    assert (info.video_codec, info.audio_codec, info.sample_rate) == ("h264", "aac", 48_000)
    with av.open(str(final)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert abs(info.duration - inputs.seconds) <= 0.05, info.duration
    boxes = top_level_boxes(final)
    assert boxes.index("moov") < boxes.index("mdat")


def test_loudness_is_normalized_to_the_target(soft: Run) -> None:
    """The output's integrated loudness (ffmpeg's ebur128 on the decoded AAC) is -16 ± 1.5 LUFS although
    the voice came in 12 dB quieter; the manifest reports loudnorm's own reading, close to it."""
    before = measure_loudness(soft.ctx.settings, soft.ctx.fetch(soft.manifest.artifacts["audio"]))
    after = measure_loudness(soft.ctx.settings, soft.path("final"))
    assert before is not None and after is not None
    assert before.integrated < -24.0
    assert abs(after.integrated - (-16.0)) <= 1.5, after
    assert after.true_peak <= -1.0
    assert abs(soft.manifest.info["loudness"] - after.integrated) <= 0.5


def test_soft_mode_adds_a_subtitle_track_and_srt_vtt(soft: Run, inputs: Inputs) -> None:
    """Soft subtitles: a mov_text stream in ``final``; SRT and VTT artifacts whose cues lie inside the
    audio, after its leading silence, and whose text is the transcript."""
    with av.open(str(soft.path("final"))) as container:
        assert [s.codec_context.name for s in container.streams.subtitles] == ["mov_text"]
    srt, vtt = soft.path("srt").read_text(), soft.path("vtt").read_text()
    text = " ".join(line for line in srt.splitlines() if line and not line.isdigit() and " --> " not in line)
    assert " ".join(text.split()) == JFK_TRANSCRIPT
    times = srt_cue_times(soft.path("srt"))
    assert all(0.0 <= a < b <= inputs.seconds for a, b in times) and times[0][0] > 0.15
    assert vtt.startswith("WEBVTT\n") and vtt.count(" --> ") == len(times)
    assert soft.manifest.info | {"loudness": 0} == {
        "subtitles": "soft", "cues": len(times), "loudness": 0, "subtitle_source": "transcript",
        "subtitle_language": "en",
    }  # fmt: skip


def test_progress_is_reported_from_start_to_end(soft: Run) -> None:
    """Progress starts at 0, marks the start of the encode, never goes back and ends at 1 (ffmpeg's own
    reports in between depend on how long the encode takes)."""
    assert soft.progress[0] == 0.0 and enhance.PREPARE_SHARE in soft.progress and soft.progress[-1] == 1.0
    assert soft.progress == sorted(soft.progress)


# --- burned-in subtitles ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The same job without subtitles (the reference picture)."""
    return run_stage(tmp_path_factory.mktemp("plain"), inputs, JobOptions(transcript=JFK_TRANSCRIPT))


def test_no_subtitles_means_no_track_and_no_files(plain: Run) -> None:
    """subtitles=none: no subtitle stream, no srt/vtt artifacts, no alignment done (cues 0)."""
    with av.open(str(plain.path("final"))) as container:
        assert len(container.streams.subtitles) == 0
    assert "srt" not in plain.manifest.artifacts and "vtt" not in plain.manifest.artifacts
    assert plain.manifest.info["subtitles"] == "none" and plain.manifest.info["cues"] == 0


@pytest.mark.slow
def test_burned_in_subtitles_change_the_lower_third_without_fontconfig(
    plain: Run, inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Burn mode renders the cue into the picture (lower third differs from the plain encode at a cue's
    middle, the top does not), with fontconfig knowing no fonts (the font comes via fontsdir); no
    subtitle track, but SRT and VTT are still made."""
    empty_fontconfig(tmp_path, monkeypatch)
    burn = run_stage(tmp_path, inputs, JobOptions(subtitles=SubtitleMode.burn, transcript=JFK_TRANSCRIPT))
    start, end = srt_cue_times(burn.path("srt"))[1]
    with_text, without = (
        frame_at(burn.path("final"), (start + end) / 2),
        frame_at(plain.path("final"), (start + end) / 2),
    )
    lower = np.abs(with_text[SIZE * 2 // 3 :] - without[SIZE * 2 // 3 :]).mean()
    upper = np.abs(with_text[: SIZE // 3] - without[: SIZE // 3]).mean()
    assert lower > 1.0 and upper < 0.2, (lower, upper)
    with av.open(str(burn.path("final"))) as container:
        assert len(container.streams.subtitles) == 0
    assert burn.manifest.info["subtitles"] == "burn" and {"srt", "vtt"} <= burn.manifest.artifacts.keys()


def test_burn_without_any_font_falls_back_to_soft(
    inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No usable font anywhere: the job still succeeds, with a soft track, says so in a warning and in a
    note for the job's status."""
    monkeypatch.setattr(enhance, "subtitle_font", lambda: None)
    monkeypatch.setattr(enhance, "_font_roots", lambda: [])
    run = run_stage(
        tmp_path, inputs, JobOptions(subtitles=SubtitleMode.burn, transcript=SHORT_TRANSCRIPT), short=True
    )
    with av.open(str(run.path("final"))) as container:
        assert len(container.streams.subtitles) == 1
    assert run.manifest.info["subtitles"] == "soft"
    assert "burn_in_without_font" in run.log.names("warning")
    assert any("no font" in note for note in run.manifest.info["notes"])


def test_burn_in_a_script_the_fonts_lack_is_a_soft_track_with_a_note(inputs: Inputs, tmp_path: Path) -> None:
    """Chinese subtitles where no installed font draws Chinese characters: a soft track (players bring
    their own fonts), and the job's notes say which script the font lacks; earlier notes are kept."""
    text = "我们今天开会"
    if not burn_in_font(text).missing:
        pytest.skip("this machine has a font covering Chinese")
    timing = SpeechTiming(
        duration=inputs.short_seconds, language="zh", source="whisper", text=text,
        words=[TimedWord(text="我们", start=0.3, end=0.8), TimedWord(text="今天开会", start=0.9, end=2.0)],
        speech=[Span(start=0.3, end=2.0)],
    )  # fmt: skip
    run = run_stage(tmp_path, inputs, JobOptions(subtitles=SubtitleMode.burn), short=True, timing=timing)
    assert run.manifest.info["subtitles"] == "soft" and run.manifest.info["subtitle_language"] == "zh"
    [note] = run.manifest.info["notes"]
    assert "Chinese characters" in note and "subtitle track" in note
    assert "我们今天开会" in run.path("srt").read_text(encoding="utf-8")  # unspaced words joined


def test_font_search_finds_a_known_family(tmp_path: Path) -> None:
    """The font search walks folders recursively and prefers DejaVu Sans; unknown files are ignored."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "Unknown.ttf").write_bytes(b"x")
    assert enhance.find_subtitle_font([tmp_path]) is None
    (tmp_path / "a" / "b" / "FreeSans.ttf").write_bytes(b"x")
    (tmp_path / "DejaVuSans.ttf").write_bytes(b"x")
    assert enhance.find_subtitle_font([tmp_path]) == (tmp_path / "DejaVuSans.ttf", "DejaVu Sans")
    assert enhance.subtitle_font() is not None  # this machine has one (system or opencv's bundled DejaVu)


# --- other inputs and options -----------------------------------------------------------------------


def test_without_transcript_subtitles_come_from_whisper(inputs: Inputs, tmp_path: Path) -> None:
    """No transcript: the speech timing's words (Whisper's) give timed, non-empty English subtitles."""
    run = run_stage(tmp_path, inputs, JobOptions(subtitles=SubtitleMode.soft), short=True)
    times = srt_cue_times(run.path("srt"))
    text = " ".join(
        line
        for line in run.path("srt").read_text().splitlines()
        if line and " --> " not in line and not line.isdigit()
    )
    assert times and all(0.0 <= a < b <= inputs.short_seconds for a, b in times)
    assert "fellow Americans" in text
    assert (
        run.manifest.info["subtitle_source"] == "whisper" and run.manifest.info["subtitle_language"] == "en"
    )


def test_enhance_reads_the_speech_timing_and_times_nothing(
    inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the task's speech timing given, enhance neither aligns (pocketsphinx) nor recognizes
    (Whisper, pocketsphinx): its cues are the timing's words."""
    calls: list[str] = []
    for module, name in ((speech, "_align_words"), (speech, "_search_words"), (whisper_module, "recognize")):
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k)
        )
    words = [TimedWord(text="Hello", start=0.3, end=0.7), TimedWord(text="there.", start=0.8, end=1.3)]
    timing = SpeechTiming(duration=inputs.short_seconds, language="en", source="transcript", words=words,
                          speech=[Span(start=0.3, end=1.3)])  # fmt: skip
    run = run_stage(tmp_path, inputs, JobOptions(subtitles=SubtitleMode.soft), short=True, timing=timing)
    assert calls == []
    assert "Hello there." in run.path("srt").read_text()


def test_without_render_the_avatar_is_looped_to_the_audio(inputs: Inputs, tmp_path: Path) -> None:
    """A chain without render: the still avatar is repeated for the whole voice (same length, 25 fps)."""
    run = run_stage(tmp_path, inputs, JobOptions(), short=True, render=False)
    info = probe(run.path("final"))
    assert abs(info.duration - inputs.short_seconds) <= 0.05
    assert (info.width, info.height, round(info.fps)) == (SIZE, SIZE, 25)


def test_enhance_off_skips_the_filters_but_still_normalizes_loudness(inputs: Inputs, tmp_path: Path) -> None:
    """options.enhance=False: the picture is only re-encoded (close to the render), not denoised and
    sharpened as with enhance on; the audio is still brought to -16 LUFS."""
    rendered = frame_at(inputs.rendered, 1.0)
    run = run_stage(tmp_path, inputs, JobOptions(enhance=False), short=True)
    plain_error = np.abs(frame_at(run.path("final"), 1.0) - rendered).mean()
    filtered = run_stage(tmp_path / "on", inputs, JobOptions(), short=True)
    filtered_change = np.abs(frame_at(filtered.path("final"), 1.0) - rendered).mean()
    assert plain_error < 3.0 and filtered_change > 1.3 * plain_error, (plain_error, filtered_change)
    loudness = measure_loudness(run.ctx.settings, run.path("final"))
    assert loudness is not None and abs(loudness.integrated + 16.0) <= 1.5


def test_silent_voice_is_left_alone(inputs: Inputs, tmp_path: Path) -> None:
    """A silent voice: nothing to normalize or subtitle; the video is made, with warnings, no failure."""
    silent = tmp_path / "silent.wav"
    soundfile.write(
        str(silent), np.zeros(int(16_000 * inputs.short_seconds), np.float32), 16_000, subtype="PCM_16"
    )
    quiet = Inputs(inputs.audio, inputs.seconds, silent, inputs.short_seconds, inputs.rendered, inputs.avatar)
    run = run_stage(tmp_path / "run", quiet, JobOptions(subtitles=SubtitleMode.soft), short=True)
    assert run.manifest.info["loudness"] is None and run.manifest.info["subtitles"] == "none"
    assert {"subtitles_skipped", "loudness_not_normalized"} <= set(run.log.names("warning"))
    assert abs(probe(run.path("final")).duration - inputs.short_seconds) <= 0.05


# --- the command line -------------------------------------------------------------------------------


def test_one_ffmpeg_command_does_filters_subtitles_loudness_and_faststart(tmp_path: Path) -> None:
    """The encode is a single ffmpeg command: cheap video filters, libass with a private fontsdir,
    linear loudnorm from the measurement, AAC 48 kHz, faststart, cut to the audio's length."""
    job = FinishJob(
        video=tmp_path / "v.mp4", audio=tmp_path / "a.wav", dst=tmp_path / "o.mp4", duration=11.0, fps=25.0,
        measured=Loudness(-28.0, -10.0, 4.0, -38.0), burn_subtitles=tmp_path / "s.srt",
        font=SubtitleFont(tmp_path / "fonts", "DejaVu Sans"),
    )  # fmt: skip
    args = finish_args(make_settings(tmp_path), job)
    graph = args[args.index("-filter_complex") + 1]
    for part in (
        "removegrain=",
        "convolution=",
        "subtitles=",
        "fontsdir=",
        "FontName\\\\=DejaVu Sans",
        "linear=true",
        "measured_I=-28.00",
    ):
        assert part in graph, part
    for flag, value in (
        ("-movflags", "+faststart"),
        ("-t", "11.000"),
        ("-ar", "48000"),
        ("-vcodec", "libx264"),
    ):
        assert args[args.index(flag) + 1] == value
    assert "hqdn3d" not in graph and "nlmeans" not in graph  # too slow for real time on 2 cores


def test_burned_in_text_shrinks_on_narrow_pictures() -> None:
    """Burned-in text is 16 units (of 288 lines) on landscape video, smaller on square and portrait
    pictures so a 42-character line still fits across the width."""
    font = SubtitleFont(Path("/fonts"), "DejaVu Sans")

    def size(aspect: float) -> float:
        return float(subtitle_style(font, aspect).split("FontSize=")[1].split(",")[0])

    assert size(16 / 9) == 16.0
    assert 9.0 < size(1.0) < 11.0
    assert size(9 / 16) < 6.0


def test_warm_up_needs_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """enhance recognizes nothing, so a worker starts without faster-whisper installed."""
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    enhance.warm_up(make_settings(tmp_path), ModelCache())


# --- the whole task: validate times the speech once, enhance reads it ---------------------------------


def test_one_task_with_subtitles_aligns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job with a transcript and subtitles: validate aligns the clip once (one pocketsphinx alignment)
    and writes ``speech``; enhance, given validate's manifest, aligns and recognizes nothing more, and
    its subtitles are the transcript."""
    calls: list[str] = []
    for module, name in ((speech, "_align_words"), (speech, "_search_words"), (whisper_module, "recognize")):
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k)
        )
    settings = make_settings(tmp_path, max_side=SIZE)
    store = LocalStore(settings.data_dir / "buckets")
    store.ensure_buckets([settings.bucket_inputs, settings.bucket_work, settings.bucket_outputs])
    validate.prepare_store(store, settings)
    store.put(settings.bucket_inputs, "jobs/x/voice.flac", ASSETS_DIR / "jfk.flac")
    spec = f"audio: voice.flac\noptions: {{subtitles: soft, transcript: '{JFK_TRANSCRIPT}'}}\n"
    info = store.put(settings.bucket_inputs, "jobs/x/job.yaml", spec.encode())
    job_id = job_id_for(info.bucket, info.key, info.etag)

    env = StageEnvironment(settings, store, models_with(settings, WHISPER[0]))

    def context(stage: str) -> StageContext:
        workdir = tmp_path / stage
        workdir.mkdir()
        spec = read_spec(store, settings, job_id) if stage != "validate" else None
        ctx = env.context(
            job_id=job_id,
            task="job" if stage == "validate" else "a0",
            stage=stage,
            spec=spec,
            workdir=workdir,
        )
        ctx.log = RecordingLog()
        return ctx

    [task] = validate.run(context("validate"), info)
    assert "speech" in task.artifacts and calls == ["_align_words"]
    [done] = enhance.run(context("enhance"), task)
    assert calls == ["_align_words"]
    srt = store.path_of(settings.bucket_work, done.artifacts["srt"].key).read_text()  # type: ignore[attr-defined]
    assert (
        " ".join(line for line in srt.splitlines() if line and not line.isdigit() and "-->" not in line)
        == JFK_TRANSCRIPT
    )


def test_a_final_picture_is_copied_and_only_the_sound_processed(inputs: Inputs, tmp_path: Path) -> None:
    """A render marked final (encoded at the final settings, filters applied) keeps its picture bit for
    bit: one H.264 encode per job; the sound is still normalized and the file cut to the audio."""
    options = JobOptions(subtitles=SubtitleMode.soft, transcript=JFK_TRANSCRIPT)
    run = run_stage(tmp_path, inputs, options, info={"picture": PICTURE_FINAL})
    final = run.path("final")
    assert video_packets(final) == video_packets(inputs.rendered)[: len(video_packets(final))]
    video_seconds, audio_seconds = stream_seconds(final)
    assert abs(video_seconds - inputs.seconds) < 0.1 and abs(audio_seconds - inputs.seconds) < 0.1
    assert probe(final).video_codec == "h264"
    report = measure_loudness(make_settings(tmp_path), final)
    assert report is not None and abs(report.integrated - (-16.0)) < 1.5


def test_the_report_reads_a_copied_picture_while_the_sound_is_finished(
    inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the picture is copied, the quality report reads the render's frames in a thread of its own
    while ffmpeg finishes the sound (the spans overlap), and it is the report of the finished file."""
    import stages.lib.quality as quality

    spans: dict[str, tuple[str, float, float]] = {}

    def spied(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return real(*args, **kwargs)
            finally:
                spans[name] = (threading.current_thread().name, start, time.monotonic())

        return call

    pictures: list[Path | None] = []
    bound: list[dict[str, Any]] = []

    def measure(*args: Any, picture: Path | None = None, **kwargs: Any) -> Any:
        pictures.append(picture)
        bound.append(structlog.contextvars.get_contextvars())
        return real_measure(*args, picture=picture, **kwargs)

    real_measure = quality.measure
    monkeypatch.setattr(quality, "measure", measure)
    monkeypatch.setattr(enhance, "assess_quality", spied("assess", enhance.assess_quality))
    monkeypatch.setattr(enhance, "finish_video", spied("finish", enhance.finish_video))
    with structlog.contextvars.bound_contextvars(job_id="j-beside", stage="enhance"):  # as the runner binds
        run = run_stage(tmp_path, inputs, JobOptions(), info={"picture": PICTURE_FINAL})
    assert bound == [{"job_id": "j-beside", "stage": "enhance"}]  # its log lines say whose they are
    (a_thread, a0, a1), (f_thread, f0, f1) = spans["assess"], spans["finish"]
    assert a_thread != f_thread and a0 < f1 and f0 < a1, spans
    assert pictures == [run.path("video")]  # the render's file, read while the MP4 was made
    beside = run.ctx.load(run.manifest.artifacts["quality"], QualityReport)
    after = quality.assess(run.ctx, run.manifest, run.path("final"), run.ctx.spec)  # read from the file
    assert (beside.score, beside.flagged, beside.offset_ms) == (after.score, after.flagged, after.offset_ms)


def test_an_encode_that_fails_leaves_no_report_waiting(
    inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encode failing beside the report: the stage fails with the encode's error, and the report's
    thread has stopped reading frames (not all of them were read) and ended."""
    import stages.lib.quality as quality

    read: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        for frame in real_decode(*args, **kwargs):
            read.append(1)
            yield frame

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise FFmpegError("encoding failed: disk full", "disk full")

    real_decode = quality.decode_lazily
    monkeypatch.setattr(quality, "decode_lazily", counted)
    monkeypatch.setattr(enhance, "finish_video", broken)
    with pytest.raises(FFmpegError, match="disk full"):
        run_stage(tmp_path, inputs, JobOptions(), info={"picture": PICTURE_FINAL})
    assert not [t for t in threading.enumerate() if t.name.startswith("quality")]
    assert len(read) < count_frames(inputs.rendered)


def test_burned_in_subtitles_re_encode_even_a_final_picture(inputs: Inputs, tmp_path: Path) -> None:
    """Burning subtitles in needs an encode: a final-marked render is then filtered and re-encoded."""
    options = JobOptions(subtitles=SubtitleMode.burn, transcript=JFK_TRANSCRIPT)
    run = run_stage(tmp_path, inputs, options, info={"picture": PICTURE_FINAL})
    assert video_packets(run.path("final")) != video_packets(inputs.rendered)[:5]


def test_a_copied_picture_takes_no_video_filters(tmp_path: Path) -> None:
    """``copy_video`` copies the stream (no filter graph on it) and refuses what would need an encode."""
    job = FinishJob(
        video=tmp_path / "v.mp4", audio=tmp_path / "a.wav", dst=tmp_path / "o.mp4", duration=11.0, fps=25.0,
        measured=Loudness(-28.0, -10.0, 4.0, -38.0), copy_video=True, sharpen=False,
    )  # fmt: skip
    args = finish_args(make_settings(tmp_path), job)
    assert args[args.index("-vcodec") + 1] == "copy"
    assert "convolution" not in " ".join(args) and "loudnorm" in " ".join(args)
    with pytest.raises(ValueError):
        finish_args(make_settings(tmp_path), replace(job, sharpen=True))


def video_packets(path: Path) -> list[bytes]:
    """The bytes of each packet of the first video stream, in order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [bytes(p) for p in container.demux(stream) if p.size]
