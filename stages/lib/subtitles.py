"""Subtitles: timed words → cues people can read → SRT and WebVTT text. Pure functions.

The words come from the task's speech timing (``stages.lib.speech.timing``: the transcript aligned, or what
Whisper heard, in the spoken language); nothing here listens to audio.

Cue rules (the usual broadcast ones): at most two lines of at most ``max_chars`` characters (42; about
half for scripts written without spaces), at most ``max_seconds`` on screen, at most ``MAX_CPS``
characters a second where the pauses around it leave time, a new cue after a pause longer than
``max_gap`` or a sentence end, an overlong cue split at the best phrase boundary (sentence or clause
punctuation, a pause, before a conjunction) that keeps its parts balanced, and never on screen for more
than ``LINGER`` seconds of a silence.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.lib.speech.align import Word

SENTENCE_END = (".", "?", "!", "…", '."', '?"', '!"', ".'", "?'", "!'", ".)", "?)", "!)", "。", "？", "！")
CLAUSE_END = (",", ";", ":", "—", "–", ",'", ',"', "，", "、", "；", "：")
MIN_SECONDS = 0.8
"""Shortest time a cue stays on screen (readability), as far as the next cue and the silence allow."""
MAX_CPS = 20.0
"""Reading speed: a cue stays at least its characters / MAX_CPS seconds where the pauses allow."""
LINGER = 0.7
"""Longest time a cue stays after its last word: subtitles are not shown over a long silence."""
ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "jr.", "sr."})
"""Tokens ending in "." that do not end a sentence."""
CUE_SPACING = 0.04
"""Gap kept between consecutive cues (about a frame), so players never show two at once."""


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


PHRASE_STARTS = _word_set(
    "and but or so because that which who whom whose when while where if then than although though "
    "unless until since as after before y pero o que porque cuando und aber oder dass weil wenn et mais "
    "ou parce quand e ma perché quando"
)
"""Words a clause often starts with (English, Spanish, German, French, Italian): a cut before them reads
better than one in the middle of a phrase."""
PREPOSITIONS = _word_set(
    "at in on for with to from by about into over under during after before of "
    "en con para por de a mit für von zu bei dans avec pour sur par di con per su"
)
"""Words a prepositional phrase starts with: a weaker place to cut, still better than mid-phrase."""
ARTICLES = _word_set("the a an el la los las un una der die das ein eine le les une il lo gli")
DANGLING = PHRASE_STARTS | PREPOSITIONS | ARTICLES
"""Words a subtitle line should not end with: they belong to the words after them."""


@dataclass(frozen=True)
class Cue:
    """One subtitle: shown from ``start`` to ``end`` seconds; ``text`` has one or two lines ("\\n")."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class CueRules:
    """Limits of one cue: characters per line, seconds on screen, the pause that always ends a cue, and
    how words are joined (a space, or nothing for scripts written without spaces)."""

    max_chars: int = 42
    max_seconds: float = 6.0
    max_gap: float = 0.6
    joiner: str = " "


# --------------------------------------------------------------------------------------------------
# Words → cues
# --------------------------------------------------------------------------------------------------


def break_lines(words: list[str], max_chars: int = 42, joiner: str = " ") -> list[str] | None:
    """The words as one line, or two lines of at most ``max_chars``; None if they need more.

    Two lines break after clause punctuation when that keeps both lines within the limit, otherwise where
    the lines are most even, the top one no longer than the bottom one when it is a tie (a "pyramid"),
    and preferably not after an article, preposition or conjunction.
    A single word longer than ``max_chars`` is returned as it is (there is no better place for it).
    """
    text = joiner.join(words)
    if len(text) <= max_chars or len(words) == 1:
        return [text]
    best: tuple[float, int] | None = None
    for k in range(1, len(words)):
        top, bottom = joiner.join(words[:k]), joiner.join(words[k:])
        if len(top) > max_chars or len(bottom) > max_chars:
            continue
        score = abs(len(top) - len(bottom)) + (0.5 if len(top) > len(bottom) else 0.0)
        if words[k - 1].endswith(SENTENCE_END + CLAUSE_END):
            score -= max_chars / 3  # a clause break reads better unless the lines get very uneven
        elif words[k - 1].lower() in DANGLING:
            score += max_chars / 4  # "... at the" / "meeting" splits a phrase across the lines
        if best is None or score < best[0]:
            best = (score, k)
    if best is None:
        return None
    return [joiner.join(words[: best[1]]), joiner.join(words[best[1] :])]


