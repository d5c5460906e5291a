"""The quality measures (stages.lib.quality.analysis) on series with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.lib.quality.analysis import (
    av_offset,
    confidence_of,
    face_shift,
    flicker,
    score,
    silence_motion,
    skin_change,
    sync_failure,
)

FPS = 25.0


def test_offset_of_a_shifted_series() -> None:
    """Mouth opening that leads a loudness envelope by 5 frames (audio late) reads +200 ms at 25 fps;
    leading it by a fraction of a frame is found between frames; unrelated noise gives no offset."""
    rng = np.random.default_rng(0)
    loud = np.convolve(rng.random(400), np.ones(4) / 4, mode="same")
    mouth = np.roll(loud, -5)  # the mouth shows frame t+5's loudness at t: the audio is 200 ms late
    offset, confidence = av_offset(mouth, loud, FPS)
    assert offset == pytest.approx(0.2, abs=0.01) and confidence > 0.9
    t = np.arange(400) / FPS
    smooth = np.sin(2 * np.pi * 0.7 * t) + 0.5 * np.sin(2 * np.pi * 1.3 * t)
    later = np.sin(2 * np.pi * 0.7 * (t + 0.02)) + 0.5 * np.sin(2 * np.pi * 1.3 * (t + 0.02))
    offset, _ = av_offset(later, smooth, FPS)
    assert offset == pytest.approx(0.02, abs=0.008)
    assert av_offset(rng.random(400), rng.random(400), FPS)[0] is None


def test_offset_ignores_frames_without_a_face() -> None:
    """Frames with no mouth (NaN) are left out of the correlation, not counted as closed."""
    rng = np.random.default_rng(1)
    loud = np.convolve(rng.random(300), np.ones(3) / 3, mode="same")
    mouth = np.roll(loud, 2).astype(float)
    mouth[100:150] = np.nan
    offset, _ = av_offset(mouth, loud, FPS)
    assert offset == pytest.approx(-0.08, abs=0.01)


def test_silence_motion() -> None:
    """A mouth still in pauses scores near 0, one that keeps moving near 1."""
    t = np.arange(300)
    speaking = ((t // 50) % 2 == 0).astype(np.float32)
    talking = 0.2 + 0.1 * np.sin(t / 2.0)
    still = np.where(speaking > 0, talking, 0.15)
    assert silence_motion(still, speaking) == pytest.approx(0.0, abs=0.01)
    assert silence_motion(talking, speaking) == pytest.approx(1.0, abs=0.2)
    assert silence_motion(talking, np.ones(300, np.float32)) is None


def test_flicker_sees_alternation_not_smooth_change() -> None:
    """A crop brightening steadily has no flicker; one alternating by ±8 levels has 8."""
    base = np.full((10, 10), 100, np.uint8)
    assert flicker(base, base + 5, base + 10) == 0.0
    assert flicker(base, base + 8, base) == 8.0


def test_flicker_does_not_count_a_moving_head() -> None:
    """A textured crop moving 4 px a frame reads as heavy flicker unless the face's motion (from the
    landmarks) is given; given it, what is left is near 0, while real alternation still shows."""
    rng = np.random.default_rng(2)
    scene = (rng.random((120, 160)) * 255).astype(np.uint8)
    scene = np.asarray(cv2.GaussianBlur(scene, (5, 5), 0))
    before, now, after = (scene[20:100, 40 + dx : 120 + dx] for dx in (-4, 0, 4))  # the face moves left:
    margin, moved = 12, ((4.0, 0.0), (-4.0, 0.0))  # 4 px right of here on the frame before, left after
    assert flicker(before, now, after, margin=margin) > 5.0
    assert flicker(before, now, after, margin=margin, shifts=moved) < 0.5
    brighter = np.clip(now.astype(int) + 10, 0, 255).astype(np.uint8)
    assert flicker(before, brighter, after, margin=margin, shifts=moved) > 8.0


def test_face_shift_ignores_the_mouth() -> None:
    """The face's motion is that of its points away from the mouth: an opening mouth is no motion."""
    rng = np.random.default_rng(3)
    points = rng.random((68, 2)) * 100
    talking = points.copy()
    talking[48:68, 1] += 6.0
    assert face_shift(points, talking) == (0.0, 0.0)
    assert face_shift(points, points + np.array([3.0, -2.0])) == pytest.approx((3.0, -2.0))


def test_offset_limits_are_asymmetric_as_people_are() -> None:
    """ITU-R BT.1359: sound ahead of the picture is noticed from 45 ms and acceptable to 90 ms, sound
    behind it from 125 and to 185 ms. The score is 1 up to noticeable, 0.5 at acceptable: the default
    min_quality (0.5) flags exactly what lies outside the acceptable window."""
    assert score({"offset_ms": -45.0})[0] == 1.0 and score({"offset_ms": 125.0})[0] == 1.0
    assert score({"offset_ms": -90.0})[0] == pytest.approx(0.5)
    assert score({"offset_ms": 185.0})[0] == pytest.approx(0.5)
    assert score({"offset_ms": -120.0})[0] < 0.5 < score({"offset_ms": 120.0})[0]
    assert score({"offset_ms": -95.0})[0] < 0.5 < score({"offset_ms": 180.0})[0]


