"""Every message and record that crosses a process boundary, as pydantic models.

Messages carry keys and checksums, never media bytes. Records are JSON objects in the work bucket
(``docs/architecture.md`` has the key layout). Models here hold no behaviour beyond validation and small
derived views, so any worker, CLI or service can read them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from pipeline.webhooks import check_application_id, check_interaction_token, parse_webhook_url

SCHEMA_VERSION = 1
REVEAL = {"reveal_secrets": True}
"""Pass as ``context=REVEAL`` to ``model_dump_json`` where secrets must be stored (job specs)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# --------------------------------------------------------------------------------------------------
# Bucket notification (the exact record MinIO publishes to a NATS JetStream target)
# --------------------------------------------------------------------------------------------------

CREATED_EVENTS = ("s3:ObjectCreated:Put", "s3:ObjectCreated:CompleteMultipartUpload")
"""The only event names that trigger work; copies, tagging and deletes are ignored."""


class S3Bucket(BaseModel):
    name: str
    ownerIdentity: dict[str, str] = Field(default_factory=lambda: {"principalId": "mouthpiece"})
    arn: str = ""


class S3Object(BaseModel):
    key: str = Field(description="URL-escaped object key, as MinIO sends it (decode with unquote_plus)")
    size: int = 0
    eTag: str = ""
    contentType: str = "application/octet-stream"
    userMetadata: dict[str, str] = Field(default_factory=dict)
    sequencer: str = ""


class S3Entity(BaseModel):
    s3SchemaVersion: str = "1.0"
    configurationId: str = "Config"
    bucket: S3Bucket
    object: S3Object


class S3Record(BaseModel):
    eventVersion: str = "2.0"
    eventSource: str = "minio:s3"
    awsRegion: str = ""
    eventTime: str
    eventName: str
    userIdentity: dict[str, str] = Field(default_factory=lambda: {"principalId": "mouthpiece"})
    requestParameters: dict[str, str] = Field(default_factory=dict)
    responseElements: dict[str, str] = Field(default_factory=dict)
    s3: S3Entity
    source: dict[str, str] = Field(default_factory=dict)


class BucketEvent(BaseModel):
    """A bucket notification: ``EventName``, ``Key`` (``bucket/key`` unescaped) and ``Records``."""

    model_config = ConfigDict(extra="allow")
    EventName: str
    Key: str
    Records: list[S3Record]


# --------------------------------------------------------------------------------------------------
# Job spec
# --------------------------------------------------------------------------------------------------

Secret = Annotated[SecretStr, Field(json_schema_extra={"secret": True})]


def _secret_out(value: SecretStr | None, info: SerializationInfo) -> str | None:
    """Secrets are written in clear only when the caller asks for it (``context=REVEAL``)."""
    if value is None:
        return None
    if info.context and info.context.get("reveal_secrets"):
        return value.get_secret_value()
    return "**********"


class Style(StrEnum):
    auto = "auto"
    photo = "photo"
    cartoon = "cartoon"


class SubtitleMode(StrEnum):
    none = "none"
    soft = "soft"
    burn = "burn"


class FaceChoice(StrEnum):
    largest = "largest"
    nearest_center = "center"


class Motion(StrEnum):
    """Life added to the avatar: blinks and head motion (photos), none (videos keep their own)."""

    none = "none"
    subtle = "subtle"
    lively = "lively"


@dataclass(frozen=True)
class Offered:
    """Where a job option is offered, declared on its ``JobOptions`` field (``Annotated[type, Offered(...)]``)
    so the CLI, the console's form and the job page follow it: ``cli`` is the help of its ``--flag``
    (None: no flag), ``form`` puts it on the console's new-job form, ``page`` shows it on a job's page."""

    cli: str | None = None
    form: bool = False
    page: bool = False


Renderer = Literal["viseme", "wav2lip", "musetalk", "none"]
"""The lip-sync methods (``JobOptions.renderer``, a character's default)."""


