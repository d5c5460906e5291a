"""The pipeline inside one ComfyUI process: the registered stages, run through the stage environment.

Nodes never copy a stage's work: they hand files to ``pipeline.submit`` (the same job spec every
ingress writes) and run the registry's stages (``validate``, ``detect``, ``render``, ``enhance``) on a
``pipeline.testing.StageEnvironment`` over a local store in the pack's data folder. One ``Engine`` per
process holds the settings (built once, from the environment) and the model cache, so a renderer's or
detector's models load on first use and are reused by every later prompt.

A ``Take`` is one avatar's job as it travels along the graph: the job's spec and the latest manifest
before the finishing encode. Nodes that change the finish (Enhance, Subtitles) run ``enhance`` again on
that manifest with their options; Background hands on a manifest whose picture is its composite.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.contracts import ArtifactRef, JobOptions, JobSpec, Manifest
from pipeline.errors import MouthpieceError, NoFaceFound
from pipeline.messages import entry, for_people
from pipeline.stage import get_stage
from pipeline.status import read_spec
from pipeline.storage.base import LocalFiles
from pipeline.submit import Submission, submit
from pipeline.testing import StageEnvironment

Report = Callable[[float, str], None]


class NodeError(Exception):
    """A failure shown on the node as a sentence (ComfyUI prints the message; no chained traceback)."""


def sentence(exc: MouthpieceError, job_id: str = "comfyui") -> str:
    """The words a ComfyUI user reads for a pipeline error: the user's own mistakes in the pipeline's
    catalogue words (naming their file), anything else as the catalogue's sentence and the reason."""
    if entry(exc.code).users_fault:
        return for_people(exc.code, str(exc), job_id)
    return f"{entry(exc.code).text.format(reference=job_id)} ({exc})"


@dataclass(frozen=True)
class Take:
    """One avatar's job: its spec, the manifest to finish from, and whether a face was found."""

    spec: JobSpec
    manifest: Manifest
    has_face: bool
    video: Path | None = None
    """The finished MP4 (H.264 + AAC) once a node made one."""
    subtitles: str = ""
    """The finished video's subtitles as SRT ('' when none were asked for)."""

    @property
    def job_id(self) -> str:
        return self.manifest.job_id

    def with_options(self, **changes: Any) -> Take:
        """The same take with changed job options (what Enhance and Subtitles set)."""
        options = changed(self.spec.options, **changes)
        return replace(self, spec=self.spec.model_copy(update={"options": options}))


