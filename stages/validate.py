"""validate+transcode: the first stage. Turns an upload into a job with one task per avatar.

Given the uploaded object (a job spec under ``jobs/``, or a voice clip under ``audio/``), it:

1. reads the spec (or makes one for a lone voice clip: default avatar, output folder) and stores it;
2. fetches each named medium, rejects what is unsupported, corrupt, too long, too large or too
   high-resolution with a reason that names the file (limits are settings);
3. normalizes the voice to 16 kHz mono WAV and each avatar to constant-fps H.264 of bounded size
   (content-addressed under ``cache/media/``, so the same file is never converted twice);
4. writes the job record, and returns one manifest per avatar (task ``a0``, ``a1``, ...).

Before any media work it checks the spec's destinations against the deployment's allow-lists
(``pipeline.destinations``): a job naming a place it may not publish to fails here, having made nothing.
Refusals name each file as the user named it (the ``filename`` metadata ``pipeline.submit`` records),
say what is wrong and what to send instead, and carry no tool output: ffmpeg's own words go to the log.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from pipeline import ASSETS_DIR, characters
from pipeline.config import Settings
from pipeline.contracts import (
    REVEAL,
    ArtifactRef,
    Character,
    FolderDestination,
    JobRecord,
    JobSpec,
    Manifest,
    MediaInfo,
    Role,
    StageRecord,
)
from pipeline.destinations import check_destinations
from pipeline.errors import (
    ConfigError,
    FFmpegError,
    InvalidInput,
    InvalidKey,
    ObjectNotFound,
    PictureTooLarge,
    RetryableError,
    StageStopped,
)
from pipeline.keys import (
    JOB_SPEC_SUFFIXES,
    job_record_key,
    media_cache_key,
    record_key,
    resolve_relative,
    spec_key,
)
from pipeline.media import Probe, count_frames, looks_like, normalize_audio, normalize_avatar, probe
from pipeline.specfile import MAX_SPEC_BYTES, parse_spec
from pipeline.stage import FirstStage, ModelCache, StageContext
from pipeline.storage.base import ObjectInfo, ObjectStore
from pipeline.submit import MAX_AVATARS, job_name, original_name, too_large
from stages.lib.speech.align import DECODERS, warm_decoders
from stages.lib.speech.recognition import whisper_model
from stages.lib.speech.synthesis import Synthesis
from stages.lib.speech.timing import job_speech_timing

NAME = "validate"
DEFAULT_AVATAR_KEY = "defaults/avatar.png"
AUDIO_HINT = "send .mp3, .wav, .ogg, .m4a or .flac"
AVATAR_HINT = "send a .png, .jpg or .webp photo, or an .mp4, .mov or .webm video"


def run(ctx: StageContext, upload: ObjectInfo) -> list[Manifest]:
    """Validate and normalize the job's media; one manifest per avatar."""
    spec = load_spec(ctx, upload)
    avatars, notes = _avatars(ctx, upload, spec)  # before the spec is stored: a character's defaults go in it
    spec = _with_character_defaults(spec, avatars)
    ctx.save_bytes(
        spec.model_dump_json(indent=1, context=REVEAL).encode(),
        "spec.json",
        "application/json",
        key=spec_key(ctx.job_id),
    )
    # before any work (the spec is stored first, so a refusal still reaches the allowed destinations)
    check_destinations(ctx.settings, spec.destinations, _spec_name(upload))
    audio_ref, audio_seconds, synthesis = _voice(ctx, spec, upload)
    progress = _Progress(ctx)
    progress.report(0.5 / len(avatars), f"avatar 1 of {len(avatars)}")  # said before the timing can say more
    with _SpeechBeside(ctx, spec, audio_ref, synthesis, progress) as speech:
        manifests = []
        for index, (key, shown, _) in enumerate(avatars):
            if index:
                progress.report((index + 0.5) / len(avatars), f"avatar {index + 1} of {len(avatars)}")
            avatar_ref, media = _avatar(ctx, key, audio_seconds)
            manifests.append(_manifest(ctx, f"a{index}", shown, media, audio_ref, avatar_ref))
        speech_ref = speech.result()  # once per job; a bad avatar is said first
    for manifest in manifests:
        manifest.artifacts["speech"] = speech_ref
        told = [*([synthesis.note] if synthesis is not None else []), *notes]
        if manifest.media.upscaled_from is not None:
            told.append(_upscale_note(manifest.avatar_name, manifest.media))
        if told:
            manifest.info["notes"] = told
    _write_job(ctx, upload, spec, manifests)
    return manifests