class JobOptions(_Model):
    renderer: Annotated[
        Renderer,
        Offered(
            cli="lip-sync method: viseme (default, no model), wav2lip (neural: needs the neural extra "
            "and a checkpoint; research-only weights), musetalk (neural: MuseTalk 1.5, needs the neural "
            "extra and `models --fetch musetalk`), none (the avatar as it is)",
            form=True,
            page=True,
        ),
    ] = Field(
        "viseme",
        description="viseme: no weights; wav2lip: neural (needs a checkpoint; research-only weights); "
        "musetalk: neural (MuseTalk 1.5; weights allowed commercially); none: no lip-sync",
    )
    style: Annotated[
        Style, Offered(cli="avatar style (default auto: told from the picture)", form=True, page=True)
    ] = Style.auto
    subtitles: Annotated[
        SubtitleMode,
        Offered(
            cli="none (default), soft (a subtitle track) or burn (drawn into the picture)",
            form=True,
            page=True,
        ),
    ] = SubtitleMode.none
    transcript: Annotated[
        str | None, Offered(cli="what the audio says (better timing and subtitles)", form=True)
    ] = Field(None, max_length=20_000, description="what the audio says, if known")
    checkpoint: Annotated[
        str | None, Offered(cli="wav2lip checkpoint (file in the model dir, or a path)")
    ] = Field(None, max_length=255, description="wav2lip checkpoint file name or path on the workers")
    face: Annotated[FaceChoice, Offered(page=True)] = FaceChoice.largest
    enhance: Annotated[bool, Offered(page=True)] = True
    # --- faces: motion and the quality report (issue 12) ---
    motion: Annotated[
        Motion | None, Offered(cli="blinks and head motion (photos: subtle)", form=True, page=True)
    ] = Field(
        None,
        description="blinks and head motion: none, subtle, lively; unset: subtle for photos, none for videos",
    )
    min_quality: Annotated[float, Offered(cli="quality score (0..1) under which the video is flagged")] = (
        Field(0.5, ge=0.0, le=1.0, description="quality score (0..1) under which the video is flagged")
    )
    fail_on_low_quality: bool = Field(False, description="fail the job instead of flagging it")
    language: Annotated[
        str | None, Offered(cli="the spoken language (ISO 639-1: en, de, ...); default: detected")
    ] = Field(
        None, pattern=r"^[a-z]{2,3}$", description="ISO 639-1 code of the spoken language; none: detected"
    )
    voice: Annotated[
        str | None,
        Offered(
            cli="the voice for the text: a Piper voice (en_US-joe-medium) or an eSpeak NG language (de, es)"
        ),
    ] = Field(
        None,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.+-]+$",
        description="voice for 'speech' text: a Piper voice name or an eSpeak NG voice; none: the default",
    )


def offered(where: Literal["cli", "form", "page"]) -> dict[str, Offered]:
    """The job options offered in ``where`` (the CLI's flags, the console's form, a job's page), in
    ``JobOptions``' order, each with its declaration."""
    out = {}
    for name, info in JobOptions.model_fields.items():
        found = next((m for m in info.metadata if isinstance(m, Offered)), None)
        if found is not None and (found.cli if where == "cli" else getattr(found, where)):
            out[name] = found
    return out


def option_values(name: str) -> list[str] | None:
    """The values option ``name`` may take (a ``Literal``'s or an enum's, an optional one's without
    None), or None for a free value."""
    annotation = JobOptions.model_fields[name].annotation
    for kind in (annotation, *get_args(annotation)):
        if get_origin(kind) is Literal:
            return [str(v) for v in get_args(kind)]
        if isinstance(kind, type) and issubclass(kind, StrEnum):
            return [m.value for m in kind]
    return None


# --- destinations: a spec may come from anyone who can upload, so each is checked for shape here and
# against the deployment's allow-lists in pipeline.destinations (validate checks both before any work)

MAX_PATH = 1024
"""Longest folder path or media reference a spec may give."""


