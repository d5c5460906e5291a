"""The stage contract binds: the runner's ``run_stage`` gives a first stage the upload and the others a
manifest, and refuses a run whose input lacks a role the stage requires, or whose output lacks one it
provides, with ``StageContractBroken`` naming the stage and the role."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.contracts import ArtifactRef, Manifest, MediaInfo, Role
from pipeline.errors import StageContractBroken
from pipeline.keys import spec_key
from pipeline.stage import FirstStage, ManifestStage, StageContext, run_stage
from pipeline.storage.base import ObjectInfo
from pipeline.testing import StageEnvironment

JOB = "j" + "0" * 19
REF = ArtifactRef(bucket="work", key="jobs/j/a0/x", sha256="0" * 64, size=1)


def manifest(*roles: str) -> Manifest:
    media = MediaInfo(audio_seconds=1.0, fps=25.0, width=2, height=2, frames=1, still=True)
    return Manifest(
        job_id=JOB,
        task="a0",
        stage="detect",
        spec_key=spec_key(JOB),
        avatar_name="a.png",
        media=media,
        artifacts=dict.fromkeys(roles, REF),
    )


class Paint(ManifestStage):
    """Needs faces, promises a video; hands on what ``adds`` says."""

    name = "paint"
    requires = frozenset({Role.faces})
    provides = frozenset({Role.video})

    def __init__(self, adds: tuple[str, ...]) -> None:
        self.adds, self.ran = adds, False

    def run(self, ctx: StageContext, inputs: Manifest) -> list[Manifest]:
        self.ran = True
        return [inputs.advance(self.name, **dict.fromkeys(self.adds, REF))]


class Take(FirstStage):
    name = "take"
    provides = frozenset({Role.audio})

    def run(self, ctx: StageContext, inputs: ObjectInfo) -> list[Manifest]:
        return [manifest("audio")]


def run(settings: Settings, stage: Any, inputs: Any) -> list[Manifest]:
    env = StageEnvironment(settings)
    with env.running(stage.name) as ctx:
        return run_stage(stage, ctx, inputs)


def test_a_stage_that_keeps_its_contract_runs(settings: Settings) -> None:
    """Its required roles there, its provided roles handed on: the manifests come back as it made them."""
    (out,) = run(settings, Paint(adds=("video",)), manifest("avatar", "faces"))
    assert set(out.artifacts) == {"avatar", "faces", "video"}
    assert out.artifacts[Role.video] == out.artifacts["video"]  # a role is its string


def test_a_missing_required_role_stops_the_run_before_it_starts(settings: Settings) -> None:
    """The stage is not run; the error is coded and names the stage and the role."""
    stage = Paint(adds=("video",))
    with pytest.raises(StageContractBroken) as caught:
        run(settings, stage, manifest("avatar"))
    assert not stage.ran
    assert caught.value.code == "stage_contract"
    assert caught.value.stage == "paint" and caught.value.params["role"] == "faces"
    assert caught.value.reason.startswith("paint was given a manifest without faces (task a0")


def test_a_promised_role_missing_from_the_output_fails_the_run(settings: Settings) -> None:
    """A stage handing on a manifest without what it ``provides`` fails: the next stage would have."""
    with pytest.raises(StageContractBroken) as caught:
        run(settings, Paint(adds=()), manifest("avatar", "faces"))
    assert caught.value.params["role"] == "video"
    assert "paint handed on a manifest without video" in caught.value.reason


def test_the_first_stage_gets_the_upload_and_the_others_a_manifest(settings: Settings) -> None:
    """Each kind of stage is given its own kind of input; the wrong kind is refused by name."""
    upload = ObjectInfo(bucket="inputs", key="audio/a.flac", size=1, etag="x")
    assert [m.task for m in run(settings, Take(), upload)] == ["a0"]
    with pytest.raises(StageContractBroken, match="take takes an uploaded object, not a Manifest"):
        run(settings, Take(), manifest("audio"))
    with pytest.raises(StageContractBroken, match="paint takes a manifest, not an ObjectInfo"):
        run(settings, Paint(adds=("video",)), upload)


def test_model_cache_loads_different_models_at_once_and_one_model_once() -> None:
    """Two models load at the same time (the stages' warm-ups run in parallel at start: Whisper's load
    must not wait for dlib's), while threads asking for the same model share its one load."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.stage import ModelCache

    cache = ModelCache()
    both_loading = threading.Barrier(2, timeout=5.0)  # broken (an error) if the loads run one by one
    loads: list[str] = []

    def load(name: str) -> str:
        loads.append(name)
        both_loading.wait()
        return name.upper()

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(cache.get, "whisper", lambda: load("whisper"))
        second = pool.submit(cache.get, "dlib", lambda: load("dlib"))
        assert (first.result(), second.result()) == ("WHISPER", "DLIB")
        again = [pool.submit(cache.get, "dlib", lambda: load("dlib")) for _ in range(3)]
        assert [f.result() for f in again] == ["DLIB"] * 3
    assert sorted(loads) == ["dlib", "whisper"]


def test_a_stage_s_own_models_are_released_and_shared_ones_kept() -> None:
    """``release(stage)`` drops what no other stage asked for (a ``HeldOutside`` model is told to let
    go; a lock, whose ``release`` means something else, is only dropped), keeps what another stage uses
    too, and a released model loads again on its next use."""
    import threading

    from pipeline.stage import HeldOutside, ModelCache

    class Model(HeldOutside):
        def __init__(self) -> None:
            self.released = 0

        def let_go(self) -> None:
            self.released += 1

    cache = ModelCache()
    validate, enhance = cache.for_stage("validate"), cache.for_stage("enhance")
    whisper = validate.get("whisper", Model)
    dlib = validate.get("dlib", Model)
    validate.get("whisper-lock", threading.Lock)
    assert enhance.get("dlib", Model) is dlib
    cache.get("untracked", Model)  # no stage named: never released
    assert validate.release("validate") == ["whisper", "whisper-lock"]
    assert whisper.released == 1 and dlib.released == 0
    assert enhance.release("enhance") == []
    again = validate.get("whisper", Model)
    assert again is not whisper and validate.get("whisper", Model) is again
