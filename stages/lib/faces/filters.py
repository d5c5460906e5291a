"""The One Euro filter (Casiez, Roussel, Vogel, CHI 2012): smoothing that follows fast motion without lag.

A first-order low-pass whose cutoff rises with speed: ``cutoff = min_cutoff + beta · |speed|``. At rest
the cutoff is low (jitter is averaged away); when a point moves fast the cutoff is high and the output
keeps up with it (a moving average would trail behind). The speed itself is low-passed at
``d_cutoff``.

Here it runs over 2-D points: each point gets its own cutoff from the length of its own velocity, so
the lips can move fast while the still brow is smoothed hard. Units: the caller scales coordinates so
``beta`` does not depend on the picture size (the tracker divides by the face width). Pure numpy.
"""

from __future__ import annotations

import math

import numpy as np

MIN_CUTOFF = 0.8
"""Hz: the cutoff at rest (averages detector jitter away over about 0.2 s)."""
BETA = 6.0
"""Cutoff gain per face width a second: at half a face width a second the cutoff is about 4 Hz."""
D_CUTOFF = 1.0


def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau * rate)


def one_euro(
    points: np.ndarray,
    fps: float,
    min_cutoff: float = MIN_CUTOFF,
    beta: float = BETA,
    d_cutoff: float = D_CUTOFF,
) -> np.ndarray:
    """``points`` (frames × P × 2) filtered forward in time; the first frame passes unchanged.

    Filter state starts fresh at frame 0: call it once per continuous segment (a scene cut or a gap
    without a face starts a new one).
    """
    series = np.asarray(points, np.float64)
    out = np.empty_like(series)
    if len(series) == 0:
        return out
    out[0] = series[0]
    velocity = np.zeros(series.shape[1:])
    a_d = float(_alpha(d_cutoff, fps))
    for i in range(1, len(series)):
        # the velocity is low-passed as a vector: jitter's directions cancel, real motion's add up
        velocity = velocity + a_d * ((series[i] - out[i - 1]) * fps - velocity)
        speed = np.linalg.norm(velocity, axis=-1)
        a = _alpha(min_cutoff + beta * speed, fps)[..., None]
        out[i] = out[i - 1] + a * (series[i] - out[i - 1])
    return out