def _printable(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("it contains control characters")
    return value


class FolderDestination(_Model):
    kind: Literal["folder"] = "folder"
    path: str | None = Field(
        None, max_length=MAX_PATH, description="directory on the publishing worker; none: the output folder"
    )

    _path_printable = field_validator("path")(_printable)


def _webhook_shape(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        parse_webhook_url(value.get_secret_value())
    return value


class DiscordInteractionDestination(_Model):
    """Edit the deferred reply of a slash command (the token is valid for 15 minutes)."""

    kind: Literal["discord_interaction"] = "discord_interaction"
    application_id: str = Field(description="digits only (at most 25)")
    token: Secret
    created_at: datetime = Field(default_factory=utcnow)
    fallback_webhook: Secret | None = None
    attachment_size_limit: int | None = Field(None, ge=1, le=1024**3)

    _ser_token = field_serializer("token", "fallback_webhook")(_secret_out)
    _app_digits = field_validator("application_id")(check_application_id)
    _fallback_shape = field_validator("fallback_webhook")(_webhook_shape)

    @field_validator("token")
    @classmethod
    def _token_alphabet(cls, value: SecretStr) -> SecretStr:
        check_interaction_token(value.get_secret_value())
        return value


class DiscordWebhookDestination(_Model):
    kind: Literal["discord_webhook"] = "discord_webhook"
    url: Secret
    content: str | None = Field(None, max_length=2000)

    _ser_url = field_serializer("url")(_secret_out)
    _url_shape = field_validator("url")(_webhook_shape)


Destination = Annotated[
    FolderDestination | DiscordInteractionDestination | DiscordWebhookDestination,
    Field(discriminator="kind"),
]


class JobSpec(_Model):
    """What to make. Media are keys in the inputs bucket, relative to the spec's own folder.

    Exactly one of ``audio`` (a voice clip) and ``speech`` (text to synthesize) is given. No avatars
    means the configured default avatar; several avatars make one video each (batch mode).
    """

    version: int = SCHEMA_VERSION
    name: str | None = Field(None, max_length=120)
    audio: str | None = Field(None, max_length=MAX_PATH)
    speech: str | None = Field(None, max_length=2000)
    avatars: list[Annotated[str, Field(max_length=MAX_PATH)]] = Field(default_factory=list, max_length=32)
    options: JobOptions = Field(default_factory=JobOptions)
    destinations: list[Destination] = Field(default_factory=list, max_length=8)
    source: str | None = Field(
        None, max_length=200, description="who submitted it: folder, cli, discord:<guild>, ..."
    )
    library: str | None = Field(
        None,
        pattern=r"^[a-z0-9-]{1,40}$",
        description="the character library 'character:<name>' avatars come from (none: the default one)",
    )

    @model_validator(mode="after")
    def _one_voice(self) -> JobSpec:
        if (self.audio is None) == (self.speech is None):
            raise ValueError("give exactly one of 'audio' (a voice clip) or 'speech' (text to speak)")
        return self


# --------------------------------------------------------------------------------------------------
# Artifacts and manifests
# --------------------------------------------------------------------------------------------------


class ArtifactRef(_Model):
    """Where an artifact lives and how to check it."""

    bucket: str
    key: str
    sha256: str
    size: int
    content_type: str = "application/octet-stream"


class Role(StrEnum):
    """The house's artifact roles: the keys of ``Manifest.artifacts`` that stages require and provide.
    A ``str``: ``artifacts["audio"]`` and ``artifacts[Role.audio]`` are the same entry, and a plugin
    stage may name a role of its own with a plain string."""

    audio = "audio"  # the voice, 16 kHz mono WAV (validate)
    avatar = "avatar"  # the picture, constant-fps H.264 (validate)
    speech = "speech"  # the speech timing, SpeechTiming JSON (validate)
    faces = "faces"  # the face track, FaceTrack JSON (detect)
    video = "video"  # the silent lip-synced clip (render)
    final = "final"  # the finished MP4 (enhance)
    srt = "srt"  # subtitles (enhance, when the job asks for them)
    vtt = "vtt"
    quality = "quality"  # the quality report, quality.json (enhance)


class MediaInfo(_Model):
    """Facts about a task's normalized media that every later stage needs."""

    audio_seconds: float
    fps: float
    width: int
    height: int
    frames: int = Field(description="frames in the normalized avatar clip (1 for a still photo)")
    still: bool
    upscaled_from: tuple[int, int] | None = Field(
        None, description="the avatar's own (width, height) when it was enlarged to the minimum height"
    )


class Manifest(_Model):
    """A stage's result for one task; written last, its storage event triggers the next stage.

    ``artifacts`` accumulates: every stage passes on what it was given plus what it made, under role
    names (audio, avatar, faces, video, srt, vtt, ...). How long each stage took is kept once, in the
    stage records (``StageRecord.seconds``), not here.
    """

    version: int = SCHEMA_VERSION
    job_id: str
    task: str
    stage: str
    spec_key: str
    avatar_name: str
    media: MediaInfo
    artifacts: dict[str, ArtifactRef] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)

    def advance(self, stage: str, info: dict[str, Any] | None = None, **artifacts: ArtifactRef) -> Manifest:
        """The manifest ``stage`` hands on: same task, new artifacts added."""
        return self.model_copy(
            update={
                "stage": stage,
                "artifacts": {**self.artifacts, **artifacts},
                "info": {**self.info, **(info or {})},
                "created_at": utcnow(),
            },
            deep=True,
        )


# --------------------------------------------------------------------------------------------------
# Face tracks (artifact of the detect stage, input of the renderers)
# --------------------------------------------------------------------------------------------------


class FaceFrame(_Model):
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in pixels")
    landmarks: list[tuple[float, float]] | None = Field(None, description="68 points (iBUG order) or none")
    confidence: float = 1.0
    interpolated: bool = Field(False, description="filled from neighbouring frames (no detection here)")
    absent: bool = Field(False, description="no face on this frame: renderers leave it untouched")
    pose: tuple[float, float, float] | None = Field(None, description="yaw, pitch, roll in degrees")


class FaceTrack(_Model):
    """One face followed through the avatar clip, one entry per frame of the normalized clip."""

    version: int = SCHEMA_VERSION
    detector: str
    width: int
    height: int
    fps: float
    frames: list[FaceFrame]


# --------------------------------------------------------------------------------------------------
# Speech timing (one artifact per voice clip, role ``speech``: read by render, enhance and the quality
# report; nothing aligns twice)
# --------------------------------------------------------------------------------------------------


class TimedWord(_Model):
    """A spoken word: as written in the transcript, or as recognized."""

    text: str
    start: float
    end: float
    probability: float | None = None


class TimedPhone(_Model):
    """A phone: ARPAbet without stress digit (pocketsphinx, English) or IPA (eSpeak NG, other languages)."""

    phone: str
    start: float
    end: float


class TimedViseme(_Model):
    """A mouth shape (Rhubarb letters A-H, X = rest) held from ``start`` to ``end``."""

    viseme: str
    start: float
    end: float


class Span(_Model):
    start: float
    end: float


class SpeechTiming(_Model):
    """When what is said in a voice clip: words, phones, visemes and the speech regions (silence is
    everything outside ``speech``). Times in seconds from the start of the normalized audio."""

    version: int = SCHEMA_VERSION
    duration: float
    language: str | None = Field(None, description="ISO 639-1 code, given or detected")
    source: str = Field(description="where the words came from: transcript, whisper, pocketsphinx, energy")
    text: str = ""
    words: list[TimedWord] = Field(default_factory=list)
    phones: list[TimedPhone] = Field(default_factory=list)
    visemes: list[TimedViseme] = Field(default_factory=list)
    speech: list[Span] = Field(default_factory=list, description="speech regions (voice activity)")


# --------------------------------------------------------------------------------------------------
# Quality report (artifact ``quality`` of the enhance stage, published as ``<name>.quality.json``)
# --------------------------------------------------------------------------------------------------


class QualitySummary(_Model):
    """The part of a ``QualityReport`` that job status shows."""

    score: float = Field(ge=0.0, le=1.0, description="1: nothing measured is wrong")
    flagged: bool = Field(False, description="score under the job's min_quality")
    offset_ms: float | None = Field(None, description="sound later than the mouth by this much (ms)")
    problems: list[str] = Field(default_factory=list, description="what lowered the score, in words")


class QualityReport(QualitySummary):
    """How good one finished video is, measured on the video itself, without model weights.

    Levels are in 0..255 units of 8-bit pixels. ``None`` where a measure could not be taken (no face on
    any frame, no silence to look at, no speech to correlate).
    """

    version: int = SCHEMA_VERSION
    threshold: float = Field(description="the job's min_quality")
    offset_confidence: float = Field(0.0, description="peak correlation of mouth opening and loudness")
    silence_motion: float | None = Field(None, description="mouth motion in pauses relative to speech")
    outside_change: float | None = Field(None, description="mean change away from the face vs the avatar")
    mouth_flicker: float | None = Field(None, description="frame-to-frame jitter around the mouth")
    duration_drift_ms: float = Field(0.0, description="video length minus audio length (ms)")
    skin_change: float | None = Field(
        None,
        description="Cb/Cr levels the lower face's colour is from the avatar's skin there (None: no avatar "
        "to compare with, or a report made before this measure)",
    )
    frames: int = 0
    face_frames: int = Field(0, description="frames on which a mouth was measured")
    method: str = Field("", description="how the mouth was measured: landmarks or intensity")


# --------------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------------


class State(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


FINAL_STATES = frozenset({State.done, State.failed, State.cancelled})
"""States a stage record never leaves (except by ``mouthpiece retry``)."""


class Run(_Model):
    """One time a stage actually started on a task, and how that run ended."""

    n: int = Field(description="1 for the first run")
    worker: str
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    outcome: str = Field(
        "running",
        description="running, done, failed, retry, crashed (the worker died), handed_back (the worker "
        "stopped and gave the task back), lost (another worker took over), cancelled",
    )
    reason: str | None = None

    @property
    def counts(self) -> bool:
        """Whether the run uses up the attempt budget: a task handed back by a stopping worker did not
        fail, so it does not."""
        return self.outcome != "handed_back"


class Owner(_Model):
    """The process that holds a claim. On the same host a dead owner is recognized at once: its pid
    no longer runs, or runs a process that started at another moment (``started``, kernel ticks)."""

    host: str
    boot: str = Field("", description="the host's boot id (pids repeat across boots)")
    pid: int
    started: int = Field(0, description="the process start time in clock ticks since boot")
    worker: str = Field(description="host:pid:tag, shown in records and logs")


class Claim(_Model):
    """The one worker allowed to run a (job, task, stage) now; kept in the bus's key-value store and
    changed only by compare-and-set, so two workers never both hold it."""

    job_id: str
    task: str
    stage: str
    state: Literal["running", "released"] = "running"
    owner: Owner | None = None
    message: str | None = Field(None, description="the bus message the owner runs")
    heartbeat_at: datetime = Field(default_factory=utcnow)
    trigger: str = Field("", description="bucket/key of the object whose event starts this stage")
    runs: list[Run] = Field(default_factory=list)


class StageRecord(_Model):
    """One task's progress through one stage; the job status is folded from these."""

    job_id: str
    task: str
    stage: str
    state: State
    attempt: int = Field(
        1,
        description="runs so far, this one included (busy naks and redeliveries "
        "of a message whose run is alive are not runs)",
    )
    worker: str = ""
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    seconds: float | None = None
    progress: float | None = None
    reason: str | None = Field(None, description="what went wrong, in full (for operators)")
    code: str | None = Field(None, description="stable error code (pipeline.errors, pipeline.messages)")
    error: str | None = Field(None, description="error class, for operators")
    outputs: list[str] = Field(default_factory=list, description="published keys or locations")
    trigger: str | None = Field(None, description="bucket/key of the object whose event started this stage")
    runs: list[Run] = Field(default_factory=list, description="every run of this stage on this task")
    notes: list[str] = Field(default_factory=list, description="facts for people, from the manifests' info")


class JobRecord(_Model):
    """Written once by validate: the job's identity and its tasks (one per avatar)."""

    job_id: str
    source_bucket: str
    source_key: str
    name: str
    tasks: dict[str, str] = Field(description="task id -> avatar name")
    chain: list[str]
    created_at: datetime = Field(default_factory=utcnow)


class TaskStatus(_Model):
    state: State
    stage: str | None = None
    progress: float | None = None
    reason: str | None = Field(None, description="for people: the catalogue's sentence for the code")
    code: str | None = None
    attempts: int = 0
    outputs: list[str] = Field(default_factory=list)
    quality: QualitySummary | None = None


class JobStatus(_Model):
    """What a person wants to know about a job. Never contains secrets."""

    job_id: str
    name: str | None = None
    state: State
    stage: str | None = None
    reason: str | None = Field(None, description="for people: why it failed (pipeline.messages)")
    code: str | None = None
    tasks: dict[str, TaskStatus] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict, description="stage -> seconds (max over tasks)")
    outputs: list[str] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list, description="what people should know: the voice used, scripts a font lacks"
    )
    flagged: bool = Field(False, description="a task's video scored under the job's min_quality")
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


