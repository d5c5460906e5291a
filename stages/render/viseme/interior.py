"""The inside of an opened mouth for the landmark rig: the avatar's own pixels when it has shown them,
else teeth, gums, tongue and cavity painted in the face's own tones.

Both work in the lip gap's own coordinates (``warp.Fields``): ``u`` along the mouth, ``v`` across it,
the upper and lower edges of the gap at each column. Everything is computed on the small rectangle
around the gap only (a few thousand pixels at 720p), so it costs well under a millisecond a frame.

* ``Tones``: skin, lip and light of the face, sampled once per job around the mouth; teeth, gums,
  tongue and cavity colours derive from them, so the interior is lit like the face it sits in.
* ``synthesize``: the painted interior. Upper teeth hang from the upper lip, each tooth separate
  (widths of incisors, laterals, canines and premolars along the dental arch, so they narrow toward the
  corners), with rounded tips, gum papillae between them and the lip's shadow on them; lower teeth rise
  from the lower lip as the jaw drops (they move with it) and show more the wider the mouth opens; the
  tongue lies behind them (raised for l and th); the cavity darkens toward the back and the corners.
  The visible lengths depend on the opening, so two openings never show the same band.
* ``MouthBank``: for a video avatar, its own open-mouth frames (picked by the inner-lip opening from
  the landmarks, one per opening class) unrolled into a canonical rectangle (across the mouth × from the
  upper to the lower inner lip); ``MouthBank.sample`` warps the class nearest to the wanted opening into
  the new gap, its colour matched to the current frame (gain on the skin's mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from stages.render.viseme.warp import Fields

TOOTH_ARCS = (0.0, 0.3, 0.53, 0.74, 0.93, 1.1, 1.3, 1.5, 1.6)
"""Boundaries of the upper teeth from the midline, as angles (radians) on the dental arch: central
incisor, lateral incisor, canine, two premolars, molars (the arch's projection makes them narrower
toward the corners)."""
LOWER_ARCS = (0.0, 0.22, 0.42, 0.62, 0.8, 0.98, 1.2, 1.4, 1.6)
"""The lower row: narrower incisors."""
ARCH = 1.0
"""Radius of the dental arch as a share of the mouth's half-width (a central incisor is about a sixth
of the mouth's width)."""
CLASSES = (0.08, 0.2, 0.34)
"""Inner-lip opening (gap over mouth width) from which a frame counts as slightly, half and wide open."""
BANK_SIZE = (56, 28)
"""(width, height) of a banked mouth interior."""


def _lab_to_rgb(lab: tuple[float, float, float]) -> np.ndarray:
    pixel = np.array([[[np.clip(v, 0, 255) for v in lab]]], np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_LAB2RGB)[0, 0].astype(np.float32)


def _lab(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(pixels.reshape(-1, 1, 3)), cv2.COLOR_RGB2LAB).reshape(-1, 3)


@dataclass(frozen=True)
class Tones:
    """RGB float colours of one face's mouth interior, derived from its skin and lips."""

    teeth: np.ndarray
    gums: np.ndarray
    tongue: np.ndarray
    cavity: np.ndarray
    skin: np.ndarray

    @classmethod
    def of_face(cls, frame: np.ndarray, points: np.ndarray) -> Tones:
        """Sampled from the skin between nose and upper lip and from the lips (outer minus inner
        outline) of 68 landmarks."""
        p = np.asarray(points, np.float64)
        skin_lab = _lab(skin_patch(frame, p)).astype(np.float32).mean(axis=0)
        x1, y1 = np.maximum(np.floor(p[48:60].min(axis=0)).astype(int) - 1, 0)
        x2, y2 = np.ceil(p[48:60].max(axis=0)).astype(int) + 2
        crop = frame[y1:y2, x1:x2]
        mask = np.zeros(crop.shape[:2], np.uint8)
        offset = np.array([x1, y1])
        cv2.fillPoly(mask, [np.rint(p[48:60] - offset).astype(np.int32)], 1)
        cv2.fillPoly(mask, [np.rint(p[60:68] - offset).astype(np.int32)], 0)
        lips = crop[mask.astype(bool)]
        lip_lab = (
            _lab(lips).astype(np.float32).mean(axis=0)
            if len(lips) >= 4
            else skin_lab + np.array([-20.0, 12.0, 4.0], np.float32)
        )
        return cls.from_lab(skin_lab, lip_lab)

    @classmethod
    def from_lab(cls, skin: np.ndarray, lip: np.ndarray) -> Tones:
        """Teeth a little lighter than the skin (ivory, a trace of the light's tint); gums and tongue
        from the lip colour (pinker, the tongue lighter and less saturated); the cavity the lip colour
        deep in shadow."""
        light = float(skin[0])
        tint_a, tint_b = float(skin[1]) - 128.0, float(skin[2]) - 128.0
        teeth = (min(light + 22.0, 236.0), 128.0 + 0.12 * tint_a + 1.0, 128.0 + 0.15 * tint_b + 7.0)
        lip_l, lip_a, lip_b = float(lip[0]), float(lip[1]), float(lip[2])
        gums = (min(lip_l + 6.0, 200.0), 128.0 + 1.25 * (lip_a - 128.0) + 6.0, lip_b)
        tongue = (min(lip_l * 0.9, 170.0), 128.0 + 1.1 * (lip_a - 128.0) + 4.0, 128.0 + 0.6 * (lip_b - 128.0))
        cavity = (max(lip_l * 0.22, 10.0), 128.0 + 0.5 * (lip_a - 128.0), 128.0 + 0.3 * (lip_b - 128.0))
        return cls(
            _lab_to_rgb(teeth),
            _lab_to_rgb(gums),
            _lab_to_rgb(tongue),
            _lab_to_rgb(cavity),
            _lab_to_rgb(tuple(skin)),
        )


