"""The render stage's glue: frame cycling, renderer choice, checkpoint names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import stages.render as render
from pipeline.contracts import FaceFrame, FaceTrack, JobOptions, SubtitleMode
from pipeline.errors import ConfigError, InvalidInput
from pipeline.media import FrameWriter, decode_frames
from pipeline.stage import ModelCache
from tests.conftest import make_settings

COLOURS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)]


def coloured_clip(tmp_path: Path, n: int) -> tuple[Path, FaceTrack]:
    settings = make_settings(tmp_path)
    clip = tmp_path / "clip.mp4"
    with FrameWriter(settings, clip, 64, 64, 25.0) as writer:
        for i in range(n):
            writer.write(np.full((64, 64, 3), COLOURS[i % 4], np.uint8))
    frames = [FaceFrame(box=(10.0 + i, 10.0, 50.0, 50.0)) for i in range(n)]
    return clip, FaceTrack(detector="test", width=64, height=64, fps=25.0, frames=frames)


def colour_index(frame: np.ndarray) -> int:
    mean = frame.reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(mean - np.array(c)).sum() for c in COLOURS]))


def test_short_clip_plays_forward_and_back(tmp_path: Path) -> None:
    """An avatar clip shorter than the voice repeats ping-pong (0 1 2 3 2 1 0 1 ...), with its faces."""
    clip, track = coloured_clip(tmp_path, 4)
    out = list(render._frames(clip, track, 10))
    assert [i for i, _, _ in out] == list(range(10))
    assert [colour_index(f) for _, f, _ in out] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [face.box[0] for _, _, face in out] == [10, 11, 12, 13, 12, 11, 10, 11, 12, 13]


def test_long_clip_is_cut_to_the_voice(tmp_path: Path) -> None:
    """An avatar clip longer than the voice is read forward and stops at the last needed frame."""
    clip, track = coloured_clip(tmp_path, 8)
    out = list(render._frames(clip, track, 5))
    assert [colour_index(f) for _, f, _ in out] == [0, 1, 2, 3, 0]


def test_job_may_only_name_a_checkpoint_file_in_the_model_dir(tmp_path: Path) -> None:
    """A checkpoint in job options is a plain file name; paths (which would probe the worker) are refused."""
    settings = make_settings(tmp_path)
    assert render._checkpoint_path(settings, "mine.pth") == settings.models / "mine.pth"
    for bad in ("../secret.pth", "/etc/passwd", ".hidden"):
        with pytest.raises(InvalidInput):
            render._checkpoint_path(settings, bad)
    settings = settings.model_copy(update={"wav2lip_checkpoint": str(tmp_path / "abs.pth")})
    assert render._checkpoint_path(settings, None) == tmp_path / "abs.pth"


def test_missing_checkpoint_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """Asking for wav2lip without its weights is a ConfigError that names the file and the folder."""
    settings = make_settings(tmp_path)
    with pytest.raises(ConfigError, match=r"wav2lip_gan\.pth in .*models"):
        render.get_renderer(settings, ModelCache(), JobOptions(renderer="wav2lip"))


def test_viseme_renderer_is_built_once_per_worker(tmp_path: Path) -> None:
    """The renderer is cached per process: two jobs get the same instance."""
    settings, models = make_settings(tmp_path), ModelCache()
    first = render.get_renderer(settings, models, JobOptions())
    assert render.get_renderer(settings, models, JobOptions()) is first


def test_the_render_is_the_final_picture_unless_subtitles_are_burned_in() -> None:
    """One H.264 encode per job: the render encodes the published picture, except when subtitles are to
    be burned in (enhance must draw them, which needs an encode anyway)."""
    assert render.picture_is_final(JobOptions())
    assert render.picture_is_final(JobOptions(subtitles=SubtitleMode.soft))
    assert not render.picture_is_final(JobOptions(subtitles=SubtitleMode.burn))


def test_a_final_frame_writer_sharpens_and_encodes_at_the_final_quality(tmp_path: Path) -> None:
    """``intermediate=False, sharpen=True``: the finishing filters are applied in the render's encode
    (a flat frame stays flat; an edge gets steeper), at the final preset and crf."""
    settings = make_settings(tmp_path)
    frame = np.full((64, 64, 3), 100, np.uint8)
    frame[:, 32:] = 160
    outputs = {}
    for sharpen in (False, True):
        out = tmp_path / f"s{sharpen}.mp4"
        with FrameWriter(settings, out, 64, 64, 25.0, intermediate=False, sharpen=sharpen) as writer:
            for _ in range(3):
                writer.write(frame)
        outputs[sharpen] = next(iter(decode_frames(out))).astype(int)
    plain, sharp = outputs[False], outputs[True]
    assert abs(sharp[:, :20].mean() - plain[:, :20].mean()) < 2  # flat areas unchanged

    def overshoot(f: np.ndarray) -> float:  # the range across the edge: sharpening over- and undershoots
        return float(f[:, 28:36].max() - f[:, 28:36].min())

    assert overshoot(sharp) > overshoot(plain) + 5