def cues_from_words(
    words: list[Word], rules: CueRules | None = None, *, limit: float | None = None
) -> list[Cue]:
    """Group timed words into cues that follow ``rules`` (see the module docstring).

    ``limit`` is the end of the audio: no cue passes it. Cues never overlap and keep the words' order.
    """
    rules = rules or CueRules()
    groups: list[list[Word]] = []
    current: list[Word] = []
    for word in (w for w in words if w.text.strip()):
        if current and _ends_cue(current, word, rules.max_gap):
            groups.append(current)
            current = []
        current.append(word)
        while len(current) > 1 and not _fits(current, rules):
            cut = _cut_point(current[:-1], rules.joiner)
            groups.append(current[:cut])
            current = current[cut:]
    if current:
        groups.append(current)
    return _timed_cues(groups, rules, limit)


def _ends_cue(current: list[Word], word: Word, max_gap: float) -> bool:
    """Whether ``word`` starts a new cue no matter how much room is left: a pause or a sentence end."""
    return word.start - current[-1].end > max_gap or _sentence_end(current[-1].text)


def _sentence_end(token: str) -> bool:
    return token.endswith(SENTENCE_END) and token.lower() not in ABBREVIATIONS


def _fits(group: list[Word], rules: CueRules) -> bool:
    duration_ok = group[-1].end - group[0].start <= rules.max_seconds
    return duration_ok and break_lines([w.text for w in group], rules.max_chars, rules.joiner) is not None


def _cut_point(group: list[Word], joiner: str = " ") -> int:
    """Where to end a full cue of ``group`` (index of the first word of the next cue).

    At the best phrase boundary whose first part holds ≥ 40 % of the characters: after sentence
    punctuation (best), after clause punctuation, at a pause (the longer the better), before a word that
    starts a phrase ("and", "because", ...). Without one, after the whole group (the word that did not fit
    starts the next cue).
    """
    sizes = [len(w.text) + len(joiner) for w in group]
    total, chars = sum(sizes), 0
    best, best_score = len(group), 0.0
    for k in range(1, len(group)):
        chars += sizes[k - 1]
        if chars < 0.4 * total:
            continue
        score = _boundary_score(group[k - 1], group[k])
        if score > 0 and score >= best_score:  # ties go to the later cut: fuller first cue
            best, best_score = k, score
    return best


def _boundary_score(before: Word, after: Word) -> float:
    """How good a cue boundary between ``before`` and ``after`` is (0: in the middle of a phrase)."""
    score = 0.0
    if _sentence_end(before.text):
        score += 3.0
    elif before.text.endswith(CLAUSE_END):
        score += 2.0
    score += min(1.5, max(0.0, after.start - before.end) * 5)  # a 0.3 s pause counts like punctuation
    first = after.text.lower().strip("\"'¿¡(")
    if first in PHRASE_STARTS:
        score += 1.0
    elif first in PREPOSITIONS:
        score += 0.5
    return score


def _timed_cues(groups: list[list[Word]], rules: CueRules, limit: float | None) -> list[Cue]:
    """Cues for word groups: from the first word to the last, lengthened for reading (``MIN_SECONDS``,
    ``MAX_CPS``) into the following pause by at most ``LINGER``, never into the next cue or past ``limit``."""
    cues: list[Cue] = []
    for n, group in enumerate(groups):
        lines = break_lines([w.text for w in group], rules.max_chars, rules.joiner)
        text = "\n".join(lines or [rules.joiner.join(w.text for w in group)])
        start, spoken_end = max(0.0, group[0].start), max(group[-1].end, group[0].start)
        reading = max(MIN_SECONDS, len(text.replace("\n", "")) / MAX_CPS)
        end = min(max(spoken_end, start + reading), spoken_end + LINGER)
        if n + 1 < len(groups):
            end = min(end, groups[n + 1][0].start - CUE_SPACING)
        if limit is not None:
            start, end = min(start, limit), min(end, limit)
        cues.append(Cue(round(start, 3), round(max(start, end), 3), text))
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
