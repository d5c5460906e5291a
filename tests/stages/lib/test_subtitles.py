"""Subtitles: timed words → cues people can read (line breaking, phrase boundaries, timing) → SRT/WebVTT."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from pipeline import ASSETS_DIR
from pipeline.media import load_audio, normalize_audio
from stages.lib.speech.align import Word
from stages.lib.speech.timing import build_timing
from stages.lib.subtitles import LINGER, MAX_CPS, Cue, CueRules, break_lines, cues_from_words, to_srt, to_vtt
from tests.conftest import make_settings

JFK_TRANSCRIPT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
JFK_SECONDS = 11.0


def words_of(
    text: str, start: float = 0.5, step: float = 0.3, pauses: dict[int, float] | None = None
) -> list[Word]:
    """Hand-made timed words: one every ``step`` seconds, with extra silence before the given indices."""
    out, t = [], start
    for i, token in enumerate(text.split()):
        t += (pauses or {}).get(i, 0.0)
        out.append(Word(token, round(t, 3), round(t + step * 0.9, 3)))
        t += step
    return out


def parse_srt(text: str) -> list[Cue]:
    """Read SubRip text back (strict: numbering, clock format, blank line between blocks)."""
    cues = []
    clock = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
    for n, block in enumerate(text.strip().split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(n)
        m = re.fullmatch(clock + " --> " + clock, lines[1])
        assert m, lines[1]
        g = [int(x) for x in m.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        cues.append(Cue(start, end, "\n".join(lines[2:])))
    return cues


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def jfk_audio(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The JFK clip as validate normalizes it: 16 kHz mono float32."""
    tmp = tmp_path_factory.mktemp("jfk")
    wav = tmp / "jfk.wav"
    normalize_audio(make_settings(tmp), ASSETS_DIR / "jfk.flac", wav)
    return load_audio(wav)


# --- the required test: subtitles from a transcript -------------------------------------------------


def test_subtitles_from_transcript_are_timed_inside_the_speech(jfk_audio: np.ndarray) -> None:
    """Forced alignment of the JFK transcript gives cues that lie inside the clip, start after its
    leading silence, end near the end of the speech, do not overlap, and whose text joined is exactly the
    transcript (capitals and punctuation included) in ≤ 2 lines of ≤ 42 characters."""
    timing = build_timing(jfk_audio, transcript=JFK_TRANSCRIPT, language="en")
    cues = cues_from_words([Word(w.text, w.start, w.end) for w in timing.words], limit=JFK_SECONDS)

    assert timing.source == "transcript"
    assert len(cues) >= 3
    assert flat(" ".join(c.text for c in cues)) == JFK_TRANSCRIPT
    assert all(0.0 <= c.start < c.end <= JFK_SECONDS for c in cues)
    assert 0.15 < cues[0].start < 0.6  # JFK starts speaking at ~0.3 s
    assert 9.8 < cues[-1].end <= JFK_SECONDS  # ... and stops at ~10.5 s
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues))
    for cue in cues:
        lines = cue.text.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 42 for line in lines), cue.text
    # "ask" is spoken at ~3.3 s and ~8.2 s: the cue holding "Americans," must end before the first one
    first_ask = next(c for c in cues if c.text.lower().startswith("ask"))
    assert 2.8 < first_ask.start < 3.8


# --- cue building -----------------------------------------------------------------------------------


def test_cues_split_at_pauses_and_sentence_ends() -> None:
    """A pause longer than ``max_gap`` and a sentence end each start a new cue; "Mr." does not."""
    words = words_of("Hello there. Mr. Smith is here today and then we wait", pauses={6: 1.0})
    cues = cues_from_words(words)
    assert [c.text for c in cues] == ["Hello there.", "Mr. Smith is here", "today and then we wait"]


def test_long_cues_are_cut_after_a_comma_and_broken_into_two_lines() -> None:
    """Text longer than two lines is cut after the last comma that keeps ≥ 40 % together; every cue has
    at most two lines of at most 42 characters, and no word is lost."""
    text = (
        "When in the course of human events it becomes necessary for one people, to dissolve the "
        "political bands which have connected them with another and to assume among the powers"
    )
    cues = cues_from_words(words_of(text, step=0.15), CueRules(max_seconds=30.0))
    assert cues[0].text.replace("\n", " ").endswith("people,")
    assert flat(" ".join(c.text for c in cues)) == text
    for cue in cues:
        lines = cue.text.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 42 for line in lines), cue.text


def test_cues_last_at_most_max_seconds() -> None:
    """Slow speech is cut so that no cue spans more than ``max_seconds`` of words."""
    cues = cues_from_words(
        words_of("one two three four five six seven eight", step=1.0), CueRules(max_seconds=3.0)
    )
    assert len(cues) >= 3
    assert all(c.end - c.start <= 3.0 for c in cues)


def test_short_cues_are_lengthened_but_never_overlap_or_pass_the_limit() -> None:
    """A one-word cue stays up 0.8 s when the next cue is far, stops a frame before a near next cue,
    and never ends after ``limit``."""
    words = [Word("Yes.", 1.0, 1.2), Word("No.", 1.5, 1.7), Word("Maybe.", 4.0, 4.3)]
    cues = cues_from_words(words, limit=4.5)
    assert cues[0].end == pytest.approx(1.46)
    assert cues[1].end == pytest.approx(2.3)
    assert cues[2].end == pytest.approx(4.5)


