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

from stages.render.blend import blend_into
from stages.render.viseme.interior import MouthBank, Tones, skin_of, synthesize, tucked_teeth
from stages.render.viseme.warp import (
    Fields,
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


TUCK_LIFT = 0.12
"""f/v: the upper lip lifts this share of the mouth's half-width, baring the upper teeth's edges."""
TUCK_TEETH = 0.06
"""f/v: the bared upper teeth's length (share of the half-width): their edges, on the lower lip, end a
little above where the lips met at rest."""
TUCK_OVER = 0.08
"""f/v: the lower lip rises this far (share of the half-width) past the upper lip's lowest point, under
the upper teeth."""
PROTRUDE = 0.16
"""o/u/w: rounded lips push forward and look this much fuller (vertical stretch away from the seam)."""


class LipRig(MouthRig):
    """The warp for one set of 68 landmarks in one frame size (module docstring).

    ``tones``: the face's interior colours (sampled from the first frame drawn when not given);
    ``bank``: a video avatar's own open-mouth interiors, used before painting when it holds any;
    ``seed``: varies the painted teeth per face.
    """

    def __init__(
        self,
        points: np.ndarray,
        frame_shape: tuple[int, int],
        style: WarpStyle,
        *,
        tones: Tones | None = None,
        bank: MouthBank | None = None,
        seed: int = 0,
    ) -> None:
        points = np.asarray(points, np.float64)
        super().__init__(geometry_from_landmarks(points), frame_shape, style)
        self.points, self.tones, self.bank, self.seed = points, tones, bank, seed
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

    def apply(
        self, frame: np.ndarray, shape: tuple[float, float, float], tongue: float = 0.0, tuck: float = 0.0
    ) -> np.ndarray:
        """A new frame with the mouth in ``shape`` (open, wide, round), the tongue raised by ``tongue``
        and the lower lip tucked under the upper teeth by ``tuck`` (f, v); ``frame`` itself at rest."""
        opening, wide, rnd = (float(np.clip(x, 0.0, 1.0)) for x in shape)
        tuck = float(np.clip(tuck, 0.0, 1.0))
        if max(opening, wide, rnd, tuck) < 1e-3:
            return frame
        if self.tones is None and self.style.outline is None:
            self.tones = Tones.of_face(frame, self.points)
        x1, y1, x2, y2 = self.box
        gap = Gap.for_shape(self.geometry.half_width, self.style, self.max_gap, opening, wide, rnd)
        map_x, map_y = self._lip_maps(gap, wide, rnd, tuck)
        warped = cv2.remap(frame[y1:y2, x1:x2], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        scale = self.style.wide_gain * wide - self.style.round_gain * rnd
        self._paint_lips(warped, frame, gap, scale, tongue, tuck, opening)
        return blend_into(frame, warped, self.box, self.mask)

    def _tuck(self, tuck: float) -> tuple[float, float]:
        """(upper lip lift, lower lip rise) in pixels for an f/v shape of strength ``tuck``."""
        a = self.geometry.half_width
        lift = tuck * TUCK_LIFT * a
        return lift, tuck * (2 * self.half_rest + lift + TUCK_OVER * a)

    def _lip_maps(self, gap: Gap, wide: float, rnd: float, tuck: float) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution backward maps (crop pixels) from the coarse displacement."""
        st = self.style
        lens = gap.lens(self.u)
        src_v = self._lip_source_v(lens, gap.size, st.upper_share * gap.size, tuck, rnd)
        src_u = self._source_u(src_v, st.wide_gain * wide - st.round_gain * rnd)
        du, dv = src_u - self.u, src_v - self.v
        dx, dy = self.cos * du - self.sin * dv, self.sin * du + self.cos * dv
        full = (self.grid_x.size * self.step, self.grid_y.size * self.step)
        rows, cols = self.size
        up_x = cv2.resize(dx.astype(np.float32), full, interpolation=cv2.INTER_LINEAR)[:rows, :cols]
        up_y = cv2.resize(dy.astype(np.float32), full, interpolation=cv2.INTER_LINEAR)[:rows, :cols]
        return self.identity[0] + up_x, self.identity[1] + up_y

    def _lip_source_v(
        self, lens: np.ndarray, gap: float, lift: float, tuck: float = 0.0, rnd: float = 0.0
    ) -> np.ndarray:
        """Where each output row comes from: below the seam line the lower lip (and, by ``jaw_share``,
        the chin) pushed down by the gap's profile, above it the upper lip lifted; the seam is the middle
        of the real inner lip lines, so teeth shown at rest stay with their lip. The gap samples the seam.
        ``tuck`` raises the lower lip past the upper lip's edge (its top goes under the painted upper
        teeth); ``rnd`` makes the lips fuller (pushed forward)."""
        v, a = self.v - self.seam, self.geometry.half_width
        if rnd > 0.0:  # pouted: the lips' rows spread away from the seam, fading out on the skin
            v = v / (1.0 + PROTRUDE * rnd * ramp(np.abs(v), 0.35 * a, 1.1 * a))
        t_lift, t_rise = self._tuck(tuck)
        smooth = lens * lens  # f/v moves the lips with a profile that has no kink at the corners
        opened = gap * lens
        drop, rise = opened - t_rise * smooth, lift * lens + t_lift * smooth  # drop < 0: the lip goes up
        below, above = v >= drop, v <= -rise
        start = 0.2 * a + self.half_rest
        # the raise fades over at least 2.8× its size: the fixed point below converges (|push'| < 0.6)
        tuck_end = start + max(0.8 * a, 2.8 * t_rise)
        lo = v.copy()
        for _ in range(3 if t_rise == 0.0 else 6):  # fixed point of v = s + push(s)
            share = ramp(lo, start, 1.0 * a + self.half_rest)  # 1 on the lower lip
            push = opened * share + gap * self.style.jaw_share * self.jaw_profile * (1 - share)
            if t_rise > 0.0:  # f/v curls the lower lip up without the jaw
                push = push - t_rise * smooth * ramp(lo, start, tuck_end)
            lo = v - push * ramp(lo, self.down_full, self.down_reach)
        hi = v.copy()
        for _ in range(3):
            hi = v + rise * ramp(-hi, 0.25 * self.geometry.up + self.half_rest, self.up_reach)
        # the upper lip stays in front: on f/v the lower lip's top goes behind it (and the teeth)
        return (self.seam + np.where(above, hi, np.where(below, lo, 0.0))).astype(np.float32)

    def _paint_lips(
        self,
        warped: np.ndarray,
        frame: np.ndarray,
        gap: Gap,
        scale: float,
        tongue: float,
        tuck: float,
        opening: float,
    ) -> None:
        """Paint the interior (teeth, tongue raised by ``tongue``) in the gap opened at the seam line, and
        the upper teeth over the tucked lower lip, on the rectangle around it only."""
        a = self.geometry.half_width
        t_lift, t_rise = self._tuck(tuck)
        reach = gap.half_open + 0.1 * a + 3
        top = float(np.max(-self.seam)) + gap.lift + t_lift + 3
        bottom = float(np.max(self.seam)) + gap.size + 3
        xs, ys = self._rotated_bounds((-reach, reach), (-top, bottom))
        cx, cy = self.geometry.cx - self.box[0], self.geometry.cy - self.box[1]
        x1, x2 = max(int(cx + min(xs)), 0), min(math.ceil(cx + max(xs)) + 1, self.size[1])
        y1, y2 = max(int(cy + min(ys)), 0), min(math.ceil(cy + max(ys)) + 1, self.size[0])
        if x2 <= x1 or y2 <= y1 or (gap.size < 0.5 and tuck < 0.05):
            return
        u, v = self._mouth_coords(
            *np.meshgrid(np.arange(x1, x2, dtype=np.float32), np.arange(y1, y2, dtype=np.float32))
        )
        v = v - self._seam_at(u / (1.0 + scale))
        fields = gap.at(u, v)
        if tuck > 0.0:
            smooth = gap.lens(u) ** 2
            fields = Fields(
                u, v, fields.upper + t_lift * smooth, fields.lower - t_rise * smooth, fields.half_open
            )
        region = warped[y1:y2, x1:x2]
        if self.style.outline is not None or self.tones is None:  # a drawing: flat interior and outline
            style = self.style
            if tongue > 0.0 and style.tongue is None:
                style = replace(style, tongue=TONGUE)
            warped[y1:y2, x1:x2] = paint_interior(
                region, fields, style, a, tongue=tongue if self.style.tongue is None else None
            )
            return
        warped[y1:y2, x1:x2] = self._photo_interior(region, frame, fields, opening, tongue, tuck)

    def _photo_interior(
        self, region: np.ndarray, frame: np.ndarray, f: Fields, opening: float, tongue: float, tuck: float
    ) -> np.ndarray:
        """The gap filled from the bank (a video's own mouth) or painted (``interior.synthesize``),
        anti-aliased at the lips; on f/v the upper teeth's edges over the lower lip."""
        assert self.tones is not None
        a = self.geometry.half_width
        own_teeth = self.style.teeth is None  # the avatar's teeth show at rest and move with its lips
        out = region.astype(np.float32)
        inside = np.minimum(f.v + f.upper, f.lower - f.v)
        height = f.upper + f.lower
        softness = max(self.style.softness, 0.025 * a)
        alpha = np.clip(inside / softness + 0.5, 0.0, 1.0) * (height > 0.5)
        if np.any(alpha > 0):
            colour = None
            if self.bank is not None and not own_teeth:
                ratio = float(np.max(height)) / (2 * a)
                colour = self.bank.sample(f, ratio, skin_of(frame, self.points))
            if colour is None:
                colour = synthesize(
                    f, self.tones, a, opening, upper_teeth=not own_teeth, tongue=tongue, seed=self.seed
                )
            out += alpha[..., None] * (colour - out)
        if tuck > 0.05:  # also over the own teeth: it hides where the lips' motion splits
            out = tucked_teeth(out, f, self.tones, a, tuck * TUCK_TEETH * a + 0.5, self.seed)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

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
