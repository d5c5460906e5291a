"""The landmark-driven mouth (viseme.lips) on the real photo with dlib's landmarks: it opens from the real
lip lines, shows upper teeth (painted, or the avatar's own), raises the tongue for l/th, and stays put
where the mouth rests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stages.lib.faces.landmarks import DlibDetector
from stages.lib.speech.align import Phone
from stages.lib.speech.fallback import visemes_of_phones
from stages.render.viseme.lips import LipRig, teeth_showing
from stages.render.viseme.warp import PHOTO
from tests.stages.render.conftest import LOWER_LIP, UPPER_LIP, draw_face


@pytest.fixture(scope="module")
def points(astronaut: np.ndarray) -> np.ndarray:
    (face,) = DlibDetector().detect(astronaut)
    assert face.landmarks is not None
    return face.landmarks


def opening_rows(points: np.ndarray) -> tuple[slice, slice]:
    """The middle of the mouth: between the corners' inner halves, from the upper lip to below the lower."""
    x1, x2 = (
        int(points[48, 0] + 0.3 * (points[54, 0] - points[48, 0])),
        int(points[54, 0] - 0.3 * (points[54, 0] - points[48, 0])),
    )
    return slice(int(points[62, 1]) - 2, int(points[66, 1]) + 16), slice(x1, x2)


def test_the_astronaut_shows_her_teeth(astronaut: np.ndarray, points: np.ndarray) -> None:
    """She smiles with her upper teeth visible: the renderer keeps her own teeth instead of painting."""
    assert teeth_showing(astronaut, points)


def test_open_mouth_has_a_dark_interior_below_the_teeth(astronaut: np.ndarray, points: np.ndarray) -> None:
    """Wide open: the middle of the mouth gets darker, but its top rows stay light (teeth); at rest the
    frame is the photo itself."""
    rig = LipRig(points, astronaut.shape[:2], PHOTO)
    opened = rig.apply(astronaut, (1.0, 0.0, 0.0))
    rows, cols = opening_rows(points)
    region = opened[rows, cols].astype(float).mean(axis=(1, 2))
    assert region.min() < 0.5 * astronaut[rows, cols].mean()
    assert region[:4].max() > 150  # the upper teeth, still under the upper lip
    assert rig.apply(astronaut, (0.0, 0.0, 0.0)) is astronaut


def test_painted_teeth_and_a_raised_tongue(astronaut: np.ndarray, points: np.ndarray) -> None:
    """With painted teeth (a closed-mouth avatar's case) the top of the opening is light; with the tongue
    raised (l, th) the opening's middle turns tongue-red."""
    rig = LipRig(points, astronaut.shape[:2], PHOTO)
    plain = rig.apply(astronaut, (0.8, 0.0, 0.0))
    tongue = rig.apply(astronaut, (0.8, 0.0, 0.0), tongue=1.0)
    rows, cols = opening_rows(points)
    red = tongue[rows, cols].astype(float)
    before = plain[rows, cols].astype(float)
    redder = (red[..., 0] - red[..., 1]) - (before[..., 0] - before[..., 1])
    assert (redder > 30).sum() > 20


def test_wide_and_round_change_the_width(astronaut: np.ndarray, points: np.ndarray) -> None:
    """ "ee" opens the mouth wider across than "oo" does (the dark opening's width)."""
    rig = LipRig(points, astronaut.shape[:2], PHOTO)
    rows = slice(int(points[62, 1]), int(points[66, 1]) + 12)

    def dark_width(shape: tuple[float, float, float]) -> int:
        grey = rig.apply(astronaut, shape)[rows].astype(float).mean(axis=2)
        return int(np.any(grey < 60, axis=0).sum())

    assert dark_width((0.6, 1.0, 0.0)) > dark_width((0.6, 0.0, 1.0)) + 4


def test_phones_become_visemes_run_by_run() -> None:
    """Phones become Rhubarb visemes; neighbours with the same shape merge, a gap stays rest."""
    phones = [Phone("M", 0.0, 0.1), Phone("B", 0.1, 0.2), Phone("AA", 0.2, 0.4), Phone("L", 0.5, 0.6)]
    visemes = visemes_of_phones(phones)
    assert [(v.viseme, v.start, v.end) for v in visemes] == [
        ("A", 0.0, 0.2),
        ("D", 0.2, 0.4),
        ("H", 0.5, 0.6),
    ]


# --- lip shapes, measured on the drawn face (red upper lip, purple lower lip) ------------------------


def _lip(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.abs(image.astype(int) - colour).sum(axis=2) < 60


def _mouth_width(image: np.ndarray) -> int:
    """Corner to corner of the lip colours, in pixels."""
    lips = _lip(image, UPPER_LIP) | _lip(image, LOWER_LIP)
    cols = np.flatnonzero(lips.any(axis=0))
    return int(cols.max() - cols.min())


@pytest.fixture(scope="module")
def drawn_big(astronaut_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image, points, _ = draw_face(astronaut_points * 2, (1024, 1024))
    return image, points


def test_rounded_lips_narrow_and_spread_lips_widen(drawn_big: tuple[np.ndarray, np.ndarray]) -> None:
    """o/u (round) makes the mouth at least 12 % narrower than at rest, and fuller (taller lips);
    e/i (wide) makes it wider than at rest."""
    image, points = drawn_big
    rig = LipRig(points, image.shape[:2], replace(PHOTO, max_open=0.21))
    rest = _mouth_width(image)
    rounded = rig.apply(image, (0.3, 0.0, 1.0))
    assert _mouth_width(rounded) < 0.88 * rest
    assert _mouth_width(rig.apply(image, (0.5, 1.0, 0.0))) > rest
    centre = slice(int(points[62, 0]) - 3, int(points[62, 0]) + 4)

    def lip_rows(frame: np.ndarray) -> int:
        return int(_lip(frame, UPPER_LIP)[:, centre].any(axis=1).sum())

    assert lip_rows(rounded) >= lip_rows(image) + 2  # the upper lip pouts


def test_f_and_v_tuck_the_lower_lip_under_the_upper_teeth(drawn_big: tuple[np.ndarray, np.ndarray]) -> None:
    """On f/v the lower lip's top (purple) rises above where the upper lip's lowest point was at rest,
    the upper lip lifts, and the edges of the upper teeth show between them; the chin stays put."""
    image, points = drawn_big
    rig = LipRig(points, image.shape[:2], replace(PHOTO, max_open=0.21), seed=2)
    tucked = rig.apply(image, (0.05, 0.2, 0.0), tuck=1.0)
    centre = slice(int(points[62, 0]) + 4, int(points[62, 0]) + 12)  # beside the midline's tooth gap
    upper_rest = int(np.flatnonzero(_lip(image, UPPER_LIP)[:, centre].any(axis=1)).max())
    lower_top = int(np.flatnonzero(_lip(tucked, LOWER_LIP)[:, centre].any(axis=1)).min())
    upper_now = int(np.flatnonzero(_lip(tucked, UPPER_LIP)[:, centre].any(axis=1)).max())
    assert lower_top < upper_rest, (lower_top, upper_rest)
    assert upper_now < upper_rest - 2
    between = tucked[upper_now + 1 : lower_top, centre].astype(float)
    chroma = (between.max(axis=2) - between.min(axis=2)).mean()
    assert between.size and between.mean() > 140 and chroma < 45, (between.mean(), chroma)  # teeth
    chin = int(points[8, 1]) - 4
    assert np.abs(tucked[chin - 3 : chin + 3].astype(int) - image[chin - 3 : chin + 3]).mean() < 2
