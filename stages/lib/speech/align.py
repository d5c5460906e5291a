"""Speech timing with pocketsphinx: word and phone timings for lip shapes and subtitles.

Three entry points, all on mono float32 audio in [-1, 1] at 16 kHz, all times in seconds:

- ``align(audio, transcript)``: forced alignment of a known text (method ``"forced"``).
- ``recognize(audio)``: free recognition with word and phone timings (method ``"recognized"``).
  Slow: about real time on a 2-core CPU.
- ``recognize_phones(audio)``: phone-loop recognition, phones only (``words`` empty), about 10× faster
  than ``recognize``; what a lip-sync renderer needs when there is no transcript.

``speech_timing(audio, transcript)`` tries them in order and returns None when nothing usable comes
out. ``align`` and the recognizers raise ``AlignmentError`` when pocketsphinx cannot produce a result.

pocketsphinx decoders take about half a second to build, so each thread keeps its own (they are not
thread-safe) and reuses it. Per FACTS.md, alignments are iterated directly: materialising
``get_alignment()`` with ``list()`` crashed the process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, Literal

import numpy as np
import structlog

from pipeline.errors import AlignmentError
from pipeline.media import AUDIO_RATE
from pipeline.stage import HeldOutside

log = structlog.get_logger("mouthpiece.speech")

SAMPLE_RATE = AUDIO_RATE  # the one rate of normalized voices: pipeline.media.AUDIO_RATE
FRAME_RATE = 100
"""pocketsphinx frames per second (its default ``-frate``)."""

MAX_CHUNK_SECONDS = 20.0
"""Recognition decodes speech in chunks of at most this length, cut in pauses, so cost stays linear."""


@dataclass(frozen=True)
class Word:
    """A word and when it is spoken. ``text`` is the transcript token as written (forced alignment) or
    the recognized dictionary word in lower case (recognition)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Phone:
    """An ARPAbet phone without stress digit (``"AA"``, ``"M"``, ...). Silence is not listed."""

    name: str
    start: float
    end: float