def test_cues_stay_long_enough_to_read_but_not_over_a_silence() -> None:
    """Fast speech followed by a pause: the cue stays until it can be read at 20 characters a second,
    but at most ``LINGER`` seconds into the silence; the next cue starts with its words."""
    words = words_of("Absolutely wonderful announcement everybody.", start=1.0, step=0.2)
    later = words_of("Next.", start=6.0)
    cues = cues_from_words(words + later)
    chars = len(cues[0].text.replace("\n", ""))
    assert cues[0].end == pytest.approx(min(cues[0].start + chars / MAX_CPS, words[-1].end + LINGER))
    assert cues[0].end <= words[-1].end + LINGER + 1e-9
    assert cues[1].start == later[0].start


def test_overlong_cues_are_cut_at_phrase_boundaries() -> None:
    """Without punctuation, a cue that cannot hold all the words is cut at a pause or before a word
    that starts a phrase ("because"), not in the middle of a phrase."""
    text = "we are moving the weekly meeting to the big room because the small one is being painted this week"
    cues = cues_from_words(words_of(text, step=0.2), CueRules(max_chars=32))
    assert cues[1].text.replace("\n", " ").startswith("because")
    paused = words_of(text, step=0.2, pauses={6: 0.4})  # a short pause before "to the big room"
    assert cues_from_words(paused, CueRules(max_chars=32))[1].text.startswith("to the big room")


def test_unspaced_scripts_join_words_without_spaces() -> None:
    """Chinese cues are joined without spaces and broken at ``max_chars`` characters."""
    words = [
        Word(t, 0.5 + 0.3 * i, 0.75 + 0.3 * i)
        for i, t in enumerate(
            [
                "我们",
                "今天",
                "下午",
                "三点",
                "在",
                "大",
                "会议室",
                "开会",
                "，",
                "请",
                "大家",
                "准时",
                "参加",
                "。",
            ]
        )
    ]
    cues = cues_from_words(words, CueRules(max_chars=12, joiner=""))
    assert "".join(c.text.replace("\n", "") for c in cues) == "".join(w.text for w in words)
    assert all(" " not in c.text and max(len(line) for line in c.text.split("\n")) <= 12 for c in cues)


def test_break_lines_balances_two_lines_and_prefers_clause_breaks() -> None:
    """One line when it fits; otherwise two lines within the limit, broken after a comma when there is
    one, else as evenly as possible without ending a line on a preposition or article; a lone overlong
    word is left whole; too much text gives None."""
    assert break_lines(["short", "line"]) == ["short line"]
    assert break_lines(["aaaa", "bbbb", "cccc", "dddd"], max_chars=10) == ["aaaa bbbb", "cccc dddd"]
    assert break_lines(["one", "two", "three", "four", "five"], max_chars=16) == [
        "one two three",
        "four five",
    ]
    assert break_lines(["one", "two,", "three", "four", "five"], max_chars=16) == [
        "one two,",
        "three four five",
    ]
    assert break_lines(
        ["please", "join", "us", "all", "in", "the", "main", "hall", "after", "lunch"], max_chars=30
    ) == [
        "please join us all",
        "in the main hall after lunch",
    ]  # the evenest break, "... all in" / "the main hall ...", would leave "in" dangling
    assert break_lines(["x" * 50]) == ["x" * 50]
    assert break_lines(("word " * 20).split(), max_chars=20) is None


# --- formats ----------------------------------------------------------------------------------------


def test_srt_format_is_exact() -> None:
    """SRT: numbered blocks, ``HH:MM:SS,mmm`` clocks (hours too), blank line between blocks."""
    cues = [Cue(0.3, 2.0, "And so,\nmy fellow"), Cue(3725.0406, 3726.5, "Americans")]
    assert to_srt(cues) == (
        "1\n00:00:00,300 --> 00:00:02,000\nAnd so,\nmy fellow\n\n2\n01:02:05,041 --> 01:02:06,500\nAmericans\n"
    )
    assert parse_srt(to_srt(cues))[1] == Cue(3725.041, 3726.5, "Americans")


def test_vtt_format_is_exact_and_escapes_markup() -> None:
    """WebVTT: the header, ``HH:MM:SS.mmm`` clocks, and "&", "<", ">" escaped so "-->" cannot appear."""
    cues = [Cue(1.0, 2.5, "Tom & Jerry <3"), Cue(3.0, 4.0, "a --> b")]
    assert to_vtt(cues) == (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\nTom &amp; Jerry &lt;3\n\n"
        "00:00:03.000 --> 00:00:04.000\na --&gt; b\n"
    )


def test_srt_round_trips_built_cues() -> None:
    """Cues built from words survive SRT to the millisecond, empty lines in a cue's text dropped."""
    cues = cues_from_words(words_of("It was the best of times, it was the worst of times.", step=0.4))
    assert parse_srt(to_srt(cues)) == cues
    assert to_srt([Cue(0.0, 1.0, "top\n\nbottom")]) == "1\n00:00:00,000 --> 00:00:01,000\ntop\nbottom\n"


# --- no speech --------------------------------------------------------------------------------------


def test_silence_gives_no_words() -> None:
    """Silence has nothing to subtitle, with or without a transcript."""
    silence = np.zeros(32_000, np.float32)
    assert build_timing(silence).words == []
    assert build_timing(silence, transcript="hello world").words == []
    assert cues_from_words([]) == []
