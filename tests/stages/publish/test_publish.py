"""The publish stage's naming and folder rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.contracts import FolderDestination, JobRecord, JobSpec, Manifest, MediaInfo
from pipeline.destinations.folder import folder_of
from pipeline.errors import PermanentError
from pipeline.keys import job_record_key
from pipeline.storage import open_store
from stages.publish import output_name
from tests.conftest import make_settings

JOB = "j0123456789abcdef012"


def manifest(task: str, avatar: str) -> Manifest:
    media = MediaInfo(audio_seconds=1.0, fps=25.0, width=2, height=2, frames=1, still=True)
    return Manifest(job_id=JOB, task=task, stage="enhance", spec_key="x", avatar_name=avatar, media=media)


def test_batch_videos_are_named_by_avatar_and_never_collide(tmp_path: Path) -> None:
    """hello + [alice.png, face.png, face.jpg] → hello-alice.mp4, and distinct names for the two faces."""
    settings = make_settings(tmp_path)
    store = open_store(settings)
    tasks = {"a0": "alice.png", "a1": "face.png", "a2": "face.jpg"}
    record = JobRecord(
        job_id=JOB,
        source_bucket="inputs",
        source_key="k",
        name="hello",
        tasks=tasks,
        chain=["validate", "publish"],
    )
    store.put(settings.bucket_work, job_record_key(JOB), record.model_dump_json().encode())
    spec = JobSpec(audio="hello.flac")
    names = [output_name(store, settings, manifest(t, a), spec) for t, a in tasks.items()]
    assert names[0] == "hello-alice.mp4"
    assert len(set(names)) == 3


def test_folder_destinations_stay_in_allowed_folders(tmp_path: Path) -> None:
    """A spec may publish into the output folder or the operator's output_dirs, nowhere else."""
    allowed = tmp_path / "shared-videos"
    settings = make_settings(tmp_path, output_dirs=[allowed])
    assert folder_of(settings, FolderDestination()) == settings.outbox
    assert folder_of(settings, FolderDestination(path=str(allowed / "team"))) == (allowed / "team").resolve()
    assert folder_of(settings, FolderDestination(path="outbox/sub")) == (settings.outbox / "sub").resolve()
    for bad in ("/etc", "../../elsewhere", "~/.ssh", str(allowed) + "-not"):
        with pytest.raises(PermanentError, match="not an allowed output folder"):
            folder_of(settings, FolderDestination(path=bad))
