"""Fixtures of the detect tests: fake face-alignment weights and a real stage context on a local store
(the pictures are in tests/stages/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings, load_settings
from pipeline.contracts import REVEAL, JobOptions, JobSpec, Manifest, MediaInfo
from pipeline.keys import spec_key
from pipeline.media import count_frames, normalize_avatar, probe
from pipeline.stage import ModelCache, StageContext
from pipeline.storage.local import LocalStore
from pipeline.testing import StageEnvironment
from stages.detect.detectors import FAN_FILE, S3FD_FILE
from tests.stages.conftest import write_rgb

# --- fake face-alignment weights ------------------------------------------------------------------


def fake_s3fd_state() -> dict[str, Any]:
    """A deterministic S3FD whose only confident output is the coarsest head's (one box per small image).

    Random init (seed 0); every classification head is zeroed and biased to "background" except
    conv7_2's, biased to "face"; box regressions are zeroed so boxes are the anchors themselves.
    """
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.manual_seed(0)
    state: dict[str, Any] = s3fd().state_dict()
    for name, tensor in state.items():
        if "mbox_loc" in name or "mbox_conf" in name:
            tensor.zero_()
        if "mbox_conf" in name and name.endswith("bias"):
            face = name.startswith("conv7_2")
            values = [-3.0, 3.0] if face else [3.0, -3.0]
            tensor[:] = torch.tensor([3.0, 3.0, 3.0, -3.0] if tensor.numel() == 4 else values)
    return state


def fake_fan_state() -> dict[str, Any]:
    """A deterministic random-init FAN (4 stacks), as face-alignment 1.5 builds it."""
    import torch
    from face_alignment.models import FAN

    torch.manual_seed(0)
    return FAN(4).state_dict()


@pytest.fixture(scope="session")
def fake_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding fake S3FD and FAN weights under the file names face-alignment uses."""
    import torch

    folder = tmp_path_factory.mktemp("fa-weights")
    torch.save(fake_s3fd_state(), folder / S3FD_FILE)
    torch.save(fake_fan_state(), folder / FAN_FILE)
    return folder


@pytest.fixture(scope="session")
def fa_build(fake_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(``build_detector("face_alignment", "cpu", fake_weights)``, the TORCH_HOME it was built under).

    TORCH_HOME points at a folder that does not exist, so a test can show the hub cache was not used.
    """
    from stages.detect.detectors import build_detector

    torch_home = tmp_path_factory.mktemp("torch") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        return build_detector("face_alignment", "cpu", fake_weights), torch_home


@pytest.fixture
def eager_landmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    """face-alignment's heatmap decoding runs as plain Python instead of being numba-compiled.

    numba compiles it on first use (about 20 s of CPU here; ``warm_up`` pays that once per worker in
    production). The Python originals compute the same thing, which is all a test with random weights needs.
    """
    import face_alignment.utils as fa_utils

    for name in ("_get_preds_fromhm", "transform_np"):
        monkeypatch.setattr(fa_utils, name, getattr(fa_utils, name).py_func)


# --- a stage context on a local store ---------------------------------------------------------------


@dataclass
class StageEnv:
    """Settings, a local store with the three buckets, and helpers to make tasks for the stage."""

    settings: Settings
    store: LocalStore
    root: Path
    progress: list[float] = field(default_factory=list)
    _jobs: int = 0

    def context(self, models: ModelCache | None = None, log: Any = None) -> StageContext:
        """A fresh job's context (each call is another job: content-addressed reuse crosses jobs)."""
        self._jobs += 1
        job_id = f"j{self._jobs:019x}"
        workdir = self.root / "work" / job_id
        workdir.mkdir(parents=True)
        ctx = StageEnvironment(self.settings, self.store, models).context(
            job_id=job_id, stage="detect", workdir=workdir
        )
        ctx.on_progress = lambda fraction, note: self.progress.append(fraction)
        if log is not None:
            ctx.log = log
        return ctx

    def manifest(
        self,
        ctx: StageContext,
        clip: Path,
        name: str,
        options: JobOptions | None = None,
        audio_seconds: float = 2.0,
    ) -> Manifest:
        """Store the job's spec and the avatar clip; the manifest validate would hand on for a voice of
        ``audio_seconds``."""
        spec = JobSpec(audio="voice.wav", avatars=[name], options=options or JobOptions())
        ctx.spec = spec  # what the runner hands the stage
        data = spec.model_dump_json(context=REVEAL).encode()
        self.store.put(self.settings.bucket_work, spec_key(ctx.job_id), data, content_type="application/json")
        info = probe(clip)
        frames = count_frames(clip)
        media = MediaInfo(
            audio_seconds=audio_seconds,
            fps=self.settings.fps,
            width=info.width,
            height=info.height,
            frames=frames,
            still=frames == 1,
        )
        avatar = ctx.save(clip, "avatar.mp4", "video/mp4")
        return Manifest(
            job_id=ctx.job_id,
            task=ctx.task,
            stage="validate",
            spec_key=spec_key(ctx.job_id),
            avatar_name=name,
            media=media,
            artifacts={"avatar": avatar},
        )

    def normalized(self, image: np.ndarray, name: str) -> Path:
        """``image`` saved as ``name`` and normalized by validate's own function (a one-frame clip)."""
        src = write_rgb(self.root / name, image)
        dst = self.root / f"{Path(name).stem}.mp4"
        normalize_avatar(self.settings, src, dst, probe(src))
        return dst


@pytest.fixture
def env(tmp_path: Path) -> StageEnv:
    """A real local store under tmp_path and settings whose data (and model) dir is there too."""
    settings = load_settings(None, data_dir=tmp_path / "data")
    store = LocalStore(tmp_path / "store")
    store.ensure_buckets(["inputs", "work", "outputs"])
    return StageEnv(settings=settings, store=store, root=tmp_path)
