"""The image side of motion: eyelids that close (blinks) and a head that moves while the background
stays put. Both are backward warps (``cv2.remap``) of a crop, so every pixel outside the crop — and
every pixel the motion does not reach — is bit-identical to the input.

**Eyelids** (``close_eyes``): per eye, in the eye's own axes (corner to corner), the upper lid line from
landmarks 37/38 (43/44) descends toward the lower lid (40/41, 46/47) by ``closure`` × the eye's opening
at each point across it; the skin above the lid (a band of 0.8 eye half-widths) is stretched down over
the eye, and the lid's edge (lashes) comes down with it. Where the eye has no opening (the corners)
nothing moves. As it shuts, the lid's own skin (the colour above the lid, shaded along its bulge) and a
lash line along its edge are painted over the eye (``_shade_lid``), so a shut eye reads as a lid, not
as stretched lashes.

**Head** (``HeadWarp``): the face is turned by ``roll`` about a pivot at the mouth, and shifted (drift,
and a nod's dip, ``NOD_DEPTH`` face widths per radian of pitch). With 68 landmarks only the head and
neck move (``head_mask``): the jaw line below, an ellipse through the jaw's ends up over the forehead
and hair above, the neck under the chin fading out toward the shoulders; the mask is feathered
*inward* (``EDGE`` face widths), so the background right next to the head does not move at all and a
straight line beside the head stays straight. Without landmarks (a box only) the motion is full on the
face box grown by ``INNER`` and fades out with a raised cosine over ``FADE`` of the face width beyond
it. The rigid motion is computed on a coarse grid and upsampled (it is affine, so exactly), then
weighted by the mask.
"""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np

EYES = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))
"""iBUG indices per eye: outer/inner corner and the lids (corner, upper, upper, corner, lower, lower)."""
LID_SKIN = 0.8
LASH_BAND = 0.12
"""Eye half-widths of lashes along the lid line, left out of the stretched lid skin when shut."""
LID_REACH = 0.95
"""A shut eye: the lid comes down to this share of the opening (the lower lid's rim stays visible)."""
INNER = (0.08, 0.12, 0.08, 0.04)
"""Face box growth (left, top, right, bottom) in face widths where the head motion is full."""
FADE = 0.36
"""Face widths over which the head motion fades to nothing."""
PIVOT = 0.78
"""The pivot of the roll: this far down the face box (about the mouth)."""
NOD_DEPTH = 0.45
EDGE = 0.05
"""Face widths over which the head mask fades to nothing, inside the head's outline."""
HEAD_TOP = 0.62
"""Face widths from the brows to the top of the head (forehead and hair)."""
NECK_FADE = 0.7
"""Face widths below the chin over which the neck's motion fades to nothing (at the shoulders)."""


# --- eyelids -------------------------------------------------------------------------------------------


def close_eyes(
    frame: np.ndarray, landmarks: np.ndarray, closure: float, *, in_place: bool = False
) -> np.ndarray:
    """``frame`` with both eyes closed by ``closure`` (0 open .. 1 shut): a copy, or ``frame`` itself
    changed when ``in_place``; ``frame`` untouched when ``closure`` is 0."""
    if closure <= 0.0:
        return frame
    out = frame if in_place else frame.copy()
    for eye in EYES:
        _close_eye(out, np.asarray(landmarks, np.float64)[list(eye)], min(closure, 1.0))
    return out


