"""A ``SpeechTiming`` for a voice clip when its job has none stored (the ``speech`` artifact).

Validate stores one ``SpeechTiming`` per job (role ``speech``) once that is in place; until then, and for
manifests made before it, render and the quality report build one here from what the speech module
offers today: ``stages.speech.speech_timing`` (pocketsphinx phones, forced to the transcript when there
is one) turned into visemes, plus speech regions by loudness (``speech_regions``). Pure apart from the
pocketsphinx call.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from pipeline.contracts import Span, SpeechTiming, TimedPhone, TimedViseme, TimedWord
from stages.speech import Alignment, Phone, speech_timing

SAMPLE_RATE = 16_000
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
    from stages.render.viseme.shapes import viseme_of  # the viseme package imports this module

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
