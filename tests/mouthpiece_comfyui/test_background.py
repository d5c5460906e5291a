"""The weightless matte keeps the person and finds the background; blur and replace change only what
is behind (on the astronaut portrait, and on a moving clip made here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mouthpiece_comfyui.background import blurred, cover, matte, replace_background

ASTRONAUT = Path(__file__).resolve().parents[2] / "pipeline" / "assets" / "astronaut.png"
FACE = (180.0, 70.0, 290.0, 190.0)  # the astronaut's face box (x1, y1, x2, y2), checked by eye


def portrait() -> np.ndarray:
    return np.asarray(Image.open(ASTRONAUT).convert("RGB"))


def test_matte_keeps_face_and_body_and_drops_the_background() -> None:
    """Face, suit and neck are the person (alpha near 1); the flag, the shuttle and the wall are not."""
    alpha = matte(portrait(), FACE)
    assert alpha.shape == (512, 512) and alpha.dtype == np.float32
    for x, y in [(235, 130), (235, 230), (120, 400), (330, 330)]:  # face, neck, suit left and right
        assert alpha[y, x] > 0.9, (x, y, alpha[y, x])
    for x, y in [(30, 40), (480, 30), (430, 200)]:  # flag, top right wall, shuttle
        assert alpha[y, x] < 0.1, (x, y, alpha[y, x])


def test_matte_on_a_flat_picture_is_the_seed() -> None:
    """GrabCut learns nothing from one colour; the matte is still a shape around the face, not an error."""
    flat = np.full((240, 320, 3), 128, np.uint8)
    alpha = matte(flat, (130.0, 60.0, 190.0, 130.0))
    assert alpha[95, 160] > 0.9 and alpha[5, 5] < 0.1


def test_blur_changes_only_the_background() -> None:
    frame = portrait()
    (out,) = list(replace_background([frame], FACE, mode="blur", strength=40))
    face = (slice(100, 160), slice(205, 265))
    wall = (slice(0, 60), slice(440, 512))
    assert np.abs(out[face].astype(int) - frame[face]).mean() < 2
    assert np.abs(out[wall].astype(int) - blurred(frame, 40)[wall]).mean() < 2


def test_replace_puts_the_picture_behind_and_follows_a_moving_clip() -> None:
    """Twelve frames of the portrait sliding sideways (matte recomputed every few frames): the face is
    kept on every frame and the corner shows the new background."""
    frame = portrait()
    green = np.zeros((100, 300, 3), np.uint8)
    green[..., 1] = 200
    frames = [np.roll(frame, 2 * i, axis=1) for i in range(12)]
    out = list(replace_background(frames, FACE, mode="replace", picture=green))
    assert len(out) == 12
    for i, o in enumerate(out):
        cx = 235 + 2 * i
        assert (
            np.abs(o[120:140, cx - 10 : cx + 10].astype(int) - frames[i][120:140, cx - 10 : cx + 10]).mean()
            < 3
        )
        assert o[10, 500, 1] > 180 and o[10, 500, 0] < 30


def test_cover_fills_and_centres() -> None:
    picture = np.arange(100 * 300 * 3, dtype=np.uint32).reshape(100, 300, 3).astype(np.uint8)
    assert cover(picture, 64, 48).shape == (48, 64, 3)
    assert cover(picture, 600, 100).shape == (100, 600, 3)
