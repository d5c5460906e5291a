"""The quality measures (stages.quality.analysis) on series with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from stages.quality.analysis import av_offset, flicker, score, silence_motion

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


def test_score_is_the_worst_measure_with_reasons() -> None:
    """Fine measures score 1; a 120 ms offset pulls the score down and says so, in words."""
    assert score({"offset_ms": 10.0, "outside_change": 1.0, "duration_drift_ms": 0.0}) == (1.0, [])
    value, problems = score({"offset_ms": 120.0, "outside_change": 1.0, "silence_motion": None})
    assert value == pytest.approx((200 - 120) / (200 - 45))
    assert problems == ["the voice comes 120 ms after the mouth moves"]
