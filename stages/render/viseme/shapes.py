"""Mouth shapes over time: from phone timings and loudness to per-frame open/wide/round values.

The viseme set follows Rhubarb Lip Sync's mouth shapes:

    A  closed (M, B, P)            E  slightly rounded (AO, ER, R)
    B  slightly open, teeth (most consonants, IY)
    C  open (EH, AE, AH)           F  puckered (UW, OW, W)
    D  wide open (AA, AY, AW)      G  F/V (lower lip to teeth)
    X  rest (silence)              H  L (tongue up, mouth open)

Each viseme is a target (open, wide, round) in 0..1. Per video frame the targets of the phones under
the frame are averaged (weighted by overlap), scaled and gated by loudness, smoothed with a fast attack
and slower release, and bilabial closures are forced shut so m/b/p never blur away. Without phones
(alignment failed) the shape follows loudness and spectral tilt alone.

Pure numpy; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# the ARPAbet -> viseme table lives with the speech timing (stages.lib.speech.align); re-exported here
from stages.lib.speech.align import CLOSED_PHONES as CLOSED
from stages.lib.speech.align import VISEME_OF_PHONE as VISEME_OF_PHONE
from stages.lib.speech.align import Phone, Viseme, viseme_of
from stages.lib.speech.fallback import normalised_loudness, rms_envelope

SHAPES: dict[Viseme, tuple[float, float, float]] = {
    Viseme.A: (0.0, 0.0, 0.0),
    Viseme.B: (0.22, 0.45, 0.0),
    Viseme.C: (0.6, 0.3, 0.0),
    Viseme.D: (1.0, 0.15, 0.0),
    Viseme.E: (0.5, 0.0, 0.45),
    Viseme.F: (0.3, 0.0, 1.0),
    Viseme.G: (0.12, 0.2, 0.0),
    Viseme.H: (0.45, 0.15, 0.0),
    Viseme.X: (0.0, 0.0, 0.0),
}
"""Viseme -> (open, wide, round) targets."""


@dataclass(frozen=True)
class ShapeParams:
    """Timing and gain of the mouth motion.

    lead: seconds the mouth moves ahead of the sound (lips form before the voice starts).
    attack, release: smoothing time constants (seconds) for opening and closing.
    gate: normalised loudness below which the mouth rests; floor_db: loudness range mapped to 0..1.
    motion: overall gain on ``open`` (cartoons exaggerate).
    """

    lead: float = 0.03
    attack: float = 0.025
    release: float = 0.055
    gate: float = 0.12
    floor_db: float = 32.0
    motion: float = 1.0


@dataclass
class MouthTrack:
    """Per-frame mouth parameters, each a float32 array of n_frames values in 0..1 (``tongue``: the tongue
    shown for l/th; ``tuck``: the lower lip under the upper teeth for f/v; None when not planned)."""

    open: np.ndarray
    wide: np.ndarray
    round: np.ndarray
    tongue: np.ndarray | None = None
    tuck: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.open)

    def at(self, i: int) -> tuple[float, float, float]:
        """(open, wide, round) of frame ``i``."""
        return float(self.open[i]), float(self.wide[i]), float(self.round[i])

    def tongue_at(self, i: int) -> float:
        return 0.0 if self.tongue is None else float(self.tongue[i])

    def tuck_at(self, i: int) -> float:
        return 0.0 if self.tuck is None else float(self.tuck[i])


# --------------------------------------------------------------------------------------------------
# Loudness
# --------------------------------------------------------------------------------------------------


def high_band_ratio(audio: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """Share of each frame's energy above 3 kHz (fricatives like s/sh/f are high, vowels low)."""
    emphasized = np.concatenate([[0.0], np.diff(audio.astype(np.float64))])
    # a first difference is a crude high-pass: about +6 dB/octave, so vowels score low and hiss high
    high = rms_envelope(emphasized.astype(np.float32), sample_rate, fps, n_frames)
    full = rms_envelope(audio, sample_rate, fps, n_frames)
    return np.clip(high / np.maximum(full, 1e-6) / 1.2, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------


def phone_targets(phones: Sequence[Phone], fps: float, n_frames: int, lead: float) -> np.ndarray:
    """(n_frames × 3) overlap-weighted mean (open, wide, round) of the phones under each frame.

    Time not covered by any phone counts as rest. ``lead`` shifts the phones earlier.
    """
    sums = np.zeros((n_frames, 3), np.float64)
    for phone in phones:
        start, end = (phone.start - lead) * fps, (phone.end - lead) * fps
        first, last = max(int(np.floor(start)), 0), min(int(np.ceil(end)), n_frames)
        if last <= first:
            continue
        frames = np.arange(first, last)
        overlap = np.minimum(frames + 1, end) - np.maximum(frames, start)
        sums[frames] += np.clip(overlap, 0.0, 1.0)[:, None] * np.array(SHAPES[viseme_of(phone.name)])
    return sums.astype(np.float32)  # each frame spans weight 1, so rest (zeros) fills the remainder


def closure_frames(phones: Sequence[Phone], fps: float, n_frames: int, lead: float) -> np.ndarray:
    """Boolean per frame: a bilabial (m, b, p) is at its midpoint, so the lips must touch."""
    closed = np.zeros(n_frames, bool)
    for phone in phones:
        if phone.name.rstrip("012").upper() in CLOSED:
            i = int(((phone.start + phone.end) / 2 - lead) * fps)
            if 0 <= i < n_frames:
                closed[i] = True
    return closed


def energy_targets(loudness: np.ndarray, hiss: np.ndarray) -> np.ndarray:
    """(n × 3) targets without phones: open with loudness, less open and wider on hissing sounds."""
    opening = loudness * (1.0 - 0.6 * hiss)
    wide = 0.15 + 0.35 * hiss
    return np.stack([opening, wide * (loudness > 0), np.zeros_like(loudness)], axis=1).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Shaping over time
# --------------------------------------------------------------------------------------------------


def smooth(values: np.ndarray, fps: float, attack: float, release: float) -> np.ndarray:
    """One-pole smoothing per column with separate time constants for rising and falling values."""
    up, down = 1.0 - np.exp(-1.0 / (fps * attack)), 1.0 - np.exp(-1.0 / (fps * release))
    out = np.empty_like(values)
    state = np.zeros(values.shape[1:], values.dtype)
    for i, target in enumerate(values):
        rate = np.where(target > state, up, down)
        state = state + rate * (target - state)
        out[i] = state
    return out


def gate(loudness: np.ndarray, threshold: float) -> np.ndarray:
    """0 below ``threshold``, rising smoothly to 1 at twice the threshold."""
    t = np.clip((loudness - threshold) / max(threshold, 1e-6), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def plan_mouth(
    audio: np.ndarray,
    sample_rate: int,
    fps: float,
    n_frames: int,
    phones: Sequence[Phone] | None,
    params: ShapeParams | None = None,
) -> MouthTrack:
    """The mouth track for a clip: phone-driven when ``phones`` is given, energy-only when None.

    ``open`` is scaled by loudness (quiet speech opens less) and every channel is gated to rest in
    silence; bilabial closures are enforced after smoothing.
    """
    p = params or ShapeParams()
    loud = normalised_loudness(rms_envelope(audio, sample_rate, fps, n_frames), p.floor_db)
    if phones is None:
        targets = energy_targets(loud, high_band_ratio(audio, sample_rate, fps, n_frames))
    else:
        targets = phone_targets(phones, fps, n_frames, p.lead)
        targets[:, 0] *= 0.3 + 0.7 * loud  # shapes from phones, size from loudness
    targets *= gate(loud, p.gate)[:, None]
    track = smooth(targets, fps, p.attack, p.release)
    track[track < 1e-3] = 0.0  # the smoother's tail never reaches rest by itself
    track[:, 0] = np.clip(track[:, 0] * p.motion, 0.0, 1.0)
    if phones is not None:
        track[closure_frames(phones, fps, n_frames, p.lead), 0] = 0.0
    return MouthTrack(track[:, 0].copy(), track[:, 1].copy(), track[:, 2].copy())