def skin_patch(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The skin between the base of the nose (33) and the top of the upper lip (51): a few pixels, never
    empty (the frame's centre pixel when the landmarks fall outside it)."""
    p = np.asarray(points, np.float64)
    half = max(float(np.hypot(*(p[54] - p[48]))) / 2, 2.0)
    centre = 0.5 * (p[33] + p[51])
    r = max(int(0.15 * half), 1)
    cx, cy = int(centre[0]), int(centre[1])
    patch = frame[max(cy - r, 0) : max(cy + r + 1, 0), max(cx - 2 * r, 0) : max(cx + 2 * r + 1, 0)]
    if patch.size == 0:
        return frame[
            frame.shape[0] // 2 : frame.shape[0] // 2 + 1, frame.shape[1] // 2 : frame.shape[1] // 2 + 1
        ]
    return patch


def skin_of(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean RGB (float) of ``skin_patch``."""
    return skin_patch(frame, points).reshape(-1, 3).astype(np.float32).mean(axis=0)


def _tooth_frac(
    u: np.ndarray, radius: float, arcs: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: (tooth index from the midline, position 0..1 across that tooth, pixels to the nearest
    tooth boundary) for the arch of ``radius`` pixels seen from the front."""
    s = np.clip(np.abs(u) / radius, 0.0, 0.9999)
    theta = np.arcsin(s)
    bounds = np.asarray(arcs)
    k = np.clip(np.searchsorted(bounds, theta, side="right") - 1, 0, len(bounds) - 2)
    lo, hi = bounds[k], bounds[k + 1]
    frac = (theta - lo) / (hi - lo)
    # pixel distance to the nearer boundary (the projection compresses the arch toward the corners)
    to_lo = radius * (s - np.sin(lo))
    to_hi = radius * (np.sin(np.minimum(hi, math.pi / 2)) - s)
    return k, frac, np.minimum(to_lo, to_hi)


def synthesize(
    f: Fields,
    tones: Tones,
    half_width: float,
    opening: float,
    *,
    upper_teeth: bool = True,
    tongue: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """RGB float per pixel of ``f``: the painted interior (module docstring) for a shape opened by
    ``opening`` (0..1), with the tongue raised by ``tongue`` (0..1). ``upper_teeth=False`` leaves the
    upper row out (the avatar's own teeth move with its lip). ``seed`` varies the teeth per face."""
    a = half_width
    below = f.v + f.upper  # pixels under the upper lip's edge
    above = f.lower - f.v  # pixels over the lower lip's edge
    height = np.maximum(f.upper + f.lower, 1e-3)
    across = np.clip(np.abs(f.u) / max(f.half_open, 1e-3), 0.0, 1.0)
    depth = np.clip(below / height, 0.0, 1.0)
    # cavity: darkest in the middle depth and toward the corners, a little light off the tongue below
    shade = (0.55 + 0.9 * (depth - 0.45) ** 2) * (1.0 - 0.55 * across**2)
    colour = tones.cavity[None, None, :] * shade[..., None] * 1.6
    gap = float(np.max(height)) if height.size else 0.0
    radius = ARCH * a

    if tongue <= 0.3:  # at rest behind the lower teeth, raised (l, th) in front of them
        colour = _tongue(colour, f, tones, above, height, across, tongue)
    # lower teeth: rise from the lower lip as the jaw drops, behind it and in the upper row's shadow
    lower_len = min(0.12 * a, 0.3 * gap) * float(np.clip((opening - 0.4) / 0.4, 0.0, 1.0))
    if lower_len > 0.6:
        colour = _teeth_row(
            colour,
            f.u,
            above,
            lower_len,
            radius * 0.86,
            LOWER_ARCS,
            tones,
            0.85,
            np.random.default_rng(seed + 1),
            across,
            span=0.6,
        )
    if tongue > 0.3:
        colour = _tongue(colour, f, tones, above, height, across, tongue)
    if upper_teeth:
        upper_len = min(0.2 * a, 0.62 * gap + 0.04 * a)
        rng = np.random.default_rng(seed)  # the same teeth on every frame of a face
        colour = _teeth_row(
            colour, f.u, below, upper_len, radius, TOOTH_ARCS, tones, 1.0, rng, across, gums=True
        )
    return colour


def _tongue(
    colour: np.ndarray,
    f: Fields,
    tones: Tones,
    above: np.ndarray,
    height: np.ndarray,
    across: np.ndarray,
    tongue: float,
) -> np.ndarray:
    """The tongue: a mound over the lower lip's edge, its top rising with ``tongue`` (l, th)."""
    top = (0.42 + 0.45 * tongue) * height * np.clip(1.0 - (f.u / max(0.62 * f.half_open, 1e-3)) ** 2, 0, 1)
    in_tongue = np.clip(top - above + 0.5, 0.0, 1.0) * (top > 0.5)
    t_shade = (0.7 + 0.3 * np.clip(1.0 - above / np.maximum(top, 1e-3), 0, 1)) * (1.0 - 0.5 * across**2)
    colour += in_tongue[..., None] * (tones.tongue * t_shade[..., None] - colour)
    return colour


def _teeth_row(
    colour: np.ndarray,
    u: np.ndarray,
    reach: np.ndarray,
    length: float,
    radius: float,
    arcs: tuple[float, ...],
    tones: Tones,
    light: float,
    rng: np.random.Generator,
    across: np.ndarray,
    *,
    gums: bool = False,
    span: float = 0.88,
) -> np.ndarray:
    """One row of teeth hanging ``length`` pixels from a lip edge (``reach``: pixels from that edge into
    the gap), each tooth separate: a rounded tip, a dark line between neighbours, the lip's shadow on
    their roots, darker toward the corners; gum papillae between them when ``gums``."""
    k, frac, to_edge = _tooth_frac(u, radius, arcs)
    n = len(arcs) - 1
    lengths = length * (1.0 + rng.uniform(-0.06, 0.06, n)) * np.linspace(1.0, 0.55, n)
    shades = light * (1.0 + rng.uniform(-0.04, 0.04, n))
    tip = lengths[k] * (1.0 - 0.35 * (2.0 * frac - 1.0) ** 4)  # rounded corners on each tooth
    if n > 2:
        tip = np.where(
            k == 2, lengths[k] * (1.0 - 0.3 * np.abs(2.0 * frac - 1.0) ** 1.5), tip
        )  # canine point
    inside = np.clip(tip - reach + 0.5, 0.0, 1.0) * np.clip(reach + 1.0, 0.0, 1.0)
    inside *= np.clip((span - across) / 0.25, 0.0, 1.0)  # the back teeth vanish into the corners' shadow
    gap_line = np.clip(to_edge / max(0.5 + 0.012 * radius, 0.6), 0.0, 1.0) ** 0.7  # 0 on a boundary
    root_shadow = 0.72 + 0.28 * np.clip(reach / max(0.3 * length, 1.0), 0.0, 1.0)
    translucent = 1.0 - 0.18 * np.clip((reach - 0.8 * tip) / np.maximum(0.2 * tip, 0.5), 0.0, 1.0)
    lit = shades[k] * root_shadow * translucent * (1.0 - 0.6 * across**2) * (0.68 + 0.32 * gap_line)
    tooth = tones.teeth[None, None, :] * lit[..., None]
    out = colour + inside[..., None] * (tooth - colour)
    if gums:
        papilla = np.clip(1.0 - to_edge / max(0.05 * radius, 0.8), 0.0, 1.0) * np.clip(
            1.0 - reach / max(0.18 * length, 0.8), 0.0, 1.0
        )
        out += (papilla * inside)[..., None] * (tones.gums * 0.8 * (1.0 - 0.5 * across[..., None] ** 2) - out)
    return out


# --------------------------------------------------------------------------------------------------
# A video avatar's own mouth interiors
# --------------------------------------------------------------------------------------------------

UPPER_INNER = [60, 61, 62, 63, 64]
LOWER_INNER = [60, 67, 66, 65, 64]


def inner_opening(points: np.ndarray) -> float:
    """The inner lips' gap at the middle over the mouth's width (corner to corner)."""
    p = np.asarray(points, np.float64)
    width = float(np.hypot(*(p[54] - p[48])))
    gap = float(np.mean(p[[65, 66, 67], 1]) - np.mean(p[[61, 62, 63], 1]))
    return gap / width if width > 0 else 0.0


@dataclass
class _Banked:
    pixels: np.ndarray  # BANK_SIZE[1] × BANK_SIZE[0] × 3 float32
    opening: float
    skin: np.ndarray


class MouthBank:
    """One banked interior per opening class (``CLASSES``); the widest of each class is kept."""

    def __init__(self) -> None:
        self.entries: dict[int, _Banked] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def offer(self, frame: np.ndarray, points: np.ndarray) -> bool:
        """Bank ``frame``'s mouth interior if it is open and wider than what its class holds; whether it
        was taken."""
        opening = inner_opening(points)
        if opening < CLASSES[0]:
            return False
        c = int(np.searchsorted(CLASSES, opening, side="right") - 1)
        held = self.entries.get(c)
        if held is not None and held.opening >= opening:
            return False
        pixels = unroll(frame, points)
        if pixels is None:
            return False
        self.entries[c] = _Banked(pixels, opening, skin_of(frame, points))
        return True

    def sample(self, f: Fields, gap_ratio: float, skin: np.ndarray) -> np.ndarray | None:
        """RGB float per pixel of ``f`` from the banked interior nearest to ``gap_ratio`` (gap over
        mouth width), its colour scaled to ``skin`` (the current frame's); None when nothing is banked."""
        if not self.entries:
            return None
        best = min(self.entries.values(), key=lambda e: abs(e.opening - gap_ratio))
        w, h = BANK_SIZE
        height = np.maximum(f.upper + f.lower, 1e-3)
        s = np.clip(f.u / max(f.half_open, 1e-3), -1.0, 1.0)
        t = np.clip((f.v + f.upper) / height, 0.0, 1.0)
        map_x = ((s + 1.0) * 0.5 * (w - 1)).astype(np.float32)
        map_y = (t * (h - 1)).astype(np.float32)
        out = cv2.remap(best.pixels, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        gain = np.clip(skin / np.maximum(best.skin, 1.0), 0.7, 1.4)
        return out * gain[None, None, :]


def unroll(frame: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """The inside of the inner lip outline resampled to ``BANK_SIZE``: columns from corner 60 to corner
    64, rows from the upper inner lip line to the lower one (in the mouth's own axes, so head roll does
    not matter); None when the mouth is too small."""
    p = np.asarray(points, np.float64)
    left, right = p[60], p[64]
    axis = right - left
    length = float(np.hypot(*axis))
    if length < 6:
        return None
    e_u = axis / length
    e_v = np.array([-e_u[1], e_u[0]])
    origin = (left + right) / 2
    rel = p - origin
    pu, pv = rel @ e_u, rel @ e_v
    w, h = BANK_SIZE
    us = np.linspace(-length / 2, length / 2, w)
    order_u, order_l = np.argsort(pu[UPPER_INNER]), np.argsort(pu[LOWER_INNER])
    top = np.interp(us, pu[UPPER_INNER][order_u], pv[UPPER_INNER][order_u])
    bottom = np.interp(us, pu[LOWER_INNER][order_l], pv[LOWER_INNER][order_l])
    bottom = np.maximum(bottom, top + 0.5)
    t = np.linspace(0.0, 1.0, h)[:, None]
    vv = top[None, :] + t * (bottom - top)[None, :]
    uu = np.broadcast_to(us[None, :], vv.shape)
    map_x = (origin[0] + uu * e_u[0] + vv * e_v[0]).astype(np.float32)
    map_y = (origin[1] + uu * e_u[1] + vv * e_v[1]).astype(np.float32)
    out: np.ndarray = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.astype(np.float32)


def tucked_teeth(
    colour: np.ndarray, f: Fields, tones: Tones, half_width: float, length: float, seed: int = 0
) -> np.ndarray:
    """``colour`` with the upper teeth's edges, ``length`` pixels long, resting on the tucked lower lip
    (f, v): the row hangs from the lifted upper lip over the lip's top, the middle teeth only (the
    corners stay closed)."""
    rng = np.random.default_rng(seed)
    across = np.clip(np.abs(f.u) / max(f.half_open, 1e-3), 0.0, 1.0)
    radius = ARCH * half_width  # the same teeth as ``synthesize`` draws
    teeth = _teeth_row(colour, f.u, f.v + f.upper, length, radius, TOOTH_ARCS, tones, 1.0, rng, across)
    span = np.clip((0.72 - across) / 0.18, 0.0, 1.0)[..., None]
    return colour + span * (teeth - colour)
