"""The opened mouth's inside (viseme.interior through lips.LipRig), measured on a drawn closed-mouth face:
painted teeth that are separate and change with the opening, lower teeth as the jaw drops, tones from
the face, and a video avatar's own open-mouth pixels when it has shown them."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions, Span, SpeechTiming, Style, TimedViseme
from stages.render.base import SAMPLE_RATE, RenderRequest
from stages.render.viseme import VisemeRenderer
from stages.render.viseme.interior import MouthBank, Tones, inner_opening
from stages.render.viseme.lips import LipRig
from stages.render.viseme.warp import PHOTO
from tests.stages.render.conftest import draw_face

STYLE = replace(PHOTO, max_open=0.21)  # the renderer's photo opening with landmarks (LIP_OPEN × PHOTO)


@pytest.fixture(scope="module")
def big_face(astronaut_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The drawn face at twice the astronaut's size (a mouth about 90 px wide, as in a 1080p close-up)."""
    image, points, _ = draw_face(astronaut_points * 2, (1024, 1024))
    return image, points


def teeth_mask(image: np.ndarray, skin_l: float) -> np.ndarray:
    """Pixels that read as teeth: nearly colourless and about as light as the skin or lighter."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    return (lab[..., 0] > skin_l - 25) & (np.abs(lab[..., 1] - 128) < 12) & (np.abs(lab[..., 2] - 128) < 18)


def mouth_box(points: np.ndarray) -> tuple[slice, slice]:
    seam = points[60:68, 1].mean()
    half = (points[54, 0] - points[48, 0]) / 2
    return slice(int(seam - 0.6 * half), int(seam + 0.9 * half)), slice(
        int(points[48, 0]), int(points[54, 0])
    )


def skin_lightness(image: np.ndarray, points: np.ndarray) -> float:
    x, y = (points[33] + points[51]) / 2
    patch = image[int(y) - 2 : int(y) + 3, int(x) - 4 : int(x) + 5]
    return float(cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_RGB2LAB)[..., 0].mean())


def test_painted_teeth_change_with_the_opening(big_face: tuple[np.ndarray, np.ndarray]) -> None:
    """A half and a wide opening show different teeth: the wide one shows lower teeth (in the lower half
    of the gap) and the half one none; the two interiors differ by far more than noise."""
    image, points = big_face
    rig = LipRig(points, image.shape[:2], STYLE, seed=3)
    rows, cols = mouth_box(points)
    seam = int(points[60:68, 1].mean())
    light = skin_lightness(image, points)
    half = rig.apply(image, (0.45, 0.15, 0.0))
    wide = rig.apply(image, (1.0, 0.15, 0.0))
    below = slice(seam + 8, rows.stop)
    assert teeth_mask(half, light)[below, cols].sum() < 10
    assert teeth_mask(wide, light)[below, cols].sum() > 40  # lower teeth, risen with the jaw
    assert teeth_mask(wide, light)[rows, cols].sum() > 150 and teeth_mask(half, light)[rows, cols].sum() > 100
    diff = np.abs(wide[rows, cols].astype(float) - half[rows, cols].astype(float)).mean()
    assert diff > 10


def test_teeth_are_separate(big_face: tuple[np.ndarray, np.ndarray]) -> None:
    """Along a row just under the upper lip the teeth alternate with dark lines between them: at least
    four separate light runs across the opening (one bar would give one)."""
    image, points = big_face
    rig = LipRig(points, image.shape[:2], STYLE, seed=3)
    opened = rig.apply(image, (0.8, 0.15, 0.0))
    light = skin_lightness(image, points)
    rows, cols = mouth_box(points)
    teeth = teeth_mask(opened, light)[rows, cols]
    r = int(np.argmax(teeth.sum(axis=1)))
    lightness = cv2.cvtColor(np.ascontiguousarray(opened[rows, cols]), cv2.COLOR_RGB2LAB)[r, :, 0].astype(
        float
    )
    row = lightness > 0.9 * lightness.max()
    runs = np.count_nonzero(np.diff(row.astype(int)) == 1) + int(row[0])
    assert runs >= 4, row.astype(int)


def test_teeth_take_the_light_of_the_face(astronaut_points: np.ndarray) -> None:
    """The same face drawn in a darker skin gets darker teeth (lit like its face), still lighter than
    its skin; the tones come from the face, not from a fixed white."""
    light_face, points, _ = draw_face(astronaut_points * 2, (1024, 1024))
    dark_face, _, _ = draw_face(astronaut_points * 2, (1024, 1024), skin=(120, 84, 62))
    light_tones, dark_tones = Tones.of_face(light_face, points), Tones.of_face(dark_face, points)
    assert dark_tones.teeth.mean() < light_tones.teeth.mean() - 30
    assert dark_tones.teeth.mean() > dark_tones.skin.mean() + 10
    rows, cols = mouth_box(points)
    lit = LipRig(points, light_face.shape[:2], STYLE).apply(light_face, (0.8, 0.1, 0.0))
    dark = LipRig(points, dark_face.shape[:2], STYLE).apply(dark_face, (0.8, 0.1, 0.0))
    assert dark[rows, cols].mean() < lit[rows, cols].mean() - 15


def _open_frame(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with its mouth really open: the lower lip dropped and a green-striped inside, the kind
    of interior no painter would make (so a test can tell it was copied)."""
    opened = image.copy()
    p = points.copy()
    drop = 0.28 * (p[54, 0] - p[48, 0])
    p[[65, 66, 67], 1] += drop
    p[[56, 57, 58], 1] += drop
    inner = np.rint(p[60:68]).astype(np.int32)
    cv2.fillPoly(opened, [np.rint(np.vstack([p[54:60], p[48:49]])).astype(np.int32)], (150, 50, 120))
    cv2.fillPoly(opened, [inner], (30, 150, 40))
    x1, x2 = int(p[60, 0]), int(p[64, 0])
    for x in range(x1, x2, 6):
        opened[int(p[62, 1]) : int(p[66, 1]), x : x + 2] = (230, 250, 230)
    return opened, p


