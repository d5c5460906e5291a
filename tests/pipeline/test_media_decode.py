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


def _tone_clip(ffmpeg: str, dst: Path, seconds: float) -> None:
    """A grey picture with a 440 Hz tone (lavfi's sine: amplitude 1/8), stereo AAC at 48 kHz."""
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", f"sine=f=440:d={seconds}", "-f", "lavfi", "-i",
         f"color=c=gray:s=64x64:r=25:d={seconds}", "-c:a", "aac", "-ar", "48000", "-ac", "2",
         "-c:v", "libx264", "-shortest", str(dst)],
        check=True,
    )  # fmt: skip


def test_decoded_sound_is_placed_on_the_picture_timeline_and_peaks_near_its_own_size(
    tmp_path: Path,
) -> None:
    """``decode_audio``: mono float32 at 16 kHz, one sample per 1/16000 s of the stream; ``origin`` cuts
    sound before the moment or pads silence after it, to the sample; ten minutes of sound peak at
    about the result's size, not several times it (it is decoded into one array)."""
    import resource

    from pipeline.media import decode_audio

    ffmpeg = ffmpeg_binary(load_settings(None, data_dir=tmp_path))
    clip = tmp_path / "tone.mp4"
    _tone_clip(ffmpeg, clip, 3.0)
    sound = decode_audio(clip)
    assert sound.dtype == np.float32 and abs(len(sound) - 48_000) < 1600
    assert 0.11 < float(np.sqrt(np.mean(sound[8000:40_000] ** 2))) * np.sqrt(2) < 0.14  # the tone
    cut = decode_audio(clip, origin=0.5)
    assert len(sound) - len(cut) == 8000 and np.array_equal(cut, sound[8000:])
    padded = decode_audio(clip, origin=-0.25)
    assert len(padded) - len(sound) == 4000 and not padded[:4000].any()
    assert np.array_equal(padded[4000:], sound)
    long = tmp_path / "long.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=f=220:d=600", "-c:a", "aac", "-ar", "48000",
         "-ac", "2", str(long)],
        check=True,
    )  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ten_minutes = decode_audio(long)
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert abs(len(ten_minutes) / 16_000 - 600) < 0.2
    assert grew < 2 * ten_minutes.nbytes / 2**20, (
        f"peak grew {grew:.0f} MiB for {ten_minutes.nbytes / 2**20:.0f}"
    )
