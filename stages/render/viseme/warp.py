"""The image side of the viseme renderer: locate the mouth, warp it to a shape, paint the opening.

Coordinates: ``u`` runs along the mouth (left to right corner), ``v`` across it (down positive), both
in pixels from the lip seam's centre. A shape (open, wide, round) becomes a smooth backward map on a
crop around the mouth and jaw:

- the lower lip and, with a share of the motion, the chin move down by ``open``; the upper lip lifts a
  little; motion fades out smoothly well inside the crop;
- the corners move apart with ``wide`` and together with ``round``;
- the gap between the lips is painted as a mouth interior (dark gradient, a hint of teeth for photos;
  flat fill, tongue and outline for cartoons);
- the crop goes back with ``blend.feather_mask``/``blend_into``, so every pixel outside the crop (and
  every pixel the motion does not reach) is bit-identical to the input.

Everything per frame works on the crop only; what depends only on the face geometry is precomputed in
``MouthRig``, which the renderer reuses while the face does not move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from pipeline.contracts import FaceFrame
from stages.render.blend import blend_into, feather_mask

Box = tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------------
# Styles
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarpStyle:
    """How the mouth is drawn. Lengths are fractions of the mouth width unless stated.

    max_open: lip gap at open = 1. upper_share: part of the gap made by lifting the upper lip.
    jaw_share: how far the chin follows the lower lip. wide_gain/round_gain: corner motion.
    interior: RGB colours top, middle, bottom of the opening. teeth: RGB of the upper-teeth hint or
    None (also dropped when the face already shows teeth). outline: RGB and width (fraction) of a
    drawn lip outline, or None. tongue: RGB of a tongue at the bottom of the opening, or None.
    softness: anti-aliasing width, in pixels and at least 2.5% of the mouth half-width.
    opening_width: the gap's half-length relative to the mouth's. lens_power: the gap's profile
    across the mouth (1 parabolic, lower is blunter). jaw_flat: share of the jaw's half-width that
    moves fully with the chin before the motion fades toward the cheeks (0: a fade from the middle, so
    a drawn chin outline bends as one smooth curve, without corners).
    """

    max_open: float = 0.3
    upper_share: float = 0.3
    jaw_share: float = 0.55
    wide_gain: float = 0.10
    round_gain: float = 0.22
    interior: tuple[tuple[int, int, int], ...] = ((16, 7, 7), (44, 15, 16), (96, 38, 40))
    teeth: tuple[int, int, int] | None = (222, 216, 204)
    opening_width: float = 0.8
    lens_power: float = 0.9
    outline: tuple[int, int, int] | None = None
    outline_width: float = 0.0
    softness: float = 1.2
    tongue: tuple[int, int, int] | None = None
    jaw_flat: float = 0.6


PHOTO = WarpStyle()
CARTOON = WarpStyle(
    max_open=0.5,
    upper_share=0.18,
    jaw_share=0.3,
    wide_gain=0.14,
    round_gain=0.3,
    interior=((70, 14, 24), (92, 20, 32), (110, 26, 38)),
    teeth=None,
    outline=(24, 12, 12),
    outline_width=0.05,
    softness=0.7,
    tongue=(200, 80, 90),
    jaw_flat=0.0,
)


def looks_like_cartoon(frame: np.ndarray, box: Box) -> bool:
    """Guess the avatar style from the face crop: drawings are mostly flat colour.

    Cartoon faces have large areas of (nearly) constant colour; photos have texture and noise
    everywhere. The share of pixels whose 3×3 neighbourhood varies by at most 2 levels separates them.
    """
    x1, y1, x2, y2 = box
    crop = frame[y1:y2, x1:x2]
    if crop.size == 0:
        return False
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    spread = cv2.dilate(gray, np.ones((3, 3), np.uint8)).astype(np.int16) - cv2.erode(
        gray, np.ones((3, 3), np.uint8)
    )
    return float(np.mean(spread <= 2)) > 0.5  # drawings score 0.75+ even as JPEG, photos under 0.2


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MouthGeometry:
    """Where the mouth is, in frame pixels.

    (cx, cy): centre of the lip seam. half_width: centre to corner. angle: roll of the mouth axis
    (radians, image coordinates). up: seam to the base of the nose. down: seam to the chin's bottom.
    jaw: half-width of the jaw around the chin. chin_offset: where the chin's middle is along the mouth
    axis from the mouth's centre (a drawing's mouth may be off the face's middle; the jaw moves about
    the chin).
    """

    cx: float
    cy: float
    half_width: float
    angle: float
    up: float
    down: float
    jaw: float
    chin_offset: float = 0.0

    def rounded(self) -> MouthGeometry:
        """Snapped to half pixels (and 1/100 radian), so a still face reuses one rig."""
        half = [
            round(x * 2) / 2
            for x in (self.cx, self.cy, self.half_width, self.up, self.down, self.jaw, self.chin_offset)
        ]
        return MouthGeometry(
            half[0], half[1], half[2], round(self.angle, 2), half[3], half[4], half[5], half[6]
        )


@dataclass(frozen=True)
class BoxLayout:
    """Where the mouth sits in a face box without landmarks, as fractions of the box size.

    Tuned on OpenCV Haar boxes (forehead to just under the lips); ``seam`` may be refined from the
    image (``find_seam``).
    """

    seam: float = 0.82
    half_width: float = 0.19
    up: float = 0.2
    down: float = 0.26
    jaw: float = 0.38


def geometry_from_box(box: tuple[float, float, float, float], layout: BoxLayout) -> MouthGeometry:
    """Mouth geometry from a face box alone (upright face assumed)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return MouthGeometry(
        cx=(x1 + x2) / 2,
        cy=y1 + layout.seam * h,
        half_width=layout.half_width * w,
        angle=0.0,
        up=layout.up * h,
        down=layout.down * h,
        jaw=layout.jaw * w,
    )