def test_video_avatar_shows_its_own_mouth(big_face: tuple[np.ndarray, np.ndarray]) -> None:
    """A video whose first frame opens the mouth: the renderer banks that interior, and later frames
    (mouth closed) open onto the same green stripes, not painted teeth."""
    image, points = big_face
    opened, open_points = _open_frame(image, points)
    assert inner_opening(open_points) > 0.2 and inner_opening(points) < 0.01
    fps, n = 25.0, 20
    audio = (0.3 * np.sin(2 * np.pi * 180 * np.arange(int(n / fps * SAMPLE_RATE)) / SAMPLE_RATE)).astype(
        np.float32
    )
    timing = SpeechTiming(
        duration=n / fps,
        source="transcript",
        speech=[Span(start=0.0, end=n / fps)],
        visemes=[TimedViseme(start=0.0, end=n / fps, viseme="D")],
    )
    faces = [
        FaceFrame(box=(300.0, 200.0, 700.0, 700.0), landmarks=[(float(x), float(y)) for x, y in pts])
        for pts in (open_points, points)
    ]
    track = FaceTrack(detector="dlib", width=1024, height=1024, fps=fps, frames=faces)
    request = RenderRequest(audio, fps, n, track, JobOptions(), style=Style.photo, speech=timing, still=False)
    frames = [(i, opened if i == 0 else image, faces[0 if i == 0 else 1]) for i in range(n)]
    out = list(VisemeRenderer().render(request, frames, lambda _: None))
    rows, cols = mouth_box(points)
    last = out[-1][rows, cols].astype(int)
    green = (last[..., 1] - last[..., 0] > 60) & (last[..., 1] - last[..., 2] > 60)
    assert green.sum() > 80
    painted = LipRig(points, image.shape[:2], STYLE).apply(image, (1.0, 0.15, 0.0))[rows, cols].astype(int)
    assert ((painted[..., 1] - painted[..., 0] > 60) & (painted[..., 1] - painted[..., 2] > 60)).sum() == 0


def test_bank_keeps_the_widest_of_each_class(big_face: tuple[np.ndarray, np.ndarray]) -> None:
    """Closed frames are not banked; an open one is; a narrower one of the same class does not replace
    it."""
    image, points = big_face
    bank = MouthBank()
    assert not bank.offer(image, points) and len(bank) == 0
    opened, open_points = _open_frame(image, points)
    assert bank.offer(opened, open_points) and len(bank) == 1
    narrower = open_points.copy()
    narrower[[65, 66, 67], 1] -= 2.0
    assert not bank.offer(opened, narrower)
    assert math.isclose(next(iter(bank.entries.values())).opening, inner_opening(open_points))