class Viseme(StrEnum):
    """Mouth shapes, Rhubarb Lip Sync's letters: A closed (M B P), B slightly open (most consonants),
    C open, D wide open, E slightly rounded, F puckered, G F/V, H L, X rest (silence)."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    X = "X"


VISEME_GROUPS: dict[Viseme, str] = {
    Viseme.A: "M B P",
    Viseme.B: "K G NG S Z T D N TH DH Y IY IH HH JH CH SH ZH",
    Viseme.C: "EH AE AH EY",
    Viseme.D: "AA AY AW",
    Viseme.E: "AO ER R OY",
    Viseme.F: "UW UH OW W",
    Viseme.G: "F V",
    Viseme.H: "L",
}
VISEME_OF_PHONE: dict[str, Viseme] = {p: v for v, phones in VISEME_GROUPS.items() for p in phones.split()}
"""ARPAbet phone -> viseme; phones not listed (noise) count as B."""

CLOSED_PHONES = frozenset(VISEME_GROUPS[Viseme.A].split())
"""ARPAbet phones with the lips shut."""


def viseme_of(phone: str) -> Viseme:
    """The viseme of an ARPAbet phone (stress digits ignored)."""
    return VISEME_OF_PHONE.get(phone.rstrip("012").upper(), Viseme.B)


@dataclass
class Alignment:
    """Word and phone timings of one clip, each list sorted by start time."""

    words: list[Word] = field(default_factory=list)
    phones: list[Phone] = field(default_factory=list)
    method: Literal["forced", "recognized"] = "forced"

    @property
    def empty(self) -> bool:
        return not self.words and not self.phones


# --------------------------------------------------------------------------------------------------
# Decoders (lent one caller at a time, kept for the next)
# --------------------------------------------------------------------------------------------------

_spare: dict[str, queue.SimpleQueue[Any]] = {"words": queue.SimpleQueue(), "phones": queue.SimpleQueue()}
"""Decoders not lent out, by kind. Loading one takes about half a second (the words kind reads the
dictionary and the language model), so they are kept for the process; a pocketsphinx decoder is not
thread-safe, so each is used by one caller at a time."""


def _model_dir() -> str:
    from pocketsphinx import get_model_path

    return os.path.join(get_model_path(), "en-us")


def _new_decoder(kind: Literal["words", "phones"]) -> Any:
    """A decoder: ``words`` has the dictionary and LM, ``phones`` is a phone loop."""
    from pocketsphinx import Decoder

    if kind == "words":
        return Decoder(loglevel="FATAL")
    phone_lm = os.path.join(_model_dir(), "en-us-phone.lm.bin")
    return Decoder(loglevel="FATAL", allphone=phone_lm, lw=2.0, beam=1e-20, pbeam=1e-20)


@contextlib.contextmanager
def _decoder(kind: Literal["words", "phones"]) -> Iterator[Any]:
    """A decoder of ``kind``, the caller's alone for the block: a spare one, else a new one; kept for
    the next caller afterwards (each use starts its own utterance, so a failed one leaves nothing behind)."""
    try:
        decoder = _spare[kind].get_nowait()
    except queue.Empty:
        decoder = _new_decoder(kind)
    try:
        yield decoder
    finally:
        _spare[kind].put(decoder)


class SpareDecoders(HeldOutside):
    """The process's spare decoders as a model of the stage's ``ModelCache`` (``warm_decoders`` makes
    it): when the cache releases it, the spare ones are let go (a decoder lent out then comes back to
    the pool as usual)."""

    def let_go(self) -> None:
        for spare in _spare.values():
            with contextlib.suppress(queue.Empty):
                while True:
                    spare.get_nowait()


def warm_decoders() -> SpareDecoders:
    """Load one decoder of each kind now (a worker's start, or a job after ``release``), not when the
    speech is aligned; kept in the stage's model cache as ``DECODERS``."""
    for kind in ("words", "phones"):
        if _spare[kind].empty():
            _spare[kind].put(_new_decoder(kind))
    return SpareDecoders()


DECODERS = "pocketsphinx:decoders"
"""The name of the spare decoders in a ``ModelCache`` (``models.get(DECODERS, warm_decoders)``)."""


def _pcm(audio: np.ndarray) -> bytes:
    """16-bit little-endian PCM bytes of float samples in [-1, 1]."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def _check_audio(audio: np.ndarray) -> np.ndarray:
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {audio.shape}")
    return np.asarray(audio, dtype=np.float32)


def _decode(decoder: Any, pcm: bytes) -> None:
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


# --------------------------------------------------------------------------------------------------
# Transcript normalisation
# --------------------------------------------------------------------------------------------------

# fmt: off
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
# fmt: on


def number_words(n: int) -> list[str]:
    """English words for a number read as a quantity (1961 -> one thousand nine hundred sixty one);
    numbers of 10**12 and more are read digit by digit."""
    if n >= 10**12:
        return [_ONES[int(d)] for d in str(n)]
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + (number_words(n % 10) if n % 10 else [])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = number_words(n % size) if n % size else []
            return [*number_words(n // size), name, *rest]
    raise AssertionError("unreachable")


def transcript_tokens(transcript: str) -> list[tuple[str, list[str]]]:
    """Split a transcript into (token as written, its normalised words) pairs.

    Normalised words are lower case letters and apostrophes; digits become number words; hyphens and
    slashes separate words; tokens with nothing speakable (``"—"``) get no words.
    """
    pairs: list[tuple[str, list[str]]] = []
    for token in transcript.split():
        text = token.replace("\u2019", "'").lower()
        words: list[str] = []
        for part in re.findall(r"[a-z']+|[0-9]+", text):
            if part.isdigit():
                words.extend(number_words(int(part)))
            elif part.strip("'"):
                words.append(part.strip("'"))
        pairs.append((token, words))
    return pairs


_G2P_RULES = [
    ("tion", "SH AH N"), ("sion", "ZH AH N"), ("tch", "CH"), ("igh", "AY"), ("ch", "CH"),
    ("sh", "SH"), ("th", "TH"), ("ph", "F"), ("ng", "NG"), ("ck", "K"), ("qu", "K W"), ("wh", "W"),
    ("ee", "IY"), ("ea", "IY"), ("oo", "UW"), ("ou", "AW"), ("ow", "OW"), ("ai", "EY"), ("ay", "EY"),
    ("oi", "OY"), ("oy", "OY"), ("au", "AO"), ("aw", "AO"), ("a", "AE"), ("e", "EH"), ("i", "IH"),
    ("o", "AA"), ("u", "AH"), ("y", "IY"), ("b", "B"), ("c", "K"), ("d", "D"), ("f", "F"), ("g", "G"),
    ("h", "HH"), ("j", "JH"), ("k", "K"), ("l", "L"), ("m", "M"), ("n", "N"), ("p", "P"), ("q", "K"),
    ("r", "R"), ("s", "S"), ("t", "T"), ("v", "V"), ("w", "W"), ("x", "K S"), ("z", "Z"),
]  # fmt: skip


def guess_pronunciation(word: str) -> str:
    """A rough ARPAbet pronunciation by greedy spelling rules, for words missing from the dictionary.

    Timing only needs about the right phones in about the right number, not a correct reading.
    """
    letters = re.sub(r"[^a-z]", "", word.lower())
    if len(letters) > 3 and letters.endswith("e") and not letters.endswith("ee"):
        letters = letters[:-1]  # silent final e
    phones: list[str] = []
    i = 0
    while i < len(letters):
        for graph, sound in _G2P_RULES:
            if letters.startswith(graph, i):
                if not phones or phones[-1] != sound.split()[0] or len(graph) > 1:
                    phones.extend(sound.split())  # a doubled consonant ("ll") is one sound
                i += len(graph)
                break
    return " ".join(phones)


def _dictionary_word(decoder: Any, word: str) -> str | None:
    """``word`` ready for alignment: in the dictionary, or added with a guessed pronunciation."""
    if decoder.lookup_word(word) is not None:
        return word
    phones = guess_pronunciation(word)
    if not phones:
        return None
    try:
        decoder.add_word(word, phones, True)
    except (RuntimeError, ValueError):
        log.warning("speech.word_skipped", word=word)
        return None
    return word


# --------------------------------------------------------------------------------------------------
# Reading pocketsphinx results
# --------------------------------------------------------------------------------------------------


def _base_word(name: str) -> str:
    """``"for(2)"`` -> ``"for"`` (pronunciation variants)."""
    return re.sub(r"\(\d+\)$", "", name)


def _is_filler(name: str) -> bool:
    return name.startswith(("<", "[", "+")) or name in ("SIL", "")


def _read_alignment(decoder: Any, offset: float) -> tuple[list[tuple[str, float, float]], list[Phone]]:
    """Words (dictionary name, start, end) and phones of the decoder's sub-word alignment."""
    words: list[tuple[str, float, float]] = []
    phones: list[Phone] = []
    alignment = decoder.get_alignment()
    if alignment is None:
        raise AlignmentError("no sub-word alignment")
    for entry in alignment:  # iterate directly; list(alignment) segfaults
        name = str(entry.name)
        if not _is_filler(name):
            start = offset + entry.start / FRAME_RATE
            words.append((_base_word(name), start, start + entry.duration / FRAME_RATE))
        for ph in entry:
            if not _is_filler(str(ph.name)):
                start = offset + ph.start / FRAME_RATE
                phones.append(Phone(str(ph.name), start, start + ph.duration / FRAME_RATE))
    return words, phones


def _align_words(decoder: Any, pcm: bytes, words: list[str], offset: float) -> Any:
    """Run both alignment passes of ``words`` on ``pcm``; returns what ``_read_alignment`` returns."""
    try:
        decoder.set_align_text(" ".join(words))
        _decode(decoder, pcm)
        decoder.set_alignment()
        _decode(decoder, pcm)
        return _read_alignment(decoder, offset)
    except RuntimeError as exc:
        raise AlignmentError(f"alignment failed: {exc}") from exc
    finally:
        decoder.activate_search()  # back to the default (LM) search for recognition


# --------------------------------------------------------------------------------------------------
# Forced alignment
# --------------------------------------------------------------------------------------------------


def align(audio_16k: np.ndarray, transcript: str) -> Alignment:
    """Forced alignment of ``transcript`` to the audio (method ``"forced"``).

    The text is normalised (lower case, punctuation dropped, numbers spelled out); words missing from
    the dictionary get a guessed pronunciation, and words that cannot be pronounced are skipped.
    ``Word.text`` is the transcript token as written (one Word per token that has speakable words).
    Raises ``AlignmentError`` when the text is empty or pocketsphinx cannot align it to the audio.
    """
    audio = _check_audio(audio_16k)
    tokens = transcript_tokens(transcript)
    with _decoder("words") as decoder:
        sequence = [
            (w, i)
            for i, (_, ws) in enumerate(tokens)
            for word in ws
            if (w := _dictionary_word(decoder, word))
        ]
        if not sequence:
            raise AlignmentError("the transcript has no words to align")
        timed, phones = _align_words(decoder, _pcm(audio), [w for w, _ in sequence], 0.0)
    if len(timed) != len(sequence):
        raise AlignmentError(f"aligned {len(timed)} words of {len(sequence)}")
    return Alignment(_token_words(tokens, [i for _, i in sequence], timed), phones, "forced")


def _token_words(
    tokens: list[tuple[str, list[str]]], owners: list[int], timed: list[tuple[str, float, float]]
) -> list[Word]:
    """One Word per transcript token, spanning the aligned dictionary words it was spelled into."""
    spans: dict[int, tuple[float, float]] = {}
    for owner, (_, start, end) in zip(owners, timed, strict=True):
        first = spans.get(owner, (start, end))[0]
        spans[owner] = (first, end)
    return [Word(tokens[i][0], start, end) for i, (start, end) in sorted(spans.items())]


# --------------------------------------------------------------------------------------------------
# Recognition
# --------------------------------------------------------------------------------------------------


def speech_chunks(audio: np.ndarray, max_seconds: float = MAX_CHUNK_SECONDS) -> list[tuple[int, int]]:
    """Sample ranges that hold speech, by loudness, padded, merged and cut to ``max_seconds``.

    Silence gives no chunks. Chunks longer than ``max_seconds`` are cut at their quietest 20 ms.
    """
    hop = SAMPLE_RATE // 50
    n = len(audio) // hop
    if n == 0:
        return []
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    threshold = max(float(np.percentile(db, 95)) - 35.0, -50.0)
    voiced = np.flatnonzero(db > threshold)
    if voiced.size == 0:
        return []
    pad, gap = 12, 25  # frames: 0.24 s of context, pauses under 0.5 s do not split
    segments: list[list[int]] = []
    for f in voiced:
        if segments and f - segments[-1][1] <= gap:
            segments[-1][1] = int(f)
        else:
            segments.append([int(f), int(f)])
    ranges = [(max(0, a - pad), min(n, b + 1 + pad)) for a, b in segments]
    return [(a * hop, b * hop) for a, b in _pack(ranges, db, int(max_seconds * 50))]


def _pack(ranges: list[tuple[int, int]], db: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Merge neighbouring ranges up to ``limit`` frames; cut longer ones at their quietest frame."""
    start, end = ranges[0]
    for a, b in [*ranges[1:], (-1, -1)]:
        if a >= 0 and b - start <= limit:
            end = b
            continue
        while end - start > limit:
            window = db[start + limit // 2 : start + limit]
            cut = start + limit // 2 + int(np.argmin(window))
            yield start, cut
            start = cut
        yield start, end
        start, end = a, b


def recognize(audio_16k: np.ndarray) -> Alignment:
    """Free recognition (method ``"recognized"``): words from the language model, and their phones by
    aligning the recognized words. Silence gives an empty Alignment. About real time on 2 cores.
    Raises ``AlignmentError`` when decoding fails."""
    audio = _check_audio(audio_16k)
    result = Alignment(method="recognized")
    with _decoder("words") as decoder:
        for a, b in speech_chunks(audio):
            pcm, offset = _pcm(audio[a:b]), a / SAMPLE_RATE
            searched = _search_words(decoder, pcm, offset)
            if not searched:
                continue
            try:  # aligning the recognized words gives their phones and finer word times
                timed, phones = _align_words(decoder, pcm, [w for w, _, _ in searched], offset)
            except AlignmentError:
                timed, phones = searched, []
            result.words.extend(Word(w, start, end) for w, start, end in timed)
            result.phones.extend(phones)
    return result


def _search_words(decoder: Any, pcm: bytes, offset: float) -> list[tuple[str, float, float]]:
    """The language-model search's words (dictionary name, start, end) in one chunk."""
    try:
        _decode(decoder, pcm)
        segments = [(str(s.word), s.start_frame, s.end_frame) for s in decoder.seg()]
    except RuntimeError as exc:
        raise AlignmentError(f"recognition failed: {exc}") from exc
    return [
        (_base_word(w), offset + start / FRAME_RATE, offset + (end + 1) / FRAME_RATE)
        for w, start, end in segments
        if not _is_filler(w)
    ]


def recognize_phones(audio_16k: np.ndarray) -> Alignment:
    """Phone-loop recognition: phones with timings and no words (method ``"recognized"``).

    Much faster than ``recognize`` and enough to time mouth shapes. Silence gives an empty Alignment.
    Raises ``AlignmentError`` when decoding fails.
    """
    audio = _check_audio(audio_16k)
    phones: list[Phone] = []
    with _decoder("phones") as decoder:
        for a, b in speech_chunks(audio):
            offset = a / SAMPLE_RATE
            try:
                _decode(decoder, _pcm(audio[a:b]))
                segs = [(str(s.word), s.start_frame, s.end_frame) for s in decoder.seg()]
            except RuntimeError as exc:
                raise AlignmentError(f"phone recognition failed: {exc}") from exc
            phones.extend(
                Phone(name, offset + s / FRAME_RATE, offset + (e + 1) / FRAME_RATE)
                for name, s, e in segs
                if not _is_filler(name)
            )
    return Alignment([], phones, "recognized")


def speech_timing(
    audio_16k: np.ndarray, transcript: str | None = None, *, words: bool = True
) -> Alignment | None:
    """The best timing available: forced alignment when there is a transcript, recognition when there is
    none or alignment fails; None when neither yields anything (silence, noise, decoder failure).

    ``words=False`` says only phones are needed: recognition then uses the fast phone loop
    (``recognize_phones``), whose Alignment has no words.
    """
    attempts: list[tuple[str, Callable[[], Alignment]]] = []
    if transcript and transcript.strip():
        attempts.append(("align", partial(align, audio_16k, transcript)))
    if words:
        attempts.append(("recognize", partial(recognize, audio_16k)))
    else:
        attempts.append(("recognize_phones", partial(recognize_phones, audio_16k)))
    for method, attempt in attempts:
        started = time.perf_counter()
        try:
            result = attempt()
        except AlignmentError as exc:
            log.info("speech.attempt_failed", method=method, reason=str(exc))
            continue
        seconds = round(time.perf_counter() - started, 3)
        log.info(
            "speech.timed", method=method, words=len(result.words), phones=len(result.phones), seconds=seconds
        )
        if not result.empty:
            return result
    return None
