"""validate+transcode: the first stage. Turns an upload into a job with one task per avatar.

Given the uploaded object (a job spec under ``jobs/``, or a voice clip under ``audio/``), it:

1. reads the spec (or makes one for a lone voice clip: default avatar, output folder) and stores it;
2. fetches each named medium, rejects what is unsupported, corrupt, too long, too large or too
   high-resolution with a reason that names the file (limits are settings);
3. normalizes the voice to 16 kHz mono WAV and each avatar to constant-fps H.264 of bounded size
   (content-addressed under ``cache/media/``, so the same file is never converted twice);
4. writes the job record, and returns one manifest per avatar (task ``a0``, ``a1``, ...).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import yaml
from pydantic import ValidationError

from pipeline import ASSETS_DIR
from pipeline.config import Settings
from pipeline.contracts import (
    REVEAL,
    ArtifactRef,
    FolderDestination,
    JobRecord,
    JobSpec,
    Manifest,
    MediaInfo,
    Upload,
)
from pipeline.errors import ConfigError, InvalidInput, RetryableError
from pipeline.keys import JOB_SPEC_SUFFIXES, job_record_key, media_cache_key, resolve_relative, spec_key
from pipeline.media import FFmpegError, Probe, count_frames, normalize_audio, normalize_avatar, probe
from pipeline.stage import ModelCache, StageContext, sha256_file
from pipeline.storage.base import ObjectStore
from stages.speech_timing import job_speech_timing
from stages.tts import Synthesis
from stages.whisper import whisper_model

NAME = "validate"
DEFAULT_AVATAR_KEY = "defaults/avatar.png"
AUDIO_HINT = "send .mp3, .wav, .ogg, .m4a or .flac"
AVATAR_HINT = "send a .png, .jpg or .webp photo, or an .mp4, .mov or .webm video"


def run(ctx: StageContext, upload: Upload) -> list[Manifest]:
    """Validate and normalize the job's media; one manifest per avatar."""
    spec = load_spec(ctx, upload)
    ctx.save_bytes(
        spec.model_dump_json(indent=1, context=REVEAL).encode(),
        "spec.json",
        "application/json",
        key=spec_key(ctx.job_id),
    )
    audio_ref, audio_seconds, synthesis = _voice(ctx, spec, upload)
    avatar_keys = [resolve_relative(upload.key, a) for a in spec.avatars] or [DEFAULT_AVATAR_KEY]
    manifests = []
    for index, key in enumerate(avatar_keys):
        ctx.progress((index + 0.5) / len(avatar_keys), f"avatar {index + 1} of {len(avatar_keys)}")
        avatar_ref, media = _avatar(ctx, key, audio_seconds)
        manifests.append(_manifest(ctx, f"a{index}", _display_name(key), media, audio_ref, avatar_ref))
    speech_ref = job_speech_timing(ctx, spec, audio_ref, synthesis)  # once, when the inputs are good
    for manifest in manifests:
        manifest.artifacts["speech"] = speech_ref
        if synthesis is not None:
            manifest.info["notes"] = [synthesis.note]
    _write_job(ctx, upload, spec, manifests)
    return manifests


# --- the spec ---------------------------------------------------------------------------------------


def load_spec(ctx: StageContext, upload: Upload) -> JobSpec:
    """The job spec the upload stands for. A lone voice clip gets the default avatar."""
    name = PurePosixPath(upload.key).name
    if not upload.key.endswith(JOB_SPEC_SUFFIXES):
        destinations = [FolderDestination()] if ctx.settings.store == "local" else []
        return JobSpec(audio=name, name=PurePosixPath(name).stem, destinations=destinations, source="bucket")
    if upload.size > 1024 * 1024:
        raise InvalidInput(
            f"job spec {name} is {upload.size // 1024} KB; a spec is a small JSON or YAML file"
        )
    raw = ctx.store.get(upload.bucket, upload.key)
    try:
        data = yaml.safe_load(raw) if upload.key.endswith((".yaml", ".yml")) else json.loads(raw)
        return JobSpec.model_validate(data)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"job spec {name} is not valid {'YAML' if 'y' in name[-4:] else 'JSON'}: {exc}"
        ) from exc
    except ValidationError as exc:
        raise InvalidInput(f"job spec {name} is not valid: {_first_error(exc)}", key=upload.key) from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


