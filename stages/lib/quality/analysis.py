"""The quality measures of a finished video, on per-frame series (pure numpy; no I/O).

* ``mouth_opening``: the inner lips' gap over the mouth's width, from 68 landmarks found on the video.
* ``av_offset``: how much later the sound comes than the mouth: the lag (within ±``MAX_LAG`` s) that
  best correlates mouth opening with the loudness envelope, refined between frames by a parabola
  through the peak. Positive: the audio is late. Under ``MIN_CONFIDENCE`` of peak correlation the
  offset is not reported (nothing in the video follows the voice).
* ``confidence_of``: how far the offset can be trusted, 0..1: low only when the mouth is hard to read
  against the voice (a weak correlation peak), the face is missing from many frames, or there is little
  speech to compare with.
* ``silence_motion``: the spread of the mouth opening inside pauses over its spread inside speech (0:
  still in pauses; 1: moves as much as when talking).
* ``flicker``: mean absolute second temporal difference of the mouth region (levels of 0..255), the
  neighbouring frames first moved back by the face's own motion (a moving head is not flicker): jitter that
  alternates from frame to frame, which smooth motion does not produce.
* ``skin_change``: how far the colour of the lower face (nose to chin, cheek to cheek, from the
  landmarks, the inside of the lips left out) moved away from the avatar's skin there: the mean chroma
  distance (Cb/Cr levels) of the video's pixels from the avatar's median colour in that region, less
  the avatar's own spread around it. A renderer with wrong model files paints block noise there that
  dlib still places lips on; its colour is far from any skin.
* ``score``: each measure mapped to 0..1 between a good and a bad level (``LIMITS``), the score is the
  worst of them, and each measure under 0.8 adds a sentence to ``problems``. The offset's limits are
  asymmetric, as people's tolerance is (ITU-R BT.1359: sound ahead of the picture is noticed from about
  45 ms and acceptable to about 90 ms; sound behind it noticed from 125 ms, acceptable to 185 ms): the
  score is 1 up to the noticeable level and 0.5 at the acceptable one, so the default ``min_quality``
  (0.5) flags exactly the offsets outside the acceptable window.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.reports import (
    ACCEPTABLE_EARLY_MS,
    ACCEPTABLE_LATE_MS,
    NOTICED_EARLY_MS,
    NOTICED_LATE_MS,
    SKIN_LOOKS_OWN,
    mouth_still_sentence,
    not_following_sentence,
    offset_words,
    skin_sentence,
)

MAX_LAG = 0.5
MIN_SHIFT = 0.25
"""Face motion (pixels a frame) under which flicker crops are not moved: landmark jitter, not motion."""
MIN_CONFIDENCE = 0.15


@dataclass(frozen=True)
class Limit:
    """A measure is fine up to ``good`` and worthless from ``bad`` (linear between)."""

    good: float
    bad: float


def _noticed_to_acceptable(noticed: float, acceptable: float) -> Limit:
    """Score 1 up to ``noticed``, 0.5 at ``acceptable`` (linear, so 0 as far past it again)."""
    return Limit(noticed, 2 * acceptable - noticed)


EARLY = _noticed_to_acceptable(NOTICED_EARLY_MS, ACCEPTABLE_EARLY_MS)
"""Sound ahead of the picture (offset < 0): noticed from 45 ms, acceptable to 90 ms (score 0.5)."""
LATE = _noticed_to_acceptable(NOTICED_LATE_MS, ACCEPTABLE_LATE_MS)
"""Sound behind the picture (offset > 0): noticed from 125 ms, acceptable to 185 ms (score 0.5)."""
GOOD_PEAK = 0.5
"""A correlation peak this high (or higher) reads as a clearly readable mouth (confidence 1)."""
ENOUGH_SPEECH = 3.0
"""Seconds of speech under which the offset's confidence is reduced in proportion."""
READABLE_FACE = 0.8
"""A face on this fraction of the frames (and ``ENOUGH_SPEECH``) makes an unreadable sync the video's
fault: the mouth was there to read, and it did not follow the voice."""
MIN_MOUTH_MOTION = 0.015
"""Spread of the mouth opening (inner-lip gap over mouth width) while the voice speaks under which the
mouth is not moving: landmark jitter on a still mouth is about 0.006; talking renders move 0.03–0.05."""