class Engine:
    """The stages of one ComfyUI process over a local store (see the module's docstring)."""

    _instance: Engine | None = None
    _lock = threading.Lock()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = StageEnvironment(settings)
        self.videos = settings.data_dir / "comfyui" / "videos"
        self.files = settings.data_dir / "comfyui" / "files"

    @classmethod
    def get(cls) -> Engine:
        """The process's engine, made on first use (settings from the environment, store local)."""
        with cls._lock:
            if cls._instance is None:
                from mouthpiece_comfyui.runtime import data_dir

                base = Settings()
                # its own local buckets; the model folder stays mouthpiece's (what `mouthpiece models` fills)
                update = {
                    "store": "local",
                    "data_dir": data_dir(base.comfyui_data_dir),
                    "model_dir": base.models,
                }
                cls._instance = cls(base.model_copy(update=update))
            return cls._instance

    # --- running stages ------------------------------------------------------------------------------
    def run_stage(
        self,
        name: str,
        inputs: Any,
        report: Report,
        *,
        job_id: str,
        task: str = "a0",
        spec: JobSpec | None = None,
    ) -> list[Manifest]:
        """Run the registered stage ``name`` once, its progress going to ``report``."""
        stage = get_stage(name)
        extra: dict[str, Any] = {"trigger": inputs} if stage.takes_upload else {}
        with self.env.running(name, job_id=job_id, task=task, spec=spec, **extra) as ctx:
            ctx.on_progress = report
            return stage.run(ctx, inputs)

    def begin(
        self, voice: Path, avatars: list[Path], options: JobOptions, report: Report, name: str = "comfyui"
    ) -> list[Take]:
        """Validate the voice and avatars as one job and find each avatar's face: a take per avatar
        (``has_face`` false where detect found none: the graph decides what happens then)."""
        submitted = submit(
            self.env.store,
            self.settings,
            Submission(audio=voice, avatars=tuple(avatars), name=name, options=options, source="comfyui"),
        )
        info = self.env.store.stat(self.settings.bucket_inputs, submitted.spec_key)
        assert info is not None
        job_id = submitted.job_id
        manifests = self.run_stage("validate", info, _part(report, 0.0, 0.3), job_id=job_id)
        spec = read_spec(self.env.store, self.settings, job_id)
        takes = []
        for index, manifest in enumerate(manifests):
            share = 0.3 + 0.7 * index / len(manifests), 0.3 + 0.7 * (index + 1) / len(manifests)
            takes.append(self.detect(spec, manifest, _part(report, *share)))
        report(1.0, "faces looked for")  # detect reports nothing more once its last detector found none
        return takes

    def detect(self, spec: JobSpec, manifest: Manifest, report: Report) -> Take:
        try:
            found = self.run_stage(
                "detect", manifest, report, job_id=manifest.job_id, task=manifest.task, spec=spec
            )
        except NoFaceFound:
            return Take(spec, manifest, has_face=False)
        return Take(spec, found[0], has_face=True)

    def render(self, take: Take, options: JobOptions, report: Report) -> Take:
        """Lip-sync a take with ``options`` (renderer and its settings) and finish it (voice muxed in,
        no enhancement or subtitles yet). A take without a face gets the voice over its untouched
        picture (renderer ``none``)."""
        if not take.has_face:
            options = changed(options, renderer="none")
        spec = take.spec.model_copy(update={"options": options})
        source = take.manifest
        rendered = self.run_stage(
            "render", source, _part(report, 0.0, 0.8), job_id=source.job_id, task=source.task, spec=spec
        )[0]
        plain = changed(options, enhance=False, subtitles="none")
        return self.finish(Take(take.spec.model_copy(update={"options": plain}), rendered, take.has_face),
                           _part(report, 0.8, 1.0))  # fmt: skip

    def finish(self, take: Take, report: Report) -> Take:
        """Run ``enhance`` (the one finishing encode: loudness, sharpen, subtitles as the take's options
        say) on the take's manifest; the take with its finished video."""
        m = take.manifest
        done = self.run_stage("enhance", m, report, job_id=m.job_id, task=m.task, spec=take.spec)[0]
        video = self._keep(done.artifacts["final"], ".mp4")
        srt = done.artifacts.get("srt")
        text = self.env.store.get(srt.bucket, srt.key).decode("utf-8") if srt is not None else ""
        return replace(take, video=video, subtitles=text)

    def save_artifact(self, take: Take, path: Path, name: str, content_type: str) -> ArtifactRef:
        """Store a file as an artifact of the take's task (as a stage's ``ctx.save`` would)."""
        m = take.manifest
        with self.env.running("enhance", job_id=m.job_id, task=m.task, spec=take.spec) as ctx:
            return ctx.save(path, name, content_type)

    def avatar_file(self, take: Take) -> Path:
        """The take's normalized avatar clip (a file validate recognises as already normalized)."""
        ref = take.manifest.artifacts["avatar"]
        path = self.local(ref)
        if path is None:
            path = self.files / f"{ref.sha256[:24]}.mp4"
            self.env.store.download(ref.bucket, ref.key, path)
        return path

    def local(self, ref: ArtifactRef) -> Path | None:
        store = self.env.store
        return store.local_path(ref.bucket, ref.key) if isinstance(store, LocalFiles) else None

    def _keep(self, ref: ArtifactRef, suffix: str) -> Path:
        """A copy of an artifact named by its content: later finishes of the same task rewrite the
        artifact's key, never a video an earlier node handed on."""
        self.videos.mkdir(parents=True, exist_ok=True)
        dst = self.videos / f"{ref.sha256[:24]}{suffix}"
        if not dst.exists():
            src = self.local(ref)
            tmp = dst.with_suffix(".part")
            if src is not None:
                shutil.copyfile(src, tmp)
            else:
                self.env.store.download(ref.bucket, ref.key, tmp)
            tmp.replace(dst)
        return dst


def changed(options: JobOptions, **changes: Any) -> JobOptions:
    """``options`` with ``changes``, validated (enum fields get enum values)."""
    return JobOptions.model_validate({**options.model_dump(), **changes})


def _part(report: Report, start: float, end: float) -> Report:
    def inner(fraction: float, note: str = "") -> None:
        report(start + (end - start) * fraction, note)

    return inner


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
