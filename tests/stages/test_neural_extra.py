"""Without the neural extra (torch, face-alignment): the default job needs none of it, a worker still
starts with the neural files in its model directory, and asking for the neural renderer or detector
says which extra to install. Its absence is made real for this process by blocking the imports
(``sys.modules[name] = None`` is what Python itself uses to mark a module as unimportable)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import stages.render as render
from pipeline.contracts import JobOptions
from pipeline.errors import ConfigError
from pipeline.messages import for_people
from pipeline.stage import ModelCache
from stages.detect.detectors import FACE_ALIGNMENT_FILES, build_detector, resolve_kind
from stages.lib.faces.landmarks import dlib_available
from tests.conftest import make_settings


@pytest.fixture
def no_neural(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("torch", "face_alignment"):
        monkeypatch.setitem(sys.modules, name, None)


def test_the_neural_renderer_names_the_extra(tmp_path: Path, no_neural: None) -> None:
    """A wav2lip job on a worker without torch fails with code neural_unavailable, naming the extra;
    people are told to ask for the default renderer."""
    settings = make_settings(tmp_path)
    settings.models.mkdir(parents=True)
    (settings.models / "wav2lip_gan.pth").write_bytes(b"weights")
    with pytest.raises(ConfigError) as caught:
        render.get_renderer(settings, ModelCache(), JobOptions(renderer="wav2lip"))
    assert caught.value.code == "neural_unavailable"
    assert "pip install 'mouthpiece-avatar[neural]'" in caught.value.reason and "torch" in caught.value.reason
    assert "default renderer" in for_people(caught.value.code, caught.value.reason, "j1")


def test_a_worker_without_torch_still_starts_and_renders_visemes(tmp_path: Path, no_neural: None) -> None:
    """warm_up with a Wav2Lip checkpoint present but no torch builds the viseme renderer and skips the
    neural one instead of stopping the worker."""
    settings = make_settings(tmp_path)
    settings.models.mkdir(parents=True)
    (settings.models / "wav2lip_gan.pth").write_bytes(b"weights")
    models = ModelCache()
    render.warm_up(settings, models)
    assert render.get_renderer(settings, models, JobOptions()).name == "viseme"


def test_detection_skips_face_alignment_without_the_extra(tmp_path: Path, no_neural: None) -> None:
    """detector auto with face-alignment's weights present but the package absent is the next tier
    (dlib, installed with the default install); asking for face_alignment explicitly names the extra."""
    for name in FACE_ALIGNMENT_FILES:
        (tmp_path / name).write_bytes(b"weights")
    assert dlib_available()
    assert resolve_kind("auto", tmp_path) == "dlib"
    assert build_detector("auto", "cpu", tmp_path).name == "dlib"
    with pytest.raises(ConfigError, match=r"mouthpiece-avatar\[neural\]") as caught:
        build_detector("face_alignment", "cpu", tmp_path)
    assert caught.value.code == "neural_unavailable"
