"""Speech timing with pocketsphinx on the bundled JFK clip: forced alignment, recognition, fallbacks."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.lib.speech import align as speech
from stages.lib.speech.align import Alignment, AlignmentError

ASSETS = Path(__file__).resolve().parents[2] / "pipeline" / "assets"
TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
SECONDS = 11.0


@pytest.fixture(scope="module")
def forced(jfk: np.ndarray) -> Alignment:
    return speech.align(jfk, TRANSCRIPT)


def plain(text: str) -> str:
    return re.sub(r"[^a-z']", "", text.lower())


def test_forced_alignment_keeps_the_transcript_words_in_order(forced: Alignment) -> None:
    """Forced alignment returns one Word per transcript token, in order, spelled as written."""
    assert forced.method == "forced"
    assert [w.text for w in forced.words] == TRANSCRIPT.split()


def test_forced_alignment_times_are_plausible(forced: Alignment) -> None:
    """Word times lie inside the clip, start after the previous word and last a positive time; the
    pauses after "Americans" and "not" are where the speaker pauses (about a second each)."""
    starts = [w.start for w in forced.words]
    assert all(0.0 <= w.start < w.end <= SECONDS for w in forced.words)
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    words = {plain(w.text): w for w in reversed(forced.words)}  # first occurrence wins
    assert 1.0 < words["americans"].start < 2.5
    assert 5.0 < words["country"].start < 7.0
    assert forced.words[5].start - forced.words[4].end > 0.7  # "Americans," ... "ask"


def test_forced_alignment_phones_fall_inside_their_words(forced: Alignment) -> None:
    """Every phone is an ARPAbet name (no silence markers) and lies within some aligned word."""
    assert len(forced.phones) > 60
    assert all(re.fullmatch(r"[A-Z]{1,2}", p.name) for p in forced.phones)
    spans = [(w.start - 1e-6, w.end + 1e-6) for w in forced.words]
    assert all(any(a <= p.start and p.end <= b for a, b in spans) for p in forced.phones)
    m = next(p for p in forced.phones if p.name == "M")  # "my" at about 1 s
    assert 0.8 < m.start < 1.2


def test_words_missing_from_the_dictionary_are_guessed(jfk: np.ndarray) -> None:
    """Unknown words get a guessed pronunciation instead of failing the alignment."""
    text = TRANSCRIPT.replace("Americans", "Amerikanz").replace("country.", "kuntree.")
    result = speech.align(jfk, text)
    assert [w.text for w in result.words] == text.split()
    assert 1.0 < result.words[4].start < 2.5


def test_transcript_normalisation() -> None:
    """Tokens keep their written form; words are lower case, without punctuation, numbers spelled."""
    tokens = speech.transcript_tokens("It's 1961 — well-known “Kennedy’s” speech!")
    assert tokens == [
        ("It's", ["it's"]),
        ("1961", ["one", "thousand", "nine", "hundred", "sixty", "one"]),
        ("—", []),
        ("well-known", ["well", "known"]),
        ("“Kennedy’s”", ["kennedy's"]),
        ("speech!", ["speech"]),
    ]
    assert speech.number_words(40_012) == ["forty", "thousand", "twelve"]


def test_guessed_pronunciations_use_model_phones() -> None:
    """Guessed pronunciations only use phones of the acoustic model, one per sound."""
    known = set(" ".join(speech._G2P_RULES[i][1] for i in range(len(speech._G2P_RULES))).split())
    assert speech.guess_pronunciation("zorblaxian") == "Z AA R B L AE K S IH AE N"
    assert set(speech.guess_pronunciation("thoughtfully").split()) <= known
    assert speech.guess_pronunciation("!!!") == ""


def test_empty_transcript_fails_cleanly(jfk: np.ndarray) -> None:
    """A transcript without speakable words raises AlignmentError, not a pocketsphinx crash."""
    with pytest.raises(AlignmentError):
        speech.align(jfk, " — ... ")


def test_wrong_transcript_falls_back_to_recognition(jfk: np.ndarray) -> None:
    """When the transcript does not match the audio, speech_timing recognizes instead."""
    result = speech.speech_timing(jfk, "the quick brown fox jumps over the lazy dog", words=False)
    assert result is not None and result.method == "recognized"
    assert len(result.phones) > 30


def test_phone_recognition_finds_speech_and_nothing_in_silence(jfk: np.ndarray) -> None:
    """Phone recognition times phones in speech (none in the pause after "ask not") and returns
    nothing for silence, where speech_timing gives None."""
    result = speech.recognize_phones(jfk)
    assert result.words == [] and len(result.phones) > 40
    assert all(0.0 <= p.start < p.end <= SECONDS + 0.05 for p in result.phones)
    assert not [p for p in result.phones if 4.4 < p.start < 5.3]
    silence = np.zeros(3 * speech.SAMPLE_RATE, np.float32)
    assert speech.recognize_phones(silence).empty
    assert speech.recognize(silence).empty
    assert speech.speech_timing(silence, TRANSCRIPT) is None


@pytest.mark.slow
def test_word_recognition_returns_words_and_phones(jfk: np.ndarray) -> None:
    """Free recognition (about real time) gets some of the words right, with phones inside the clip."""
    result = speech.recognize(jfk)
    assert result.method == "recognized"
    found = {w.text for w in result.words}
    assert {"fellow", "country"} <= found
    assert [w.start for w in result.words] == sorted(w.start for w in result.words)
    assert len(result.phones) > 40 and result.phones[-1].end <= SECONDS + 0.05


def test_speech_chunks_cut_long_audio_in_pauses(jfk: np.ndarray) -> None:
    """Speech is cut into chunks of at most the limit, covering every loud part, none in silence."""
    clip = np.concatenate([jfk, np.zeros(5 * speech.SAMPLE_RATE, np.float32), jfk, jfk])
    chunks = speech.speech_chunks(clip, max_seconds=20.0)
    assert all(0 < b - a <= 20 * speech.SAMPLE_RATE for a, b in chunks)
    assert [a for a, _ in chunks] == sorted(a for a, _ in chunks)
    loud = np.flatnonzero(np.abs(clip) > 0.3)
    assert all(any(a <= i < b for a, b in chunks) for i in loud[::500])
    gap = (11 * speech.SAMPLE_RATE + speech.SAMPLE_RATE, 15 * speech.SAMPLE_RATE)
    assert not any(a < gap[1] and b > gap[0] for a, b in chunks)


@pytest.mark.slow
def test_long_clip_aligns_linearly(jfk: np.ndarray) -> None:
    """A 33 s clip (the speech three times) aligns: 66 words, the repeats 11 s apart."""
    result = speech.align(np.concatenate([jfk] * 3), " ".join([TRANSCRIPT] * 3))
    assert len(result.words) == 66
    firsts = [result.words[i].start for i in (0, 22, 44)]
    assert np.allclose(np.diff(firsts), SECONDS, atol=0.1)
    assert result.words[-1].end <= 3 * SECONDS


def test_decoders_are_lent_one_caller_at_a_time_and_kept_across_threads() -> None:
    """A decoder is lent to one caller at a time (two at once get two), and a returned one is what the
    next caller gets, from any thread: a worker's pool threads share the decoders loaded at its start
    (``warm_decoders``) instead of each loading its own in a job."""
    speech.warm_decoders()
    with speech._decoder("phones") as mine, speech._decoder("phones") as other:
        assert mine is not other
    got: list[Any] = []

    def borrow() -> None:
        with speech._decoder("phones") as decoder:
            got.append(decoder)

    thread = threading.Thread(target=borrow)
    thread.start()
    thread.join()
    assert got[0] in (mine, other)
    spare = speech._spare["words"].qsize()
    with pytest.raises(RuntimeError), speech._decoder("words"):
        assert speech._spare["words"].qsize() == spare - 1
        raise RuntimeError("the work failed")
    assert speech._spare["words"].qsize() == spare  # kept, not lost with the failure


def test_stereo_audio_is_refused() -> None:
    """Timing functions take mono samples only."""
    with pytest.raises(ValueError, match="mono"):
        speech.recognize_phones(np.zeros((2, 16000), np.float32))


def test_released_decoders_are_let_go_and_a_later_caller_gets_a_new_one() -> None:
    """``SpareDecoders.let_go`` (what a model cache calls when ``mouthpiece render`` has passed
    validate) empties the spare pool; a later use loads a new decoder and aligns as before."""
    spares = speech.warm_decoders()
    with speech._decoder("phones") as before:
        pass
    spares.let_go()
    assert speech._spare["phones"].empty() and speech._spare["words"].empty()
    with speech._decoder("phones") as after:
        assert after is not before
    speech.warm_decoders()
    assert not speech._spare["words"].empty()