def geometry_from_landmarks(points: np.ndarray) -> MouthGeometry:
    """Mouth geometry from 68 iBUG landmarks: corners 48/54, inner lips 60-67, nose base 33, chin 8,
    jaw 5-11."""
    left, right = points[48], points[54]
    seam = points[60:68].mean(axis=0)
    axis = right - left
    half = float(np.hypot(*axis)) / 2
    angle = math.atan2(float(axis[1]), float(axis[0]))
    jaw_span = float(np.hypot(*(points[11] - points[5]))) / 2
    return MouthGeometry(
        cx=float(seam[0]),
        cy=float(seam[1]),
        half_width=max(half, 2.0),
        angle=angle,
        up=float(np.hypot(*(seam - points[33]))),
        down=float(np.hypot(*(points[8] - seam))),
        jaw=max(jaw_span, half * 1.2),
    )


def find_seam(frame: np.ndarray, box: tuple[float, float, float, float], layout: BoxLayout) -> float:
    """The lip seam's height as a fraction of the box, searched within 0.1 of ``layout.seam``.

    Looks at a central band (half the mouth wide). Photos: lips are redder than skin (Lab a*); with two
    red bands (upper and lower lip, maybe teeth between) the seam is the middle of the gap between
    them, with one it is 40% down the band. Drawings without red lips: the darkest row (the drawn
    mouth line). Without either cue the layout's value stands.
    """
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    lo = max(int(y1 + (layout.seam - 0.1) * h), 0)
    hi = max(int(y1 + (layout.seam + 0.1) * h), 0)
    cx, half = (x1 + x2) / 2, layout.half_width * w * 0.5
    band = frame[lo:hi, max(int(cx - half), 0) : max(int(cx + half), 0)]
    if band.shape[0] < 5 or band.shape[1] < 3:
        return layout.seam
    lab = cv2.cvtColor(np.ascontiguousarray(band), cv2.COLOR_RGB2LAB).astype(np.float32)
    red = _smooth_rows(lab[..., 1].mean(axis=1))
    dark = _smooth_rows(lab[..., 0].mean(axis=1))
    row = _seam_between_lips(red)
    if row is None and dark.mean() - dark.min() >= 6.0:
        row = float(np.argmin(dark))
    return layout.seam if row is None else float((lo + row - y1) / h)


