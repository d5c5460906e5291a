"""One speech timing per voice clip: words, phones, visemes and speech regions (``SpeechTiming``).

Made once per job by validate (``speech_artifact``: content-addressed under ``cache/speech/``, so the same
clip with the same text, language and recognizer is never timed twice) and read by render (visemes,
silences), enhance (subtitle words) and the quality report. Nothing else aligns.

How a clip is timed (``build_timing``, pure given the models):

1. speech regions: Silero VAD (faster-whisper), else loudness (``stages.lib.speech.align.speech_chunks``);
2. words: the transcript when there is one (English: pocketsphinx forced alignment; other languages:
   Whisper's words mapped onto the transcript's tokens); without one, Whisper (language detected or given)
   or, without Whisper, pocketsphinx recognition (English only);
3. phones: English words aligned by pocketsphinx (ARPAbet), in chunks between pauses; other languages
   eSpeak NG's IPA phonemes of each word spread over the word's time span (letters when eSpeak NG is not
   installed);
4. visemes (Rhubarb letters A-H, X rest) from the phones, X in pauses and silence.

``transcript_words`` maps timed words onto a text's tokens (as written); used for transcripts and for
the display text of synthesized speech (numbers as digits, names with their ``@``).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import structlog

from pipeline.contracts import ArtifactRef, Manifest, Span, SpeechTiming, TimedPhone, TimedViseme, TimedWord
from pipeline.errors import AlignmentError, ConfigError
from stages.lib.speech import espeak
from stages.lib.speech.align import (
    DECODERS,
    SAMPLE_RATE,
    Phone,
    Viseme,
    Word,
    align,
    recognize,
    speech_chunks,
    viseme_of,
    warm_decoders,
)
from stages.lib.speech.recognition import (
    LoadedWhisper,
    detect_language,
    recognizer_name,
    speech_regions,
    whisper_model,
)
from stages.lib.speech.recognition import recognize as whisper_recognize
from stages.lib.speech.speakable import display_text

if TYPE_CHECKING:
    from pipeline.contracts import JobSpec
    from pipeline.stage import StageContext
    from stages.lib.speech.synthesis import Synthesis

log = structlog.get_logger("mouthpiece.speech")

TIMING_VERSION = 1
"""Part of the cache key: bump when the timing of the same inputs would change."""
MAX_CHUNK = 12.0
"""Seconds of speech aligned in one pocketsphinx pass (cost and error containment)."""
CHUNK_GAP = 0.8
"""A pause this long between recognized words starts a new alignment chunk (shorter pauses are where
Whisper's word times are least sure)."""
CHUNK_PAD = 0.3
"""Audio kept around a chunk's words: Whisper's word edges are approximate."""
REST_GAP = 0.12
"""A pause between phones at least this long shows the rest mouth (X)."""
UNSPACED = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo"})
"""Languages written without spaces between words."""


@dataclass(frozen=True)
class Timed:
    """Words and phones of a clip, the language, and where the words came from."""

    words: list[Word]
    phones: list[Phone]
    language: str | None
    source: str


# --------------------------------------------------------------------------------------------------
# The timing of a clip
# --------------------------------------------------------------------------------------------------


def build_timing(
    audio_16k: np.ndarray,
    *,
    transcript: str | None = None,
    language: str | None = None,
    whisper: LoadedWhisper | None = None,
    display: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> SpeechTiming:
    """The ``SpeechTiming`` of a clip (see the module docstring). ``progress`` hears how far Whisper got
    (0..1; it may raise to stop the work).

    ``transcript``: what the voice says, if known. ``language``: ISO 639-1, if known (else detected by
    Whisper, else English). ``display``: the text to show for the words when it differs from what was
    spoken (synthesized speech: ``transcript`` is the spoken form, ``display`` the written one).
    """
    audio = np.asarray(audio_16k, dtype=np.float32)
    duration = len(audio) / SAMPLE_RATE
    regions = _regions(audio)
    if not regions:
        return SpeechTiming(
            duration=_r(duration), language=language, source="energy", visemes=_rest(duration)
        )
    timed = _words_and_phones(audio, transcript, language, whisper, regions, progress)
    words = transcript_words(timed.words, display) if display and timed.words else timed.words
    return SpeechTiming(
        duration=round(duration, 3),
        language=timed.language,
        source=timed.source,
        text=join_words([w.text for w in words], timed.language),
        words=[TimedWord(text=w.text, start=_r(w.start), end=_r(w.end)) for w in words],
        phones=[TimedPhone(phone=p.name, start=_r(p.start), end=_r(p.end)) for p in timed.phones],
        visemes=visemes(timed.phones, regions, duration),
        speech=[Span(start=_r(a), end=_r(b)) for a, b in regions],
    )


def _r(seconds: float) -> float:
    return round(float(seconds), 3)


def _rest(duration: float) -> list[TimedViseme]:
    return [TimedViseme(viseme=Viseme.X.value, start=0.0, end=_r(duration))] if duration > 0 else []


def _regions(audio: np.ndarray) -> list[tuple[float, float]]:
    """Speech regions by Silero VAD, or by loudness when faster-whisper is not installed."""
    found = speech_regions(audio)
    if found is not None:
        return found
    return [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in speech_chunks(audio)]


def join_words(words: list[str], language: str | None) -> str:
    """Words as running text: with spaces, or without for scripts that use none (Chinese, Japanese, Thai)."""
    return ("" if (language or "") in UNSPACED else " ").join(words)


def _words_and_phones(
    audio: np.ndarray,
    transcript: str | None,
    language: str | None,
    whisper: LoadedWhisper | None,
    regions: list[tuple[float, float]],
    progress: Callable[[float], None] | None = None,
) -> Timed:
    if transcript and transcript.strip():
        if language is None and whisper is not None:
            language, probability = detect_language(whisper, audio)
            log.info("speech.language_detected", language=language, probability=round(probability, 2))
        return _with_transcript(audio, transcript, language or "en", whisper, regions, progress)
    if whisper is not None:
        heard = whisper_recognize(whisper, audio, language, progress=progress)  # detects the language
        log.info("speech.recognized", language=heard.language, probability=round(heard.probability, 2))
        return _phones_for(audio, heard.words, heard.language, "whisper", regions)
    return _pocketsphinx(audio, language)


def _with_transcript(
    audio: np.ndarray,
    transcript: str,
    language: str,
    whisper: LoadedWhisper | None,
    regions: list[tuple[float, float]],
    progress: Callable[[float], None] | None = None,
) -> Timed:
    """Words of a known text: forced alignment (English), else Whisper's words mapped onto the text, else
    the text spread over the speech regions."""
    if is_english(language):
        try:
            aligned = align(audio, transcript)
            return Timed(aligned.words, aligned.phones, language, "transcript")
        except AlignmentError as exc:
            log.info("speech.forced_alignment_failed", reason=str(exc))
    if whisper is not None:
        heard = whisper_recognize(whisper, audio, language, prompt=transcript, progress=progress)
        words = transcript_words(heard.words, transcript) if heard.words else []
    else:
        words = spread_tokens(transcript.split(), regions)
    return _phones_for(audio, words, language, "transcript", regions)


def _phones_for(
    audio: np.ndarray,
    words: list[Word],
    language: str | None,
    source: str,
    regions: list[tuple[float, float]],
) -> Timed:
    """Phones of timed words: pocketsphinx alignment in chunks (English), else eSpeak NG spread."""
    phones: list[Phone] = []
    if words and is_english(language):
        words, phones = align_timed_words(audio, words, regions)
    if words and not phones:
        phones = spread_phones(words, language)
    return Timed(words, phones, language, source)


def _pocketsphinx(audio: np.ndarray, language: str | None) -> Timed:
    """Free recognition by pocketsphinx (English only); other languages get no words."""
    if not is_english(language or "en"):
        log.warning("speech.no_recognizer", language=language, reason="pocketsphinx knows only English")
        return Timed([], [], language, "energy")
    try:
        found = recognize(audio)
    except AlignmentError as exc:
        log.info("speech.recognition_failed", reason=str(exc))
        return Timed([], [], language or "en", "energy")
    return Timed(found.words, found.phones, language or "en", "pocketsphinx" if found.words else "energy")


def is_english(language: str | None) -> bool:
    return (language or "").lower().startswith("en")


# --------------------------------------------------------------------------------------------------
# English phones: pocketsphinx forced alignment of timed words, chunk by chunk
# --------------------------------------------------------------------------------------------------


def align_timed_words(
    audio: np.ndarray, words: list[Word], regions: list[tuple[float, float]]
) -> tuple[list[Word], list[Phone]]:
    """Align recognized words (with rough times) in chunks cut at long pauses: each chunk's audio is
    aligned to its words, giving ARPAbet phones and exact word times. Whisper's word edges can be off by
    a pause, so a chunk that does not align is retried together with the next one; words that still do
    not align keep their times and get phones spread by ``spread_phones``."""
    timed = list(words)
    phones: list[Phone] = []
    chunks = word_chunks(words)
    n = 0
    while n < len(chunks):
        for size in (1, 2) if n + 1 < len(chunks) else (1,):
            group = (chunks[n][0], chunks[n + size - 1][1])
            found = _align_chunk(audio, words, group, _chunk_span(words, chunks, n, n + size - 1, regions))
            if found is not None:
                break
        if found is None:
            log.info("speech.chunk_not_aligned", start=round(words[group[0]].start, 2))
            phones.extend(spread_phones(words[group[0] : group[1] + 1], "en"))
        else:
            _place(timed, group[0], group[1], found[0])
            phones.extend(found[1])
        n += size
    return timed, phones


def _align_chunk(
    audio: np.ndarray, words: list[Word], group: tuple[int, int], span: tuple[float, float]
) -> tuple[list[Word], list[Phone]] | None:
    """Forced alignment of ``words[first..last]`` to the audio of ``span``, in clip time; None if it fails."""
    start, end = span
    segment = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
    try:
        aligned = align(segment, " ".join(w.text for w in words[group[0] : group[1] + 1]))
    except AlignmentError:
        return None
    shifted = [Word(w.text, w.start + start, w.end + start) for w in aligned.words]
    return shifted, [Phone(p.name, p.start + start, p.end + start) for p in aligned.phones]


def word_chunks(words: list[Word]) -> list[tuple[int, int]]:
    """Index ranges (first, last) of words: a new chunk after a pause of ``CHUNK_GAP`` or at ``MAX_CHUNK``."""
    chunks: list[tuple[int, int]] = []
    first = 0
    for i in range(1, len(words) + 1):
        if i == len(words) or (
            words[i].start - words[i - 1].end > CHUNK_GAP or words[i].end - words[first].start > MAX_CHUNK
        ):
            chunks.append((first, i - 1))
            first = i
    return chunks


def _chunk_span(
    words: list[Word],
    chunks: list[tuple[int, int]],
    n: int,
    m: int,
    regions: list[tuple[float, float]],
) -> tuple[float, float]:
    """Audio span of chunks ``n..m``: their words padded, grown to the speech regions they touch, never
    past the middle of the pause to a neighbouring chunk."""
    first, last = chunks[n][0], chunks[m][1]
    start, end = words[first].start - CHUNK_PAD, words[last].end + CHUNK_PAD
    for a, b in regions:
        if a < words[last].end and b > words[first].start:
            start, end = min(start, a - 0.05), max(end, b + 0.05)
    if n > 0:
        start = max(start, (words[chunks[n - 1][1]].end + words[first].start) / 2)
    if m + 1 < len(chunks):
        end = min(end, (words[last].end + words[chunks[m + 1][0]].start) / 2)
    return max(0.0, start), end


def _place(timed: list[Word], first: int, last: int, aligned: list[Word]) -> None:
    """Give ``timed[first..last]`` the aligned times (matched in order by text: tokens without speakable
    words, such as "—", are not in ``aligned`` and keep their times)."""
    k = 0
    for i in range(first, last + 1):
        if k < len(aligned) and aligned[k].text == timed[i].text:
            timed[i] = Word(timed[i].text, aligned[k].start, aligned[k].end)
            k += 1


# --------------------------------------------------------------------------------------------------
# Other languages: eSpeak NG phonemes spread over each word
# --------------------------------------------------------------------------------------------------

_VOWELS = set("aeiouyæøœɐɑɒɔəɘɛɜɞɤɨɪɯɵʉʊʌʏɚɝäëïöü")


def spread_phones(words: list[Word], language: str | None) -> list[Phone]:
    """Phones of each word laid over its time span, vowels twice as long as consonants.

    eSpeak NG's IPA phonemes for the language; a word's letters when eSpeak NG is missing or does not know
    the language (timing only needs about the right mouth shapes in about the right places).
    """
    phonemes = _phonemes([w.text for w in words], language)
    out: list[Phone] = []
    for word, names in zip(words, phonemes, strict=True):
        weights = [2.0 if _base(p)[:1] in _VOWELS else 1.0 for p in names]
        total, done = sum(weights), 0.0
        for name, weight in zip(names, weights, strict=True):
            a = word.start + (word.end - word.start) * done / total
            done += weight
            out.append(Phone(name, a, word.start + (word.end - word.start) * done / total))
    return out


def _phonemes(texts: list[str], language: str | None) -> list[list[str]]:
    voice = espeak.espeak_voice(language)
    try:
        found = espeak.phonemize(texts, voice)
        return [p or _letters(t) for p, t in zip(found, texts, strict=True)]
    except ConfigError as exc:
        log.info("speech.letters_for_phonemes", language=language, reason=exc.reason)
        return [_letters(t) for t in texts]


def _letters(text: str) -> list[str]:
    return [c for c in unicodedata.normalize("NFD", text.lower()) if c.isalpha()]


def _base(phone: str) -> str:
    """A phone without diacritics and length marks: ``"uː"`` -> ``"u"``, ``"õ"`` -> ``"o"``."""
    return "".join(c for c in unicodedata.normalize("NFD", phone) if c.isalpha() and c not in "ːˑ")


_IPA_GROUPS = {
    Viseme.A: "pbmɓʙβɸ",
    Viseme.G: "fvʋɱ",
    Viseme.H: "lɫʎɭɬɮ",
    Viseme.F: "uʊwoɥyʏɯ",
    Viseme.E: "ɔɒøœɹrɾʁʀɻɚɝɽɞ",
    Viseme.D: "aɑäɶ",
    Viseme.C: "eɛæɐʌəɜɘɤ",
}
_VISEME_OF_IPA = {c: v for v, chars in _IPA_GROUPS.items() for c in chars}


def ipa_viseme(phone: str) -> Viseme:
    """The viseme of an IPA phoneme (or a letter), by its first sound: ``"aɪ"`` -> D, ``"m"`` -> A."""
    base = _base(phone)
    return _VISEME_OF_IPA.get(base[:1], Viseme.B)


# --------------------------------------------------------------------------------------------------
# Visemes
# --------------------------------------------------------------------------------------------------

_ARPABET = re.compile(r"^[A-Z]{1,2}[012]?$")


def visemes(phones: list[Phone], regions: list[tuple[float, float]], duration: float) -> list[TimedViseme]:
    """Mouth shapes covering [0, duration]: each phone's viseme, X (rest) in pauses of ``REST_GAP`` or
    more and outside speech; equal neighbours merged. Without phones, the speech regions get a
    medium-open C so the mouth still moves with the voice."""
    marks: list[tuple[str, float, float]] = []
    if phones:
        for p in sorted(phones, key=lambda p: p.start):
            shape = viseme_of(p.name) if _ARPABET.match(p.name) else ipa_viseme(p.name)
            marks.append((shape.value, p.start, p.end))
    else:
        marks = [(Viseme.C.value, a, b) for a, b in regions]
    return _fill(marks, duration)


def _fill(marks: list[tuple[str, float, float]], duration: float) -> list[TimedViseme]:
    """Lay marks end to end from 0 to ``duration``: short gaps join the previous shape, long ones rest."""
    spans: list[tuple[str, float, float]] = []
    cursor = 0.0
    for shape, mark_start, mark_end in marks:
        start = max(mark_start, cursor)
        end = min(max(mark_end, start), duration)
        if end <= start:
            continue
        if spans and start - cursor < REST_GAP:
            spans[-1] = (spans[-1][0], spans[-1][1], start)  # a short gap: hold the shape before it
        elif start > cursor:
            spans.append((Viseme.X.value, cursor, start))
        spans.append((shape, start, end))
        cursor = end
    if duration > cursor:
        spans.append((Viseme.X.value, cursor, duration))
    merged: list[TimedViseme] = []
    for shape, start, end in spans:
        if merged and merged[-1].viseme == shape:
            merged[-1].end = _r(end)
        else:
            merged.append(TimedViseme(viseme=shape, start=_r(start), end=_r(end)))
    return merged


# --------------------------------------------------------------------------------------------------
# Words -> a text's tokens
# --------------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    """Comparison form of a token: lower-case letters and digits ("Americans," -> "americans")."""
    return "".join(c for c in unicodedata.normalize("NFKC", text.lower()) if c.isalnum())


def transcript_words(words: list[Word], transcript: str) -> list[Word]:
    """The transcript's tokens (as written), each timed by the ``words`` it corresponds to.

    Tokens are matched to words in order by their letters (``difflib`` on the normalised forms), so it
    works for forced alignment (every token matches) and for recognized words (some do). Tokens without
    a matching word share, by length, the time of the unmatched words between their matched neighbours,
    or, when there are none, take no time at the end of the word before them. Every token is returned.
    """
    tokens = transcript.split()
    if not tokens or not words:
        return []
    matcher = difflib.SequenceMatcher(None, [_norm(t) for t in tokens], [_norm(w.text) for w in words], False)
    timed: list[Word] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            timed.extend(Word(tokens[i1 + k], words[j1 + k].start, words[j1 + k].end) for k in range(i2 - i1))
        elif tag in ("replace", "delete"):
            start, end = _span_of(words, j1, j2)
            timed.extend(_spread(tokens[i1:i2], start, end))
    return timed


def _span_of(words: list[Word], j1: int, j2: int) -> tuple[float, float]:
    """Time of ``words[j1:j2]``; for an empty range, the instant ``words[j1 - 1]`` ends.

    Unspoken tokens ("—", "&") take no time: spreading them over the following pause would hide the
    pause from the cue splitter, so they stick to the end of the word before them.
    """
    if j2 > j1:
        return words[j1].start, words[j2 - 1].end
    at = words[j1 - 1].end if j1 > 0 else words[0].start
    return at, at


def _spread(tokens: list[str], start: float, end: float) -> list[Word]:
    """``tokens`` laid end to end over [start, end], each getting time in proportion to its length."""
    weights = [max(1, len(_norm(t))) for t in tokens]
    total, done, out = sum(weights), 0, []
    for token, weight in zip(tokens, weights, strict=True):
        a = start + (end - start) * done / total
        done += weight
        out.append(Word(token, a, start + (end - start) * done / total))
    return out


def spread_tokens(tokens: list[str], regions: list[tuple[float, float]]) -> list[Word]:
    """Tokens laid over the speech regions by length (no recognizer for this language): rough, but the
    words fall inside speech and in order."""
    total = sum(b - a for a, b in regions)
    if not tokens or total <= 0:
        return []
    weights = [max(1, len(_norm(t))) for t in tokens]
    per_unit = total / sum(weights)
    out: list[Word] = []
    region, used = 0, 0.0
    for token, weight in zip(tokens, weights, strict=True):
        need, start = weight * per_unit, None
        while need > 1e-9 and region < len(regions):
            a, b = regions[region]
            take = min(need, b - a - used)
            start = a + used if start is None else start
            used, need = used + take, need - take
            end = a + used
            if b - a - used <= 1e-9:
                region, used = region + 1, 0.0
        out.append(Word(token, start if start is not None else regions[-1][1], end))
    return out


# --------------------------------------------------------------------------------------------------
# The artifact
# --------------------------------------------------------------------------------------------------


def speech_cache_key(
    audio_sha256: str,
    transcript: str | None,
    language: str | None,
    recognizer: str,
    display: str | None = None,
) -> str:
    """``cache/speech/<sha256>.json``: one timing per clip, text, language and recognizer."""
    parts = [f"v{TIMING_VERSION}", audio_sha256, transcript or "", language or "", recognizer, display or ""]
    return f"cache/speech/{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()}.json"


def speech_artifact(
    ctx: StageContext,
    audio: ArtifactRef,
    *,
    transcript: str | None = None,
    language: str | None = None,
    display: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> ArtifactRef:
    """The ``speech`` artifact of a voice clip: reused from ``cache/speech/`` or built once and stored.

    The recognizer in use (Whisper model or pocketsphinx) is part of the key, so changing it re-times.
    ``progress`` gets the share done (0..1) as it goes (default: the stage's last tenth, ``ctx.progress``)
    and may raise to stop the work."""
    key = speech_cache_key(audio.sha256, transcript, language, recognizer_name(ctx.settings), display)
    cached = ctx.cached(key, "application/json")
    if cached is not None:  # found without loading any model
        ctx.log.info("speech_timing_reused", key=key)
        return cached
    whisper = whisper_model(ctx.settings, ctx.models)
    ctx.models.get(DECODERS, warm_decoders)  # loaded again if released since the worker's start
    if whisper is None and recognizer_name(ctx.settings) != "pocketsphinx":  # Whisper failed to load
        key = speech_cache_key(audio.sha256, transcript, language, "pocketsphinx", display)
    from pipeline.media import load_audio

    samples = load_audio(ctx.fetch(audio, "speech-timing.wav"))
    timing = build_timing(
        samples, transcript=transcript, language=language, whisper=whisper, display=display,
        progress=progress or (lambda share: ctx.progress(0.9 + 0.1 * share, "timing the speech")),
    )  # fmt: skip
    ctx.log.info(
        "speech_timed", source=timing.source, language=timing.language, words=len(timing.words),
        phones=len(timing.phones), regions=len(timing.speech),
    )  # fmt: skip
    return ctx.save_model(timing, "speech.json", key=key)


def job_speech_timing(
    ctx: StageContext,
    spec: JobSpec,
    audio: ArtifactRef,
    synthesis: Synthesis | None = None,
    progress: Callable[[float], None] | None = None,
) -> ArtifactRef:
    """The ``speech`` artifact of a job's voice: timed by its transcript and language options, or, for
    synthesized speech, by exactly what was spoken (shown as the job's text, e.g. digits and ``@names``).
    ``progress`` as in ``speech_artifact``."""
    if synthesis is not None:
        return speech_artifact(
            ctx, audio, transcript=synthesis.spoken, language=synthesis.language,
            display=display_text(spec.speech or ""), progress=progress,
        )  # fmt: skip
    return speech_artifact(
        ctx, audio, transcript=spec.options.transcript, language=spec.options.language, progress=progress
    )


def read_timing(
    ctx: StageContext, manifest: Manifest, transcript: str | None, language: str | None
) -> SpeechTiming:
    """The task's ``speech`` artifact; for a manifest made before validate wrote one, it is made now
    (once: it lands in the same cache)."""
    ref = manifest.artifacts.get("speech")
    if ref is None:
        ctx.log.warning("speech_timing_missing", made_by=ctx.stage)
        ref = speech_artifact(ctx, manifest.artifacts["audio"], transcript=transcript, language=language)
    return ctx.load(ref, SpeechTiming)