class Progress(BaseModel):
    """Ephemeral progress note published while a stage works (not stored)."""

    job_id: str
    task: str
    stage: str
    fraction: float
    note: str = ""


class DeadLetter(_Model):
    """A message that could not be processed within the delivery limit."""

    stage: str
    subject: str
    deliveries: int
    reason: str
    payload: str
    job_id: str | None = None
    task: str | None = None
    at: datetime = Field(default_factory=utcnow)


class FailedDrop(_Model):
    """A drop (a file or folder put into the watched folder) that never became a job, and why; written
    to ``work/drops/failed/`` so the console and ``mouthpiece status`` can list it."""

    name: str = Field(max_length=300, description="the entry's name in the folder")
    reason: str = Field(description="the note the user got (also in WHY.txt)")
    code: str | None = None
    source: str = "folder"
    moved_to: str | None = Field(None, description="where the files were moved (the .failed folder)")
    at: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------------------------------
# Character library (``characters/<library>/`` in the inputs bucket; pipeline.characters)
# --------------------------------------------------------------------------------------------------


class CharacterDefaults(_Model):
    """How a character is rendered unless the job says otherwise (unset: the job's own options)."""

    voice: str | None = Field(None, max_length=100, pattern=r"^[A-Za-z0-9_.+-]+$")
    renderer: Renderer | None = None
    style: Style | None = None
    motion: Motion | None = None


