"""The image side of motion: eyelids that close (blinks) and a head that moves while the background
stays put. Both are backward warps (``cv2.remap``) of a crop, so every pixel outside the crop — and
every pixel the motion does not reach — is bit-identical to the input.

**Eyelids** (``close_eyes``): per eye, in the eye's own axes (corner to corner), the upper lid line from
landmarks 37/38 (43/44) descends toward the lower lid (40/41, 46/47) by ``closure`` × the eye's opening
at each point across it; the skin above the lid (a band of 0.8 eye half-widths) is stretched down over
the eye, and the lid's edge (lashes) comes down with it. Where the eye has no opening (the corners)
nothing moves.

**Head** (``HeadWarp``): the face is turned by ``roll`` about a pivot at the mouth, and shifted (drift,
and a nod's dip, ``NOD_DEPTH`` face widths per radian of pitch); the motion is full on the face box grown
by ``INNER`` and fades out with a raised cosine over ``FADE`` of the face width beyond it, so nothing
farther than ``INNER + FADE`` (under half a face width) from the face box moves. Displacements of a few
pixels over a fade of a third of a face width cannot fold the picture. The field is smooth, so it is
computed on a coarse grid and upsampled.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

EYES = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))
"""iBUG indices per eye: outer/inner corner and the lids (corner, upper, upper, corner, lower, lower)."""
LID_SKIN = 0.8
LID_REACH = 0.95
"""A shut eye: the lid comes down to this share of the opening (the lower lid's rim stays visible)."""
INNER = (0.08, 0.12, 0.08, 0.04)
"""Face box growth (left, top, right, bottom) in face widths where the head motion is full."""
FADE = 0.36
"""Face widths over which the head motion fades to nothing."""
PIVOT = 0.78
"""The pivot of the roll: this far down the face box (about the mouth)."""
NOD_DEPTH = 0.45


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
    src_v = np.where(stretched, top + (pv - top) * skin / np.maximum(skin + drop, 1e-6), pv)
    shift = src_v - pv
    map_x = (xs + shift * e_v[0] - x1).astype(np.float32)
    map_y = (ys + shift * e_v[1] - y1).astype(np.float32)
    crop = out[y1:y2, x1:x2].copy()
    out[y1:y2, x1:x2] = cv2.remap(crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _sorted(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(u)
    return u[order], v[order]


def _crop(centre: np.ndarray, reach: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x1, y1 = max(0, int(centre[0] - reach)), max(0, int(centre[1] - reach))
    x2, y2 = min(w, math.ceil(centre[0] + reach)), min(h, math.ceil(centre[1] + reach))
    return x1, y1, x2, y2


# --- the head ------------------------------------------------------------------------------------------


class HeadWarp:
    """Moves the head of the face in ``box`` within a ``frame_shape`` frame; built once per box."""

    def __init__(self, box: tuple[float, float, float, float], frame_shape: tuple[int, ...]) -> None:
        x1, y1, x2, y2 = box
        self.width = max(x2 - x1, 1.0)
        h, w = frame_shape[:2]
        reach = (INNER[0] + FADE, INNER[1] + FADE, INNER[2] + FADE, INNER[3] + FADE)
        cx1, cy1 = max(0, int(x1 - reach[0] * self.width) - 1), max(0, int(y1 - reach[1] * self.width) - 1)
        cx2 = min(w, math.ceil(x2 + reach[2] * self.width) + 2)
        cy2 = min(h, math.ceil(y2 + reach[3] * self.width) + 2)
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
        self.weight = 0.5 + 0.5 * np.cos(np.pi * t)
        self.pivot = ((x1 + x2) / 2, y1 + PIVOT * (y2 - y1))
        self.identity = np.meshgrid(
            np.arange(self.size[1], dtype=np.float32), np.arange(self.size[0], dtype=np.float32)
        )

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
