"""One face found in one frame (what every detector and the tracker hand around)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Detection:
    """One face in one frame: box (x1, y1, x2, y2) in pixels, confidence 0..1, (68, 2) landmarks or None."""

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def iou(self, other: Detection) -> float:
        """Intersection over union of the two boxes (0 when they do not touch)."""
        w = min(self.box[2], other.box[2]) - max(self.box[0], other.box[0])
        h = min(self.box[3], other.box[3]) - max(self.box[1], other.box[1])
        inter = max(0.0, w) * max(0.0, h)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def shifted(self, dx: float, dy: float) -> Detection:
        """The same detection in a frame where this one's origin is at (dx, dy)."""
        x1, y1, x2, y2 = self.box
        marks = None if self.landmarks is None else self.landmarks + np.array([dx, dy])
        return Detection((x1 + dx, y1 + dy, x2 + dx, y2 + dy), self.confidence, marks)

    def scaled(self, factor: float) -> Detection:
        """The same detection in a frame ``factor`` times as large."""
        x1, y1, x2, y2 = (v * factor for v in self.box)
        marks = None if self.landmarks is None else self.landmarks * factor
        return Detection((x1, y1, x2, y2), self.confidence, marks)