class _Progress:
    """The stage's progress from two threads (avatars, speech timing), never shown going back."""

    def __init__(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._shown = 0.0
        self._lock = threading.Lock()

    def report(self, fraction: float, note: str) -> None:
        with self._lock:
            self._shown = max(self._shown, fraction)
            self._ctx.progress(self._shown, note)


class _SpeechBeside:
    """The job's speech timing (Whisper, alignment) in a thread of its own while the avatars are fetched,
    probed and converted: the converting is mostly ffmpeg in another process, the timing mostly native
    code that releases the GIL, so they overlap. On two cores that saves little (x264 and Whisper each
    use both: a 30 fps clip's validate took 4.6–5.3 s against 5.3–5.4 one after the other); on more
    cores the stage nears the longer of the two. ``result()`` waits for it. Leaving the block by an
    error (a refused avatar) tells the timing to stop at its next progress report and waits for the
    thread, so nothing outlives the stage's run."""

    def __init__(
        self,
        ctx: StageContext,
        spec: JobSpec,
        audio: ArtifactRef,
        synthesis: Synthesis | None,
        progress: _Progress,
    ) -> None:
        self._work = partial(job_speech_timing, ctx, spec, audio, synthesis, self._report)
        self._progress = progress
        self._abandoned = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="speech-timing")
        self._future: Future[ArtifactRef] | None = None

    def _report(self, share: float) -> None:
        if self._abandoned.is_set():
            raise StageStopped("the job's other inputs were refused: its speech timing is not needed")
        self._progress.report(0.9 + 0.1 * share, "timing the speech")

    def __enter__(self) -> _SpeechBeside:
        self._future = self._pool.submit(contextvars.copy_context().run, self._work)
        return self

    def result(self) -> ArtifactRef:
        assert self._future is not None
        return self._future.result()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self._abandoned.set()
        self._pool.shutdown(wait=True)


def _upscale_note(name: str, media: MediaInfo) -> str:
    """The job status's sentence about an avatar enlarged to the minimum height."""
    assert media.upscaled_from is not None
    width, height = media.upscaled_from
    return (
        f"{name} is {width}×{height} pixels; it was enlarged to {media.width}×{media.height} so the mouth "
        "and the subtitles have room (a larger picture looks sharper)"
    )


# --- the spec ---------------------------------------------------------------------------------------


def load_spec(ctx: StageContext, upload: ObjectInfo) -> JobSpec:
    """The job spec the upload stands for. A lone voice clip gets the default avatar."""
    name = PurePosixPath(upload.key).name
    if not upload.key.endswith(JOB_SPEC_SUFFIXES):
        destinations = [FolderDestination()] if ctx.settings.store == "local" else []
        return JobSpec(audio=name, name=_job_name(name), destinations=destinations, source="bucket")
    if upload.size > MAX_SPEC_BYTES:
        raise InvalidInput(
            f"job spec {name} is {upload.size // 1024} KB; a spec is a small JSON or YAML file (at most "
            f"{MAX_SPEC_BYTES // 1024} KB)",
            key=upload.key,
            code="spec_too_large",
        )
    return parse_spec(ctx.store.get(upload.bucket, upload.key), name)


