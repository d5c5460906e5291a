"""The one speech timing of a clip: Whisper words and language, Silero VAD regions, phones and visemes,
readable subtitles from it, and the content-addressed artifact computed once per clip."""

from __future__ import annotations

import itertools
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

import stages.lib.speech.align as pocketsphinx
import stages.lib.speech.timing as timing_module
from pipeline.contracts import SpeechTiming
from pipeline.errors import ConfigError
from pipeline.stage import StageContext
from pipeline.storage.local import LocalStore
from pipeline.testing import StageEnvironment
from stages.lib.speech.align import Phone, Viseme, Word
from stages.lib.speech.recognition import LoadedWhisper, recognizer_name, whisper_model
from stages.lib.speech.timing import (
    build_timing,
    ipa_viseme,
    spread_phones,
    spread_tokens,
    transcript_words,
    visemes,
    word_chunks,
)
from stages.lib.subtitles import LINGER, MAX_CPS, Cue, cues_from_words
from tests.conftest import make_settings
from tests.stages.conftest import JFK_TEXT, espeak_16k, models_with, word_error_rate, words_of

SECONDS = 11.0


@pytest.fixture(scope="module")
def heard(jfk: np.ndarray, whisper: LoadedWhisper) -> SpeechTiming:
    """JFK timed without a transcript: Whisper's words, pocketsphinx's phones."""
    return build_timing(jfk, whisper=whisper)


def assert_readable(cues: list[Cue], timing: SpeechTiming) -> None:
    """The cue rules: ≤ 2 lines of ≤ 42 characters, ≤ MAX_CPS characters a second, in order without
    overlap, inside the clip, starting in speech, and never on screen for more than LINGER seconds of a
    silence (the gaps between the VAD speech regions)."""
    assert cues
    for cue in cues:
        lines = cue.text.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 42 for line in lines), cue
        assert len(cue.text.replace("\n", "")) / (cue.end - cue.start) <= MAX_CPS + 1e-6, cue
        assert 0.0 <= cue.start < cue.end <= timing.duration
        assert any(s.start - 0.3 <= cue.start <= s.end for s in timing.speech), cue
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues))
    silences = [(a.end, b.start) for a, b in itertools.pairwise(timing.speech)] + [
        (timing.speech[-1].end, timing.duration)
    ]
    for cue in cues:
        for a, b in silences:
            assert min(cue.end, b) - max(cue.start, a) <= LINGER + 0.05, (cue, (a, b))


# --- Whisper on the JFK clip -------------------------------------------------------------------------


def test_jfk_without_transcript_is_heard_and_subtitled_readably(heard: SpeechTiming) -> None:
    """No transcript: Whisper's words match the true text (WER ≤ 10 %), the language is English, and the
    subtitles built from them follow every cue rule within the speech."""
    wer = word_error_rate(JFK_TEXT, heard.text)
    print(f"JFK word error rate without transcript: {wer:.1%} ({heard.text!r})")
    assert wer <= 0.10
    assert heard.source == "whisper" and heard.language == "en"
    cues = cues_from_words([Word(w.text, w.start, w.end) for w in heard.words], limit=heard.duration)
    assert word_error_rate(JFK_TEXT, " ".join(c.text for c in cues)) <= 0.10
    assert_readable(cues, heard)


def test_jfk_words_are_aligned_to_phones_and_visemes(heard: SpeechTiming) -> None:
    """English words get pocketsphinx phones (ARPAbet) inside the clip, in order; the words land where
    JFK says them ("Americans" ~1.7 s, the second "what" after the pause at ~5.4 s); visemes cover the
    whole clip end to end and rest (X) in the long pause after "Americans"."""
    assert len(heard.phones) > 60 and all(p.phone.isupper() for p in heard.phones)
    starts = [w.start for w in heard.words]
    assert starts == sorted(starts) and all(0 <= w.start <= w.end <= SECONDS for w in heard.words)
    americans = next(w for w in heard.words if w.text.lower().startswith("americans"))
    assert 1.2 < americans.start < 2.2
    what = [w for w in heard.words if words_of(w.text) == ["what"]]
    assert 5.0 < what[0].start < 5.8
    shapes = heard.visemes
    assert shapes[0].start == 0.0 and abs(shapes[-1].end - heard.duration) < 1e-3
    assert all(abs(a.end - b.start) < 1e-6 for a, b in itertools.pairwise(shapes))
    assert {v.viseme for v in shapes} <= set("ABCDEFGHX") and len({v.viseme for v in shapes}) >= 6
    pause = next(v for v in shapes if v.viseme == "X" and v.start > 2.0)
    assert pause.start < 2.6 and pause.end > 3.0


def test_speech_regions_come_from_silero_vad(heard: SpeechTiming) -> None:
    """The speech regions start near JFK's first word and leave out his two long pauses."""
    regions = [(s.start, s.end) for s in heard.speech]
    assert 0.1 < regions[0][0] < 0.5 and 10.0 < regions[-1][1] <= SECONDS
    assert not any(a < 2.8 and b > 3.0 for a, b in regions)  # the pause after "Americans,"