SKIN_GOOD, SKIN_BAD = SKIN_LOOKS_OWN, 15.0
"""Chroma levels the lower face may move from the avatar's skin colour (score 1 up to 5, 0.5 at 10, 0
from 15): our renders of photos and clips read under 0.5 (docs/quality.md); renders by networks with
random weights 21 (Wav2Lip: a grey patch) and 55 (MuseTalk: green and magenta blocks)."""
LOWER_FACE = (*range(3, 14), 35, 34, 33, 32, 31)
"""The lower face's outline in the 68 points: the jaw from cheek to cheek round the chin, then back
along the base of the nose."""
INNER_LIPS = tuple(range(60, 68))

LIMITS = {
    "offset_ms": LATE,
    "silence_motion": Limit(0.25, 0.8),
    "outside_change": Limit(4.0, 12.0),
    "mouth_flicker": Limit(3.0, 9.0),
    "duration_drift_ms": Limit(60.0, 300.0),
    "skin_change": Limit(SKIN_GOOD, SKIN_BAD),
}


def mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap (61–67, 62–66, 63–65) over the corner-to-corner width (48–54) of 68 landmarks."""
    p = np.asarray(points, np.float64)
    gap = np.mean([np.hypot(*(p[a] - p[b])) for a, b in ((61, 67), (62, 66), (63, 65))])
    width = float(np.hypot(*(p[54] - p[48])))
    return float(gap / width) if width > 0 else 0.0


def _zscore(x: np.ndarray) -> np.ndarray:
    std = float(np.std(x))
    return (x - np.mean(x)) / std if std > 1e-9 else np.zeros_like(x)


def av_offset(mouth: np.ndarray, loudness: np.ndarray, fps: float) -> tuple[float | None, float]:
    """(seconds the audio is late, peak correlation) of per-frame mouth opening (NaN: no face) and
    loudness; (None, correlation) when the correlation is too weak to mean anything."""
    n = min(len(mouth), len(loudness))
    m, e = np.asarray(mouth[:n], np.float64), np.asarray(loudness[:n], np.float64)
    valid = ~np.isnan(m)
    max_lag = round(MAX_LAG * fps)
    if valid.sum() < 3 * max_lag or np.std(e[valid]) < 1e-9 or np.std(m[valid]) < 1e-9:
        return None, 0.0
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.array([_corr_at(m, e, valid, int(lag)) for lag in lags])
    k = int(np.nanargmax(corr))
    peak = float(corr[k])
    if peak < MIN_CONFIDENCE:
        return None, max(peak, 0.0)
    shift = 0.0
    if 0 < k < len(lags) - 1:  # parabola through the peak and its neighbours
        a, b, c = corr[k - 1], corr[k], corr[k + 1]
        denominator = a - 2 * b + c
        shift = 0.5 * (a - c) / denominator if denominator < 0 else 0.0
    return float((lags[k] + shift) / fps), peak


def _corr_at(m: np.ndarray, e: np.ndarray, valid: np.ndarray, lag: int) -> float:
    """Pearson correlation of m[t] and e[t + lag] over the frames where both exist."""
    n = len(m)
    t = np.arange(max(0, -lag), min(n, n - lag))
    keep = valid[t]
    a, b = m[t][keep], e[t + lag][keep]
    if len(a) < 3:
        return float("nan")
    return float(np.mean(_zscore(a) * _zscore(b)))


def confidence_of(peak: float, face_fraction: float, speech_seconds: float) -> float:
    """0..1: how readable the sync is (module docstring): the correlation peak over ``GOOD_PEAK``,
    times the fraction of frames with a face, times the speech heard over ``ENOUGH_SPEECH`` seconds."""
    readable = float(np.clip(peak / GOOD_PEAK, 0.0, 1.0))
    speech = float(np.clip(speech_seconds / ENOUGH_SPEECH, 0.0, 1.0))
    return readable * float(np.clip(face_fraction, 0.0, 1.0)) * speech


def sync_failure(
    mouth: np.ndarray, speaking: np.ndarray, confidence: float, face_fraction: float, speech_seconds: float
) -> str | None:
    """The sentence saying the lips do not sync (None when they do, or when it cannot be told).

    Told only where it could have been read (a face on ``READABLE_FACE`` of the frames and
    ``ENOUGH_SPEECH`` seconds of voice): a mouth that hardly moves while the voice speaks, or one that
    moves but not with the voice (the offset's confidence under ``min_confidence``)."""
    if face_fraction < READABLE_FACE or speech_seconds < ENOUGH_SPEECH:
        return None
    m = _median3(np.asarray(mouth, np.float64))
    talking = m[(speaking > 0.99) & ~np.isnan(m)]
    if len(talking) >= 5 and float(np.std(talking)) < MIN_MOUTH_MOTION:
        return mouth_still_sentence(float(np.std(talking)))
    if confidence < SYNC_READABLE:
        return not_following_sentence(confidence)
    return None


SYNC_READABLE = 0.5
"""Confidence under which no offset is reported (a correlation peak under 0.25 with a face and speech)."""


def silence_motion(mouth: np.ndarray, speaking: np.ndarray, margin: int = 3) -> float | None:
    """Mouth motion in pauses relative to speech (module docstring); None without both.

    The spread (standard deviation) of the mouth opening, median-filtered over 3 frames so landmark
    jitter does not count as motion, inside pauses over inside speech. ``speaking``: per frame 0..1;
    frames within ``margin`` of a pause's edges are left out (the mouth closes there, which is right)."""
    m = _median3(np.asarray(mouth, np.float64))
    valid = ~np.isnan(m)
    talking = speaking > 0.99
    quiet = speaking < 0.01
    for _ in range(margin):  # shrink the pauses by ``margin`` frames on each side
        quiet = quiet & np.roll(quiet, 1) & np.roll(quiet, -1)
    if (valid & talking).sum() < 5 or (valid & quiet).sum() < 5:
        return None
    during = float(np.std(m[valid & talking]))
    if during < 1e-6:
        return None
    return float(np.std(m[valid & quiet]) / during)


def _median3(x: np.ndarray) -> np.ndarray:
    """Running median of 3 (NaN where any of the three is NaN; ends kept)."""
    if len(x) < 3:
        return x.copy()
    out = x.copy()
    out[1:-1] = np.median(np.stack([x[:-2], x[1:-1], x[2:]]), axis=0)
    return out


def flicker(
    before: np.ndarray,
    now: np.ndarray,
    after: np.ndarray,
    margin: int = 0,
    shifts: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0)),
) -> float:
    """Mean |now − (before + after) / 2| of three equally shaped grey crops, inside ``margin`` pixels.

    ``shifts``: how far the face moved from ``now`` to ``before`` and to ``after`` (x, y pixels: from the
    landmarks away from the mouth); the neighbours are first moved back by it, so a moving head is not
    counted as flicker; landmarks that jitter (a drawn face's jaw) can make that move wrong, so the
    smaller of the moved and unmoved residuals counts (moving back by the right shift only ever
    lowers it). With a margin all three are lightly blurred alike, so the resampling of the moved ones
    is not counted either."""
    b, n, a = (np.asarray(x, np.float32) for x in (before, now, after))
    if margin <= 0:
        return float(np.mean(np.abs(n - 0.5 * (b + a))))
    import cv2

    inner = (slice(margin, n.shape[0] - margin), slice(margin, n.shape[1] - margin))
    blurred = [np.asarray(cv2.GaussianBlur(x, (3, 3), 0), np.float32) for x in (b, _moved(b, shifts[0]), n)]
    blurred += [np.asarray(cv2.GaussianBlur(x, (3, 3), 0), np.float32) for x in (a, _moved(a, shifts[1]))]
    still_b, moved_b, sharp_n, still_a, moved_a = (x[inner] for x in blurred)
    unmoved = float(np.mean(np.abs(sharp_n - 0.5 * (still_b + still_a))))
    moved = float(np.mean(np.abs(sharp_n - 0.5 * (moved_b + moved_a))))
    return min(unmoved, moved)