def _close_eye(out: np.ndarray, points: np.ndarray, closure: float) -> None:
    """Close one eye in ``out`` (its crop is copied before it is written back)."""
    left, right = points[0], points[3]
    axis = right - left
    half = float(np.hypot(*axis)) / 2
    if half < 2.0:
        return
    e_u = axis / (2 * half)
    e_v = np.array([-e_u[1], e_u[0]])
    origin = (left + right) / 2
    rel = points - origin
    u, v = rel @ e_u, rel @ e_v
    upper_u, upper_v = _sorted(u[[0, 1, 2, 3]], v[[0, 1, 2, 3]])
    lower_u, lower_v = _sorted(u[[0, 5, 4, 3]], v[[0, 5, 4, 3]])
    skin = LID_SKIN * half
    reach = 1.3 * half + skin + 2
    x1, y1, x2, y2 = _crop(origin, reach, out.shape)
    if x2 - x1 < 3 or y2 - y1 < 3:
        return
    xs, ys = np.meshgrid(np.arange(x1, x2, dtype=np.float64), np.arange(y1, y2, dtype=np.float64))
    du, dv = xs - origin[0], ys - origin[1]
    pu, pv = du * e_u[0] + dv * e_u[1], du * e_v[0] + dv * e_v[1]
    lid = np.interp(pu, upper_u, upper_v)
    drop = closure * LID_REACH * np.clip(np.interp(pu, lower_u, lower_v) - lid, 0.0, None)
    top = lid - skin
    stretched = (pv >= top) & (pv <= lid + drop)
    # the lid is the skin above the lashes stretched down (the lash band itself is left out as the eye
    # shuts: ``_shade_lid`` draws the lashes again at the lid's new edge)
    lashes = LASH_BAND * half * closure * closure
    src_v = np.where(stretched, top + (pv - top) * (skin - lashes) / np.maximum(skin + drop, 1e-6), pv)
    shift = src_v - pv
    map_x = (xs + shift * e_v[0] - x1).astype(np.float32)
    map_y = (ys + shift * e_v[1] - y1).astype(np.float32)
    crop = out[y1:y2, x1:x2].copy()
    moved = cv2.remap(crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out[y1:y2, x1:x2] = _shade_lid(moved, crop, pv, lid, drop, half, closure)


def _shade_lid(
    moved: np.ndarray,
    source: np.ndarray,
    pv: np.ndarray,
    lid: np.ndarray,
    drop: np.ndarray,
    half: float,
    closure: float,
) -> np.ndarray:
    """The lid's own look over the closing eye, stronger as it shuts (``closure`` squared): the lid
    darkens a little toward its edge (it curves away from the light there), and the lashes (the darkest
    tenth of the lid line's pixels in ``source``) run as a thin line along the lid's new edge, fading
    out toward the corners where the lid hardly moved."""
    weight = closure * closure
    if weight < 0.02:
        return moved
    line = np.abs(pv - lid) <= max(1.0, 0.06 * half)
    if line.sum() < 2:
        return moved
    lash = np.percentile(source[line].astype(np.float32), 10, axis=0)
    edge = lid + drop
    reach = np.clip(drop / max(float(np.max(drop)), 1e-3), 0.0, 1.0)  # 1 mid-eye, 0 at the corners
    depth = np.clip((pv - lid) / np.maximum(drop, 1e-3), 0.0, 1.0) * (pv >= lid) * (pv <= edge)
    out = moved.astype(np.float32) * (1.0 - 0.12 * weight * depth**2 * reach)[..., None]
    thick = max(1.2, 0.09 * half)
    on_edge = np.clip(thick / 2 - np.abs(pv - (edge - thick / 3)) + 0.5, 0.0, 1.0) * np.sqrt(reach)
    out += (weight * on_edge)[..., None] * (lash - out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _sorted(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(u)
    return u[order], v[order]


def _crop(centre: np.ndarray, reach: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x1, y1 = max(0, int(centre[0] - reach)), max(0, int(centre[1] - reach))
    x2, y2 = min(w, math.ceil(centre[0] + reach)), min(h, math.ceil(centre[1] + reach))
    return x1, y1, x2, y2


# --- the head ------------------------------------------------------------------------------------------


def head_mask(
    landmarks: np.ndarray,
    frame_shape: tuple[int, ...],
    frame: np.ndarray | None = None,
    outlines: HeadOutlines | None = None,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(weight 0..1 float32, its crop box x1, y1, x2, y2 in the frame) of the head and neck of 68
    landmarks: 1 inside, falling to 0 *at* the outline over ``EDGE`` face widths (module docstring).
    With ``frame`` the outline is the head's own (hair and ears included: ``_segment_head``), else the
    landmarks' estimate. ``outlines``: the video's earlier outlines, carried to this frame where the
    face has only moved (``HeadOutlines``) instead of segmented again."""
    p = np.asarray(landmarks, np.float64)
    h, w = frame_shape[:2]
    width = max(float(np.hypot(*(p[16] - p[0]))), 8.0)
    ends = 0.5 * (p[0] + p[16])
    axis = (p[16] - p[0]) / width
    angle = math.degrees(math.atan2(axis[1], axis[0]))
    brows = float(np.min(p[17:27, 1]))
    up = max(ends[1] - brows, 0.0) + HEAD_TOP * width
    chin = float(p[8, 1])
    neck_bottom = min(chin + NECK_FADE * width, h - 1.0)
    side, top = (0.62, 1.0) if frame is None else (0.95, 1.35)  # room for hair when it is segmented
    x1 = max(int(ends[0] - side * width) - 2, 0)
    x2 = min(math.ceil(ends[0] + side * width) + 3, w)
    y1 = max(int(ends[1] - top * up) - 2, 0)
    y2 = min(math.ceil(neck_bottom) + 3, h)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    size = (y2 - y1, x2 - x1)
    mask = np.zeros(size, np.uint8)
    o = np.array([x1, y1], np.float64)
    centre = (round(ends[0] - x1), round(ends[1] - y1))
    cv2.ellipse(mask, centre, (round(0.52 * width), round(up)), angle, 180, 360, 255, -1)
    cv2.fillPoly(mask, [np.rint(p[0:17] - o).astype(np.int32)], 255)
    # the neck: a column under the jaw from its 5th to 11th points, down to the shoulders
    neck = np.rint(np.array([p[4], p[12], (p[12, 0], neck_bottom), (p[4, 0], neck_bottom)]) - o)
    cv2.fillPoly(mask, [neck.astype(np.int32)], 255)
    if frame is not None:
        face = np.zeros(size, np.uint8)
        hull = cv2.convexHull(p.astype(np.float32)).reshape(-1, 2) - o
        cv2.fillPoly(face, [np.rint(hull).astype(np.int32)], 255)
        crop, chin_row = frame[y1:y2, x1:x2], int(chin - y1)
        if outlines is None:
            segmented = _segment_head(crop, mask, face, chin_row)
        else:
            segmented = outlines.outline(p, (x1, y1), crop, mask, face, chin_row)
        if segmented is not None:
            mask = segmented
            cv2.fillPoly(mask, [neck.astype(np.int32)], 255)
    edge = max(int(EDGE * width), 1)
    inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge + 1, 2 * edge + 1)))
    weight = cv2.blur(inner.astype(np.float32) / 255.0, (2 * edge + 1, 2 * edge + 1))
    weight *= mask > 0  # exactly still outside the outline
    rows = np.arange(size[0], dtype=np.float32)[:, None] + y1
    fade = np.clip((neck_bottom - rows) / max(neck_bottom - chin, 1.0), 0.0, 1.0)
    weight *= np.where(rows > chin, 0.5 - 0.5 * np.cos(np.pi * fade), 1.0).astype(np.float32)
    return weight.astype(np.float32), (x1, y1, x2, y2)


def _segment_head(crop: np.ndarray, estimate: np.ndarray, face: np.ndarray, chin: int) -> np.ndarray | None:
    """The head's own outline in ``crop`` (uint8 0/255), by GrabCut seeded with the landmarks: the face
    hull is head, the estimate (``head_mask``'s ellipse, grown) probably head, the crop's top and sides
    background; below the chin nothing (``head_mask`` adds the neck). Done on a copy about 160 px wide
    (tens of milliseconds, once per face). None when the result keeps under 90 % of the face hull."""
    rows, cols = estimate.shape
    scale = min(1.0, 160.0 / max(cols, 1))
    small = (max(round(cols * scale), 8), max(round(rows * scale), 8))
    img = cv2.resize(np.ascontiguousarray(crop), small, interpolation=cv2.INTER_AREA)
    seeds = np.full(img.shape[:2], cv2.GC_PR_BGD, np.uint8)
    grown = cv2.dilate(estimate, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    seeds[cv2.resize(grown, small, interpolation=cv2.INTER_NEAREST) > 0] = cv2.GC_PR_FGD
    seeds[cv2.resize(face, small, interpolation=cv2.INTER_NEAREST) > 0] = cv2.GC_FGD
    seeds[0, :], seeds[:, 0], seeds[:, -1] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        cv2.grabCut(bgr, seeds, (0, 0, 1, 1), bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)  # rect unused with a mask
    except cv2.error:
        return None
    chosen = np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
    full = np.asarray(cv2.resize(chosen, (cols, rows), interpolation=cv2.INTER_LINEAR))
    head = np.where(full >= 128, 255, 0).astype(np.uint8)
    head[max(chin, 0) :] = 0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    head = np.asarray(
        cv2.morphologyEx(cv2.morphologyEx(head, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel), np.uint8
    )
    count, labels = cv2.connectedComponents(head)
    inside = labels[face > 0]
    if count > 1 and inside.size and np.any(inside > 0):
        keep = np.bincount(inside[inside > 0]).argmax()  # the piece the face is in
        head = np.where(labels == keep, 255, 0).astype(np.uint8)
    above = face.copy()
    above[max(chin, 0) :] = 0
    if int(np.count_nonzero(head & above)) < 0.9 * max(int(np.count_nonzero(above)), 1):
        return None
    return head


class HeadOutlines:
    """The head outlines of one video, segmented (``_segment_head``: GrabCut, tens of milliseconds) only
    when the face has changed shape: while the 68 landmarks of a later frame are the last segmented
    frame's moved, scaled a little and turned a little (a similarity transform that fits them to within
    ``FIT`` face widths, scale within ``SCALE`` and turn within ``TURN`` degrees), that outline is
    carried to the frame by the same transform. A face that turns away (its landmarks no longer fit),
    grows, tilts, or ``REFRESH`` frames (5 s) later is segmented again. A moving 30 s clip costs a few
    dozen segmentations, not 750; a still photo one."""

    FIT = 0.02
    SCALE = 0.04
    TURN = 3.0
    REFRESH = 125
    POINTS = slice(0, 48)
    """The jaw, brows, nose and eyes: the mouth moves with speech and says nothing about the outline."""

    def __init__(self) -> None:
        self._last: tuple[np.ndarray, tuple[int, int], np.ndarray | None] | None = None
        self._age = 0
        self.segmented = 0
        """How many frames were segmented (the rest were carried)."""

    def outline(
        self,
        landmarks: np.ndarray,
        origin: tuple[int, int],
        crop: np.ndarray,
        estimate: np.ndarray,
        face: np.ndarray,
        chin: int,
    ) -> np.ndarray | None:
        """The head outline in ``crop`` (uint8 0/255, ``_segment_head``'s contract) of the face whose
        frame landmarks are ``landmarks``; ``origin``: the crop's top-left in the frame."""
        fits, carried = self._carried(landmarks, origin, estimate.shape, chin)
        if fits:
            self._age += 1
            return carried
        head = _segment_head(crop, estimate, face, chin)
        self._last, self._age = (np.array(landmarks, np.float64), origin, head), 0
        self.segmented += 1
        return head

    def _carried(
        self, landmarks: np.ndarray, origin: tuple[int, int], shape: tuple[int, ...], chin: int
    ) -> tuple[bool, np.ndarray | None]:
        """(whether the last outline fits this face, it carried to this crop: None where its
        segmentation had failed, and the estimate serves again)."""
        if self._last is None or self._age >= self.REFRESH:
            return False, None
        points, old_origin, head = self._last
        width = max(float(np.hypot(*(points[16] - points[0]))), 8.0)
        now = np.asarray(landmarks, np.float64)[self.POINTS]
        move = only_moved(points[self.POINTS], now, self.SCALE, self.TURN, self.FIT * width)
        if move is None:
            return False, None
        if head is None:  # the segmentation failed on this face: the estimate serves, as it did then
            return True, None
        a = move.copy()  # old frame → new frame; in crop coordinates: shift both origins
        a[:, 2] += a[:, :2] @ np.array(old_origin, np.float64) - np.array(origin, np.float64)
        rows, cols = shape[:2]
        moved = cv2.warpAffine(head, a, (cols, rows), flags=cv2.INTER_LINEAR, borderValue=0)
        carried = np.where(moved >= 128, 255, 0).astype(np.uint8)
        carried[max(chin, 0) :] = 0
        return True, carried


def only_moved(src: np.ndarray, dst: np.ndarray, scale: float, turn: float, fit: float) -> np.ndarray | None:
    """The similarity transform (2×3) taking landmarks ``src`` to ``dst`` when the face has only moved:
    scaled by at most ``scale`` (a share), turned by at most ``turn`` degrees, and fitting within ``fit``
    pixels (RMS); else None."""
    matrix, size, angle, residual = similarity(src, dst)
    if abs(size - 1.0) > scale or abs(angle) > turn or residual > fit:
        return None
    return matrix


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """The least-squares similarity transform taking points ``src`` to ``dst`` (N×2): its 2×3 matrix,
    scale, turn (degrees) and the RMS distance left between the moved ``src`` and ``dst`` (pixels)."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - ms, dst - md
    norm = float(np.sum(a * a)) or 1.0
    c = float(np.sum(a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1])) / norm  # s·cos
    s = float(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])) / norm  # s·sin
    rot = np.array([[c, -s], [s, c]])
    matrix = np.hstack([rot, (md - rot @ ms)[:, None]])
    residual = float(np.sqrt(np.mean(np.sum((a @ rot.T - b) ** 2, axis=1))))
    return matrix, math.hypot(c, s), math.degrees(math.atan2(s, c)), residual


class HeadWarp:
    """Moves the head of the face in ``box`` within a ``frame_shape`` frame; built once per box (and
    landmarks, which confine the motion to the head and neck; with ``frame``, its own outline)."""

    def __init__(
        self,
        box: tuple[float, float, float, float],
        frame_shape: tuple[int, ...],
        landmarks: np.ndarray | None = None,
        frame: np.ndarray | None = None,
        outlines: HeadOutlines | None = None,
    ) -> None:
        x1, y1, x2, y2 = box
        self.width = max(x2 - x1, 1.0)
        h, w = frame_shape[:2]
        reach = (INNER[0] + FADE, INNER[1] + FADE, INNER[2] + FADE, INNER[3] + FADE)
        cx1, cy1 = max(0, int(x1 - reach[0] * self.width) - 1), max(0, int(y1 - reach[1] * self.width) - 1)
        cx2 = min(w, math.ceil(x2 + reach[2] * self.width) + 2)
        cy2 = min(h, math.ceil(y2 + reach[3] * self.width) + 2)
        self.mask: np.ndarray | None = None
        if landmarks is not None and len(landmarks) == 68:
            self.mask, (cx1, cy1, cx2, cy2) = head_mask(landmarks, frame_shape, frame, outlines)
        self.crop = (cx1, cy1, cx2, cy2)
        self.size = (cy2 - cy1, cx2 - cx1)
        self.step = max(2, int(self.width // 32))
        rows, cols = -(-self.size[0] // self.step) + 1, -(-self.size[1] // self.step) + 1
        gx = cx1 + np.arange(cols, dtype=np.float64) * self.step
        gy = cy1 + np.arange(rows, dtype=np.float64) * self.step
        self.gx, self.gy = np.meshgrid(gx, gy)
        inner = (
            x1 - INNER[0] * self.width,
            y1 - INNER[1] * self.width,
            x2 + INNER[2] * self.width,
            y2 + INNER[3] * self.width,
        )
        dx = np.maximum(np.maximum(inner[0] - self.gx, self.gx - inner[2]), 0.0)
        dy = np.maximum(np.maximum(inner[1] - self.gy, self.gy - inner[3]), 0.0)
        t = np.clip(np.hypot(dx, dy) / (FADE * self.width), 0.0, 1.0)
        # with a head mask the coarse field is the rigid motion itself (the mask weights it per pixel)
        self.weight = 0.5 + 0.5 * np.cos(np.pi * t) if self.mask is None else np.ones_like(t)
        self.pivot = ((x1 + x2) / 2, y1 + PIVOT * (y2 - y1))
        self.identity = np.meshgrid(
            np.arange(self.size[1], dtype=np.float32), np.arange(self.size[0], dtype=np.float32)
        )

    def shifted(self, dx: int, dy: int, frame_shape: tuple[int, ...]) -> HeadWarp | None:
        """This warp for the same face moved ``dx``, ``dy`` whole pixels (the motion about a moved pivot
        is the same field, moved); None when the moved crop would leave the frame."""
        x1, y1, x2, y2 = self.crop
        if x1 + dx < 0 or y1 + dy < 0 or x2 + dx > frame_shape[1] or y2 + dy > frame_shape[0]:
            return None
        moved = copy.copy(self)  # the arrays are shared, never written
        moved.crop = (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
        moved.gx, moved.gy = self.gx + dx, self.gy + dy
        moved.pivot = (self.pivot[0] + dx, self.pivot[1] + dy)
        return moved

    def displacement(
        self, roll: float, pitch: float, shift_x: float, shift_y: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Forward displacement (x, y) in pixels on the coarse grid for a pose (degrees, face widths)."""
        a = math.radians(roll)
        c, s = math.cos(a), math.sin(a)
        px, py = self.gx - self.pivot[0], self.gy - self.pivot[1]
        tx = shift_x * self.width
        ty = shift_y * self.width + NOD_DEPTH * self.width * math.sin(math.radians(pitch))
        return (self.weight * (c * px - s * py - px + tx), self.weight * (s * px + c * py - py + ty))

    def apply(
        self,
        frame: np.ndarray,
        roll: float,
        pitch: float,
        shift_x: float,
        shift_y: float,
        *,
        in_place: bool = False,
    ) -> np.ndarray:
        """``frame`` with the head moved: a copy, or ``frame`` itself changed when ``in_place``;
        ``frame`` untouched when the pose is all zero."""
        if roll == 0.0 and pitch == 0.0 and shift_x == 0.0 and shift_y == 0.0:
            return frame
        fx, fy = self.displacement(roll, pitch, shift_x, shift_y)
        rows, cols = self.size
        full = (fx.shape[1] * self.step, fx.shape[0] * self.step)
        # coarse sample k sits at pixel k*step; resize puts it at k*step + (step-1)/2: shift back
        up_x = cv2.resize(fx.astype(np.float32), full, interpolation=cv2.INTER_LINEAR)
        up_y = cv2.resize(fy.astype(np.float32), full, interpolation=cv2.INTER_LINEAR)
        off = (self.step - 1) // 2
        up_x, up_y = up_x[off : off + rows, off : off + cols], up_y[off : off + rows, off : off + cols]
        if self.mask is not None:
            up_x, up_y = up_x * self.mask, up_y * self.mask
        x1, y1, x2, y2 = self.crop
        crop = np.ascontiguousarray(frame[y1:y2, x1:x2])  # a copy: the frame may be written below
        moved = cv2.remap(
            crop,
            self.identity[0] - up_x,
            self.identity[1] - up_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        out = frame if in_place else frame.copy()
        out[y1:y2, x1:x2] = moved
        return out


class HeadWarps:
    """The ``HeadWarp`` of each frame of one video. A face whose 68 landmarks are the last built warp's
    moved (a similarity fit within ``SCALE``, ``TURN`` degrees and ``FIT`` face widths: a drifting
    camera or head) gets that warp moved by whole pixels, with no mask built; a face that turned,
    grew or tilted, or ``REFRESH`` frames later, gets a new warp (its outline from ``outlines``). A box
    without landmarks gets a new warp when the box moves."""

    SCALE = 0.015
    TURN = 1.5
    FIT = 0.02
    REFRESH = 125

    def __init__(self) -> None:
        self.outlines = HeadOutlines()
        self._base: tuple[np.ndarray, HeadWarp] | None = None
        self._boxed: tuple[tuple[object, ...], HeadWarp] | None = None
        self._age = 0
        self.built = 0
        """How many warps were built (the rest were moved)."""

    def warp(
        self,
        box: tuple[float, float, float, float],
        frame_shape: tuple[int, ...],
        landmarks: np.ndarray | None,
        frame: np.ndarray,
    ) -> HeadWarp:
        """The warp for this frame's face (``box``, ``landmarks``) in ``frame``."""
        if landmarks is None or len(landmarks) != 68:
            key = (tuple(round(v) for v in box), frame_shape)
            if self._boxed is None or self._boxed[0] != key:  # a still's face never moves: one warp
                self._boxed = (key, self._build(box, frame_shape, None, frame))
            return self._boxed[1]
        points = np.asarray(landmarks, np.float64)
        moved = self._moved(points, frame_shape)
        if moved is not None:
            self._age += 1
            return moved
        warp = self._build(box, frame_shape, points, frame)
        self._base, self._age = (points, warp), 0
        return warp

    def _build(
        self,
        box: tuple[float, float, float, float],
        frame_shape: tuple[int, ...],
        points: np.ndarray | None,
        frame: np.ndarray,
    ) -> HeadWarp:
        self.built += 1
        return HeadWarp(box, frame_shape, points, frame, self.outlines)

    def _moved(self, points: np.ndarray, frame_shape: tuple[int, ...]) -> HeadWarp | None:
        if self._base is None or self._age >= self.REFRESH:
            return None
        base, warp = self._base
        stable = HeadOutlines.POINTS
        if only_moved(base[stable], points[stable], self.SCALE, self.TURN, self.FIT * warp.width) is None:
            return None
        dx, dy = np.rint(points[stable].mean(axis=0) - base[stable].mean(axis=0)).astype(int)
        if dx == 0 and dy == 0:
            return warp
        return warp.shifted(int(dx), int(dy), frame_shape)
