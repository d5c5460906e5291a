"""Mouth shapes over time from a ``SpeechTiming``: its visemes (Rhubarb letters) and its pauses.

The same shaping as ``shapes.plan_mouth`` (targets per viseme, sized by loudness, gated, smoothed with
a fast attack and a slower release, bilabials forced shut), with two additions:

* **rest on silence**: outside the timing's speech regions the mouth is at rest; the targets are
  faded out over ``REST_FADE`` around each pause and the result multiplied by the same weight, so
  smoothing tails never leak into a pause;
* **tongue**: l (viseme H) and th/dh (from the phones, when the timing has them) raise the tongue.

Without visemes (the timing came from loudness alone) the shape follows loudness (``energy_targets``).
Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.contracts import SpeechTiming, TimedPhone, TimedViseme
from stages.render.viseme.shapes import (
    SHAPES,
    MouthTrack,
    ShapeParams,
    Viseme,
    energy_targets,
    gate,
    high_band_ratio,
    smooth,
)
from stages.timing import normalised_loudness, rms_envelope, speaking_weight

TONGUE_PHONES = frozenset({"L", "TH", "DH"})


def _overlaps(
    start: float, end: float, fps: float, n_frames: int, lead: float
) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, share of each frame covered) of the interval, shifted ``lead`` earlier."""
    a, b = (start - lead) * fps, (end - lead) * fps
    first, last = max(int(np.floor(a)), 0), min(int(np.ceil(b)), n_frames)
    if last <= first:
        return np.zeros(0, np.int64), np.zeros(0)
    frames = np.arange(first, last)
    return frames, np.clip(np.minimum(frames + 1, b) - np.maximum(frames, a), 0.0, 1.0)


def viseme_targets(visemes: Sequence[TimedViseme], fps: float, n_frames: int, lead: float) -> np.ndarray:
    """(n_frames × 3) overlap-weighted (open, wide, round) of the visemes under each frame (rest elsewhere)."""
    sums = np.zeros((n_frames, 3), np.float64)
    for v in visemes:
        frames, share = _overlaps(v.start, v.end, fps, n_frames, lead)
        sums[frames] += share[:, None] * np.array(SHAPES[_letter(v.viseme)])
    return sums.astype(np.float32)


def _letter(viseme: str) -> Viseme:
    try:
        return Viseme(viseme)
    except ValueError:
        return Viseme.B  # a letter we do not know: a neutral consonant shape


def closures(visemes: Sequence[TimedViseme], fps: float, n_frames: int, lead: float) -> np.ndarray:
    """Boolean per frame: the midpoint of a closed viseme (A: m, b, p), where the lips must touch."""
    closed = np.zeros(n_frames, bool)
    for v in visemes:
        if v.viseme == Viseme.A.value:
            i = int(((v.start + v.end) / 2 - lead) * fps)
            if 0 <= i < n_frames:
                closed[i] = True
    return closed


def tongue_targets(
    visemes: Sequence[TimedViseme], phones: Sequence[TimedPhone], fps: float, n_frames: int, lead: float
) -> np.ndarray:
    """Per frame 0..1: how much an l or th is under the frame."""
    out = np.zeros(n_frames, np.float64)
    spans = [(v.start, v.end) for v in visemes if v.viseme == Viseme.H.value]
    spans += [(p.start, p.end) for p in phones if p.phone.rstrip("012").upper() in TONGUE_PHONES]
    for start, end in spans:
        frames, share = _overlaps(start, end, fps, n_frames, lead)
        out[frames] = np.maximum(out[frames], share)
    return out.astype(np.float32)


def plan_from_timing(
    audio: np.ndarray,
    sample_rate: int,
    fps: float,
    n_frames: int,
    timing: SpeechTiming,
    params: ShapeParams | None = None,
) -> MouthTrack:
    """The mouth track of a clip from its timing (module docstring); ``n_frames`` long."""
    p = params or ShapeParams()
    loud = normalised_loudness(rms_envelope(audio, sample_rate, fps, n_frames), p.floor_db)
    speaking = speaking_weight(timing.speech, fps, n_frames)
    if timing.visemes:
        targets = viseme_targets(timing.visemes, fps, n_frames, p.lead)
        targets[:, 0] *= 0.3 + 0.7 * loud  # shapes from the visemes, size from loudness
        tongue = tongue_targets(timing.visemes, timing.phones, fps, n_frames, p.lead)
    else:
        targets = energy_targets(loud, high_band_ratio(audio, sample_rate, fps, n_frames))
        tongue = np.zeros(n_frames, np.float32)
    targets *= (gate(loud, p.gate) * speaking)[:, None]
    track = smooth(targets, fps, p.attack, p.release) * speaking[:, None]
    track[track < 1e-3] = 0.0
    track[:, 0] = np.clip(track[:, 0] * p.motion, 0.0, 1.0)
    if timing.visemes:
        track[closures(timing.visemes, fps, n_frames, p.lead), 0] = 0.0
    tongue = smooth(tongue[:, None], fps, p.attack, p.release)[:, 0] * (track[:, 0] > 0.05)
    return MouthTrack(track[:, 0].copy(), track[:, 1].copy(), track[:, 2].copy(), tongue.astype(np.float32))
