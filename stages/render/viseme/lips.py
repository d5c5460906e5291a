"""The mouth warp driven by the lip landmarks (68 iBUG points), for tracks that have them.

Like ``warp.MouthRig`` (same crop, feathered blend, coarse smooth field, fold-free fixed points) but the
lips open from where they really are: the upper and lower inner lip lines (points 60–64 and 64–67, 60)
are read off the landmarks in the mouth's own axes (corner to corner, so the warp follows head roll and
size frame by frame). For a shape (open, wide, round):

- the lower lip and, with ``jaw_share`` of the motion, the chin move down from the *lower inner lip
  line*; the upper lip lifts from the *upper inner lip line*; both by the gap's profile across the mouth
  (narrower and blunter as the lips round, wider as they spread);
- the gap between the new lip lines shows the mouth interior (``paint_interior``): a dark gradient,
  upper teeth under the upper lip on open shapes (coloured like the avatar's own teeth when they show at
  rest), and the tongue raised for l and th;
- p/b/m come as ``open = 0`` from the plan: the rest mouth, untouched.

A mouth already open at rest (teeth showing) opens at the middle of its own gap: the upper teeth go up
with the upper lip, the lower ones down with the lower lip, and no teeth are painted (the renderer
leaves them out of the style then, see ``teeth_showing``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np

from stages.render.viseme.warp import (
    Gap,
    MouthRig,
    WarpStyle,
    geometry_from_landmarks,
    paint_interior,
    ramp,
)

UPPER_INNER = [60, 61, 62, 63, 64]
LOWER_INNER = [60, 67, 66, 65, 64]
TONGUE = (178, 82, 88)
"""RGB of the tongue on photos (a cartoon style brings its own)."""


class LipRig(MouthRig):
    """The warp for one set of 68 landmarks in one frame size (module docstring)."""

    def __init__(self, points: np.ndarray, frame_shape: tuple[int, int], style: WarpStyle) -> None:
        points = np.asarray(points, np.float64)
        super().__init__(geometry_from_landmarks(points), frame_shape, style)
        g = self.geometry
        rel = points - np.array([g.cx, g.cy])
        pu, pv = self.cos * rel[:, 0] + self.sin * rel[:, 1], -self.sin * rel[:, 0] + self.cos * rel[:, 1]
        self.upper = _profile(pu[UPPER_INNER], pv[UPPER_INNER])
        self.lower = _profile(pu[LOWER_INNER], pv[LOWER_INNER])
        e_up = self._edge(self.upper, self.u)
        e_lo = np.maximum(self._edge(self.lower, self.u), e_up)
        self.seam, self.half_rest = 0.5 * (e_up + e_lo), float(np.max(0.5 * (e_lo - e_up)))

    @staticmethod
    def _edge(profile: tuple[np.ndarray, np.ndarray], u: np.ndarray) -> np.ndarray:
        return np.interp(u, profile[0], profile[1]).astype(np.float32)

    def _source_v(self, lens: np.ndarray, gap: float, lift: float) -> np.ndarray:
        """Where each output row comes from: below the seam line the lower lip (and, by ``jaw_share``,
        the chin) pushed down by the gap's profile, above it the upper lip lifted; the seam is the middle
        of the real inner lip lines, so teeth shown at rest stay with their lip. The gap samples the seam."""
        v, a = self.v - self.seam, self.geometry.half_width
        drop, rise = gap * lens, lift * lens
        below, above = v >= drop, v <= -rise
        lo = v.copy()
        for _ in range(3):  # fixed point of v = s + push(s); converges as push' < 1
            share = ramp(lo, 0.2 * a + self.half_rest, 1.0 * a + self.half_rest)  # 1 on the lower lip
            push = gap * (lens * share + self.style.jaw_share * self.jaw_profile * (1 - share))
            lo = v - push * ramp(lo, self.down_full, self.down_reach)
        hi = v.copy()
        for _ in range(3):
            hi = v + rise * ramp(-hi, 0.25 * self.geometry.up + self.half_rest, self.up_reach)
        return (self.seam + np.where(below, lo, np.where(above, hi, 0.0))).astype(np.float32)

    def _paint_mouth(self, warped: np.ndarray, gap: Gap, scale: float, tongue: float) -> None:
        """Paint the interior (teeth, tongue raised by ``tongue``) in the gap opened at the seam line, on
        the rectangle around it only."""
        a = self.geometry.half_width
        reach = gap.half_open + 0.1 * a + 3
        top = float(np.max(-self.seam)) + gap.lift + 3
        bottom = float(np.max(self.seam)) + gap.size + 3
        xs, ys = self._rotated_bounds((-reach, reach), (-top, bottom))
        cx, cy = self.geometry.cx - self.box[0], self.geometry.cy - self.box[1]
        x1, x2 = max(int(cx + min(xs)), 0), min(math.ceil(cx + max(xs)) + 1, self.size[1])
        y1, y2 = max(int(cy + min(ys)), 0), min(math.ceil(cy + max(ys)) + 1, self.size[0])
        if x2 <= x1 or y2 <= y1 or gap.size < 0.5:
            return
        u, v = self._mouth_coords(
            *np.meshgrid(np.arange(x1, x2, dtype=np.float32), np.arange(y1, y2, dtype=np.float32))
        )
        seam = self._seam_at(u / (1.0 + scale))
        fields = gap.at(u, v - seam)
        style = self.style
        if tongue > 0.0 and style.tongue is None:
            style = replace(style, tongue=TONGUE)
        region = warped[y1:y2, x1:x2]
        painted = paint_interior(
            region, fields, style, a, tongue=tongue if self.style.tongue is None else None
        )
        warped[y1:y2, x1:x2] = painted

    def _seam_at(self, u: np.ndarray) -> np.ndarray:
        """The seam line (middle of the inner lip lines) at mouth coordinate ``u``."""
        return 0.5 * (
            self._edge(self.upper, u) + np.maximum(self._edge(self.lower, u), self._edge(self.upper, u))
        )


def _profile(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A lip line as (u, v) sorted along the mouth, for ``np.interp``."""
    order = np.argsort(u)
    return u[order], v[order]


def teeth_showing(frame: np.ndarray, points: np.ndarray) -> bool:
    """Whether the mouth shows teeth at rest: the inner lips are apart by over a tenth of the mouth's
    width and the brightest third between them is light and nearly colourless."""
    p = np.asarray(points, np.float64)
    width = float(np.hypot(*(p[54] - p[48])))
    opening = float(np.mean(p[[65, 66, 67], 1]) - np.mean(p[[61, 62, 63], 1]))
    if width <= 0 or opening < 0.1 * width:
        return False
    polygon = np.rint(p[60:68]).astype(np.int32)
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [polygon], 1)
    pixels = frame[mask.astype(bool)].astype(np.float32)
    if len(pixels) < 6:
        return False
    bright = pixels[pixels.mean(axis=1) >= np.percentile(pixels.mean(axis=1), 66)].mean(axis=0)
    return bool(bright.min() > 120 and bright.max() - bright.min() < 60)
