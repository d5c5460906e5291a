"""enhance+subtitle: the stage between render and publish. One ffmpeg pass makes the finished MP4.

Given render's manifest (``artifacts["video"]``: the silent rendered H.264 clip covering the audio;
``artifacts["audio"]``: the 16 kHz mono voice), or validate's/detect's when the chain has no render
(then ``artifacts["avatar"]`` is looped), it:

1. times the words (job transcript, else the ``speech`` text of a synthesized job, else speech
   recognition) and builds subtitle cues when the job asks for subtitles (``stages.subtitles``);
2. measures the voice's loudness (EBU R128) for a linear normalization to ``settings.loudness_lufs``;
3. runs ONE ffmpeg encode (``pipeline.media.finish_video``): light denoise and mild sharpen (unless the
   job's ``enhance`` or ``settings.denoise`` is off), burned-in subtitles, loudness, AAC 48 kHz, a
   mov_text track for soft subtitles, ``+faststart``, cut to the audio's length.

Outputs: ``final`` (MP4), ``quality`` (``quality.json``: ``stages.quality``'s report on the final MP4), and
``srt`` and ``vtt`` when subtitles were made. Burning in needs a font
libass can load: a known font file is copied into the scratch folder and handed over as ``fontsdir``, so
it works without fontconfig; with no font anywhere the subtitles become a soft track (warning logged).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import structlog

from pipeline.config import Settings
from pipeline.contracts import ArtifactRef, JobSpec, Manifest, SubtitleMode
from pipeline.media import (
    FFmpegError,
    FinishJob,
    Loudness,
    SubtitleFont,
    finish_video,
    load_audio,
    measure_loudness,
)
from pipeline.stage import ModelCache, StageContext
from pipeline.status import read_spec
from stages.quality import assess as assess_quality
from stages.subtitles import Cue, cues_from_words, subtitle_words, to_srt, to_vtt, whisper_model

NAME = "enhance"
log = structlog.get_logger("mouthpiece.enhance")
SRT_TYPE = "application/x-subrip"
VTT_TYPE = "text/vtt"
PREPARE_SHARE = 0.15
"""Share of the progress bar given to fetching, timing the words and measuring the loudness."""

FONT_FILES = (
    ("DejaVuSans.ttf", "DejaVu Sans"),
    ("LiberationSans-Regular.ttf", "Liberation Sans"),
    ("NotoSans-Regular.ttf", "Noto Sans"),
    ("FreeSans.ttf", "FreeSans"),
    ("Roboto-Regular.ttf", "Roboto"),
    ("OpenSans-Regular.ttf", "Open Sans"),
    ("Arial.ttf", "Arial"),
    ("arial.ttf", "Arial"),
)
"""Font files burned-in subtitles may use, best first, with their family names (what libass matches)."""


def warm_up(settings: Settings, models: ModelCache) -> None:
    """At worker start: load the faster-whisper model if one is configured (a ``ConfigError`` stops the
    worker rather than failing jobs later) and look for the burn-in font once."""
    if settings.asr_model is not None:
        whisper_model(settings, models)
    if subtitle_font() is None:
        log.warning("burn_in_without_font", fallback="soft", looked_for=[f for f, _ in FONT_FILES])


def run(ctx: StageContext, manifest: Manifest) -> list[Manifest]:
    """The finished video (``final``) and, when the job asks for subtitles, ``srt`` and ``vtt``."""
    ctx.progress(0.0, "preparing")
    spec = read_spec(ctx.store, ctx.settings, ctx.job_id)
    audio = ctx.fetch(manifest.artifacts["audio"], "audio.wav")
    seconds = manifest.media.audio_seconds
    cues, source = _cues(ctx, audio, spec, seconds)
    mode = _subtitle_mode(ctx, spec.options.subtitles, cues)
    subtitles = _save_subtitles(ctx, cues) if mode is not SubtitleMode.none else {}
    measured = measure_loudness(ctx.settings, audio)
    ctx.progress(PREPARE_SHARE, "encoding")
    job = _finish_job(ctx, manifest, spec, audio, measured, mode)
    job, output = _encode(ctx, job)
    if mode is SubtitleMode.burn and job.burn_subtitles is None:
        mode = SubtitleMode.soft  # burning in failed; the encode carries them as a track instead
    final = ctx.save(job.dst, "final.mp4", "video/mp4")
    quality = ctx.save_model(assess_quality(ctx, manifest, job.dst, spec), "quality.json")  # issue 12
    loudness = _reported_loudness(ctx, measured, output)
    ctx.log.info("enhanced", subtitles=mode.value, cues=len(cues), source=source, loudness=loudness)
    info = {"subtitles": mode.value, "cues": len(cues), "loudness": loudness}
    if cues:
        info["subtitle_source"] = source
    return [manifest.advance(NAME, info, final=final, quality=quality, **subtitles)]


# --- subtitles --------------------------------------------------------------------------------------


def _cues(ctx: StageContext, audio: Path, spec: JobSpec, seconds: float) -> tuple[list[Cue], str]:
    """Cues for the job's subtitles (none asked for: none made) and how their words were timed."""
    if spec.options.subtitles is SubtitleMode.none:
        return [], ""
    transcript = spec.options.transcript or spec.speech  # a synthesized job says exactly its text
    words, source = subtitle_words(load_audio(audio), transcript, ctx.settings, ctx.models)
    return cues_from_words(words, limit=seconds), source


