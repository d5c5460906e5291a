"""Feathered blending of a rendered patch back into its frame (no visible box edge)."""

from __future__ import annotations

import cv2
import numpy as np


def feather_mask(height: int, width: int, feather: float = 0.15) -> np.ndarray:
    """A float32 H×W mask, 1 in the middle falling smoothly to 0 at the edges.

    ``feather`` is the falloff width as a fraction of the smaller side.
    """
    border = max(1, round(min(height, width) * feather))
    mask = np.zeros((height, width), np.float32)
    mask[border : -border or None, border : -border or None] = 1.0
    k = 2 * border + 1
    return cv2.GaussianBlur(mask, (k, k), border / 2.0, borderType=cv2.BORDER_CONSTANT)


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
