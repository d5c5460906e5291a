"""Subtitles: timed words → cues (broadcast-style line breaking) → SRT and WebVTT text.

Pure functions, plus ``subtitle_words`` which finds the timed words of a clip: forced alignment of the
job's transcript (``stages.speech``), else speech recognition — faster-whisper when
``settings.asr_model`` names a model directory, else pocketsphinx.

Cue rules (the usual broadcast ones): at most two lines of at most ``max_chars`` characters, at most
``max_seconds`` on screen, a new cue after a pause longer than ``max_gap`` or a sentence end, and
overlong cues split after a comma or other clause punctuation where one is near. When a transcript is
given, the cue text is the transcript's own tokens (capitalisation, punctuation, and tokens that are not
spoken such as "—"), timed by the aligned or recognized words they correspond to.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import ConfigError
from stages.speech import Word

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.stage import ModelCache

SENTENCE_END = (".", "?", "!", "…", '."', '?"', '!"', ".'", "?'", "!'", ".)", "?)", "!)")
CLAUSE_END = (",", ";", ":", "—", "–", ",'", ',"')
MIN_SECONDS = 0.8
"""Shortest time a cue stays on screen (readability), as far as the next cue allows."""
ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "jr.", "sr."})
"""Tokens ending in "." that do not end a sentence."""
CUE_SPACING = 0.04
"""Gap kept between consecutive cues (about a frame), so players never show two at once."""


@dataclass(frozen=True)
class Cue:
    """One subtitle: shown from ``start`` to ``end`` seconds; ``text`` has one or two lines ("\\n")."""

    start: float
    end: float
    text: str


# --------------------------------------------------------------------------------------------------
# Words → transcript tokens
# --------------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    """Comparison form of a token: lower-case letters and digits only ("Americans," → "americans")."""
    return re.sub(r"[^0-9a-z]", "", text.lower().replace("\u2019", "'"))


def transcript_words(words: list[Word], transcript: str) -> list[Word]:
    """The transcript's tokens (as written), each timed by the ``words`` it corresponds to.

    Tokens are matched to words in order by their letters (``difflib`` on the normalised forms), so it
    works for forced alignment (every token matches) and for recognized words (some do). Tokens without
    a matching word share, by length, the time of the unmatched words between their matched neighbours,
    or, when there are none, take no time at the end of the word before them. Every token of the transcript is returned, in order.
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


# --------------------------------------------------------------------------------------------------
# Words → cues
# --------------------------------------------------------------------------------------------------


def break_lines(words: list[str], max_chars: int = 42) -> list[str] | None:
    """The words as one line, or two lines of at most ``max_chars``; None if they need more.

    Two lines break after clause punctuation when that keeps both lines within the limit, otherwise where
    the lines are most even, the top one no longer than the bottom one when it is a tie (a "pyramid").
    A single word longer than ``max_chars`` is returned as it is (there is no better place for it).
    """
    text = " ".join(words)
    if len(text) <= max_chars or len(words) == 1:
        return [text]
    best: tuple[float, int] | None = None
    for k in range(1, len(words)):
        top, bottom = " ".join(words[:k]), " ".join(words[k:])
        if len(top) > max_chars or len(bottom) > max_chars:
            continue
        score = abs(len(top) - len(bottom)) + (0.5 if len(top) > len(bottom) else 0.0)
        if words[k - 1].endswith(SENTENCE_END + CLAUSE_END):
            score -= max_chars / 3  # a clause break reads better unless the lines get very uneven
        if best is None or score < best[0]:
            best = (score, k)
    if best is None:
        return None
    return [" ".join(words[: best[1]]), " ".join(words[best[1] :])]


def cues_from_words(
    words: list[Word],
    max_chars: int = 42,
    max_seconds: float = 5.0,
    max_gap: float = 0.6,
    *,
    limit: float | None = None,
) -> list[Cue]:
    """Group timed words into cues of ≤ 2 lines × ``max_chars`` and ≤ ``max_seconds``.

    A cue ends at a pause longer than ``max_gap``, after a sentence end, or when the next word would not
    fit; a cue that overflows is cut after its last clause punctuation when that keeps at least 40 % of
    its text together. Cues stay on screen at least ``MIN_SECONDS`` where the next cue (and ``limit``,
    the end of the audio) allows, never overlap, and keep the words' order.
    """
    groups: list[list[Word]] = []
    current: list[Word] = []
    for word in (w for w in words if w.text.strip()):
        if current and _ends_cue(current, word, max_gap):
            groups.append(current)
            current = []
        current.append(word)
        while len(current) > 1 and not _fits(current, max_chars, max_seconds):
            cut = _cut_point(current[:-1])
            groups.append(current[:cut])
            current = current[cut:]
    if current:
        groups.append(current)
    return _timed_cues(groups, max_chars, limit)


def _ends_cue(current: list[Word], word: Word, max_gap: float) -> bool:
    """Whether ``word`` starts a new cue no matter how much room is left: a pause or a sentence end."""
    return word.start - current[-1].end > max_gap or _sentence_end(current[-1].text)


def _sentence_end(token: str) -> bool:
    return token.endswith(SENTENCE_END) and token.lower() not in ABBREVIATIONS


def _fits(group: list[Word], max_chars: int, max_seconds: float) -> bool:
    duration_ok = group[-1].end - group[0].start <= max_seconds
    return duration_ok and break_lines([w.text for w in group], max_chars) is not None


