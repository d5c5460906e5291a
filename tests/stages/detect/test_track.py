"""Choosing, filling and smoothing face tracks (stages.detect.track), on synthetic detections."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.contracts import FaceChoice
from stages.detect.track import build_track, choose_faces, fill_gaps, frames_with_faces, smooth
from stages.lib.faces.detection import Detection


def box(x: float, y: float, size: float, confidence: float = 0.9, marks: bool = False) -> Detection:
    """A square detection at (x, y); with ``marks``, 68 landmarks spread over the box."""
    landmarks = None
    if marks:
        t = np.linspace(0, 1, 68)
        landmarks = np.stack([x + size * t, y + size * t[::-1]], axis=1)
    return Detection((x, y, x + size, y + size), confidence, landmarks)


def test_choose_largest_on_first_frame() -> None:
    """With choice 'largest', the biggest box of the first frame with faces is followed."""
    small, big = box(10, 10, 40), box(200, 100, 90)
    chosen = choose_faces([[small, big]], FaceChoice.largest, 400, 300)
    assert chosen == [big]


def test_choose_center() -> None:
    """With choice 'center', the face nearest the frame centre wins even when another is larger."""
    central, big = box(180, 130, 40), box(0, 0, 120)
    chosen = choose_faces([[big, central]], FaceChoice("center"), 400, 300)
    assert chosen == [central]


def test_continuity_beats_size_on_later_frames() -> None:
    """Once a face is followed, a larger face appearing later does not steal the track while it overlaps."""
    first = box(100, 100, 60)
    moved, intruder = box(104, 101, 60), box(250, 50, 140)
    chosen = choose_faces([[first], [intruder, moved], []], FaceChoice.largest, 400, 300)
    assert chosen[0] is first
    assert chosen[1] is moved
    assert chosen[2] is None


def test_rule_applies_again_when_the_followed_face_is_gone() -> None:
    """When no detection overlaps the followed face, the choice rule picks again."""
    first = box(0, 0, 50)
    elsewhere_small, elsewhere_big = box(300, 200, 30), box(200, 50, 80)
    chosen = choose_faces([[first], [elsewhere_small, elsewhere_big]], FaceChoice.largest, 400, 300)
    assert chosen[1] is elsewhere_big


def test_fill_gaps_interpolates_and_copies_ends() -> None:
    """Missing rows are linear between known neighbours; rows before the first / after the last are copies."""
    nan = np.nan
    values = np.array([[nan, nan], [0.0, 10.0], [nan, nan], [nan, nan], [3.0, 40.0], [nan, nan]])
    filled = fill_gaps(values)
    np.testing.assert_allclose(filled[:, 0], [0, 0, 1, 2, 3, 3])
    np.testing.assert_allclose(filled[:, 1], [10, 10, 20, 30, 40, 40])


def test_fill_gaps_needs_one_known_row() -> None:
    """Filling from nothing is an error, not a track of NaNs."""
    with pytest.raises(ValueError):
        fill_gaps(np.full((3, 4), np.nan))


def test_smooth_is_centred_and_keeps_linear_motion() -> None:
    """A centred moving average leaves constant and (away from the ends) linear motion unchanged."""
    steady = np.tile([[5.0, 7.0]], (9, 1))
    np.testing.assert_allclose(smooth(steady, 5), steady)
    ramp = np.arange(12, dtype=float)[:, None] * 3.0
    out = smooth(ramp, 5)
    np.testing.assert_allclose(out[2:-2], ramp[2:-2])
    assert out[0, 0] == pytest.approx(np.mean(ramp[:3]))  # window shortened at the start


def test_smooth_spreads_a_jump_over_the_window() -> None:
    """A single-frame spike is averaged over ``window`` frames: 1/5 of it on each of five frames."""
    spike = np.zeros((11, 1))
    spike[5] = 10.0
    out = smooth(spike, 5)
    np.testing.assert_allclose(out[3:8, 0], 2.0)
    assert out[2, 0] == 0 and out[8, 0] == 0
    np.testing.assert_allclose(smooth(spike, 1), spike)


def test_build_track_one_frame_per_entry_with_gaps_marked() -> None:
    """Every entry gets a frame; frames without detection (or not examined) are interpolated and marked."""
    found = [[box(100, 50, 80)], None, [], [box(130, 50, 80)]]
    track = build_track(found, width=640, height=360, fps=25.0, detector="haar", smooth_window=1)
    assert len(track.frames) == 4
    assert [f.interpolated for f in track.frames] == [False, True, True, False]
    assert [f.box[0] for f in track.frames] == pytest.approx([100, 110, 120, 130])
    assert track.frames[0].confidence == pytest.approx(0.9)
    assert (track.width, track.height, track.fps, track.detector) == (640, 360, 25.0, "haar")


def test_build_track_stores_boxes_unpadded_and_clipped() -> None:
    """A still's box is the detection itself (no pads baked in), clipped to the frame."""
    track = build_track(
        [[Detection((-20.0, 30.0, 150.0, 420.0), 0.7)]], width=200, height=400, fps=25.0, detector="haar"
    )
    assert track.frames[0].box == (0.0, 30.0, 150.0, 400.0)
    still = build_track([[box(40, 50, 100)]], width=400, height=400, fps=25.0, detector="haar")
    assert still.frames[0].box == (40.0, 50.0, 140.0, 150.0)


def test_landmarks_follow_the_boxes() -> None:
    """Landmarks are interpolated and smoothed like boxes, so they stay in the same place relative to them."""
    found = [[box(100 + 4 * i, 80, 60, marks=True)] if i % 3 else None for i in range(10)]
    found[0] = [box(100, 80, 60, marks=True)]
    track = build_track(found, width=640, height=480, fps=25.0, detector="face_alignment", smooth_window=5)
    for frame in track.frames:
        assert frame.landmarks is not None and len(frame.landmarks) == 68
        assert frame.landmarks[0][0] == pytest.approx(frame.box[0], abs=0.02)
        assert frame.landmarks[-1][0] == pytest.approx(frame.box[2], abs=0.02)


def test_landmarks_dropped_when_a_detection_lacks_them() -> None:
    """A track never mixes frames with and without landmarks: one detection without them drops them all."""
    found = [[box(100, 80, 60, marks=True)], [box(102, 80, 60)]]
    track = build_track(found, width=640, height=480, fps=25.0, detector="x")
    assert all(f.landmarks is None for f in track.frames)


def test_build_track_without_any_face_fails() -> None:
    """No face on any frame is a ValueError (the stage turns it into NoFaceFound before this)."""
    with pytest.raises(ValueError):
        build_track([[], None, []], width=64, height=64, fps=25.0, detector="haar")
    assert frames_with_faces([[], None, [box(0, 0, 10)]]) == 1
