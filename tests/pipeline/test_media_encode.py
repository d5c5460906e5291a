"""FrameWriter: what goes in comes out — the same frames, colours and count (the pixels travel down the
pipe as YUV 4:2:0 converted here); odd sizes are refused before ffmpeg starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from pipeline.config import load_settings
from pipeline.media import FrameWriter, decode_frames
from pipeline.media.encode import rgb_to_i420

FPS = 25.0


def _frames(width: int, height: int, n: int) -> list[np.ndarray]:
    """The astronaut photo sliding sideways, with a pure red, green and blue block in the corner."""
    import cv2

    photo = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        frame = np.ascontiguousarray(np.roll(photo, 4 * i, axis=1))
        for k, colour in enumerate(((255, 0, 0), (0, 255, 0), (0, 0, 255))):
            frame[8:40, 8 + 40 * k : 40 + 40 * k] = colour
        frames.append(frame)
    return frames


def test_frames_come_back_as_written(tmp_path: Path) -> None:
    """Every frame is in the file, in order, within a level or two of what was written; pure red, green
    and blue stay those colours (a swapped chroma plane would turn red into blue)."""
    width, height = 320, 240
    settings = load_settings(data_dir=tmp_path / "data")
    frames = _frames(width, height, 12)
    clip = tmp_path / "clip.mp4"
    with FrameWriter(settings, clip, width, height, FPS) as writer:
        for frame in frames:
            writer.write(frame)
    back = list(decode_frames(clip))
    assert len(back) == len(frames)
    assert back[0].shape == (height, width, 3)
    for got, sent in zip(back, frames, strict=True):
        assert np.abs(got.astype(int) - sent.astype(int)).mean() < 4.0
    for k in range(3):
        block = back[5][16:32, 16 + 40 * k : 32 + 40 * k].reshape(-1, 3).mean(axis=0)
        assert int(np.argmax(block)) == k and block[k] > 200, block


def test_odd_sizes_are_refused_in_words(tmp_path: Path) -> None:
    """An odd width is a ValueError naming the size, raised before any encoder starts."""
    settings = load_settings(data_dir=tmp_path / "data")
    with pytest.raises(ValueError, match="321x240"):
        FrameWriter(settings, tmp_path / "x.mp4", 321, 240, FPS)
    assert not (tmp_path / "x.mp4").exists()


def test_i420_layout_is_ffmpegs_yuv420p() -> None:
    """Y plane then quarter-size U then V, BT.601 limited range: white is Y 235, black Y 16, neutral
    chroma 128; red has V well above U."""
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[:2] = 255
    frame[2:, :2] = (255, 0, 0)
    yuv = rgb_to_i420(frame).reshape(-1)
    y, u, v = yuv[:16].reshape(4, 4), yuv[16:20].reshape(2, 2), yuv[20:24].reshape(2, 2)
    assert y[0, 0] == 235 and y[2, 3] == 16
    assert u[0, 0] == 128 and v[0, 0] == 128
    assert v[1, 0] > 200 and u[1, 0] < 128


def test_a_1080p_avatar_keeps_its_size_by_default() -> None:
    """1080p in, 1080p out: the default max_side bounds 4K avatars but leaves 1920x1080 (and portrait
    1080x1920) alone, so people get the resolution they gave."""
    from pipeline.media import bounded_size

    side = load_settings().max_side
    assert bounded_size(1920, 1080, side) == (1920, 1080)
    assert bounded_size(1080, 1920, side) == (1080, 1920)
    assert bounded_size(3840, 2160, side) == (1920, 1080)


def test_frames_waiting_for_the_encoder_are_bounded_in_bytes_not_in_count(tmp_path: Path) -> None:
    """The frames a render hands the encoder wait in a queue of at most ``FRAME_BUFFER_BYTES`` (eight
    1080p frames, not the 32 that held 200 MB), and never fewer than four (small pictures)."""
    from pipeline.media import FRAME_BUFFER_BYTES, FrameWriter, frames_within

    settings = load_settings(None, data_dir=tmp_path)
    for width, height in ((1920, 1080), (1280, 720), (64, 64)):
        with FrameWriter(settings, tmp_path / f"{width}.mp4", width, height, 25.0) as writer:
            waiting = writer._queue.maxsize
            writer.write(np.zeros((height, width, 3), np.uint8))
        assert waiting == frames_within(width, height) >= 4
        assert waiting * width * height * 3 <= max(FRAME_BUFFER_BYTES, 4 * width * height * 3)
    assert frames_within(1920, 1080) == 8 and frames_within(64, 64) > 1000
