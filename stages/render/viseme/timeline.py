"""Mouth shapes over time from a ``SpeechTiming``: its visemes (Rhubarb letters) and its pauses.

The same shaping as ``shapes.plan_mouth`` (targets per viseme, sized by loudness, gated, smoothed with
a fast attack and a slower release, bilabials forced shut), with two additions:

* **rest on silence**: outside the timing's speech regions the mouth is at rest; the targets are
  faded out over ``REST_FADE`` around each pause and the result multiplied by the same weight, so
  smoothing tails never leak into a pause;
* **tongue**: l (viseme H) and th/dh (from the phones, when the timing has them) raise the tongue;
* **tuck**: f/v (viseme G) tuck the lower lip under the upper teeth;
* **coarticulation**: lips round ahead of a rounded vowel (o, u, w) by up to ``ROUND_AHEAD`` seconds, as
  speakers do, and keep a little of it after;
* **speaking rate**: fast speech (more visemes a second than ``RATE_REFERENCE``) gets quicker smoothing
  and a larger opening (up to ``RATE_GAIN_MAX``), so short vowels still open instead of mumbling.

Without visemes (the timing came from loudness alone) the shape follows loudness (``energy_targets``).
Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.contracts import SpeechTiming, TimedPhone, TimedViseme
from stages.lib.speech.fallback import normalised_loudness, rms_envelope, speaking_weight
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

TONGUE_PHONES = frozenset({"L", "TH", "DH"})
ROUND_AHEAD = 0.12
"""Seconds the lips start rounding before a rounded viseme (anticipatory coarticulation)."""
RATE_REFERENCE = 9.0
"""Visemes a second of speech at an ordinary conversational pace."""
RATE_GAIN_MAX = 1.5
"""The most a fast speaker's openings are enlarged."""


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


def speaking_rate(visemes: Sequence[TimedViseme], speech_seconds: float) -> float:
    """Visemes (other than rest) per second of speech; 0 without speech."""
    if speech_seconds <= 0:
        return 0.0
    return sum(1 for v in visemes if v.viseme != Viseme.X.value) / speech_seconds


def rate_scale(rate: float) -> tuple[float, float]:
    """(gain on the opening, factor on the smoothing time constants) for a speaking rate: 1 and 1 up to
    ``RATE_REFERENCE``, then a larger opening and faster smoothing in proportion."""
    fast = max(rate / RATE_REFERENCE, 1.0)
    return min(fast, RATE_GAIN_MAX), max(1.0 / fast, 0.6)


def anticipate(values: np.ndarray, fps: float, ahead: float) -> np.ndarray:
    """``values`` with each frame raised toward the values of the next ``ahead`` seconds (linearly less
    the farther they are): a gesture that starts before its sound."""
    out = values.copy()
    k = max(round(ahead * fps), 0)
    for shift in range(1, k + 1):
        weight = 1.0 - shift / (k + 1)
        out[:-shift] = np.maximum(out[:-shift], weight * values[shift:])
    return out


def tuck_targets(visemes: Sequence[TimedViseme], fps: float, n_frames: int, lead: float) -> np.ndarray:
    """Per frame 0..1: how much an f or v (viseme G) is under the frame."""
    out = np.zeros(n_frames, np.float64)
    for v in visemes:
        if v.viseme == Viseme.G.value:
            frames, share = _overlaps(v.start, v.end, fps, n_frames, lead)
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
    gain, quick = 1.0, 1.0
    if timing.visemes:
        targets = viseme_targets(timing.visemes, fps, n_frames, p.lead)
        targets[:, 0] *= 0.3 + 0.7 * loud  # shapes from the visemes, size from loudness
        targets[:, 2] = anticipate(targets[:, 2], fps, ROUND_AHEAD)
        tongue = tongue_targets(timing.visemes, timing.phones, fps, n_frames, p.lead)
        tuck = tuck_targets(timing.visemes, fps, n_frames, p.lead)
        gain, quick = rate_scale(speaking_rate(timing.visemes, sum(s.end - s.start for s in timing.speech)))
    else:
        targets = energy_targets(loud, high_band_ratio(audio, sample_rate, fps, n_frames))
        tongue = np.zeros(n_frames, np.float32)
        tuck = np.zeros(n_frames, np.float32)
    attack, release = p.attack * quick, p.release * quick
    voiced = gate(loud, p.gate) * speaking
    targets *= voiced[:, None]
    track = smooth(targets, fps, attack, release) * speaking[:, None]
    track[track < 1e-3] = 0.0
    track[:, 0] = np.clip(track[:, 0] * p.motion * gain, 0.0, 1.0)
    if timing.visemes:
        track[closures(timing.visemes, fps, n_frames, p.lead), 0] = 0.0
    tongue = smooth(tongue[:, None], fps, attack, release)[:, 0] * (track[:, 0] > 0.05)
    # f/v need no voice (they are fricatives), only speech; quick, as the lip snaps to the teeth
    tuck = smooth((tuck * speaking)[:, None], fps, attack, release)[:, 0] * speaking
    tuck[tuck < 1e-3] = 0.0  # at rest in the pauses, as the other channels
    return MouthTrack(
        track[:, 0].copy(),
        track[:, 1].copy(),
        track[:, 2].copy(),
        tongue.astype(np.float32),
        np.clip(tuck, 0.0, 1.0).astype(np.float32),
    )
