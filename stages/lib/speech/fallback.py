"""A ``SpeechTiming`` for a voice clip when its job has none stored (the ``speech`` artifact).

Validate stores one ``SpeechTiming`` per job (role ``speech``) once that is in place; until then, and for
manifests made before it, render and the quality report build one here from what the speech module
offers today: ``stages.lib.speech.align.speech_timing`` (pocketsphinx phones, forced to the transcript when there
is one) turned into visemes, plus speech regions by loudness (``speech_regions``). Pure apart from the
pocketsphinx call.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from pipeline.contracts import Span, SpeechTiming, TimedPhone, TimedViseme, TimedWord
from pipeline.media import AUDIO_RATE
from stages.lib.speech.align import Alignment, Phone, speech_timing, viseme_of

SAMPLE_RATE = AUDIO_RATE  # the one rate of normalized voices: pipeline.media.AUDIO_RATE
HOP_SECONDS = 0.01
RANGE_DB = 30.0
"""Speech is louder than the clip's loud level (95th percentile of 10 ms frames) minus this ..."""
ABOVE_NOISE_DB = 8.0
"""... and than its noise floor (10th percentile) plus this ..."""
FLOOR_DBFS = -50.0
"""... and than this."""
MIN_PAUSE = 0.25
"""Quieter stretches shorter than this are stops inside speech, not pauses."""
MIN_SPEECH = 0.08
PAD = 0.04


def timing_from_audio(audio: np.ndarray, transcript: str | None, *, phones: bool = True) -> SpeechTiming:
    """The timing of ``audio`` (mono float32 at 16 kHz): speech regions by loudness, and with ``phones``
    the pocketsphinx phones and visemes (forced to ``transcript`` when given)."""
    duration = len(audio) / SAMPLE_RATE
    regions = speech_regions(audio)
    alignment = speech_timing(audio, transcript, words=False) if phones and audio.size else None
    if alignment is None:
        return SpeechTiming(duration=duration, source="energy", speech=regions)
    return _from_alignment(alignment, duration, regions, transcript)


def _from_alignment(
    alignment: Alignment, duration: float, regions: list[Span], transcript: str | None
) -> SpeechTiming:
    return SpeechTiming(
        duration=duration,
        language="en",
        source="transcript" if alignment.method == "forced" else "pocketsphinx",
        text=transcript or "",
        words=[TimedWord(text=w.text, start=w.start, end=w.end) for w in alignment.words],
        phones=[TimedPhone(phone=p.name, start=p.start, end=p.end) for p in alignment.phones],
        visemes=visemes_of_phones(alignment.phones),
        speech=regions,
    )


def visemes_of_phones(phones: Sequence[Phone]) -> list[TimedViseme]:
    """One ``TimedViseme`` per run of phones with the same mouth shape (gaps between phones are rest)."""
    out: list[TimedViseme] = []
    for phone in phones:
        letter = viseme_of(phone.name).value
        if out and out[-1].viseme == letter and abs(out[-1].end - phone.start) < 1e-6:
            out[-1].end = phone.end
        else:
            out.append(TimedViseme(viseme=letter, start=phone.start, end=phone.end))
    return out


def speech_regions(audio: np.ndarray, rate: int = SAMPLE_RATE) -> list[Span]:
    """Where the voice is, by loudness: 10 ms frames louder than the clip's loud level minus
    ``RANGE_DB``, than its noise floor plus ``ABOVE_NOISE_DB`` (a clip without pauses has its "noise" at
    most 12 dB under its loud level) and than ``FLOOR_DBFS``; stops under ``MIN_PAUSE`` bridged, blips
    under ``MIN_SPEECH`` dropped, each region padded by ``PAD``. Silence gives no region."""
    hop = max(1, int(rate * HOP_SECONDS))
    n = len(audio) // hop
    if n == 0:
        return []
    frames = np.asarray(audio[: n * hop], np.float64).reshape(n, hop)
    db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud, noise = (float(v) for v in np.percentile(db, [95, 10]))
    threshold = max(loud - RANGE_DB, min(noise + ABOVE_NOISE_DB, loud - 12.0), FLOOR_DBFS)
    voiced = _bridge(db > threshold, round(MIN_PAUSE / HOP_SECONDS))
    duration = len(audio) / rate
    spans = []
    for start, end in _true_runs(voiced):
        if (end - start) * HOP_SECONDS >= MIN_SPEECH:
            spans.append(
                Span(start=max(0.0, start * HOP_SECONDS - PAD), end=min(duration, end * HOP_SECONDS + PAD))
            )
    return spans


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _bridge(mask: np.ndarray, gap: int) -> np.ndarray:
    """``mask`` with runs of False shorter than ``gap`` between two True runs set to True."""
    out = mask.copy()
    runs = _true_runs(mask)
    for (_, end), (start, _) in itertools.pairwise(runs):
        if start - end < gap:
            out[end:start] = True
    return out


# --- per output frame ---------------------------------------------------------------------------------

REST_FADE = 0.12
"""Seconds over which a renderer's mouth fades to rest at a pause (and back when speech resumes)."""


def speaking_weight(spans: Sequence[Span], fps: float, n_frames: int, fade: float = REST_FADE) -> np.ndarray:
    """Per output frame, 1 inside speech and 0 in pauses, with raised-cosine ramps of ``fade`` seconds
    centred on each edge (so a renderer cross-fades to rest and back). Float32, ``n_frames`` long."""
    t = (np.arange(n_frames) + 0.5) / fps
    weight = np.zeros(n_frames, np.float64)
    half = max(fade, 1e-6) / 2
    for span in spans:
        rise = np.clip((t - (span.start - half)) / (2 * half), 0.0, 1.0)
        fall = np.clip(((span.end + half) - t) / (2 * half), 0.0, 1.0)
        inside = np.minimum(rise, fall)
        weight = np.maximum(weight, 0.5 - 0.5 * np.cos(np.pi * inside))
    return weight.astype(np.float32)


def frame_windows(n_samples: int, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """Sample index bounds (n_frames × 2) of the audio under each video frame."""
    edges = np.rint(np.arange(n_frames + 1) * sample_rate / fps).astype(np.int64)
    edges = np.clip(edges, 0, n_samples)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def rms_envelope(audio: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """Linear RMS of the audio under each video frame (0 past the end of the audio)."""
    squared = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    bounds = frame_windows(len(audio), sample_rate, fps, n_frames)
    counts = np.maximum(bounds[:, 1] - bounds[:, 0], 1)
    return np.sqrt((squared[bounds[:, 1]] - squared[bounds[:, 0]]) / counts).astype(np.float32)


def normalised_loudness(rms: np.ndarray, floor_db: float = 32.0) -> np.ndarray:
    """Loudness in 0..1: 1 at the clip's loud level (95th percentile), 0 ``floor_db`` below it.

    Relative to the clip so quiet recordings still move the mouth; never above -20 dBFS for the floor
    of the scale, so a near-silent clip stays closed.
    """
    db = 20.0 * np.log10(np.maximum(rms, 1e-6))
    if db.size == 0:
        return db.astype(np.float32)
    loud = float(np.percentile(db, 95))
    loud = max(loud, -40.0 + floor_db)  # a clip whose loudest part is under -40 dBFS is silence
    return np.clip((db - (loud - floor_db)) / floor_db, 0.0, 1.0).astype(np.float32)
