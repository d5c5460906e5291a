"""What is behind the person: a weightless matte, and the blur or replacement composited through it.

The matte is OpenCV's GrabCut (Apache-2.0, no model weights) seeded from the face track: the face's
core and the neck below it are certainly the person, a generous body-shaped region around them is
probably the person, the frame's top corners are certainly background. GrabCut then follows the
picture's own colours to the person's outline. It runs on a small copy of every ``KEY_EVERY``-th frame
(the person moves little between them); the matte is feathered and eased from key to key, so edges do
not shimmer. Pure numpy/OpenCV transforms: decoding and encoding are the caller's.

Good on a person in front of a background that differs from them in colour (a portrait, a studio
clip); hair against a similar-coloured wall may lose strands. A learned selfie segmentation (MediaPipe's,
Apache-2.0) is sharper on hair but pins numpy<2 and ships weights, so it is not used here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

MATTE_WIDTH = 256
"""Width of the copy GrabCut works on (its cost grows with the pixel count)."""
KEY_EVERY = 6
"""Frames between two GrabCut runs."""
FLAT = 2.0
"""Pixel standard deviation under which a picture is flat: the seed is the matte."""
EASE = 0.5
"""Weight of a new key matte against the previous one (temporal smoothing)."""

Box = tuple[float, float, float, float]


def seed_mask(height: int, width: int, face: Box) -> np.ndarray:
    """GrabCut's starting labels for a ``height``×``width`` picture with the face at ``face`` (x1, y1,
    x2, y2 in that picture's pixels)."""
    x1, y1, x2, y2 = face
    fw, fh = max(2.0, x2 - x1), max(2.0, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    mask = np.full((height, width), cv2.GC_BGD, np.uint8)
    # probably the person: head with hair, shoulders widening to the bottom of the frame
    body = np.array(
        [
            [cx - 0.9 * fw, y1 - 0.6 * fh], [cx + 0.9 * fw, y1 - 0.6 * fh],
            [cx + 1.0 * fw, y2], [cx + 2.2 * fw, y2 + 1.2 * fh], [cx + 2.4 * fw, height],
            [cx - 2.4 * fw, height], [cx - 2.2 * fw, y2 + 1.2 * fh], [cx - 1.0 * fw, y2],
        ],
        np.int32,
    )  # fmt: skip
    cv2.fillPoly(mask, [body], cv2.GC_PR_FGD)
    # between: anything not in the body but away from the frame's top corners may be either
    band = np.zeros_like(mask)
    cv2.fillPoly(band, [body], 1)
    band = np.asarray(cv2.dilate(band, np.ones((max(3, int(fw * 0.4)),) * 2, np.uint8)), np.uint8)
    mask[(band > 0) & (mask == cv2.GC_BGD)] = cv2.GC_PR_BGD
    # certainly the person: the face's core and the neck below it
    cv2.ellipse(
        mask, (int(cx), int(cy)), (max(1, int(0.3 * fw)), max(1, int(0.4 * fh))), 0, 0, 360, cv2.GC_FGD, -1
    )
    cv2.rectangle(mask, (int(cx - 0.2 * fw), int(y2)), (int(cx + 0.2 * fw), int(min(height - 1, y2 + 0.4 * fh))),
                  cv2.GC_FGD, -1)  # fmt: skip
    return mask


def matte(frame: np.ndarray, face: Box) -> np.ndarray:
    """The person's alpha (H×W float32, 0..1, feathered) in an RGB uint8 ``frame``."""
    height, width = frame.shape[:2]
    scale = MATTE_WIDTH / width if width > MATTE_WIDTH else 1.0
    small = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    mask = seed_mask(sh, sw, tuple(v * scale for v in face))  # type: ignore[arg-type]
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    if float(small.std()) >= FLAT:  # GrabCut's colour models degenerate (and take seconds) on a flat picture
        with contextlib.suppress(cv2.error):
            cv2.grabCut(
                cv2.cvtColor(small, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, 3, cv2.GC_INIT_WITH_MASK
            )  # type: ignore[call-overload]
    person = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    person = _component_at(
        person, (int((face[0] + face[2]) / 2 * scale), int((face[1] + face[3]) / 2 * scale))
    )
    person = np.asarray(cv2.morphologyEx(person, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)), np.uint8)
    alpha = cv2.resize(person.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    sigma = max(1.0, width / 300)
    return np.clip(cv2.GaussianBlur(alpha, (0, 0), sigma), 0.0, 1.0)


def _component_at(mask: np.ndarray, point: tuple[int, int]) -> np.ndarray:
    """The connected part of ``mask`` holding ``point`` (stray background blobs dropped)."""
    count, labels = cv2.connectedComponents(mask)
    x = min(max(point[0], 0), mask.shape[1] - 1)
    y = min(max(point[1], 0), mask.shape[0] - 1)
    label = labels[y, x]
    if count <= 1 or label == 0:
        return mask
    return (labels == label).astype(np.uint8)


def blurred(frame: np.ndarray, strength: int) -> np.ndarray:
    """``frame`` blurred as a background is (``strength``: 1..100, a share of the picture's width)."""
    sigma = max(1.0, frame.shape[1] * strength / 1000)
    out: np.ndarray = cv2.GaussianBlur(frame, (0, 0), sigma)
    return out


def cover(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """``picture`` scaled to cover ``width``×``height`` and cropped to it, centred."""
    ph, pw = picture.shape[:2]
    scale = max(width / pw, height / ph)
    scaled = cv2.resize(picture, (max(width, round(pw * scale)), max(height, round(ph * scale))),
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)  # fmt: skip
    top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    out: np.ndarray = scaled[top : top + height, left : left + width]
    return out


def composite(frame: np.ndarray, alpha: np.ndarray, behind: np.ndarray) -> np.ndarray:
    """The person from ``frame`` over ``behind`` through ``alpha`` (all the same size; uint8 out)."""
    a = alpha[..., None]
    return (frame.astype(np.float32) * a + behind.astype(np.float32) * (1.0 - a) + 0.5).astype(np.uint8)


def replace_background(
    frames: Iterable[np.ndarray],
    face: Box,
    *,
    mode: str,
    strength: int = 30,
    picture: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Each frame with what is behind the person blurred (``mode`` "blur") or replaced by ``picture``
    ("replace"); the matte is recomputed every ``KEY_EVERY`` frames and eased between keys."""
    alpha: np.ndarray | None = None
    behind_picture: np.ndarray | None = None
    for index, frame in enumerate(frames):
        if alpha is None or index % KEY_EVERY == 0:
            fresh = matte(frame, face)
            alpha = fresh if alpha is None else EASE * fresh + (1.0 - EASE) * alpha
        if mode == "replace":
            if picture is None:
                raise ValueError("replace needs a background picture")
            if behind_picture is None:
                behind_picture = cover(picture, frame.shape[1], frame.shape[0])
            behind = behind_picture
        else:
            behind = blurred(frame, strength)
        yield composite(frame, alpha, behind)
