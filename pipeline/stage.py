"""The stage contract: what a stage is (``FirstStage``, ``ManifestStage``), what it is given
(``StageContext``), and the runner's check that it kept its word (``run_stage``).

A stage is one registered object (``pipeline.registry``) with a name, the artifact roles
(``pipeline.contracts.Role``) it requires from earlier stages, those it provides (every manifest it hands
on has them) and those it may provide (some jobs only), optional ``warm_up`` (load models once per
worker, before the first message) and ``prepare_store`` (seed objects it relies on), and ``run``. The
first stage of a chain is a ``FirstStage``: ``run(ctx, upload: ObjectInfo)`` gets the uploaded object;
every other stage is a ``ManifestStage``: ``run(ctx, manifest: Manifest)`` gets the previous stage's
manifest. ``run`` returns the manifests to hand on (one per task); the runner (``run_stage``) checks
``requires`` before and ``provides`` after (``StageContractBroken``, naming the stage and the role),
writes them, last, and acknowledges the message. A stage never touches the bus; it raises errors from
``pipeline.errors`` and the runner decides what happens. The runner reads the job spec once and hands it
in ``ctx.spec`` (a stage after the first may count on it).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import hashlib
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline import install_hint
from pipeline.config import Settings
from pipeline.contracts import ArtifactRef, JobSpec, Manifest, QualityReport
from pipeline.errors import (
    ConfigError,
    MouthpieceError,
    PermanentError,
    RetryableError,
    StageContractBroken,
    StageStopped,
)
from pipeline.keys import artifact_key
from pipeline.registry import load_stage
from pipeline.storage.base import LocalFiles, ObjectInfo, ObjectStore

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Stage:
    """What every stage declares. Subclass ``FirstStage`` or ``ManifestStage``, set the class attributes
    and implement ``run``."""

    name: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()
    """Artifact roles the stage reads from the manifest it is given (checked before a run)."""
    provides: ClassVar[frozenset[str]] = frozenset()
    """Artifact roles every manifest it hands on has (checked after a run)."""
    may_provide: ClassVar[frozenset[str]] = frozenset()
    """Artifact roles it adds for some jobs only (render's ``video`` unless the renderer is none)."""
    takes_upload: ClassVar[bool] = False
    """True for the stage that starts a job from an uploaded object (``FirstStage``)."""

    def warm_up(self, settings: Settings, models: ModelCache) -> None:
        """Load what every message needs (models) once, when a worker starts."""

    def prepare_store(self, store: ObjectStore, settings: Settings) -> None:
        """Seed objects the stage relies on (once, when a worker starts)."""

    def run(self, ctx: StageContext, inputs: Any) -> list[Manifest]:
        """Do the stage's work for one task; the manifests to hand on (``FirstStage`` and
        ``ManifestStage`` say what ``inputs`` is)."""
        raise NotImplementedError


class FirstStage(Stage):
    """The stage that starts a job: it is given the uploaded object (a job spec or a voice clip)."""

    takes_upload: ClassVar[bool] = True

    def run(self, ctx: StageContext, inputs: ObjectInfo) -> list[Manifest]:
        raise NotImplementedError


class ManifestStage(Stage):
    """A stage after the first: it is given the previous stage's manifest for one task."""

    def run(self, ctx: StageContext, inputs: Manifest) -> list[Manifest]:
        raise NotImplementedError


def run_stage(stage: Stage, ctx: StageContext, inputs: ObjectInfo | Manifest) -> list[Manifest]:
    """Run ``stage`` on ``inputs`` holding it to its contract: the right kind of input, every role it
    ``requires`` there before, every role it ``provides`` in each manifest it hands on after."""
    if stage.takes_upload != isinstance(inputs, ObjectInfo):
        wanted = "an uploaded object" if stage.takes_upload else "a manifest"
        given = type(inputs).__name__
        raise StageContractBroken(
            f"{stage.name} takes {wanted}, not {'an' if given[0] in 'AEIOU' else 'a'} {given}",
            stage=stage.name,
            params={"role": "input"},
        )
    if isinstance(inputs, Manifest):
        _check_roles(stage, "was given", inputs, stage.requires)
    outputs = stage.run(ctx, inputs)
    for manifest in outputs:
        _check_roles(stage, "handed on", manifest, stage.provides)
    return outputs


def _check_roles(stage: Stage, what: str, manifest: Manifest, roles: frozenset[str]) -> None:
    missing = sorted(role for role in roles if role not in manifest.artifacts)
    if missing:
        raise StageContractBroken(
            f"{stage.name} {what} a manifest without {', '.join(missing)} (task {manifest.task}, "
            f"which has {', '.join(sorted(manifest.artifacts)) or 'no artifacts'})",
            stage=stage.name,
            job_id=manifest.job_id,
            params={"role": missing[0]},
        )


def get_stage(name: str) -> Stage:
    """The stage registered as ``name`` (``pipeline.registry``; its module imported on first use),
    checked to be a ``Stage`` called ``name``; ``ConfigError`` otherwise."""
    stage = load_stage(name)
    if not isinstance(stage, Stage) or stage.name != name:
        raise ConfigError(
            f"the object registered as stage {name!r} is not a pipeline.stage.Stage named {name!r}"
        )
    return stage


class ModelCache:
    """Models loaded once per worker process, on first use, shared by that process's jobs.

    Each name has its own lock: two different models load at the same time (the stages' warm-ups run in
    parallel threads at start, and Whisper's load need not wait for dlib's), while two users of the same
    name wait for the one load.

    A worker hands its stage a view (``for_stage``) that notes which stage asked for each name, so that
    a process that has finished with a stage (``mouthpiece render``'s one job has passed it) can give
    back what that stage alone used (``release``). A released model loads again on its next use."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._users: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        """Guards ``_locks`` and ``_users`` only: never held while a model loads."""
        self._user: str | None = None

    def for_stage(self, stage: str) -> ModelCache:
        """This cache, as ``stage`` uses it: the same models, each use noted as ``stage``'s."""
        view = copy.copy(self)  # shares the dicts and the lock: one cache, two names for its users
        view._user = stage
        return view

    def get(self, name: str, factory: Callable[[], T]) -> T:
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
            if self._user is not None:
                self._users.setdefault(name, set()).add(self._user)
        with lock:
            if name not in self._items:
                self._items[name] = factory()
            item: T = self._items[name]
            return item

    def release(self, stage: str) -> list[str]:
        """Drop the models no stage but ``stage`` asked for (telling a ``HeldOutside`` one to let go of
        what it holds outside this cache), and hand the freed memory back to the system; the names
        dropped. For a process that will not run ``stage`` again soon: a later use loads again."""
        with self._lock:
            names = [n for n, users in self._users.items() if users == {stage} and n in self._items]
        dropped = []
        for name in names:
            with self._locks[name]:
                item = self._items.pop(name, None)
            if item is None:
                continue
            dropped.append(name)
            if isinstance(item, HeldOutside):
                item.let_go()
            del item
        if dropped:
            return_free_memory()
        return dropped


class HeldOutside:
    """A model of the cache whose memory is held elsewhere too (a module's pool): ``let_go`` frees that
    when the cache releases it (``ModelCache.release``)."""

    def let_go(self) -> None:
        raise NotImplementedError


def return_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's ``malloc_trim``):
    a model's freed buffers otherwise stay in the process's resident memory, counted against it, until
    the heap happens to reuse them. Does nothing more where the C library has no ``malloc_trim``."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class StageContext:
    """One run's world: settings, the store, who it is for, the job spec, a scratch folder, logging,
    progress, and the way the worker tells a long stage to stop."""

    settings: Settings
    store: ObjectStore
    job_id: str
    task: str
    stage: str
    log: Any
    workdir: Path
    trigger: ObjectInfo | None = None
    """The object whose event started this run."""
    attempt: int = 1
    models: ModelCache = field(default_factory=ModelCache)
    on_progress: Callable[[float, str], None] = lambda fraction, note: None
    cpu_seconds: float = 0.0
    """CPU seconds of the worker process and its finished children (ffmpeg) while the stage ran, set by
    the runner when it ends (stages that overlap in one process share them; logged with ``stage_done``)."""
    _stop: list[MouthpieceError] = field(default_factory=list)
    _spec: JobSpec | None = field(default=None, repr=False)

    @property
    def spec(self) -> JobSpec:
        """The job's spec, read once by the runner before a stage after the first runs (the first
        stage makes it); a ``PermanentError`` if there is none."""
        if self._spec is None:
            raise PermanentError(f"job {self.job_id} has no spec (was it validated?)")
        return self._spec

    @spec.setter
    def spec(self, spec: JobSpec) -> None:
        self._spec = spec

    @property
    def has_spec(self) -> bool:
        """Whether the spec has been read (the runner reads it once, before a later stage runs)."""
        return self._spec is not None

    # --- stopping and progress -----------------------------------------------------------------------
    def stop(self, error: MouthpieceError) -> None:
        """Ask the stage to stop: its next progress report raises ``error`` (``StageStopped`` when the
        worker is going away or lost the task, ``JobCancelled`` when someone cancelled the job)."""
        if not self._stop:
            self._stop.append(error)

    def check(self) -> None:
        """Raise the stop error if the stage has been asked to stop."""
        if self._stop:
            raise self._stop[0]

    def progress(self, fraction: float, note: str = "") -> None:
        """Report 0..1 progress. Raises once the stage has been asked to stop (see ``stop``), so long
        work ends at its next report."""
        self.check()
        self.on_progress(min(1.0, max(0.0, fraction)), note)

    # --- reading artifacts ---------------------------------------------------------------------------
    def fetch(self, ref: ArtifactRef, name: str | None = None) -> Path:
        """A local file holding the artifact, checked against its SHA-256. On the local store that is
        the object's own file (read it, never write it); elsewhere a download into the scratch folder."""
        in_place = self._in_place(ref)
        if in_place is not None:
            return in_place
        dest = self.workdir / (name or ref.key.rsplit("/", 1)[-1])
        self.store.download(ref.bucket, ref.key, dest)
        if sha256_file(dest) != ref.sha256:
            raise RetryableError(f"{ref.bucket}/{ref.key} does not match its checksum", key=ref.key)
        return dest

    def fetch_object(self, info: ObjectInfo, name: str) -> tuple[Path, str]:
        """A local file holding any object (an upload, say) and its SHA-256: in place when the store
        recorded the hash as it was written, else downloaded to ``name`` in the scratch folder and hashed."""
        recorded = info.metadata.get("sha256")
        if recorded and isinstance(self.store, LocalFiles):
            path = self.store.local_path(info.bucket, info.key)
            if path is not None:
                return path, recorded
        dest = self.workdir / name
        self.store.download(info.bucket, info.key, dest)
        return dest, sha256_file(dest)

    def _in_place(self, ref: ArtifactRef) -> Path | None:
        """The object's file, when the store keeps it locally and recorded the same SHA-256 at write
        (so no byte is read twice)."""
        if not isinstance(self.store, LocalFiles):
            return None
        path = self.store.local_path(ref.bucket, ref.key)
        info = self.store.stat(ref.bucket, ref.key) if path is not None else None
        return path if info is not None and info.metadata.get("sha256") == ref.sha256 else None

    def load(self, ref: ArtifactRef, model: type[M]) -> M:
        """Read a JSON artifact as a pydantic model."""
        data = self.store.get(ref.bucket, ref.key)
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise RetryableError(f"{ref.bucket}/{ref.key} does not match its checksum", key=ref.key)
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            raise PermanentError(f"{ref.key} is not a valid {model.__name__}: {exc}", key=ref.key) from exc

    # --- writing artifacts ---------------------------------------------------------------------------
    def save(
        self, path: Path, name: str, content_type: str, *, key: str | None = None, bucket: str | None = None
    ) -> ArtifactRef:
        """Upload a file as this task's artifact ``name`` (or at ``key``); returns its reference. The
        local store hashes it while copying it in; other stores get the SHA-256 computed here."""
        digest = None if isinstance(self.store, LocalFiles) else sha256_file(path)
        return self._put(path, digest, content_type, key or self.key(name), bucket)

    def save_bytes(
        self, data: bytes, name: str, content_type: str, *, key: str | None = None, bucket: str | None = None
    ) -> ArtifactRef:
        digest = None if isinstance(self.store, LocalFiles) else hashlib.sha256(data).hexdigest()
        return self._put(data, digest, content_type, key or self.key(name), bucket)

    def save_model(self, model: BaseModel, name: str, *, key: str | None = None) -> ArtifactRef:
        data = model.model_dump_json(indent=1).encode()
        return self.save_bytes(data, name, "application/json", key=key)

    def _put(
        self, data: bytes | Path, digest: str | None, content_type: str, key: str, bucket: str | None
    ) -> ArtifactRef:
        bucket = bucket or self.settings.bucket_work
        metadata = {"sha256": digest} if digest else None
        info = self.store.put(bucket, key, data, content_type=content_type, metadata=metadata)
        recorded = digest or info.metadata["sha256"]  # a LocalFiles store records it as it writes
        return ArtifactRef(bucket=bucket, key=key, sha256=recorded, size=info.size, content_type=content_type)

    def key(self, name: str) -> str:
        """The work-bucket key of this task's artifact ``name``."""
        return artifact_key(self.job_id, self.task, name)

    def cached(self, key: str, content_type: str | None = None) -> ArtifactRef | None:
        """A content-addressed artifact already in the work bucket, or None (reuse across jobs)."""
        info = self.store.stat(self.settings.bucket_work, key)
        if info is None or "sha256" not in info.metadata:
            return None
        return ArtifactRef(
            bucket=self.settings.bucket_work,
            key=key,
            sha256=info.metadata["sha256"],
            size=info.size,
            content_type=content_type or info.content_type,
        )


__all__ = [
    "FirstStage",
    "ManifestStage",
    "ModelCache",
    "Stage",
    "StageContext",
    "StageStopped",
    "get_stage",
    "run_stage",
    "sha256_file",
]


# --- asking the shared stage modules, for commands and pages that check before submitting -----------------


def check_speech(settings: Settings, text: str, voice: str | None, language: str | None) -> None:
    """Refuse, as validate would, a text to speak that is empty or too long or names an unknown voice
    (``stages.lib.speech.synthesis.plan``)."""
    importlib.import_module("stages.lib.speech.synthesis").plan(
        settings, text, voice=voice, language=language
    )


def speech_unavailable() -> str | None:
    """Why this machine cannot speak a text (no engine of the voice extra), in words; None when it can."""
    if importlib.import_module("stages.lib.speech.synthesis").engine_installed():
        return None
    return f"text to speech needs the voice extra ({install_hint('voice')})"


def video_assessor() -> Callable[..., QualityReport]:
    """The quality report of any video file (``stages.lib.quality.assess_file``; the ``assess`` command),
    imported on first use like the stages."""
    assessor: Callable[..., QualityReport] = importlib.import_module("stages.lib.quality").assess_file
    return assessor