def _moved(crop: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``crop`` whose content moved by ``shift`` moved back (sub-pixel, edges repeated)."""
    if abs(shift[0]) < MIN_SHIFT and abs(shift[1]) < MIN_SHIFT:
        return crop
    import cv2

    matrix = np.array([[1, 0, -shift[0]], [0, 1, -shift[1]]], np.float32)
    h, w = crop.shape[:2]
    moved = cv2.warpAffine(crop, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(moved, np.float32)


def face_shift(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """How far a face moved between two sets of 68 landmarks: the mean motion of the points away from
    the mouth (jaw, brows, nose, eyes: 0–47), which speech does not move."""
    d = np.asarray(after, np.float64)[:48].mean(axis=0) - np.asarray(before, np.float64)[:48].mean(axis=0)
    return float(d[0]), float(d[1])


def skin_change(
    video: np.ndarray, points: np.ndarray, avatar: np.ndarray, avatar_points: np.ndarray
) -> float | None:
    """How far the lower face of ``video`` (an RGB frame, ``points`` its 68 landmarks) is in colour from
    the avatar's (``avatar``, ``avatar_points``): the mean Cb/Cr distance of its pixels from the avatar's
    median colour there, less the avatar's own mean distance from it (0: the avatar's skin; its own
    texture, a beard or freckles, is taken out; never under 0). None where the region is under 50
    pixels."""
    ours, theirs = _lower_face(video, points), _lower_face(avatar, avatar_points)
    if len(ours) < 50 or len(theirs) < 50:
        return None
    skin = np.median(theirs, axis=0)
    own = float(np.linalg.norm(theirs - skin, axis=1).mean())
    return max(0.0, float(np.linalg.norm(ours - skin, axis=1).mean()) - own)


def _lower_face(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The (Cr, Cb) levels of the pixels inside ``LOWER_FACE`` and outside ``INNER_LIPS`` (N×2)."""
    h, w = rgb.shape[:2]
    outline = points[list(LOWER_FACE)]
    x1, y1 = np.clip(np.floor(outline.min(axis=0)).astype(int), 0, (w, h))
    x2, y2 = np.clip(np.ceil(outline.max(axis=0)).astype(int) + 1, 0, (w, h))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return np.zeros((0, 2), np.float32)
    mask = np.zeros((y2 - y1, x2 - x1), np.uint8)
    corner = np.array([x1, y1], np.float32)
    cv2.fillPoly(mask, [np.round(outline - corner).astype(np.int32)], 255)
    cv2.fillPoly(mask, [np.round(points[list(INNER_LIPS)] - corner).astype(np.int32)], 0)
    crop = np.ascontiguousarray(rgb[y1:y2, x1:x2])
    chroma = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(np.float32)
    return np.asarray(chroma[mask > 0])


