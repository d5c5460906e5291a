"""Running a stage without a bus: a stage context in one line, for tests and debugging.

Like temporalio's ``ActivityEnvironment``: ``StageEnvironment(settings).context(spec=spec)`` builds the
``StageContext`` a worker would hand the stage (store, scratch folder, logger bound to job and stage,
model cache, progress recorded in ``env.progress``); ``env.run("detect", manifest, spec=spec)`` runs a
registered stage on it and removes the scratch folder afterwards.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from pipeline.config import Settings
from pipeline.contracts import JobSpec, Manifest
from pipeline.owner import scratch_folder
from pipeline.stage import ModelCache, Stage, StageContext, get_stage
from pipeline.storage import ObjectStore, open_store

DEFAULT_JOB = "j0000000000000000000"


class StageEnvironment:
    """A store, a model cache and scratch folders for running stages directly."""

    def __init__(
        self, settings: Settings, store: ObjectStore | None = None, models: ModelCache | None = None
    ):
        self.settings = settings
        self.store = store or open_store(settings)
        self.models = models or ModelCache()
        self.progress: list[tuple[float, str]] = []

    def context(
        self,
        *,
        job_id: str = DEFAULT_JOB,
        task: str = "a0",
        stage: str = "validate",
        spec: JobSpec | None = None,
        workdir: Path | None = None,
        **extra: Any,
    ) -> StageContext:
        """The context a worker would give ``stage`` for ``job_id``/``task`` (its own scratch folder
        under the data dir unless ``workdir`` is given)."""
        return StageContext(
            settings=self.settings,
            store=self.store,
            job_id=job_id,
            task=task,
            stage=stage,
            log=structlog.get_logger(f"mouthpiece.{stage}").bind(job_id=job_id, task=task, stage=stage),
            workdir=workdir or scratch_folder(self.settings.data_dir, f"mp-{stage}"),
            _spec=spec,
            models=self.models,
            on_progress=lambda fraction, note: self.progress.append((fraction, note)),
            **extra,
        )

    @contextmanager
    def running(self, stage: str, **kwargs: Any) -> Iterator[StageContext]:
        """A context whose scratch folder is removed when the block ends (as the runner does)."""
        ctx = self.context(stage=stage, **kwargs)
        try:
            yield ctx
        finally:
            shutil.rmtree(ctx.workdir, ignore_errors=True)

    def run(self, stage: str | Stage, inputs: Any, **kwargs: Any) -> list[Manifest]:
        """Run a registered stage (by name) or a stage object on ``inputs``; its manifests."""
        impl = get_stage(stage) if isinstance(stage, str) else stage
        with self.running(impl.name, **kwargs) as ctx:
            return impl.run(ctx, inputs)
