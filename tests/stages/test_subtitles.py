"""Subtitles: timed words → cues (line breaking, timing) → SRT/WebVTT, and the word sources."""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import ASSETS_DIR
from pipeline.errors import ConfigError
from pipeline.media import load_audio, normalize_audio
from stages.speech import Word
from stages.subtitles import (
    Cue,
    break_lines,
    cues_from_words,
    subtitle_words,
    to_srt,
    to_vtt,
    transcript_words,
)
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


def test_subtitles_from_transcript_are_timed_inside_the_speech(jfk_audio: np.ndarray, tmp_path: Path) -> None:
    """Forced alignment of the JFK transcript gives cues that lie inside the clip, start after its
    leading silence, end near the end of the speech, do not overlap, and whose text joined is exactly the
    transcript (capitals and punctuation included) in ≤ 2 lines of ≤ 42 characters."""
    words, source = subtitle_words(jfk_audio, JFK_TRANSCRIPT, make_settings(tmp_path))
    cues = cues_from_words(words, limit=JFK_SECONDS)

    assert source == "forced"
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


# --- mapping words onto the transcript --------------------------------------------------------------


def test_transcript_words_keep_unspoken_tokens_without_time() -> None:
    """Transcript tokens the aligner dropped ("—") are kept, in order, taking no time at the end of the
    word before them; matched tokens keep their words' times and the transcript's spelling."""
    aligned = [Word("Hello", 1.0, 1.4), Word("world", 2.5, 3.0)]
    timed = transcript_words(aligned, "Hello — World!")
    assert [w.text for w in timed] == ["Hello", "—", "World!"]
    assert timed[1].start == timed[1].end == 1.4
    assert (timed[2].start, timed[2].end) == (2.5, 3.0)


def test_transcript_words_time_unrecognized_tokens_by_their_neighbours() -> None:
    """With recognized words that differ from the transcript, matched tokens keep their times and the
    others share the time of the words recognized in their place, by length."""
    recognized = [
        Word("and", 0.3, 0.6),
        Word("all", 0.6, 1.0),
        Word("my", 1.0, 1.2),
        Word("fellow", 1.2, 1.6),
    ]
    timed = transcript_words(recognized, "And so, my fellow")
    assert [w.text for w in timed] == ["And", "so,", "my", "fellow"]
    assert (timed[0].start, timed[1].start, timed[1].end, timed[2].start) == (0.3, 0.6, 1.0, 1.0)


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
    cues = cues_from_words(words_of(text, step=0.15), max_seconds=30.0)
    assert cues[0].text.replace("\n", " ").endswith("people,")
    assert flat(" ".join(c.text for c in cues)) == text
    for cue in cues:
        lines = cue.text.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 42 for line in lines), cue.text


def test_cues_last_at_most_max_seconds() -> None:
    """Slow speech is cut so that no cue spans more than ``max_seconds`` of words."""
    cues = cues_from_words(words_of("one two three four five six seven eight", step=1.0), max_seconds=3.0)
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


def test_break_lines_balances_two_lines_and_prefers_clause_breaks() -> None:
    """One line when it fits; otherwise two lines within the limit, broken after a comma when there is
    one, else as evenly as possible; a lone overlong word is left whole; too much text gives None."""
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


# --- word sources -----------------------------------------------------------------------------------


def test_asr_model_without_faster_whisper_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``asr_model`` set but faster-whisper not importable: a ConfigError naming the package."""
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # makes the import fail, installed or not
    settings = make_settings(tmp_path, asr_model=tmp_path)
    with pytest.raises(ConfigError, match="faster-whisper"):
        subtitle_words(np.zeros(16_000, np.float32), None, settings)


def test_silence_gives_no_words(tmp_path: Path) -> None:
    """Silence has nothing to subtitle, with or without a transcript."""
    silence = np.zeros(32_000, np.float32)
    assert subtitle_words(silence, None, make_settings(tmp_path))[0] == []
    assert subtitle_words(silence, "hello world", make_settings(tmp_path))[0] == []
