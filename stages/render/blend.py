"""Feathered blending of a rendered patch back into its frame (no visible box edge)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


def feather_mask(height: int, width: int, feather: float = 0.15) -> np.ndarray:
    """A float32 H×W mask, 1 in the middle falling smoothly to 0 at the edges; read-only and shared.

    ``feather`` is the falloff width as a fraction of the smaller side.
    """
    return _feathered(height, width, max(1, round(min(height, width) * feather)))


@lru_cache(maxsize=512)
def _feathered(height: int, width: int, border: int) -> np.ndarray:
    """Cached: a smoothed track repeats box sizes from frame to frame, and the blur is most of a
    render's per-frame cost besides the warp (1.6 ms at a 720p face)."""
    mask = np.zeros((height, width), np.float32)
    mask[border : -border or None, border : -border or None] = 1.0
    k = 2 * border + 1
    blurred: np.ndarray = cv2.GaussianBlur(mask, (k, k), border / 2.0, borderType=cv2.BORDER_CONSTANT)
    blurred.setflags(write=False)
    return blurred


def blend_into(
    frame: np.ndarray, patch: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray
) -> np.ndarray:
    """A copy of ``frame`` with ``patch`` (same size as ``box``: x1, y1, x2, y2) blended in by ``mask``.

    Pixels where the mask is 0 are bit-identical to ``frame``.
    """
    x1, y1, x2, y2 = box
    out = frame.copy()
    region = out[y1:y2, x1:x2].astype(np.float32)
    alpha = mask[..., None] if mask.ndim == 2 else mask
    mixed = region * (1.0 - alpha) + patch.astype(np.float32) * alpha
    out[y1:y2, x1:x2] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out