@dataclass(frozen=True)
class DrawnMouth:
    """A drawn mouth found in a frame: its centre, half-width (pixels) and the mask of its line."""

    cx: float
    cy: float
    half_width: float
    mask: np.ndarray  # uint8 0/255, frame-sized


def find_drawn_mouth(
    frame: np.ndarray, box: tuple[float, float, float, float], layout: BoxLayout
) -> DrawnMouth | None:
    """The mouth line of a drawing: the largest dark stroke (far darker than the face's median) within
    a window around the layout's mouth position, wider than tall; None when there is none."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    lo, hi = (
        int(max(y1 + (layout.seam - 0.15) * h, 0)),
        int(min(y1 + (layout.seam + 0.12) * h, frame.shape[0])),
    )
    left, right = int(max(x1 + 0.12 * w, 0)), int(min(x2 - 0.12 * w, frame.shape[1]))
    if hi - lo < 5 or right - left < 5:
        return None
    grey = cv2.cvtColor(np.ascontiguousarray(frame[lo:hi, left:right]), cv2.COLOR_RGB2GRAY)
    face = cv2.cvtColor(np.ascontiguousarray(frame[int(y1) : int(y2), int(x1) : int(x2)]), cv2.COLOR_RGB2GRAY)
    if face.size == 0:
        return None
    dark = (grey < float(np.median(face)) - 60).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    best = None
    for k in range(1, count):
        cw, ch, area = stats[k, cv2.CC_STAT_WIDTH], stats[k, cv2.CC_STAT_HEIGHT], stats[k, cv2.CC_STAT_AREA]
        if cw >= 0.12 * w and cw > 1.5 * ch and (best is None or area > stats[best, cv2.CC_STAT_AREA]):
            best = k
    if best is None:
        return None
    sx, sy, sw, sh = (int(v) for v in stats[best, :4])
    mask = np.zeros(frame.shape[:2], np.uint8)
    mask[lo:hi, left:right][labels == best] = 255
    return DrawnMouth(left + sx + sw / 2, lo + sy + sh / 2, sw / 2, mask)


def _smooth_rows(profile: np.ndarray) -> np.ndarray:
    return np.convolve(np.pad(profile, 1, mode="edge"), np.ones(3) / 3, mode="valid")


def _seam_between_lips(red: np.ndarray) -> float | None:
    """Row of the seam from a redness profile, or None when no lips stand out."""
    base, peak = float(np.median(red)), float(red.max())
    if peak - base < 4.0:
        return None
    rows = np.flatnonzero(red > base + 0.5 * (peak - base))
    gaps = np.flatnonzero(np.diff(rows) > 1)
    if gaps.size == 0:
        return rows[0] + 0.4 * (rows[-1] - rows[0])
    widest = int(np.argmax(np.diff(rows)[gaps]))
    return (rows[gaps[widest]] + rows[gaps[widest] + 1]) / 2


def locate_mouth(face: FaceFrame, layout: BoxLayout, seam: float | None = None) -> MouthGeometry:
    """The mouth of ``face``: from its landmarks when it has 68, else from its box (with ``seam`` as
    the box fraction of the lip seam when known)."""
    if face.landmarks is not None and len(face.landmarks) == 68:
        return geometry_from_landmarks(np.asarray(face.landmarks, np.float64))
    box_layout = layout if seam is None else replace(layout, seam=seam)
    return geometry_from_box(face.box, box_layout)


def shows_teeth(frame: np.ndarray, geometry: MouthGeometry) -> bool:
    """Whether the mouth already shows teeth at the seam (a smile): then no teeth are painted, the
    real ones move with the lips.

    Teeth are brighter than the skin above the upper lip and nearly colourless (upright face assumed;
    the patches are small, so a slight roll does not matter).
    """
    a, cx, cy = geometry.half_width, int(geometry.cx), int(geometry.cy)
    half, rise = max(int(0.4 * a), 2), max(int(0.1 * a), 1)
    seam = frame[max(cy - rise, 0) : cy + rise + 1, max(cx - half, 0) : cx + half + 1]
    skin_y = int(cy - 0.6 * geometry.up)
    skin = frame[max(skin_y - rise, 0) : max(skin_y + rise + 1, 0), max(cx - half, 0) : cx + half + 1]
    if seam.size == 0 or skin.size == 0:
        return False
    seam_lab, skin_lab = (_mean_lab(p) for p in (seam, skin))
    chroma = float(np.hypot(seam_lab[1] - 128.0, seam_lab[2] - 128.0))
    return bool(seam_lab[0] > skin_lab[0] + 8.0 and chroma < 14.0)


def _mean_lab(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(axis=0)


# --------------------------------------------------------------------------------------------------
# The rig: precomputed fields for one geometry
# --------------------------------------------------------------------------------------------------


def ramp(x: np.ndarray, full: float, zero: float) -> np.ndarray:
    """1 where ``x <= full``, 0 where ``x >= zero``, a raised cosine between."""
    t = np.clip((x - full) / max(zero - full, 1e-6), 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


class MouthRig:
    """The warp for one mouth geometry in one frame size; ``apply`` renders a shape into a frame.

    The displacement is smooth, so it is computed on a grid of about 10 points per mouth half-width
    and upsampled; only the lip gap is painted at full resolution.
    """

    def __init__(self, geometry: MouthGeometry, frame_shape: tuple[int, int], style: WarpStyle) -> None:
        self.geometry, self.style = geometry, style
        g, a = geometry, geometry.half_width
        self.max_gap = style.max_open * 2 * a
        # vertical reach: lips up to under the nose; chin motion fades over at least 2.5 gaps so the
        # map never folds (slope of the displacement stays well under 1)
        self.up_reach = max(0.85 * g.up, 0.6 * a)
        self.down_full = 0.45 * g.down
        self.down_reach = max(1.3 * g.down, self.down_full + 2.5 * self.max_gap)
        self.side_reach = max(1.3 * g.jaw, 1.9 * a)
        self.cos, self.sin = math.cos(g.angle), math.sin(g.angle)
        self.box = self._crop_box(frame_shape)
        x1, y1, x2, y2 = self.box
        self.size = (y2 - y1, x2 - x1)
        self.mask = feather_mask(*self.size, self._feather(*self.size))
        self.step = max(1, int(a // 10))
        # coarse sample k sits at pixel k*step + (step-1)/2: where cv2.resize puts it when upsampling
        rows, cols = -(-self.size[0] // self.step), -(-self.size[1] // self.step)
        self.grid_x = np.arange(cols, dtype=np.float32) * self.step + (self.step - 1) / 2
        self.grid_y = np.arange(rows, dtype=np.float32) * self.step + (self.step - 1) / 2
        self.u, self.v = self._mouth_coords(*np.meshgrid(self.grid_x, self.grid_y))
        # the chin moves as one piece across its width; the fade lies on the cheeks' near-vertical
        # outline, where vertical motion barely shows
        self.jaw_profile = ramp(np.abs(self.u - g.chin_offset), style.jaw_flat * g.jaw, self.side_reach)
        # the corners' sideways motion fades by 1.9 half-widths; a mouth off the face's middle (a
        # drawing) has its near cheek's outline closer: fade before it
        off = abs(g.chin_offset)
        self.corner_reach = 1.9 * a if off == 0.0 else min(1.9 * a, max(1.3 * a, g.jaw - off))
        self.identity = np.meshgrid(
            np.arange(self.size[1], dtype=np.float32), np.arange(self.size[0], dtype=np.float32)
        )

    def _mouth_coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) of crop pixel coordinates."""
        dx, dy = x + (self.box[0] - self.geometry.cx), y + (self.box[1] - self.geometry.cy)
        return self.cos * dx + self.sin * dy, -self.sin * dx + self.cos * dy

    # -- layout --------------------------------------------------------------------------------------

    def _margin(self) -> float:
        return 0.25 * self.geometry.half_width + 4

    def _crop_box(self, frame_shape: tuple[int, int]) -> Box:
        """The support of the motion, rotated into the frame, plus a margin for the feathered edge."""
        g, m = self.geometry, self._margin()
        xs, ys = self._rotated_bounds((-self.side_reach, self.side_reach), (-self.up_reach, self.down_reach))
        xs, ys = [x + g.cx for x in xs], [y + g.cy for y in ys]
        h, w = frame_shape
        x1, x2 = max(int(min(xs) - 2 * m), 0), min(math.ceil(max(xs) + 2 * m), w)
        y1, y2 = max(int(min(ys) - 2 * m), 0), min(math.ceil(max(ys) + 2 * m), h)
        return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)

    def _rotated_bounds(
        self, us: tuple[float, float], vs: tuple[float, float]
    ) -> tuple[list[float], list[float]]:
        """Offsets (x, y) from the mouth centre of the corners of a (u, v) rectangle."""
        corners = [(u, v) for u in us for v in vs]
        return [self.cos * u - self.sin * v for u, v in corners], [
            self.sin * u + self.cos * v for u, v in corners
        ]

    def _feather(self, height: int, width: int) -> float:
        """Feather so the mask is 1 on the whole support: blur reaches 2 borders in from the edge."""
        return max(self._margin() - 1, 1) / max(min(height, width), 1)

    # -- per frame -----------------------------------------------------------------------------------

    def erase(self, frame: np.ndarray, line: np.ndarray) -> None:
        """Keep a copy of this rig's crop of ``frame`` with the pixels of ``line`` (a frame-sized uint8
        mask: a drawn mouth's stroke) inpainted; ``apply`` warps it instead of the frame as the mouth
        opens, so no part of the old line stays beside the new mouth (a still drawing)."""
        x1, y1, x2, y2 = self.box
        mask = cv2.dilate(np.ascontiguousarray(line[y1:y2, x1:x2]), np.ones((5, 5), np.uint8))
        crop = np.ascontiguousarray(frame[y1:y2, x1:x2])
        self.clean = np.asarray(cv2.inpaint(crop, mask, 5, cv2.INPAINT_TELEA)) if mask.any() else None

    clean: np.ndarray | None = None

    def apply(self, frame: np.ndarray, shape: tuple[float, float, float], tongue: float = 0.0) -> np.ndarray:
        """A new frame with the mouth in ``shape`` (open, wide, round in 0..1) and, where the rig draws
        one, the tongue raised by ``tongue``; ``frame`` itself at rest (never written into)."""
        opening, wide, rnd = (float(np.clip(x, 0.0, 1.0)) for x in shape)
        if opening < 1e-3 and wide < 1e-3 and rnd < 1e-3:
            return frame  # at rest: the frame as it is (never written into)
        x1, y1, x2, y2 = self.box
        gap = Gap.for_shape(self.geometry.half_width, self.style, self.max_gap, opening, wide, rnd)
        map_x, map_y = self._maps(gap, wide, rnd)
        source = frame[y1:y2, x1:x2]
        if self.clean is not None:  # the old line fades out as the new mouth opens
            k = float(np.clip(opening / 0.15, 0.0, 1.0))
            source = (source * (1.0 - k) + self.clean * k + 0.5).astype(np.uint8)
        warped = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        self._paint_mouth(warped, gap, self.style.wide_gain * wide - self.style.round_gain * rnd, tongue)
        return blend_into(frame, warped, self.box, self.mask)

    def _paint_mouth(self, warped: np.ndarray, gap: Gap, scale: float, tongue: float) -> None:
        """Draw the opened mouth into the warped crop, ``scale`` being how much wider (or, negative,
        rounder) the mouth is drawn: here the interior of a box-placed mouth; the landmark rig paints
        its own."""
        self._paint(warped, gap)

    def _maps(self, gap: Gap, wide: float, rnd: float) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution backward maps (crop pixels) from the coarse displacement."""
        st = self.style
        lens = gap.lens(self.u)
        src_v = self._source_v(lens, gap.size, st.upper_share * gap.size)
        src_u = self._source_u(src_v, st.wide_gain * wide - st.round_gain * rnd)
        du, dv = src_u - self.u, src_v - self.v
        dx, dy = self.cos * du - self.sin * dv, self.sin * du + self.cos * dv
        full = (self.grid_x.size * self.step, self.grid_y.size * self.step)
        rows, cols = self.size
        up_x = cv2.resize(dx.astype(np.float32), full, interpolation=cv2.INTER_LINEAR)[:rows, :cols]
        up_y = cv2.resize(dy.astype(np.float32), full, interpolation=cv2.INTER_LINEAR)[:rows, :cols]
        return self.identity[0] + up_x, self.identity[1] + up_y

    def _source_v(self, lens: np.ndarray, gap: float, lift: float) -> np.ndarray:
        """Where each output row comes from across the mouth: lower part pushed down by the gap (and the
        chin by ``jaw_share`` of it), upper lip lifted; the gap itself samples the seam."""
        v, a = self.v, self.geometry.half_width
        below, above = v >= gap * lens, v <= -lift * lens
        src = np.zeros_like(v)
        lo = v.copy()
        for _ in range(3):  # fixed point of v = s + push(s); converges as push' < 1
            share = ramp(lo, 0.2 * a, 1.0 * a)  # 1 on the lower lip, 0 on the chin
            push = gap * (lens * share + self.style.jaw_share * self.jaw_profile * (1 - share))
            lo = v - push * ramp(lo, self.down_full, self.down_reach)
        hi = v.copy()
        for _ in range(3):
            hi = v + lift * lens * ramp(-hi, 0.25 * self.geometry.up, self.up_reach)
        src[below], src[above] = lo[below], hi[above]
        return src

    def _source_u(self, src_v: np.ndarray, scale: float) -> np.ndarray:
        """Where each output column comes from along the mouth: corners pulled out (wide) or in (round)."""
        a = self.geometry.half_width
        near = ramp(np.abs(src_v), 0.25 * a, 0.9 * a)  # the corners move, not the chin's outline below
        src = self.u.copy()
        for _ in range(2):
            src = self.u / (1.0 + scale * near * ramp(np.abs(src), 1.05 * a, self.corner_reach))
        return src

    def _paint(self, warped: np.ndarray, gap: Gap) -> None:
        """Paint the interior into ``warped`` (in place) on the small rectangle around the gap only."""
        if gap.size < 0.5:
            return
        pad = self.style.outline_width * 2 * self.geometry.half_width + 0.05 * self.geometry.half_width + 4
        xs, ys = self._rotated_bounds(
            (-gap.half_open - pad, gap.half_open + pad), (-gap.lift - pad, gap.size + pad)
        )
        cx, cy = self.geometry.cx - self.box[0], self.geometry.cy - self.box[1]
        x1, x2 = max(int(cx + min(xs)), 0), min(math.ceil(cx + max(xs)) + 1, self.size[1])
        y1, y2 = max(int(cy + min(ys)), 0), min(math.ceil(cy + max(ys)) + 1, self.size[0])
        if x2 <= x1 or y2 <= y1:
            return
        u, v = self._mouth_coords(
            *np.meshgrid(np.arange(x1, x2, dtype=np.float32), np.arange(y1, y2, dtype=np.float32))
        )
        warped[y1:y2, x1:x2] = paint_interior(
            warped[y1:y2, x1:x2], gap.at(u, v), self.style, self.geometry.half_width
        )


@dataclass(frozen=True)
class Gap:
    """The lip gap of one shape: an almond ``size`` pixels below the seam and ``lift`` above it at the
    centre, ``half_open`` pixels to each side, ``power`` shaping its ends (rounder as lips purse)."""

    size: float
    lift: float
    half_open: float
    power: float

    @classmethod
    def for_shape(
        cls, half_width: float, style: WarpStyle, max_gap: float, opening: float, wide: float, rnd: float
    ) -> Gap:
        scale = style.wide_gain * wide - style.round_gain * rnd
        size = opening * max_gap
        return cls(size, style.upper_share * size, half_width * (1.0 + scale) * style.opening_width,
                   style.lens_power * (1.0 - 0.4 * rnd))  # fmt: skip

    def lens(self, u: np.ndarray) -> np.ndarray:
        """0..1 across the mouth: 1 at the centre, 0 at and beyond the gap's ends."""
        return np.clip(1.0 - (u / self.half_open) ** 2, 0.0, 1.0) ** self.power

    def at(self, u: np.ndarray, v: np.ndarray) -> Fields:
        lens = self.lens(u)
        return Fields(u, v, self.lift * lens, self.size * lens, self.half_open)


