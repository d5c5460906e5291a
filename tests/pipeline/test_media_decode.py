"""Luma as the landmark and quality code read it: full range whatever the file's range, and scaled
while reading (the plane is scaled before it is stretched, which changes levels by rounding only)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from pipeline.config import load_settings
from pipeline.media import decode_lazily, ffmpeg_binary


def test_scaled_luma_is_the_full_range_luma_scaled(tmp_path: Path) -> None:
    """A limited-range 1280×720 clip of the astronaut: its luma read at 640×360 is the full-size
    full-range luma scaled down, within half a level on average (a few at most, where levels clip);
    black and white span 0..255 (stretched), and ``full_range=False`` keeps the plane as stored."""
    photo = tmp_path / "astronaut.png"
    picture = cv2.resize(data.astronaut(), (1280, 720), interpolation=cv2.INTER_AREA)
    picture[:40, :200], picture[:40, 200:400] = 0, 255  # a black and a white block
    cv2.imwrite(str(photo), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        [ffmpeg_binary(load_settings(None, data_dir=tmp_path)), "-v", "error", "-i", str(photo), "-vf",
         "scale=out_range=limited,format=yuv420p", "-c:v", "libx264", "-crf", "10", "-frames:v", "1", str(clip)],
        check=True,
    )  # fmt: skip
    full = next(iter(decode_lazily(clip, grey=True)))()
    scaled = next(iter(decode_lazily(clip, (640, 360), grey=True)))()
    stored = next(iter(decode_lazily(clip, (640, 360), grey=True, full_range=False)))()
    expected = cv2.resize(full, (640, 360), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert scaled.shape == (360, 640) and scaled.dtype == np.uint8 and scaled.flags.c_contiguous
    difference = np.abs(scaled.astype(np.float32) - expected)
    assert difference.mean() < 0.5 and difference.max() <= 6
    assert scaled[5:15, 10:90].mean() < 3 and scaled[5:15, 110:190].mean() > 252
    assert 12 <= stored[5:15, 10:90].mean() <= 20 and 230 <= stored[5:15, 110:190].mean() <= 240
