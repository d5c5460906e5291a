"""enhance+subtitle: the stage between render and publish. One ffmpeg pass makes the finished MP4.

Given render's manifest (``artifacts["video"]``: the silent rendered H.264 clip covering the audio;
``artifacts["audio"]``: the 16 kHz mono voice), or validate's/detect's when the chain has no render
(then ``artifacts["avatar"]`` is looped), it:

1. builds subtitle cues when the job asks for subtitles (``stages.lib.subtitles``) from the words of the
   task's speech timing (the ``speech`` artifact validate made: nothing is aligned or recognized here);
2. measures the voice's loudness (EBU R128) for a linear normalization to ``settings.loudness_lufs``;
3. runs ONE ffmpeg pass (``pipeline.media.finish_video``): light denoise and mild sharpen (unless the
   job's ``enhance`` or ``settings.denoise`` is off), burned-in subtitles, loudness, AAC 48 kHz, a
   mov_text track for soft subtitles, ``+faststart``, cut to the audio's length. A render marked
   ``info["picture"] == PICTURE_FINAL`` (encoded at the final settings, filters applied: every job that
   does not burn subtitles in) has its picture copied, not re-encoded — one H.264 encode per job.

Outputs: ``final`` (MP4), ``quality`` (``quality.json``: ``stages.lib.quality``'s report on the final MP4), and
``srt`` and ``vtt`` when subtitles were made. When the picture is copied, the report reads its frames
from the render's file in a thread while ffmpeg finishes the sound (``_QualityBeside``), then the MP4's
sound. Burning in needs a font libass can load that covers the subtitles' script: a known font (or any
installed font covering the text) is copied into the scratch folder and handed over as ``fontsdir``, so
it works without fontconfig; with no such font the subtitles become a soft track, and a note in the
job's status names the scripts missing.
"""

from __future__ import annotations

import contextvars
import importlib.util
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import lru_cache, partial
from pathlib import Path

import structlog

from pipeline.config import Settings
from pipeline.contracts import (
    ArtifactRef,
    JobSpec,
    Manifest,
    QualityReport,
    Role,
    SpeechTiming,
    SubtitleMode,
)
from pipeline.errors import FFmpegError
from pipeline.media import PICTURE_FINAL, FinishJob, Loudness, SubtitleFont, finish_video, measure_loudness
from pipeline.stage import ManifestStage, ModelCache, StageContext
from stages.lib.fonts import FontChoice, pick_font
from stages.lib.quality import assess as assess_quality
from stages.lib.quality import warm_up as warm_quality
from stages.lib.speech.align import Word
from stages.lib.speech.timing import UNSPACED, read_timing
from stages.lib.subtitles import Cue, CueRules, cues_from_words, to_srt, to_vtt

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
    """At worker start: load the quality report's landmark model, look for the burn-in font once."""
    warm_quality(settings, models)
    if subtitle_font() is None:
        log.warning("burn_in_without_font", fallback="soft", looked_for=[f for f, _ in FONT_FILES])


def run(ctx: StageContext, manifest: Manifest) -> list[Manifest]:
    """The finished video (``final``) and, when the job asks for subtitles, ``srt`` and ``vtt``."""
    ctx.progress(0.0, "preparing")
    spec = ctx.spec
    audio = ctx.fetch(manifest.artifacts["audio"], "audio.wav")
    seconds = manifest.media.audio_seconds
    cues, timing = _cues(ctx, manifest, spec, seconds)
    mode, font, note = _subtitle_mode(ctx, spec.options.subtitles, cues)
    subtitles = _save_subtitles(ctx, cues) if mode is not SubtitleMode.none else {}
    video = _picture(ctx, manifest)
    dst = ctx.workdir / "final.mp4"
    beside = video if _copies(manifest, mode) else None  # the frames of the finished picture, read now
    with _QualityBeside(ctx, manifest, spec, timing, dst, beside) as report:
        measured = measure_loudness(ctx.settings, audio)
        ctx.progress(PREPARE_SHARE, "encoding")
        job = _finish_job(ctx, manifest, spec, video, audio, dst, measured, mode, font)
        job, output = _encode(ctx, job)
        report.written()
    if mode is SubtitleMode.burn and job.burn_subtitles is None:
        mode = SubtitleMode.soft  # burning in failed; the encode carries them as a track instead
    final = ctx.save(job.dst, "final.mp4", "video/mp4")
    quality = ctx.save_model(report.result(), "quality.json")
    loudness = _reported_loudness(ctx, measured, output)
    ctx.log.info("enhanced", subtitles=mode.value, cues=len(cues), loudness=loudness)
    info: dict[str, object] = {"subtitles": mode.value, "cues": len(cues), "loudness": loudness}
    if cues and timing is not None:
        info.update(subtitle_source=timing.source, subtitle_language=timing.language)
    if note:
        info["notes"] = [*manifest.info.get("notes", []), note]
    return [manifest.advance(NAME, info, final=final, quality=quality, **subtitles)]