def _avatars(
    ctx: StageContext, upload: ObjectInfo, spec: JobSpec
) -> tuple[list[tuple[str, str, Character | None]], list[str]]:
    """(key, name shown, character) of each avatar: files beside the spec, library characters
    (``character:<name>``, ``character:all``: ``pipeline.characters``), else the default avatar; and the
    notes for people (a capped ``character:all`` says so)."""
    resolved, notes = characters.resolve_noted(ctx.store, ctx.settings, spec.library, spec.avatars)
    if len(resolved) > MAX_AVATARS:
        raise InvalidInput(
            f"the job names {len(resolved)} avatars; a job takes at most {MAX_AVATARS}: split it",
            code="too_many_avatars",
        )
    out: list[tuple[str, str, Character | None]] = []
    for avatar in resolved:
        if isinstance(avatar, Character):
            out.append((avatar.media, avatar.name, avatar))
        else:
            key = _media_key(upload, avatar)
            out.append((key, _display_name(key), None))
    return out or [(DEFAULT_AVATAR_KEY, _display_name(DEFAULT_AVATAR_KEY), None)], notes


def _with_character_defaults(spec: JobSpec, avatars: list[tuple[str, str, Character | None]]) -> JobSpec:
    """A job whose only avatar is a character takes the character's defaults for options it left unset."""
    if len(avatars) != 1 or (character := avatars[0][2]) is None:
        return spec
    return spec.model_copy(update={"options": characters.apply_defaults(spec.options, character)})


def _job_name(filename: str) -> str:
    return job_name(PurePosixPath(filename).stem)


# --- the voice --------------------------------------------------------------------------------------


def _voice(
    ctx: StageContext, spec: JobSpec, upload: ObjectInfo
) -> tuple[ArtifactRef, float, Synthesis | None]:
    if spec.speech is not None:
        return _synthesize(ctx, spec)
    assert spec.audio is not None
    key = upload.key if not upload.key.endswith(JOB_SPEC_SUFFIXES) else _media_key(upload, spec.audio)
    src, digest, name = _fetch_input(ctx, key, "audio")
    info = _probe(ctx, src, name, "voice")
    if not info.has_audio:
        raise InvalidInput(_not_media(src, name, "voice", info), key=key, code="audio_missing")
    if info.duration > ctx.settings.max_audio_seconds + 1.0:  # before decoding hours of audio to WAV
        _check_voice_length(ctx.settings, info.duration, name)
    return (*_normalized_audio(ctx, src, digest, name), None)


def _normalized_audio(ctx: StageContext, src: Path, digest: str, name: str) -> tuple[ArtifactRef, float]:
    cache_key = media_cache_key(f"{digest}-a16k-t0", "audio.wav")  # t0: start offsets kept
    ref = ctx.cached(cache_key, "audio/wav")
    if ref is None:
        wav = ctx.workdir / "audio.wav"
        try:
            normalize_audio(ctx.settings, src, wav)
        except FFmpegError as exc:
            ctx.log.info("ffmpeg_refused_input", role="voice", detail=exc.detail)
            raise InvalidInput(_undecodable(src, name, "voice"), code="audio_unreadable") from exc
        _check_voice_length(ctx.settings, _wav_seconds(wav.stat().st_size), name)
        ref = ctx.save(wav, "audio.wav", "audio/wav", key=cache_key)
    seconds = _wav_seconds(ref.size)
    _check_voice_length(ctx.settings, seconds, name)
    return ref, seconds


def _wav_seconds(size: int) -> float:
    """Length of a 16 kHz mono 16-bit WAV written by ``normalize_audio`` (bit-exact: 44-byte header)."""
    return max(0.0, (size - 44) / 32_000)


MIN_VOICE_SECONDS = 0.2


def _check_voice_length(settings: Settings, seconds: float, name: str) -> None:
    if seconds < MIN_VOICE_SECONDS:
        raise InvalidInput(
            f"{name} is too short ({seconds:.2f} s): send a voice clip of at least {MIN_VOICE_SECONDS:g} s",
            code="audio_too_short",
        )
    if seconds > settings.max_audio_seconds:
        raise InvalidInput(
            f"{name} is {seconds:.0f} s long; the limit is {settings.max_audio_seconds:.0f} s: "
            "send a shorter clip",
            code="audio_too_long",
        )


