"""When to blink and how the head moves: a per-frame plan, deterministic for a seed (pure numpy).

* **Blinks**: the first within 0.6–2.2 s, then gaps drawn from a gamma distribution (mean
  ``Level.blink_every`` s, a natural spread) clipped to 1.8–5.0 s, so there is at least one every 6 s;
  ``lively`` sometimes blinks twice in a row. A blink lasts ``BLINK_SECONDS`` (250 ms, the middle of
  measured spontaneous blinks): the lid falls in 30 % of it, stays shut for ``BLINK_HOLD`` (so a
  detector that smooths landmarks over a few frames still sees the eye closed) and rises in the rest;
  its fully-closed instant lands on a frame.
* **Idle sway**: roll and a small side-to-side and up-and-down drift, each a sum of three slow sines
  (0.05–0.25 Hz) with random phases.
* **Nods**: on stressed syllables — peaks of the speech's loudness envelope inside speech, at least
  ``Level.nod_gap`` s apart — the head dips (pitch) for ~0.4 s, more for stronger peaks.

Angles in degrees, shifts in face widths. ``Level`` caps keep every frame within ``max_roll`` and
``max_shift`` (subtle: about 1.5° and 1.5 % of the face width; lively about twice that, still under
4° and 3 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.contracts import Motion

BLINK_SECONDS = 0.25
BLINK_CLOSING = 0.3
"""Share of a blink spent closing (the lid falls faster than it rises)."""
BLINK_HOLD = 0.06
"""Seconds a blink stays fully shut (part of ``BLINK_SECONDS``)."""


@dataclass(frozen=True)
class Level:
    """How much a motion setting moves: sway and nod amplitudes (degrees), drift (face widths), blink
    rhythm (mean seconds between blinks, chance of a double blink), nod spacing, and hard caps."""

    sway: float
    nod: float
    drift: float
    blink_every: float
    double_blink: float
    nod_gap: float
    max_roll: float
    max_pitch: float
    max_shift: float


LEVELS = {
    Motion.subtle: Level(
        sway=1.0,
        nod=1.6,
        drift=0.006,
        blink_every=3.8,
        double_blink=0.0,
        nod_gap=0.9,
        max_roll=1.6,
        max_pitch=2.2,
        max_shift=0.015,
    ),
    Motion.lively: Level(
        sway=2.0,
        nod=3.0,
        drift=0.012,
        blink_every=3.2,
        double_blink=0.15,
        nod_gap=0.6,
        max_roll=3.2,
        max_pitch=3.6,
        max_shift=0.024,
    ),
}


@dataclass
class MotionPlan:
    """Per output frame: roll and pitch (degrees), shift x/y (face widths), eyelid closure 0..1."""

    roll: np.ndarray
    pitch: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray
    blink: np.ndarray

    def __len__(self) -> int:
        return len(self.roll)


def seed_of(*parts: str) -> int:
    """A stable 32-bit seed from strings (a job id and task): the same job always moves the same way."""
    import hashlib

    return int.from_bytes(hashlib.sha256("\n".join(parts).encode()).digest()[:4], "big")


def plan_motion(
    n_frames: int, fps: float, motion: Motion, seed: int, loudness: np.ndarray | None = None
) -> MotionPlan:
    """The plan for ``n_frames`` frames. ``loudness``: per frame 0..1 inside speech, 0 in pauses (nods
    follow its peaks); None: no nods. ``Motion.none`` gives an all-zero plan."""
    zeros = np.zeros(n_frames, np.float32)
    if motion == Motion.none or n_frames == 0:
        return MotionPlan(zeros, zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy())
    level, rng = LEVELS[motion], np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    roll = level.sway * _sway(t, rng)
    shift_x, shift_y = level.drift * _sway(t, rng), 0.5 * level.drift * _sway(t, rng)
    pitch = 0.4 * level.sway * _sway(t, rng)
    if loudness is not None:
        pitch = pitch + level.nod * nods(loudness, fps, level.nod_gap)
    blink = blinks(n_frames, fps, level, rng)
    return MotionPlan(
        np.clip(roll, -level.max_roll, level.max_roll).astype(np.float32),
        np.clip(pitch, -level.max_pitch, level.max_pitch).astype(np.float32),
        np.clip(shift_x, -level.max_shift, level.max_shift).astype(np.float32),
        np.clip(shift_y, -level.max_shift, level.max_shift).astype(np.float32),
        blink,
    )


def _sway(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A slow wander in −1..1: three sines between 0.05 and 0.25 Hz with random phases."""
    freqs = rng.uniform(0.05, 0.25, 3)
    phases = rng.uniform(0, 2 * math.pi, 3)
    weights = np.array([0.5, 0.3, 0.2])
    return np.sum(weights[:, None] * np.sin(2 * math.pi * freqs[:, None] * t + phases[:, None]), axis=0)