@dataclass
class Fields:
    """Per pixel of a region: mouth coordinates (u, v) and the upper and lower edges of the lip gap
    (pixels above / below the seam); ``half_open`` is the gap's half-length."""

    u: np.ndarray
    v: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    half_open: float


# --------------------------------------------------------------------------------------------------
# The mouth interior
# --------------------------------------------------------------------------------------------------


def paint_interior(
    warped: np.ndarray, f: Fields, style: WarpStyle, half_width: float, tongue: float | None = None
) -> np.ndarray:
    """``warped`` with the lip gap filled by the style's interior (anti-aliased, with outline).

    ``tongue``: None draws the style's tongue (if any) resting at the bottom; a number 0..1 raises it
    toward the upper teeth by that much (l, th)."""
    inside = np.minimum(f.v + f.upper, f.lower - f.v)  # >0 in the gap, pixels to the nearest lip
    height = f.upper + f.lower
    softness = max(style.softness, 0.025 * half_width)
    alpha = np.clip(inside / softness + 0.5, 0.0, 1.0) * (height > 0.5)
    if not np.any(alpha > 0):
        return warped
    depth = np.clip((f.v + f.upper) / np.maximum(height, 1e-3), 0.0, 1.0)  # 0 top .. 1 bottom
    colour = interior_colour(depth, f, style, half_width, tongue)
    out = warped.astype(np.float32)
    out += alpha[..., None] * (colour - out)
    if style.outline is not None:
        out = _outline(out, inside, f, style, half_width)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def interior_colour(
    depth: np.ndarray, f: Fields, style: WarpStyle, half_width: float, tongue: float | None = None
) -> np.ndarray:
    """RGB float per pixel of the mouth interior: a top-to-bottom gradient, darker toward the corners,
    with an upper-teeth band (photo) and a tongue (cartoon; raised by ``tongue`` for l and th)."""
    top, mid, bottom = (np.array(c, np.float32) for c in style.interior)
    d = depth[..., None]
    colour = np.where(d < 0.5, top + (mid - top) * (d / 0.5), mid + (bottom - mid) * ((d - 0.5) / 0.5))
    across = np.clip(np.abs(f.u) / max(f.half_open, 1e-3), 0.0, 1.0)[..., None]
    colour *= 1.0 - 0.45 * across**2  # corners in shadow
    if style.teeth is not None:
        colour = _teeth(colour, f, style.teeth, half_width, across)
    if style.tongue is not None:
        tip = 0.62 if tongue is None else 0.95 - 0.6 * tongue  # raised: its tip nears the upper teeth
        width = 0.6 if tongue is None else 0.45
        shown = np.clip((depth - tip) / 0.15, 0.0, 1.0)[..., None] * (across < width)
        colour += shown * (np.array(style.tongue, np.float32) - colour)
    return colour