def _subtitle_mode(ctx: StageContext, asked: SubtitleMode, cues: list[Cue]) -> SubtitleMode:
    """What is made of the request: none without cues, soft when burning in has no font to use."""
    if asked is SubtitleMode.none:
        return asked
    if not cues:
        ctx.log.warning("subtitles_skipped", reason="no speech found to subtitle", asked=asked.value)
        return SubtitleMode.none
    if asked is SubtitleMode.burn and subtitle_font() is None:
        ctx.log.warning("burn_in_without_font", fallback="soft", looked_for=[f for f, _ in FONT_FILES])
        return SubtitleMode.soft
    return asked


def _save_subtitles(ctx: StageContext, cues: list[Cue]) -> dict[str, ArtifactRef]:
    """Write ``subtitles.srt`` and ``subtitles.vtt`` to the scratch folder (the encode reads the SRT) and
    save them as the ``srt`` and ``vtt`` artifacts."""
    saved = {}
    for role, text, content_type in (("srt", to_srt(cues), SRT_TYPE), ("vtt", to_vtt(cues), VTT_TYPE)):
        path = ctx.workdir / f"subtitles.{role}"
        path.write_text(text, encoding="utf-8")
        saved[role] = ctx.save(path, path.name, content_type)
    return saved


# --- fonts for burning in ---------------------------------------------------------------------------


def _font_roots() -> list[Path]:
    """Folders fonts are installed in, system first; last the DejaVu fonts opencv-python bundles."""
    roots = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts"]
    roots.append(Path.home() / ".fonts")
    spec = importlib.util.find_spec("cv2")
    if spec is not None and spec.origin is not None:
        roots.append(Path(spec.origin).parent / "qt" / "fonts")
    return [root for root in roots if root.is_dir()]


def find_subtitle_font(roots: list[Path]) -> tuple[Path, str] | None:
    """The best ``FONT_FILES`` entry under ``roots`` (searched recursively): its file and family name."""
    found: dict[str, Path] = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                found.setdefault(name, Path(folder) / name)
    return next(((found[file], family) for file, family in FONT_FILES if file in found), None)


@lru_cache(maxsize=1)
def subtitle_font() -> tuple[Path, str] | None:
    """``find_subtitle_font`` over the usual folders, looked up once per process."""
    return find_subtitle_font(_font_roots())


def _private_font(ctx: StageContext) -> SubtitleFont | None:
    """The subtitle font copied alone into a scratch folder: libass loads every file of ``fontsdir``,
    and a system font folder can hold thousands."""
    found = subtitle_font()
    if found is None:
        return None
    folder = ctx.workdir / "fonts"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(found[0], folder / found[0].name)
    return SubtitleFont(folder, found[1])


# --- the encode -------------------------------------------------------------------------------------


def _finish_job(
    ctx: StageContext,
    manifest: Manifest,
    spec: JobSpec,
    audio: Path,
    measured: Loudness | None,
    mode: SubtitleMode,
) -> FinishJob:
    """What the single ffmpeg pass is to do, from the manifest, the job's options and the settings."""
    looped = "video" not in manifest.artifacts  # a chain without render: the avatar itself, repeated
    video = ctx.fetch(manifest.artifacts["avatar" if looped else "video"], "picture.mp4")
    srt = ctx.workdir / "subtitles.srt"
    return FinishJob(
        video=video,
        audio=audio,
        dst=ctx.workdir / "final.mp4",
        duration=manifest.media.audio_seconds,
        fps=manifest.media.fps,
        aspect=manifest.media.width / max(1, manifest.media.height),
        loop_video=looped,
        sharpen=spec.options.enhance and ctx.settings.denoise,
        loudness=ctx.settings.loudness_lufs,
        measured=measured,
        soft_subtitles=srt if mode is SubtitleMode.soft else None,
        burn_subtitles=srt if mode is SubtitleMode.burn else None,
        font=_private_font(ctx) if mode is SubtitleMode.burn else None,
    )


def _encode(ctx: StageContext, job: FinishJob) -> tuple[FinishJob, Loudness | None]:
    """Run the encode; if burning in the subtitles fails (libass, fonts), make them a soft track instead.

    Returns the job as it was done and loudnorm's measurement of the output.
    """

    def progress(fraction: float) -> None:
        ctx.progress(PREPARE_SHARE + (1 - PREPARE_SHARE) * fraction, "encoding")

    try:
        return job, finish_video(ctx.settings, job, progress)
    except FFmpegError as exc:
        if job.burn_subtitles is None:
            raise
        ctx.log.warning("burn_in_failed", fallback="soft", error=exc.detail or str(exc))
    soft = replace(job, soft_subtitles=job.burn_subtitles, burn_subtitles=None, font=None)
    return soft, finish_video(ctx.settings, soft, progress)


def _reported_loudness(ctx: StageContext, measured: Loudness | None, output: Loudness | None) -> float | None:
    """The output's integrated loudness as loudnorm measured it, else the target; None for silence."""
    if measured is None:
        ctx.log.warning("loudness_not_normalized", reason="the audio is silent")
        return None
    return round(output.integrated, 2) if output is not None else ctx.settings.loudness_lufs
