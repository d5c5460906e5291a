"""The pack's engine runs the registered stages in-process: a take per avatar with or without a face,
lip-sync and the finishing encode, models built once per process, and a progress report that raises
(ComfyUI's Cancel) stops a stage where it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mouthpiece_comfyui.engine import Engine
from mouthpiece_comfyui.media import audio_from_file, audio_to_wav
from pipeline.contracts import JobOptions
from pipeline.media import probe
from pipeline.stage import ModelCache
from tests.conftest import make_settings

pytestmark = pytest.mark.slow
ASSETS = Path(__file__).resolve().parents[2] / "pipeline" / "assets"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(make_settings(tmp_path).model_copy(update={"store": "local"}))


@pytest.fixture
def voice(tmp_path: Path) -> Path:
    """The first 2.5 s of JFK, as a ComfyUI AUDIO written out by the pack."""
    audio = audio_from_file(ASSETS / "jfk.flac")
    audio["waveform"] = audio["waveform"][..., : int(2.5 * audio["sample_rate"])]
    return audio_to_wav(audio, tmp_path / "voice")


@pytest.fixture
def no_face(tmp_path: Path) -> Path:
    y, x = np.mgrid[0:240, 0:320]
    path = tmp_path / "gradient.jpg"
    Image.fromarray(np.dstack([x * 255 // 320, y * 255 // 240, np.full_like(x, 90)]).astype(np.uint8)).save(
        path
    )
    return path


def test_a_take_per_avatar_and_the_voice_over_a_picture_without_a_face(
    engine: Engine, voice: Path, no_face: Path
) -> None:
    reports: list[float] = []
    takes = engine.begin(
        voice, [ASSETS / "astronaut.png", no_face], JobOptions(), lambda f, n: reports.append(f)
    )
    assert [t.has_face for t in takes] == [True, False]
    assert reports == sorted(reports) and reports[-1] == pytest.approx(1.0)
    for take in takes:
        done = engine.render(take, JobOptions(), lambda f, n: None)
        assert done.video is not None
        info = probe(done.video)
        assert info.video_codec == "h264" and info.audio_codec == "aac"
        assert info.duration == pytest.approx(2.5, abs=0.1)
    subtitled = engine.finish(done.with_options(subtitles="soft"), lambda f, n: None)
    assert "And so my fellow" in subtitled.subtitles and subtitled.video != done.video


def test_models_are_built_once_per_process(
    engine: Engine, voice: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    original = ModelCache.get

    def counting(self: ModelCache, name: str, factory: object) -> object:
        def make() -> object:
            built.append(name)
            return factory()  # type: ignore[operator]

        return original(self, name, make)

    monkeypatch.setattr(ModelCache, "get", counting)
    (take,) = engine.begin(voice, [ASSETS / "astronaut.png"], JobOptions(), lambda f, n: None)
    engine.render(take, JobOptions(motion="lively"), lambda f, n: None)
    first = list(built)
    assert first, "no model went through the cache"
    (again,) = engine.begin(voice, [ASSETS / "astronaut.png"], JobOptions(motion="none"), lambda f, n: None)
    engine.render(again, JobOptions(motion="none"), lambda f, n: None)
    assert built == first


def test_a_raising_progress_report_stops_the_render(engine: Engine, voice: Path) -> None:
    """What ComfyUI's Cancel does: the next progress report raises, and the stage ends there."""

    class Cancelled(Exception):
        pass

    (take,) = engine.begin(voice, [ASSETS / "astronaut.png"], JobOptions(), lambda f, n: None)
    seen: list[float] = []

    def report(fraction: float, note: str = "") -> None:
        seen.append(fraction)
        if fraction > 0.2:
            raise Cancelled

    with pytest.raises(Cancelled):
        engine.render(take, JobOptions(), report)
    assert max(seen) < 0.5