def _synthesize(ctx: StageContext, spec: JobSpec) -> tuple[ArtifactRef, float, Synthesis]:
    """The job's ``speech`` text spoken (``stages.lib.speech.synthesis``), normalized like an uploaded voice; cached by
    what is spoken and how (``Synthesis.key``), so the same announcement is synthesized once."""
    from stages.lib.speech.synthesis import plan, speak

    assert spec.speech is not None
    synthesis = plan(ctx.settings, spec.speech, voice=spec.options.voice, language=spec.options.language)
    cache_key = media_cache_key(f"tts-{synthesis.key}", "speech16k.wav")
    ref = ctx.cached(cache_key, "audio/wav")
    if ref is None:
        wav = ctx.workdir / "speech.wav"
        speak(synthesis, wav)
        normalized = ctx.workdir / "speech16k.wav"
        normalize_audio(ctx.settings, wav, normalized)
        ref = ctx.save(normalized, "speech16k.wav", "audio/wav", key=cache_key)
    else:
        ctx.log.info("speech_cached", key=cache_key)
    return ref, _wav_seconds(ref.size), synthesis


# --- avatars ----------------------------------------------------------------------------------------


def _avatar(ctx: StageContext, key: str, audio_seconds: float) -> tuple[ArtifactRef, MediaInfo]:
    if key == DEFAULT_AVATAR_KEY and ctx.store.stat(ctx.settings.bucket_inputs, key) is None:
        ctx.log.error("default_avatar_missing", bucket=ctx.settings.bucket_inputs, key=key)
        raise ConfigError(
            "no avatar was given and this server has no default avatar: send a photo with the voice clip",
            code="default_avatar_missing",
        )
    src, digest, name = _fetch_input(ctx, key, "avatar")
    sizes = f"{ctx.settings.max_side}" + (f"-h{ctx.settings.min_height}" if ctx.settings.min_height else "")
    cache_key = media_cache_key(f"{digest}-v{ctx.settings.fps:g}-{sizes}-t0", "avatar.mp4")
    info_key = media_cache_key(f"{digest}-v{ctx.settings.fps:g}-{sizes}-t0", "info.json")
    ref = ctx.cached(cache_key, "video/mp4")
    if ref is not None and (cached := ctx.cached(info_key)) is not None:
        media = MediaInfo.model_validate_json(ctx.store.get(cached.bucket, cached.key))
        return ref, media.model_copy(update={"audio_seconds": audio_seconds})
    info = _probe(ctx, src, name, "avatar")
    if not info.has_video:
        raise InvalidInput(_not_media(src, name, "avatar", info), key=key, code="avatar_not_visual")
    if info.width <= 0 or info.height <= 0:
        raise InvalidInput(_undecodable(src, name, "avatar"), key=key, code="avatar_unreadable")
    _check_avatar(ctx.settings, info, name)
    clip = ctx.workdir / f"avatar-{digest[:8]}.mp4"
    try:
        normalize_avatar(ctx.settings, src, clip, info)
        frames = count_frames(clip)
        check = probe(clip)
    except FFmpegError as exc:
        ctx.log.info("ffmpeg_refused_input", role="avatar", detail=exc.detail)
        raise InvalidInput(_undecodable(src, name, "avatar"), key=key, code="avatar_unreadable") from exc
    upscaled = check.height > info.height  # enlarged to settings.min_height (normalize_avatar)
    if upscaled:
        ctx.log.info("avatar_upscaled", name=name, source=f"{info.width}x{info.height}",
                     size=f"{check.width}x{check.height}")  # fmt: skip
    media = MediaInfo(
        audio_seconds=audio_seconds,
        fps=ctx.settings.fps,
        width=check.width,
        height=check.height,
        frames=frames,
        still=info.still,
        upscaled_from=(info.width, info.height) if upscaled else None,
    )
    ref = ctx.save(clip, "avatar.mp4", "video/mp4", key=cache_key)
    ctx.save_bytes(media.model_dump_json().encode(), "info.json", "application/json", key=info_key)
    return ref, media