def test_confidence_is_low_only_when_the_sync_is_hard_to_read() -> None:
    """A clear correlation peak with a face on every frame and speech to compare: 1; the face on half
    the frames halves it; a weak peak or a second of speech lowers it."""
    assert confidence_of(0.7, 1.0, 10.0) == 1.0
    assert confidence_of(0.7, 0.5, 10.0) == pytest.approx(0.5)
    assert confidence_of(0.1, 1.0, 10.0) == pytest.approx(0.2)
    assert confidence_of(0.7, 1.0, 1.0) == pytest.approx(1 / 3)


def test_score_is_the_worst_measure_with_reasons() -> None:
    """Fine measures score 1; a voice 150 ms late (noticeable, still acceptable) pulls the score down
    and says so in words, with the direction; 120 ms early is said the other way round."""
    assert score({"offset_ms": 10.0, "outside_change": 1.0, "duration_drift_ms": 0.0}) == (1.0, [])
    value, problems = score({"offset_ms": 150.0, "outside_change": 1.0, "silence_motion": None})
    assert value == pytest.approx((245 - 150) / (245 - 125))
    assert problems == ["the voice is 150 ms late (sound behind the picture is acceptable to about 185 ms)"]
    _, problems = score({"offset_ms": -120.0})
    assert problems == ["the voice is 120 ms early (sound ahead of the picture is acceptable to about 90 ms)"]


def test_lips_that_do_not_sync_are_told_only_where_they_could_be_read() -> None:
    """A mouth still while the voice speaks, or moving without the voice (low confidence), is a sync
    failure with a face on most frames and seconds of speech; with the face on half the frames, or a
    second of speech, nothing is claimed."""
    t = np.arange(300)
    speaking = ((t // 50) % 2 == 0).astype(np.float32)
    still = 0.1 + 0.004 * np.sin(t * 1.7)
    talking = 0.1 + 0.1 * np.abs(np.sin(t / 4.0))
    assert (sync_failure(still, speaking, 1.0, 1.0, 6.0) or "").startswith("the mouth hardly moves")
    assert (sync_failure(talking, speaking, 0.3, 1.0, 6.0) or "").startswith("the mouth does not follow")
    assert sync_failure(talking, speaking, 0.9, 1.0, 6.0) is None
    assert sync_failure(still, speaking, 1.0, 0.5, 6.0) is None
    assert sync_failure(talking, speaking, 0.3, 1.0, 1.0) is None


def _face_points() -> np.ndarray:
    """68 points of a face in a 200 px frame: the jaw (0-16) a U from cheek to cheek, the nose's base
    (31-35) across the middle, the inner lips (60-67) a small ring below it; the rest unused here."""
    points = np.zeros((68, 2))
    angles = np.linspace(np.pi, 0.0, 17)
    points[:17] = np.stack([100 + 60 * np.cos(angles), 80 + 80 * np.sin(angles)], axis=1)
    points[31:36] = np.stack([np.linspace(85, 115, 5), np.full(5, 90.0)], axis=1)
    ring = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    points[60:68] = np.stack([100 + 15 * np.cos(ring), 125 + 6 * np.sin(ring)], axis=1)
    return points


def test_skin_change_tells_noise_from_the_avatars_own_skin() -> None:
    """A skin-coloured face with texture (seeded noise of 8 levels a channel) against itself re-noised: 0
    (its own texture is taken out); with a dark open mouth inside the lips: still 0 (the inside of
    the lips is left out); with the lower face painted green and magenta, or a flat grey: far over the
    limit of 15."""
    rng = np.random.default_rng(0)
    skin = np.array([200, 150, 120], np.float32)

    def face(seed: int) -> np.ndarray:
        texture = np.random.default_rng(seed).normal(0, 8, (200, 200, 3)).astype(np.float32)
        return np.clip(skin + texture, 0, 255).astype(np.uint8)

    points, avatar = _face_points(), face(1)
    assert skin_change(face(2), points, avatar, points) == pytest.approx(0.0, abs=0.5)
    talking = face(3)
    cv2.fillPoly(talking, [np.round(points[60:68]).astype(np.int32)], (20, 10, 10))
    assert skin_change(talking, points, avatar, points) == pytest.approx(0.0, abs=0.5)  # 1.8 counting it
    painted = face(4)
    blocks = rng.choice(np.array([[40, 220, 60], [220, 40, 200]], np.uint8), (25, 25))
    painted[80:] = np.kron(blocks, np.ones((8, 8, 1), np.uint8))[:120]  # type: ignore[no-untyped-call]
    assert (skin_change(painted, points, avatar, points) or 0.0) > 40.0
    grey = face(5)
    grey[80:] = 128
    assert (skin_change(grey, points, avatar, points) or 0.0) > 15.0
    assert skin_change(avatar, points * 0.01, avatar, points) is None  # a face too small to read
    value, problems = score({"skin_change": 30.0})
    assert value == 0.0 and "mouthpiece models" in problems[0]