def score(measures: dict[str, float | None]) -> tuple[float, list[str]]:
    """(the worst measure's 0..1 score, sentences for every measure scoring under 0.8)."""
    scores, problems = [], []
    for name, value in measures.items():
        if value is None or name not in LIMITS:
            continue
        limit = EARLY if name == "offset_ms" and value < 0 else LIMITS[name]
        s = float(np.clip((limit.bad - abs(value)) / (limit.bad - limit.good), 0.0, 1.0))
        scores.append(s)
        if s < 0.8:
            problems.append(_sentence(name, value))
    return (min(scores) if scores else 1.0), problems


def _sentence(name: str, value: float) -> str:
    if name == "offset_ms":
        limit = ACCEPTABLE_LATE_MS if value > 0 else ACCEPTABLE_EARLY_MS
        side = "behind" if value > 0 else "ahead of"
        return f"{offset_words(value)} (sound {side} the picture is acceptable to about {limit:.0f} ms)"
    if name == "silence_motion":
        return f"the mouth keeps moving in pauses ({value:.0%} of its motion while talking)"
    if name == "outside_change":
        return f"the picture away from the face changed by {value:.1f} levels on average"
    if name == "skin_change":
        return skin_sentence(value)
    if name == "mouth_flicker":
        return f"the mouth flickers from frame to frame ({value:.1f} levels)"
    return f"video and audio lengths differ by {abs(value):.0f} ms"