def _check_avatar(settings: Settings, info: Probe, name: str) -> None:
    """The limits of a picture that has a size (``_avatar`` refused the others): side and length."""
    if max(info.width, info.height) > settings.max_input_side:
        raise InvalidInput(
            f"{name} is {info.width}×{info.height} pixels; the limit is {settings.max_input_side} pixels a "
            "side: send a smaller picture",
            code="avatar_too_large",
        )
    if not info.still and info.duration > settings.max_video_seconds:
        raise InvalidInput(
            f"{name} is a {info.duration:.0f} s video; the limit is {settings.max_video_seconds:.0f} s: "
            "send a shorter clip or a photo",
            code="video_too_long",
        )


# --- shared helpers ---------------------------------------------------------------------------------


def _fetch_input(ctx: StageContext, key: str, role: str) -> tuple[Path, str, str]:
    """Download an input medium after checking it exists and is not too large; (path, sha256, the name
    the user gave the file)."""
    bucket = ctx.settings.bucket_inputs
    info = ctx.store.stat(bucket, key)
    name = original_name(info, key)
    if info is None:
        # the spec may have been uploaded before its media: retry a few times before giving up
        raise RetryableError(
            f"the {role} {name} has not arrived: upload it beside the job spec",
            defer=5.0,
            key=key,
            code="input_missing",
        )
    if info.size > ctx.settings.max_input_bytes:
        raise InvalidInput(
            too_large(name, info.size, ctx.settings.max_input_bytes), key=key, code="file_too_large"
        )
    path, digest = ctx.fetch_object(info, f"{role}-{_display_name(key)}")
    return path, digest, name


PURPOSE = {
    "voice": ("a voice clip", AUDIO_HINT),
    "avatar": ("an image or video", AVATAR_HINT),
}


def _probe(ctx: StageContext, path: Path, name: str, role: str) -> Probe:
    """``probe(path)``, refusals worded for the user (``role``: voice or avatar)."""
    try:
        return probe(path)
    except PictureTooLarge as exc:
        raise InvalidInput(
            f"{name} is too large: its picture has {exc.pixels / 1e6:.0f} million pixels; the limit is "
            f"{ctx.settings.max_input_side} pixels a side: send a smaller picture",
            code="avatar_too_large",
        ) from exc
    except FFmpegError as exc:
        ctx.log.info("probe_refused_input", role=role, detail=exc.detail)
        raise InvalidInput(_not_media(path, name, role, None), code="not_media") from exc


def _undecodable(path: Path, name: str, role: str) -> str:
    """Why a file that looked like media could not be converted: what it really is, when that is
    recognizable (a text file or web page some demuxer took for audio or an image), else damage."""
    wanted, hint = PURPOSE[role]
    if (kind := _looks_like(path)) is not None:
        return f"{name} is {kind}, not {wanted}: {hint}"
    what = "audio" if role == "voice" else "an image or video"
    return f"{name} could not be decoded as {what} (it may be damaged or cut short): {hint}"


def _not_media(path: Path, name: str, role: str, info: Probe | None) -> str:
    """Why a file cannot serve as ``role``: what it looks like instead, when that is recognizable (an
    SVG drawing named .png, a PDF, a text file), else what it lacks."""
    wanted, hint = PURPOSE[role]
    if (kind := _looks_like(path)) is not None:
        return f"{name} is {kind}, not {wanted}: {hint}"
    if info is not None and (info.has_audio or info.has_video):
        lacks = "has no sound in it" if role == "voice" else "is not an image or a video"
        return f"{name} {lacks}: {hint}"
    return f"{name} is not a readable audio, image or video file: {hint}"


def _looks_like(path: Path) -> str | None:
    with path.open("rb") as f:
        return looks_like(f.read(4096))