def test_jfk_with_transcript_keeps_its_tokens(jfk: np.ndarray, whisper: LoadedWhisper) -> None:
    """With a transcript: forced alignment, one word per token as written (capitals, punctuation)."""
    timed = build_timing(jfk, transcript=JFK_TEXT, language="en", whisper=whisper)
    assert timed.source == "transcript" and timed.text == JFK_TEXT
    assert [w.text for w in timed.words] == JFK_TEXT.split()
    assert len(timed.phones) > 60


# --- other languages -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voice", "text"),
    [
        (
            "es",
            "Hola a todos. Bienvenidos al servidor, hoy tenemos una reunión muy importante con el equipo.",
        ),
        (
            "de",
            "Guten Morgen zusammen. Willkommen auf dem Server, heute haben wir eine wichtige Besprechung mit dem Team.",
        ),
    ],
)
def test_other_languages_are_detected_and_subtitled_in_them(
    voice: str, text: str, whisper: LoadedWhisper
) -> None:
    """eSpeak NG speech in Spanish or German: the language is detected, the words are in it (most of
    them heard: Whisper base hears 60-67 % of the words of eSpeak NG's robotic Spanish and 94-100 % of
    the German, its word error rate on the Spanish 47 % or 67 % depending on the CPU's vector
    instructions, which CTranslate2's int8 kernels follow), the phones are eSpeak NG's IPA, and the
    subtitles keep the rules."""
    timed = build_timing(espeak_16k(text, voice), whisper=whisper)
    wer = word_error_rate(text, timed.text)
    said, heard = words_of(text), set(words_of(timed.text))
    recall = sum(w in heard for w in said) / len(said)
    print(
        f"{voice}: detected {timed.language}, {recall:.0%} heard, word error rate {wer:.1%}: {timed.text!r}"
    )
    assert timed.language == voice and timed.source == "whisper"
    assert recall >= 0.5 and wer <= 0.75
    assert timed.phones and not any(p.phone.isupper() for p in timed.phones)  # IPA, not ARPAbet
    cues = cues_from_words([Word(w.text, w.start, w.end) for w in timed.words], limit=timed.duration)
    assert_readable(cues, timed)


def test_known_foreign_transcript_is_mapped_onto_whispers_words(whisper: LoadedWhisper) -> None:
    """A German clip with its transcript and language: every transcript token is kept as written and
    timed inside the speech (Whisper's words carry the times; pocketsphinx knows only English)."""
    text = "Willkommen auf dem Server, schön dass du da bist."
    timed = build_timing(espeak_16k(text, "de"), transcript=text, language="de", whisper=whisper)
    assert [w.text for w in timed.words] == text.split()
    assert timed.source == "transcript" and timed.language == "de"
    assert all(timed.speech[0].start - 0.3 <= w.start <= w.end <= timed.duration for w in timed.words)


# --- pure parts ------------------------------------------------------------------------------------


def test_ipa_phonemes_map_to_rhubarb_visemes() -> None:
    """IPA (and plain letters) map to the same mouth shapes as their ARPAbet counterparts."""
    assert {ipa_viseme(p) for p in ("p", "b", "m")} == {Viseme.A}
    assert ipa_viseme("f") == ipa_viseme("v") == Viseme.G
    assert ipa_viseme("uː") == ipa_viseme("w") == ipa_viseme("oʊ") == Viseme.F
    assert ipa_viseme("aɪ") == ipa_viseme("ä") == Viseme.D
    assert ipa_viseme("l") == Viseme.H and ipa_viseme("ɾ") == Viseme.E and ipa_viseme("ə") == Viseme.C
    assert ipa_viseme("ts") == Viseme.B


def test_visemes_rest_in_pauses_and_hold_through_short_gaps() -> None:
    """Phones become visemes end to end; a 50 ms gap holds the shape, a 0.5 s gap and the edges rest."""
    phones = [Phone("M", 0.5, 0.6), Phone("AA", 0.65, 0.9), Phone("F", 1.4, 1.5)]
    shapes = [(v.viseme, v.start, v.end) for v in visemes(phones, [(0.5, 1.5)], 2.0)]
    assert shapes == [
        ("X", 0.0, 0.5),
        ("A", 0.5, 0.65),
        ("D", 0.65, 0.9),
        ("X", 0.9, 1.4),
        ("G", 1.4, 1.5),
        ("X", 1.5, 2.0),
    ]


def test_phonemes_are_spread_over_each_word() -> None:
    """eSpeak NG's phonemes of a word fill exactly its span, in order, vowels longer than consonants."""
    phones = spread_phones([Word("Hola", 1.0, 1.5), Word("mundo", 1.6, 2.2)], "es")
    assert [p.name for p in phones] == ["o", "l", "a", "m", "u", "n", "d", "o"]
    assert phones[0].start == 1.0 and abs(phones[2].end - 1.5) < 1e-9 and abs(phones[-1].end - 2.2) < 1e-9
    assert (phones[0].end - phones[0].start) > (phones[1].end - phones[1].start)


