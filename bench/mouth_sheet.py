"""Contact sheets of the viseme renderer's mouth and eyes at 2×, for a reviewer to look at.

``strip OUT.png`` renders, with whatever ``stages`` package is first on the path, the astronaut at
1280×720 (dlib landmarks) in six mouth shapes — rest, B (slightly open), C (open), D (wide), F (o/u,
rounded), G (f/v; tucked where the renderer can) and an l with the tongue raised — once with her mouth
inpainted shut (a closed-mouth portrait: painted interior) and once as she is (smiling: her own teeth),
plus her eyes at a blink's lowest frame; each close-up scaled 2× (cubic). ``compose BEFORE.png
AFTER.png OUT.jpg`` puts two strips side by side with labels.

    PYTHONPATH=<old tree> python bench/mouth_sheet.py strip /tmp/before.png
    PYTHONPATH=. python bench/mouth_sheet.py strip /tmp/after.png
    python bench/mouth_sheet.py compose /tmp/before.png /tmp/after.png docs/images/mouth-before-after.jpg
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "pipeline" / "assets"
SHAPES = [
    ("rest", (0.0, 0.0, 0.0), 0.0, 0.0),
    ("B slightly open", (0.22, 0.45, 0.0), 0.0, 0.0),
    ("C open", (0.6, 0.3, 0.0), 0.0, 0.0),
    ("D wide open", (1.0, 0.15, 0.0), 0.0, 0.0),
    ("F o/u round", (0.3, 0.0, 1.0), 0.0, 0.0),
    ("G f/v", (0.12, 0.2, 0.0), 0.0, 1.0),
    ("H l, tongue up", (0.45, 0.15, 0.0), 1.0, 0.0),
]
TILE = (130, 84)
"""(width, height) of a mouth close-up before scaling."""


def _frame() -> tuple[np.ndarray, np.ndarray]:
    from stages.lib.faces.landmarks import DlibDetector

    image = cv2.cvtColor(np.asarray(cv2.imread(str(ASSETS / "astronaut.png"))), cv2.COLOR_BGR2RGB)
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, 280:1000] = cv2.resize(image, (720, 720), interpolation=cv2.INTER_CUBIC)
    (found,) = DlibDetector().detect(frame)
    assert found.landmarks is not None
    return frame, np.asarray(found.landmarks, np.float64)


def _closed(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.rint(points[60:68]).astype(np.int32)], 255)
    return np.asarray(cv2.inpaint(frame, cv2.dilate(mask, np.ones((3, 3), np.uint8)), 5, cv2.INPAINT_TELEA))


def _tile(image: np.ndarray, centre: np.ndarray, label: str, size: tuple[int, int] = TILE) -> np.ndarray:
    w, h = size
    x, y = int(centre[0]) - w // 2, int(centre[1]) - h // 2 + 6
    crop = cv2.resize(image[y : y + h, x : x + w], (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    cv2.putText(crop, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return crop


def strip(out: Path) -> None:
    """Two columns (closed-mouth portrait, smile) of ``SHAPES`` and a blink row, as one PNG."""
    from stages.render.motion.warps import close_eyes
    from stages.render.viseme import LIP_OPEN
    from stages.render.viseme.lips import LipRig
    from stages.render.viseme.warp import PHOTO

    frame, points = _frame()
    style = replace(PHOTO, max_open=LIP_OPEN * PHOTO.max_open)
    takes_tuck = "tuck" in inspect.signature(LipRig.apply).parameters
    centre = points[48:68].mean(axis=0)
    columns = []
    for image, look in ((_closed(frame, points), style), (frame, replace(style, teeth=None))):
        rig = LipRig(points, frame.shape[:2], look)
        tiles = []
        for label, shape, tongue, tuck in SHAPES:
            drawn = rig.apply(image, shape, tongue, tuck) if takes_tuck else rig.apply(image, shape, tongue)
            tiles.append(_tile(drawn, centre, label))
        shut = close_eyes(image, points, 1.0)
        eyes = points[36:48].mean(axis=0)
        tiles.append(_tile(shut, eyes - (0, 6), "blink, lowest frame", (TILE[0], TILE[1] // 2)))
        width = max(t.shape[1] for t in tiles)
        tiles = [cv2.copyMakeBorder(t, 2, 2, 2, 2 + width - t.shape[1], cv2.BORDER_CONSTANT) for t in tiles]
        columns.append(np.vstack(tiles))
    cv2.imwrite(str(out), cv2.cvtColor(np.hstack(columns), cv2.COLOR_RGB2BGR))


def compose(before: Path, after: Path, out: Path) -> None:
    """``before`` and ``after`` side by side under a title bar, as a JPEG."""
    left, right = (np.asarray(cv2.imread(str(p))) for p in (before, after))
    height = max(left.shape[0], right.shape[0])
    pad = [cv2.copyMakeBorder(s, 0, height - s.shape[0], 0, 0, cv2.BORDER_CONSTANT) for s in (left, right)]
    gap = np.full((height, 12, 3), 255, np.uint8)
    body = np.hstack([pad[0], gap, pad[1]])
    title = np.full((34, body.shape[1], 3), 255, np.uint8)
    for x, text in ((8, "BEFORE: closed mouth | smile"), (left.shape[1] + 20, "AFTER: closed mouth | smile")):
        cv2.putText(title, text, (x, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.imwrite(str(out), np.vstack([title, body]), [cv2.IMWRITE_JPEG_QUALITY, 82])


def main() -> None:
    if sys.argv[1:2] == ["strip"] and len(sys.argv) == 3:
        strip(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["compose"] and len(sys.argv) == 5:
        compose(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