def _media_key(upload: ObjectInfo, ref: str) -> str:
    """The key of a medium the spec at ``upload.key`` names (beside it, or in a folder below it)."""
    try:
        return resolve_relative(upload.key, ref)
    except InvalidKey:
        shown = ref if len(ref) <= 80 else ref[:77] + "..."
        raise InvalidInput(
            f"job spec {_display_name(upload.key)} names {shown!r}, which is not a file beside it "
            "(no '..', no absolute paths): name files that lie in the spec's folder",
            key=upload.key,
            code="spec_path_outside",
        ) from None


def _spec_name(upload: ObjectInfo) -> str:
    """How refusals name the job's spec: by its file name, or "the job" for a lone voice clip."""
    return f"job spec {_display_name(upload.key)}" if upload.key.endswith(JOB_SPEC_SUFFIXES) else "the job"


def _display_name(key: str) -> str:
    return PurePosixPath(key).name


def _manifest(
    ctx: StageContext, task: str, avatar_name: str, media: MediaInfo, audio: ArtifactRef, avatar: ArtifactRef
) -> Manifest:
    return Manifest(
        job_id=ctx.job_id,
        task=task,
        stage=NAME,
        spec_key=spec_key(ctx.job_id),
        avatar_name=avatar_name,
        media=media,
        artifacts={"audio": audio, "avatar": avatar},
    )


def _started(ctx: StageContext) -> datetime:
    """When this job started: when this stage's run began (its running record), not now that validate is
    done, so a job's start time stays what the list showed while it was validated."""
    try:
        record = StageRecord.model_validate_json(
            ctx.store.get(ctx.settings.bucket_work, record_key(ctx.job_id, ctx.task, ctx.stage))
        )
    except (ObjectNotFound, ValidationError):
        return datetime.now(UTC)
    return record.started_at


def _write_job(ctx: StageContext, upload: ObjectInfo, spec: JobSpec, manifests: list[Manifest]) -> None:
    name = spec.name or (PurePosixPath(spec.audio).stem if spec.audio else "speech")
    record = JobRecord(
        job_id=ctx.job_id,
        source_bucket=upload.bucket,
        source_key=upload.key,
        name=name,
        tasks={m.task: m.avatar_name for m in manifests},
        chain=list(ctx.settings.chain),
        created_at=_started(ctx),
    )
    ctx.save_bytes(
        record.model_dump_json(indent=1).encode(),
        "record.json",
        "application/json",
        key=job_record_key(ctx.job_id),
    )


def warm_up(settings: Settings, models: ModelCache) -> None:
    """Load the speech recognizer and the phone aligner's decoders before the first job (a missing
    required model stops the worker)."""
    whisper_model(settings, models)
    models.get(DECODERS, warm_decoders)


def prepare_store(store: ObjectStore, settings: Settings) -> None:
    """Seed ``inputs/defaults/avatar.png`` from ``settings.default_avatar`` or the bundled photo."""
    if settings.default_avatar is None and store.stat(settings.bucket_inputs, DEFAULT_AVATAR_KEY) is not None:
        return
    source = settings.default_avatar or ASSETS_DIR / "astronaut.png"
    if not source.is_file():
        raise ConfigError(f"default avatar {source} does not exist")
    current = store.stat(settings.bucket_inputs, DEFAULT_AVATAR_KEY)
    if current is None or current.size != source.stat().st_size:
        store.put(settings.bucket_inputs, DEFAULT_AVATAR_KEY, source, content_type="image/png")


class Validate(FirstStage):
    """Validate+transcode: the first stage; makes a job (one task per avatar) from an upload."""

    name = NAME
    provides = frozenset({Role.audio, Role.avatar, Role.speech})

    def warm_up(self, settings: Settings, models: ModelCache) -> None:
        warm_up(settings, models)

    def prepare_store(self, store: ObjectStore, settings: Settings) -> None:
        prepare_store(store, settings)

    def run(self, ctx: StageContext, inputs: ObjectInfo) -> list[Manifest]:
        return run(ctx, inputs)


STAGE = Validate()