def test_tokens_without_a_recognizer_fall_inside_the_speech() -> None:
    """Without Whisper, a transcript is laid over the speech regions by length, skipping the pause."""
    words = spread_tokens(["uno", "dos", "tres", "cuatro"], [(0.0, 1.0), (3.0, 4.0)])
    assert [w.text for w in words] == ["uno", "dos", "tres", "cuatro"]
    assert all(w.start < 1.0 or w.start >= 3.0 for w in words)
    assert words[0].start == 0.0 and abs(words[-1].end - 4.0) < 1e-9


def test_word_chunks_cut_at_long_pauses() -> None:
    """Recognized words are aligned in chunks cut at pauses of 0.8 s or more."""
    words = [Word("a", 0, 0.3), Word("b", 0.4, 0.7), Word("c", 2.0, 2.2), Word("d", 2.3, 2.5)]
    assert word_chunks(words) == [(0, 1), (2, 3)]


def test_transcript_words_keep_unspoken_tokens_without_time() -> None:
    """Transcript tokens the aligner dropped ("—") are kept, in order, taking no time at the end of the
    word before them; matched tokens keep their words' times and the transcript's spelling."""
    timed = transcript_words([Word("Hello", 1.0, 1.4), Word("world", 2.5, 3.0)], "Hello — World!")
    assert [w.text for w in timed] == ["Hello", "—", "World!"]
    assert timed[1].start == timed[1].end == 1.4
    assert (timed[2].start, timed[2].end) == (2.5, 3.0)


def test_display_text_is_timed_by_the_spoken_words() -> None:
    """Synthesized speech: the written text's tokens ("25%", "@Alice") take the time of the spoken
    words they stand for ("twenty five percent", "Alice")."""
    spoken = [
        Word(t, i * 0.5, i * 0.5 + 0.4)
        for i, t in enumerate(["hi", "Alice", "it", "is", "twenty", "five", "percent", "off"])
    ]
    timed = transcript_words(spoken, "Hi @Alice, it is 25% off!")
    assert [w.text for w in timed] == ["Hi", "@Alice,", "it", "is", "25%", "off!"]
    assert (timed[4].start, timed[4].end) == (2.0, 3.4)


# --- the artifact: computed once per clip ---------------------------------------------------------


def test_the_same_clip_is_timed_once(
    jfk: np.ndarray, whisper: LoadedWhisper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``speech_artifact`` builds the timing once and stores it under ``cache/speech/``; a second job with
    the same clip, text, language and recognizer reuses it (no recognition, no alignment); another
    language is another timing."""
    import soundfile

    calls: list[str] = []
    real_build, real_align = timing_module.build_timing, pocketsphinx._align_words
    monkeypatch.setattr(
        timing_module, "build_timing", lambda *a, **k: calls.append("build") or real_build(*a, **k)
    )
    monkeypatch.setattr(
        pocketsphinx, "_align_words", lambda *a, **k: calls.append("align") or real_align(*a, **k)
    )
    settings = make_settings(tmp_path)
    store = LocalStore(tmp_path / "store")
    store.ensure_buckets(["inputs", "work", "outputs"])
    wav = tmp_path / "jfk.wav"
    soundfile.write(str(wav), jfk, 16_000, subtype="PCM_16")

    def job() -> StageContext:
        workdir = tmp_path / uuid.uuid4().hex
        workdir.mkdir()
        env = StageEnvironment(settings, store, models_with(settings, whisper))
        return env.context(job_id="j" + uuid.uuid4().hex[:19], stage="validate", workdir=workdir)

    first_ctx = job()
    audio = first_ctx.save(wav, "audio.wav", "audio/wav")
    first = timing_module.speech_artifact(first_ctx, audio, transcript=JFK_TEXT)
    assert calls.count("build") == 1 and calls.count("align") == 1
    again = timing_module.speech_artifact(job(), audio, transcript=JFK_TEXT)
    assert again == first and first.key.startswith("cache/speech/")
    assert calls.count("build") == 1 and calls.count("align") == 1
    other = timing_module.speech_artifact(job(), audio, transcript=JFK_TEXT, language="de")
    assert other.key != first.key and calls.count("build") == 2


# --- without faster-whisper ---------------------------------------------------------------------------


@pytest.mark.slow
def test_without_faster_whisper_pocketsphinx_times_the_clip(
    jfk: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install without faster-whisper (removed, or blocked): ``auto`` falls back to pocketsphinx
    recognition and loudness regions; ``asr = "whisper"`` is a ConfigError naming the package."""
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    monkeypatch.setitem(sys.modules, "faster_whisper.vad", None)
    assert whisper_model(make_settings(tmp_path)) is None
    assert recognizer_name(make_settings(tmp_path)) == "pocketsphinx"
    with pytest.raises(ConfigError, match=r"pip install faster-whisper"):
        whisper_model(make_settings(tmp_path, asr="whisper"))
    timed = build_timing(jfk)
    assert timed.source == "pocketsphinx" and timed.language == "en"
    assert len(timed.words) >= 10 and timed.phones and timed.speech[0].start < 0.6