# --- the voice --------------------------------------------------------------------------------------


def _voice(ctx: StageContext, spec: JobSpec, upload: Upload) -> tuple[ArtifactRef, float, Synthesis | None]:
    if spec.speech is not None:
        return _synthesize(ctx, spec)
    assert spec.audio is not None
    key = (
        upload.key if not upload.key.endswith(JOB_SPEC_SUFFIXES) else resolve_relative(upload.key, spec.audio)
    )
    src, digest = _fetch_input(ctx, key, "audio")
    info = _probe(src, _display_name(key), AUDIO_HINT)
    if not info.has_audio:
        raise InvalidInput(f"{_display_name(key)} has no sound in it: {AUDIO_HINT}", key=key)
    if info.duration > ctx.settings.max_audio_seconds + 1.0:  # before decoding hours of audio to WAV
        _check_voice_length(ctx.settings, info.duration, _display_name(key))
    return (*_normalized_audio(ctx, src, digest, _display_name(key)), None)


def _normalized_audio(ctx: StageContext, src: Path, digest: str, name: str) -> tuple[ArtifactRef, float]:
    cache_key = media_cache_key(f"{digest}-a16k", "audio.wav")
    ref = ctx.cached(cache_key, "audio/wav")
    if ref is None:
        wav = ctx.workdir / "audio.wav"
        try:
            normalize_audio(ctx.settings, src, wav)
        except FFmpegError as exc:
            raise InvalidInput(f"{name} could not be decoded as audio ({exc.detail}): {AUDIO_HINT}") from exc
        _check_voice_length(ctx.settings, _wav_seconds(wav.stat().st_size), name)
        ref = ctx.save(wav, "audio.wav", "audio/wav", key=cache_key)
    seconds = _wav_seconds(ref.size)
    _check_voice_length(ctx.settings, seconds, name)
    return ref, seconds


def _wav_seconds(size: int) -> float:
    """Length of a 16 kHz mono 16-bit WAV written by ``normalize_audio`` (bit-exact: 44-byte header)."""
    return max(0.0, (size - 44) / 32_000)


def _check_voice_length(settings: Settings, seconds: float, name: str) -> None:
    if seconds < 0.2:
        raise InvalidInput(f"{name} contains no audible audio (it is {seconds:.1f} s long)")
    if seconds > settings.max_audio_seconds:
        raise InvalidInput(f"{name} is {seconds:.0f} s long; the limit is {settings.max_audio_seconds:.0f} s")


def _synthesize(ctx: StageContext, spec: JobSpec) -> tuple[ArtifactRef, float, Synthesis]:
    """The job's ``speech`` text spoken (``stages.tts``), normalized like an uploaded voice."""
    from stages.tts import synthesize

    assert spec.speech is not None
    wav = ctx.workdir / "speech.wav"
    synthesis = synthesize(
        ctx.settings, spec.speech, wav, voice=spec.options.voice, language=spec.options.language
    )
    normalized = ctx.workdir / "speech16k.wav"
    normalize_audio(ctx.settings, wav, normalized)
    ref = ctx.save(normalized, "speech16k.wav", "audio/wav", key=ctx.key("speech.wav"))
    return ref, _wav_seconds(ref.size), synthesis


# --- avatars ----------------------------------------------------------------------------------------