def _cut_point(group: list[Word]) -> int:
    """Where to end a full cue of ``group`` (index of the first word of the next cue).

    After the last clause punctuation if the part before it holds ≥ 40 % of the characters, else after
    the whole group (the word that did not fit starts the next cue).
    """
    total = sum(len(w.text) + 1 for w in group)
    chars = 0
    best = len(group)
    for k, word in enumerate(group[:-1], start=1):
        chars += len(word.text) + 1
        if word.text.endswith(SENTENCE_END + CLAUSE_END) and chars >= 0.4 * total:
            best = k
    return best


def _timed_cues(groups: list[list[Word]], max_chars: int, limit: float | None) -> list[Cue]:
    """Cues for word groups, lengthened to ``MIN_SECONDS`` where the next cue leaves room."""
    cues: list[Cue] = []
    for n, group in enumerate(groups):
        start = max(0.0, group[0].start)
        next_start = groups[n + 1][0].start - CUE_SPACING if n + 1 < len(groups) else float("inf")
        ceiling = min(next_start, limit if limit is not None else float("inf"))
        end = max(start, min(max(group[-1].end, start + MIN_SECONDS), ceiling))
        if limit is not None:
            start, end = min(start, limit), min(end, limit)
        lines = break_lines([w.text for w in group], max_chars) or [" ".join(w.text for w in group)]
        cues.append(Cue(round(start, 3), round(end, 3), "\n".join(lines)))
    return cues


# --------------------------------------------------------------------------------------------------
# SRT and WebVTT
# --------------------------------------------------------------------------------------------------


def _clock(seconds: float, separator: str) -> str:
    """``HH:MM:SS<sep>mmm`` (SRT uses ",", WebVTT ".")."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _clean_lines(text: str) -> list[str]:
    """Non-empty lines of a cue's text: an empty line would end the cue early in both formats."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def to_srt(cues: list[Cue]) -> str:
    """SubRip text: numbered blocks ``n``, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text lines, blank line."""
    blocks = []
    for n, cue in enumerate(cues, start=1):
        lines = "\n".join(_clean_lines(cue.text))
        blocks.append(f"{n}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{lines}\n")
    return "\n".join(blocks)


def _vtt_escape(line: str) -> str:
    """WebVTT cue text treats ``&`` and ``<`` as markup; ``>`` is escaped too so "-->" cannot appear."""
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(cues: list[Cue]) -> str:
    """WebVTT text: the ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` and text per cue."""
    blocks = ["WEBVTT\n"]
    for cue in cues:
        lines = "\n".join(_vtt_escape(line) for line in _clean_lines(cue.text))
        blocks.append(f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{lines}\n")
    return "\n".join(blocks)


# --------------------------------------------------------------------------------------------------
# Timed words of a clip
# --------------------------------------------------------------------------------------------------


def subtitle_words(
    audio_16k: np.ndarray, transcript: str | None, settings: Settings, models: ModelCache | None = None
) -> tuple[list[Word], str]:
    """Timed words for subtitles and how they were found: ``forced``, ``recognized`` or ``whisper``.

    With a transcript: forced alignment (``stages.speech``; it falls back to recognition when the text
    does not align), the result mapped onto the transcript's tokens. Without one: faster-whisper when
    ``settings.asr_model`` is set (``ConfigError`` if the package or the model is missing), else
    pocketsphinx recognition. No speech found gives no words.
    """
    from stages.speech import speech_timing

    if transcript and transcript.strip():
        alignment = speech_timing(audio_16k, transcript)
        if alignment is None or not alignment.words:
            return [], "forced"
        return transcript_words(alignment.words, transcript), alignment.method
    if settings.asr_model is not None:
        return whisper_words(audio_16k, settings, models), "whisper"
    alignment = speech_timing(audio_16k, None)
    return (list(alignment.words) if alignment is not None else []), "recognized"


def whisper_words(audio_16k: np.ndarray, settings: Settings, models: ModelCache | None = None) -> list[Word]:
    """Words recognized by faster-whisper (with its punctuation and capitals) and their timestamps."""
    model = whisper_model(settings, models)
    segments, _info = model.transcribe(np.asarray(audio_16k, dtype=np.float32), word_timestamps=True)
    return [
        Word(w.word.strip(), float(w.start), float(w.end))
        for segment in segments
        for w in (segment.words or [])
        if w.word.strip()
    ]


def whisper_model(settings: Settings, models: ModelCache | None = None) -> Any:
    """The faster-whisper model of ``settings.asr_model``, loaded once per worker when ``models`` is given."""
    model_dir = settings.asr_model
    if model_dir is None:
        raise ConfigError("faster-whisper needs settings.asr_model (a model directory)")

    def load() -> Any:
        return load_whisper(model_dir, settings.device)

    return load() if models is None else models.get(f"whisper:{model_dir}", load)


def load_whisper(model_dir: Path, device: str = "auto") -> Any:
    """A faster-whisper model from a local CTranslate2 model directory (never downloads).

    ``ConfigError`` when the package is not installed or the directory does not exist.
    """
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise ConfigError(
            f"asr_model is set ({model_dir}) but faster-whisper is not installed: "
            "pip install faster-whisper, or unset MOUTHPIECE_ASR_MODEL to use pocketsphinx"
        ) from None
    if not Path(model_dir).is_dir():
        raise ConfigError(f"asr_model {model_dir} is not a directory (a faster-whisper/CTranslate2 model)")
    # "auto": the fastest type the device supports (int8 on a CPU, float16 on most GPUs)
    return WhisperModel(str(model_dir), device=device, compute_type="auto", local_files_only=True)
