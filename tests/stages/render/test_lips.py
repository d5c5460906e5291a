"""The landmark-driven mouth (viseme.lips) on the real photo with dlib's landmarks: it opens from the real
lip lines, shows upper teeth (painted, or the avatar's own), raises the tongue for l/th, and stays put
where the mouth rests."""

from __future__ import annotations

import numpy as np
import pytest

from stages.lib.faces.landmarks import DlibDetector
from stages.render.viseme.lips import LipRig, teeth_showing
from stages.render.viseme.warp import PHOTO
from stages.speech import Phone
from stages.timing import visemes_of_phones


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