# --- subtitles --------------------------------------------------------------------------------------


def _cues(
    ctx: StageContext, manifest: Manifest, spec: JobSpec, seconds: float
) -> tuple[list[Cue], SpeechTiming | None]:
    """Cues for the job's subtitles from the task's speech timing (none asked for: none made)."""
    if spec.options.subtitles is SubtitleMode.none:
        return [], None
    timing = read_timing(ctx, manifest, spec.options.transcript or spec.speech, spec.options.language)
    words = [Word(w.text, w.start, w.end) for w in timing.words]
    unspaced = (timing.language or "") in UNSPACED
    rules = CueRules(max_chars=21, joiner="") if unspaced else CueRules()
    return cues_from_words(words, rules, limit=seconds), timing


def _subtitle_mode(
    ctx: StageContext, asked: SubtitleMode, cues: list[Cue]
) -> tuple[SubtitleMode, FontChoice | None, str | None]:
    """What is made of the request, the font to burn in with, and a note for the job's status: none
    without cues; soft when no installed font covers the subtitles' script."""
    if asked is SubtitleMode.none:
        return asked, None, None
    if not cues:
        ctx.log.warning("subtitles_skipped", reason="no speech found to subtitle", asked=asked.value)
        return SubtitleMode.none, None, None
    if asked is not SubtitleMode.burn:
        return asked, None, None
    font = burn_in_font(" ".join(c.text for c in cues))
    if font.path is None or font.missing:
        ctx.log.warning("burn_in_without_font", fallback="soft", missing=font.missing)
        return SubtitleMode.soft, None, _font_note(font)
    return asked, font, None


def _font_note(font: FontChoice) -> str:
    if font.path is None:
        return "no font is installed to burn subtitles into the picture; they are a subtitle track instead"
    return (
        f"the subtitle font ({font.family}) cannot draw {', '.join(font.missing)}; the subtitles are a "
        "subtitle track instead of burned in (install a font covering it, e.g. Noto, on the enhance workers)"
    )


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


def burn_in_font(text: str) -> FontChoice:
    """The font to burn ``text`` in: the preferred subtitle font when it covers the text, else any
    installed font that does (``FontChoice.missing`` names the scripts none covers)."""
    preferred = subtitle_font()
    return pick_font(text, [preferred] if preferred else [], _font_roots())


def _private_font(ctx: StageContext, font: FontChoice | None) -> SubtitleFont | None:
    """The subtitle font copied alone into a scratch folder: libass loads every file of ``fontsdir``,
    and a system font folder can hold thousands."""
    if font is None or font.path is None or font.family is None:
        return None
    folder = ctx.workdir / "fonts"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(font.path, folder / font.path.name)
    return SubtitleFont(folder, font.family)


# --- the encode -------------------------------------------------------------------------------------


def _picture(ctx: StageContext, manifest: Manifest) -> Path:
    """The picture to finish: the render's, or the avatar itself in a chain without render."""
    looped = "video" not in manifest.artifacts
    return ctx.fetch(manifest.artifacts["avatar" if looped else "video"], "picture.mp4")