def nods(loudness: np.ndarray, fps: float, min_gap: float) -> np.ndarray:
    """Per frame 0..1 of a nod: a dip of ~0.4 s starting just before each stressed peak (a local maximum
    of the smoothed loudness above its 60th percentile in speech, ``min_gap`` s from the last), as deep
    as the peak is strong."""
    n = len(loudness)
    out = np.zeros(n, np.float64)
    if n < 3 or not np.any(loudness > 0):
        return out.astype(np.float32)
    k = max(1, round(0.08 * fps))
    env = np.convolve(loudness, np.ones(2 * k + 1) / (2 * k + 1), mode="same")
    floor = float(np.percentile(env[env > 0], 60))
    top = float(env.max()) or 1.0
    last = -math.inf
    width = 0.4 * fps
    for i in range(1, n - 1):
        if env[i] >= env[i - 1] and env[i] > env[i + 1] and env[i] > floor and (i - last) / fps >= min_gap:
            last = i
            strength = 0.5 + 0.5 * (env[i] - floor) / max(top - floor, 1e-6)
            start = i - 0.1 * fps
            x = (np.arange(n) - start) / width
            bump = np.where((x > 0) & (x < 1), 0.5 - 0.5 * np.cos(2 * math.pi * np.clip(x, 0, 1)), 0.0)
            out = np.maximum(out, strength * bump)
    return out.astype(np.float32)


def blink_times(duration: float, level: Level, rng: np.random.Generator) -> list[float]:
    """Moments (seconds) the eyes are fully closed."""
    times: list[float] = []
    t = float(rng.uniform(0.6, 2.2))
    while t < duration - BLINK_SECONDS:
        times.append(t)
        if rng.random() < level.double_blink:
            times.append(t + 0.3)
            t += 0.3
        shape = 4.0
        t += float(np.clip(rng.gamma(shape, level.blink_every / shape), 1.8, 5.0))
    return times


def blinks(n_frames: int, fps: float, level: Level, rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure per frame: 0 open .. 1 shut, ``BLINK_SECONDS`` per blink (shut for ``BLINK_HOLD``
    from the moment on)."""
    out = np.zeros(n_frames, np.float64)
    t = np.arange(n_frames) / fps
    closing = BLINK_CLOSING * BLINK_SECONDS
    opening = BLINK_SECONDS - closing - BLINK_HOLD
    for moment in blink_times(n_frames / fps, level, rng):
        moment = round(moment * fps) / fps  # the shut instant falls on a frame
        down = np.clip(1 - (moment - t) / closing, 0, 1) * (t <= moment)
        reopen = moment + BLINK_HOLD
        up = np.where(t <= reopen, 1.0, np.clip(1 - (t - reopen) / opening, 0, 1)) * (t > moment)
        shape = np.sin(0.5 * math.pi * (down + up))
        out = np.maximum(out, shape)
    return out.astype(np.float32)
