"""Offline speech synthesis for announcements and welcomes."""

from __future__ import annotations

import shutil
import wave
from array import array
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, InvalidInput
from stages.tts import clean_text, synthesize
from tests.conftest import make_settings

SENTENCE = "Welcome to the Test Guild, Alice! We are glad you are here."


def _read(path: Path) -> tuple[int, float, int]:
    """(sample rate, seconds, peak amplitude) of a mono 16-bit WAV."""
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        samples = array("h", wav.readframes(wav.getnframes()))
        return wav.getframerate(), wav.getnframes() / wav.getframerate(), max(abs(s) for s in samples)


@pytest.fixture
def no_espeak_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide a system espeak-ng so the bundled library is what runs."""
    real = shutil.which
    monkeypatch.setattr("stages.tts.shutil.which", lambda name: None if name == "espeak-ng" else real(name))


def test_library_speaks_a_sentence_into_a_wav(tmp_path: Path, no_espeak_program: None) -> None:
    """The espeakng-loader library writes an audible mono WAV of plausible length for a sentence."""
    out = tmp_path / "speech.wav"
    synthesize(make_settings(tmp_path), SENTENCE, out)
    rate, seconds, peak = _read(out)
    assert rate == 22050 and 2.0 < seconds < 8.0 and peak > 3000


def test_rate_setting_changes_the_speed(tmp_path: Path, no_espeak_program: None) -> None:
    """tts_rate is words per minute: a faster rate gives shorter speech, and calls do not leak settings."""
    slow, fast, again = tmp_path / "slow.wav", tmp_path / "fast.wav", tmp_path / "again.wav"
    synthesize(make_settings(tmp_path, tts_rate=100), SENTENCE, slow)
    synthesize(make_settings(tmp_path, tts_rate=300), SENTENCE, fast)
    synthesize(make_settings(tmp_path, tts_rate=100), SENTENCE, again)
    assert _read(fast)[1] < 0.6 * _read(slow)[1]
    assert abs(_read(again)[1] - _read(slow)[1]) < 0.05


def test_empty_or_blank_text_is_invalid_input(tmp_path: Path) -> None:
    """There is nothing to say in empty or whitespace-only text."""
    for text in ("", "   \n\t", "\x00\x07"):
        with pytest.raises(InvalidInput, match="no text"):
            synthesize(make_settings(tmp_path), text, tmp_path / "x.wav")


def test_text_is_cleaned_and_bounded() -> None:
    """Control characters and runs of whitespace collapse; more than 2000 characters is refused."""
    assert clean_text("Hello\x00  there\n\nfriend") == "Hello there friend"
    with pytest.raises(InvalidInput, match="limit is 2000"):
        clean_text("a" * 2001)


def test_unknown_voice_is_a_config_error(tmp_path: Path, no_espeak_program: None) -> None:
    """A tts_voice eSpeak NG does not have is reported as a setting to change."""
    with pytest.raises(ConfigError, match="no voice 'xx-nope'"):
        synthesize(make_settings(tmp_path, tts_voice="xx-nope"), "hello", tmp_path / "x.wav")


def test_piper_model_needs_the_file_and_the_package(tmp_path: Path) -> None:
    """A configured Piper voice that does not exist, or Piper not installed, is a ConfigError."""
    missing = tmp_path / "voice.onnx"
    with pytest.raises(ConfigError, match="does not exist"):
        synthesize(make_settings(tmp_path, piper_model=missing), "hello", tmp_path / "x.wav")
    missing.write_bytes(b"not really a model")
    try:
        import piper  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install piper-tts"):
            synthesize(make_settings(tmp_path, piper_model=missing), "hello", tmp_path / "x.wav")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no system espeak-ng program")
def test_system_program_is_used_when_present(tmp_path: Path) -> None:
    """With espeak-ng on PATH, it writes the WAV (a separate process)."""
    out = tmp_path / "speech.wav"
    synthesize(make_settings(tmp_path), SENTENCE, out)
    assert _read(out)[1] > 2.0