def _copies(manifest: Manifest, mode: SubtitleMode) -> bool:
    """Whether the finished video's picture is the render's, copied: the render encoded the final
    picture (filters applied) unless burned-in subtitles were asked for."""
    rendered = "video" in manifest.artifacts
    return rendered and manifest.info.get("picture") == PICTURE_FINAL and mode is not SubtitleMode.burn


def _finish_job(
    ctx: StageContext,
    manifest: Manifest,
    spec: JobSpec,
    video: Path,
    audio: Path,
    dst: Path,
    measured: Loudness | None,
    mode: SubtitleMode,
    font: FontChoice | None,
) -> FinishJob:
    """What the single ffmpeg pass is to do, from the manifest, the job's options and the settings."""
    looped = "video" not in manifest.artifacts  # a chain without render: the avatar itself, repeated
    srt = ctx.workdir / "subtitles.srt"
    copy = _copies(manifest, mode)
    return FinishJob(
        video=video,
        audio=audio,
        dst=dst,
        duration=manifest.media.audio_seconds,
        fps=manifest.media.fps,
        aspect=manifest.media.width / max(1, manifest.media.height),
        loop_video=looped,
        copy_video=copy,
        sharpen=spec.options.enhance and ctx.settings.denoise and not copy,
        loudness=ctx.settings.loudness_lufs,
        measured=measured,
        soft_subtitles=srt if mode is SubtitleMode.soft else None,
        burn_subtitles=srt if mode is SubtitleMode.burn else None,
        font=_private_font(ctx, font) if mode is SubtitleMode.burn else None,
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


class _QualityBeside:
    """The quality report of the finished video, its frames read while the sound is finished.

    When the finished picture is the render's, copied (``picture``), a thread reads its frames and
    places the landmarks (a Python loop on one core) while ffmpeg measures the loudness and writes the
    MP4; it opens the MP4 for its sound once ``written`` says it is complete. Otherwise the report is
    made after the encode, in ``result``. Leaving the block on an error stops the thread at its next
    frame and waits for it: nothing outlives the run."""

    def __init__(
        self,
        ctx: StageContext,
        manifest: Manifest,
        spec: JobSpec,
        timing: SpeechTiming | None,
        dst: Path,
        picture: Path | None,
    ) -> None:
        self._made = partial(assess_quality, ctx, manifest, dst, spec, timing)
        self._picture = picture
        self._done: Future[None] = Future()
        self._pool: ThreadPoolExecutor | None = None
        self._report: Future[QualityReport] | None = None

    def __enter__(self) -> _QualityBeside:
        if self._picture is not None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="quality")
            made = partial(self._made, picture=self._picture, written=self._done)
            # in this thread's context: its log lines keep the run's job, task and stage
            self._report = self._pool.submit(contextvars.copy_context().run, made)
        return self

    def written(self) -> None:
        """The finished MP4 is complete: the report may read its sound."""
        self._done.set_result(None)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        if not self._done.done():  # the encode failed: the thread must not wait for a file never made
            self._done.set_exception(error or RuntimeError("the video was not written"))
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def result(self) -> QualityReport:
        """The report (made now when it was not made beside the encode); its error if it failed."""
        return self._report.result() if self._report is not None else self._made()


def _reported_loudness(ctx: StageContext, measured: Loudness | None, output: Loudness | None) -> float | None:
    """The output's integrated loudness as loudnorm measured it, else the target; None for silence."""
    if measured is None:
        ctx.log.warning("loudness_not_normalized", reason="the audio is silent")
        return None
    return round(output.integrated, 2) if output is not None else ctx.settings.loudness_lufs


class Enhance(ManifestStage):
    """Enhance+subtitle: the finished MP4 (filters, loudness) and its subtitles."""

    name = NAME
    requires = frozenset({Role.audio, Role.avatar, Role.speech})
    provides = frozenset({Role.final, Role.quality})
    may_provide = frozenset({Role.srt, Role.vtt})  # when the job asks for subtitles

    def warm_up(self, settings: Settings, models: ModelCache) -> None:
        warm_up(settings, models)

    def run(self, ctx: StageContext, inputs: Manifest) -> list[Manifest]:
        return run(ctx, inputs)


STAGE = Enhance()