def _teeth(
    colour: np.ndarray, f: Fields, teeth: tuple[int, int, int], half_width: float, across: np.ndarray
) -> np.ndarray:
    """A band of upper teeth under the upper lip, narrower than the opening and fading at its ends;
    only as tall as a quarter of the gap, so small openings stay dark."""
    band = np.minimum(0.14 * half_width, 0.25 * (f.upper + f.lower))
    below_lip = f.v + f.upper
    ends = np.clip((0.7 - across[..., 0]) / 0.3, 0.0, 1.0)
    strength = 0.9 * np.clip(band - below_lip + 0.5, 0.0, 1.0) * ends
    shade = np.array(teeth, np.float32) * (1.0 - 0.25 * across**2)
    return colour + strength[..., None] * (shade - colour)


def _outline(
    out: np.ndarray, inside: np.ndarray, f: Fields, style: WarpStyle, half_width: float
) -> np.ndarray:
    """A drawn line around the opening (cartoon), fading in as the mouth opens."""
    width = max(style.outline_width * 2 * half_width, 1.0)
    ring = np.clip(width / 2 - np.abs(inside) + 0.5, 0.0, 1.0)
    ring *= np.clip((f.upper + f.lower) / width, 0.0, 1.0) * (np.abs(f.u) <= f.half_open + width)
    return out + ring[..., None] * (np.array(style.outline, np.float32) - out)