def _avatar(ctx: StageContext, key: str, audio_seconds: float) -> tuple[ArtifactRef, MediaInfo]:
    name = _display_name(key)
    if key == DEFAULT_AVATAR_KEY and ctx.store.stat(ctx.settings.bucket_inputs, key) is None:
        raise ConfigError(f"no avatar given and no default avatar at {ctx.settings.bucket_inputs}/{key}")
    src, digest = _fetch_input(ctx, key, "avatar")
    cache_key = media_cache_key(f"{digest}-v{ctx.settings.fps:g}-{ctx.settings.max_side}", "avatar.mp4")
    info_key = media_cache_key(f"{digest}-v{ctx.settings.fps:g}-{ctx.settings.max_side}", "info.json")
    ref = ctx.cached(cache_key, "video/mp4")
    if ref is not None and (cached := ctx.cached(info_key)) is not None:
        media = MediaInfo.model_validate_json(ctx.store.get(cached.bucket, cached.key))
        return ref, media.model_copy(update={"audio_seconds": audio_seconds})
    info = _probe(src, name, AVATAR_HINT)
    _check_avatar(ctx.settings, info, name)
    clip = ctx.workdir / f"avatar-{digest[:8]}.mp4"
    try:
        normalize_avatar(ctx.settings, src, clip, info)
        frames = count_frames(clip)
        check = probe(clip)
    except FFmpegError as exc:
        raise InvalidInput(
            f"{name} could not be decoded as an image or video ({exc.detail})", key=key
        ) from exc
    media = MediaInfo(
        audio_seconds=audio_seconds,
        fps=ctx.settings.fps,
        width=check.width,
        height=check.height,
        frames=frames,
        still=info.still,
    )
    ref = ctx.save(clip, "avatar.mp4", "video/mp4", key=cache_key)
    ctx.save_bytes(media.model_dump_json().encode(), "info.json", "application/json", key=info_key)
    return ref, media


def _check_avatar(settings: Settings, info: Probe, name: str) -> None:
    if not info.has_video:
        raise InvalidInput(f"{name} is not an image or a video: {AVATAR_HINT}")
    if info.width <= 0 or info.height <= 0:
        raise InvalidInput(f"{name} could not be decoded as an image or video: {AVATAR_HINT}")
    if max(info.width, info.height) > settings.max_input_side:
        raise InvalidInput(
            f"{name} is {info.width}×{info.height} pixels; the limit is {settings.max_input_side} pixels a side"
        )
    if not info.still and info.duration > settings.max_video_seconds:
        raise InvalidInput(
            f"{name} is a {info.duration:.0f} s video; the limit is {settings.max_video_seconds:.0f} s"
        )


# --- shared helpers ---------------------------------------------------------------------------------


def _fetch_input(ctx: StageContext, key: str, role: str) -> tuple[Path, str]:
    """Download an input medium after checking it exists and is not too large; (path, sha256)."""
    bucket = ctx.settings.bucket_inputs
    name = _display_name(key)
    info = ctx.store.stat(bucket, key)
    if info is None:
        # the spec may have been uploaded before its media: retry a few times before giving up
        raise RetryableError(f"the {role} {name} is not in the inputs bucket ({key})", defer=5.0, key=key)
    if info.size > ctx.settings.max_input_bytes:
        limit = ctx.settings.max_input_bytes / 1024 / 1024
        raise InvalidInput(
            f"{name} is {info.size / 1024 / 1024:.0f} MB; the limit is {limit:.0f} MB", key=key
        )
    dest = ctx.workdir / f"{role}-{name}"
    ctx.store.download(bucket, key, dest)
    return dest, sha256_file(dest)


def _probe(path: Path, name: str, hint: str) -> Probe:
    try:
        return probe(path)
    except FFmpegError as exc:
        raise InvalidInput(f"{name} is not a readable audio, image or video file: {hint}") from exc


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


def _write_job(ctx: StageContext, upload: Upload, spec: JobSpec, manifests: list[Manifest]) -> None:
    name = spec.name or (PurePosixPath(spec.audio).stem if spec.audio else "speech")
    record = JobRecord(
        job_id=ctx.job_id,
        source_bucket=upload.bucket,
        source_key=upload.key,
        name=name,
        tasks={m.task: m.avatar_name for m in manifests},
        chain=list(ctx.settings.chain),
    )
    ctx.save_bytes(
        record.model_dump_json(indent=1).encode(),
        "job.json",
        "application/json",
        key=job_record_key(ctx.job_id),
    )


def warm_up(settings: Settings, models: ModelCache) -> None:
    """Load the speech recognizer before the first job (a missing required model stops the worker)."""
    whisper_model(settings, models)


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
