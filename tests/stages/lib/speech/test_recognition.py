"""Whisper recognition of long voices: heard a piece at a time, cut at quiet moments, the words and
their times as if heard whole."""

from __future__ import annotations

import numpy as np
import pytest

import stages.lib.speech.recognition as recognition
from stages.lib.speech.recognition import LoadedWhisper, cut_points, recognize
from tests.stages.conftest import words_of

RATE = 16_000


def test_a_long_voice_is_cut_at_its_quietest_moments() -> None:
    """Five minutes of noise with a 0.4 s silence near each two-minute mark: cut there (within 0.2 s),
    nowhere else, and the pieces cover the clip."""
    rng = np.random.default_rng(5)
    audio = rng.normal(0, 0.1, 300 * RATE).astype(np.float32)
    for second in (117.0, 243.0):  # within CUT_SEARCH of 120 s and of the next piece's 120 s
        audio[int(second * RATE) : int((second + 0.4) * RATE)] = 0.0
    cuts = cut_points(audio)
    assert cuts[0] == 0 and cuts[-1] == len(audio) and len(cuts) == 4
    assert abs(cuts[1] / RATE - 117.2) < 0.2 and abs(cuts[2] / RATE - 243.2) < 0.2
    assert cut_points(audio[: 100 * RATE]) == [0, 100 * RATE]


def test_a_voice_heard_in_pieces_gives_its_words_at_their_times(
    jfk: np.ndarray, whisper: LoadedWhisper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JFK three times with 1.5 s pauses (38 s), heard in pieces of about 12 s: the same words as heard
    whole, in order, the language found once, and each repetition's words where the first
    repetition's are plus the period (within 0.15 s: the pieces know exactly where each one starts)."""
    pause = np.zeros(int(1.5 * RATE), np.float32)
    audio = np.concatenate([jfk, pause, jfk, pause, jfk, pause])
    period = (len(jfk) + len(pause)) / RATE
    whole = recognize(whisper, audio)
    monkeypatch.setattr(recognition, "CHUNK_SECONDS", 12.0)
    monkeypatch.setattr(recognition, "CUT_SEARCH", 1.6)
    assert len(cut_points(audio)) >= 4
    pieces = recognize(whisper, audio)
    assert pieces.language == whole.language == "en"
    assert words_of(" ".join(w.text for w in pieces.words)) == words_of(" ".join(w.text for w in whole.words))
    starts = [w.start for w in pieces.words]
    assert starts == sorted(starts)
    n = len(pieces.words) // 3
    assert n >= 20 and len(pieces.words) == 3 * n
    first = pieces.words[:n]
    for k in (1, 2):
        again = pieces.words[k * n : (k + 1) * n]
        assert max(abs(b.start - a.start - k * period) for a, b in zip(first, again, strict=True)) < 0.15


def test_speech_regions_found_in_pieces_are_those_of_one_pass(
    jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JFK six times with 1.5 s pauses (75 s), its speech found in pieces of about 20 s (memory that
    does not grow with the length): Silero run on no piece longer than that, and the speech where one
    pass over the whole clip finds it (97 % of the clip's 10 ms steps agree; a short dip inside a
    phrase may split a region or not, as it does between repetitions in one pass)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    pause = np.zeros(int(1.5 * RATE), np.float32)
    audio = np.concatenate([jfk, pause] * 6)
    whole = [
        (s["start"] / RATE, min(s["end"], len(audio)) / RATE)
        for s in get_speech_timestamps(audio, VadOptions(**recognition.VAD_OPTIONS))
    ]
    heard: list[int] = []

    def spy(piece: np.ndarray, options: VadOptions) -> list[dict[str, int]]:
        heard.append(len(piece))
        return get_speech_timestamps(piece, options)

    monkeypatch.setattr("faster_whisper.vad.get_speech_timestamps", spy)
    monkeypatch.setattr(recognition, "VAD_PIECE_SECONDS", 20.0)
    monkeypatch.setattr(recognition, "CUT_SEARCH", 1.6)
    pieces = recognition.speech_regions(audio)
    assert pieces is not None and len(heard) >= 3 and max(heard) <= 22 * RATE

    def mask(regions: list[tuple[float, float]]) -> np.ndarray:
        steps = np.zeros(int(len(audio) / RATE * 100), bool)
        for a, b in regions:
            steps[int(a * 100) : int(b * 100)] = True
        return steps

    assert (mask(pieces) == mask(whole)).mean() >= 0.97
    assert abs(len(pieces) - len(whole)) <= 3
