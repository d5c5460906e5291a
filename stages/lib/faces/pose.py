"""Head pose (yaw, pitch, roll) from 68 iBUG landmarks: a generic 3-D face fitted with ``cv2.solvePnP``.

The model is an average adult face in millimetres, in camera-like axes (x to the subject's left as seen,
y down, z away from the camera), so a face looking straight at the camera has zero angles. The camera is
a pinhole with a focal length of the frame's longer side (about a 50° field of view) centred on the
frame; the angles barely depend on that guess for faces of ordinary size. Pure (numpy + OpenCV).

Signs: yaw > 0 when the face turns toward the picture's right, pitch > 0 when it nods down, roll > 0
when it tilts clockwise in the picture (as image coordinates rotate, y down).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

MODEL_POINTS = {
    30: (0.0, 0.0, 0.0),  # nose tip
    8: (0.0, 63.6, 12.5),  # chin
    36: (-43.3, -32.7, 26.0),  # outer corner of the eye on the picture's left
    45: (43.3, -32.7, 26.0),  # outer corner of the other eye
    48: (-28.9, 28.9, 24.1),  # mouth corners
    54: (28.9, 28.9, 24.1),
    27: (0.0, -33.0, 21.0),  # top of the nose bridge
    33: (0.0, 14.0, 10.0),  # base of the nose
}
"""Landmark index → generic 3-D position (mm)."""

_INDEX = list(MODEL_POINTS)
_MODEL = np.array([MODEL_POINTS[i] for i in _INDEX], np.float64)


def head_pose(points: np.ndarray, width: int, height: int) -> tuple[float, float, float] | None:
    """(yaw, pitch, roll) in degrees of the face with landmarks ``points`` (68 × 2) in a ``width`` ×
    ``height`` frame; None when the fit fails."""
    image = np.asarray(points, np.float64)[_INDEX]
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float64)
    ok, rvec, _ = cv2.solvePnP(_MODEL, image, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return None
    rotation, _ = cv2.Rodrigues(rvec)
    return euler_angles(rotation)


def euler_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of a rotation matrix R = Rz(roll) · Ry(yaw) · Rx(pitch)."""
    r = rotation
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -float(r[2, 0])))))
    pitch = math.degrees(math.atan2(float(r[2, 1]), float(r[2, 2])))
    roll = math.degrees(math.atan2(float(r[1, 0]), float(r[0, 0])))
    return round(yaw, 2), round(-pitch, 2), round(roll, 2)