class Character(_Model):
    """A named avatar of a community: its picture or clip, defaults, who added it and when."""

    version: int = SCHEMA_VERSION
    name: str = Field(min_length=1, max_length=32)
    library: str = Field(pattern=r"^[a-z0-9-]{1,40}$")
    media: str = Field(max_length=MAX_PATH, description="key of the picture or clip in the inputs bucket")
    media_name: str = Field("", max_length=200, description="the file's name as the person gave it")
    kind: Literal["image", "video"] = "image"
    defaults: CharacterDefaults = Field(default_factory=CharacterDefaults)
    added_by: str = Field("", max_length=200)
    added_at: datetime = Field(default_factory=utcnow)


class MemberJobs(_Model):
    """The jobs a Discord member started lately (``discord/members/<guild>/<user>.json`` in the work
    bucket): how ``pipeline.discord.fairness`` counts their jobs in flight."""

    jobs: dict[str, datetime] = Field(default_factory=dict, description="job id -> when it was asked for")


# --------------------------------------------------------------------------------------------------
# Stage timings measured by this installation (``stats/timings.json`` in the work bucket; pipeline.eta)
# --------------------------------------------------------------------------------------------------


class StageRate(_Model):
    """How long a stage takes here, per second of voice (a moving average of the runs measured)."""

    seconds_per_audio_second: float = Field(ge=0.0)
    samples: int = Field(1, ge=1)
    updated_at: datetime = Field(default_factory=utcnow)


class Timings(_Model):
    """Measured rates by ``<stage>`` (render: ``render/<renderer>``)."""

    version: int = SCHEMA_VERSION
    rates: dict[str, StageRate] = Field(default_factory=dict)


def job_id_for(bucket: str, key: str, etag: str) -> str:
    """The job id of an input object: the same object version always gives the same job."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{etag.strip(chr(34))}".encode()).hexdigest()
    return f"j{digest[:19]}"
