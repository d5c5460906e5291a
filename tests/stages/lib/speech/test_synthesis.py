"""Offline speech synthesis for announcements and welcomes: Piper by default, eSpeak NG as the fallback
and for other languages, speakable text, and what Whisper hears of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import wave
from array import array
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, InvalidInput
from stages.lib.speech import espeak
from stages.lib.speech.recognition import LoadedWhisper, recognize
from stages.lib.speech.speakable import Names, speakable
from stages.lib.speech.synthesis import LEAD_IN, TAIL, choose_voice, clean_text, plan, synthesize
from tests.conftest import make_settings
from tests.stages.conftest import wav_16k, word_error_rate, words_of

SENTENCE = "Welcome to the Test Guild, Alice! We are glad you are here."
ROUND_TRIP = [
    "Welcome to the server, Alice! We are glad you are here.",
    "The weekly meeting moves to Thursday afternoon in the big room.",
    "Please read the pinned message before you post in the general channel.",
]
PIPER_VOICE = "en_US-joe-medium"


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
    monkeypatch.setattr(
        "stages.lib.speech.synthesis.shutil.which", lambda name: None if name == "espeak-ng" else real(name)
    )


def heard_accuracy(whisper: LoadedWhisper, tmp_path: Path, **settings: object) -> float:
    """1 - word error rate of Whisper over ``ROUND_TRIP`` spoken with ``settings``."""
    config = make_settings(tmp_path, **settings)
    errors = 0.0
    for n, text in enumerate(ROUND_TRIP):
        out = tmp_path / f"{n}.wav"
        synthesize(config, text, out)
        errors += word_error_rate(
            text, " ".join(w.text for w in recognize(whisper, wav_16k(out), "en").words)
        )
    return 1.0 - errors / len(ROUND_TRIP)


# --- engines -----------------------------------------------------------------------------------------------


def test_piper_is_the_default_and_whisper_understands_it(
    whisper: LoadedWhisper, tmp_path: Path, no_espeak_program: None
) -> None:
    """With the Piper voice installed it is the default engine (named in the result), and Whisper reads
    its speech back with ≥ 90 % of the words right; eSpeak NG's score is printed for comparison."""
    result = synthesize(make_settings(tmp_path), SENTENCE, tmp_path / "piper.wav")
    assert (result.engine, result.voice, result.language) == ("piper", PIPER_VOICE, "en")
    assert "Piper" in result.note and PIPER_VOICE in result.note
    rate, seconds, peak = _read(tmp_path / "piper.wav")
    assert rate == 22050 and 2.0 < seconds < 8.0 and peak > 3000
    piper = heard_accuracy(whisper, tmp_path / "p")
    espeak_score = heard_accuracy(whisper, tmp_path / "e", tts_engine="espeak")
    print(f"Whisper word accuracy on Piper: {piper:.1%}, on eSpeak NG: {espeak_score:.1%}")
    assert piper >= 0.90


def test_espeak_library_speaks_when_asked(tmp_path: Path, no_espeak_program: None) -> None:
    """tts_engine=espeak: the espeakng-loader library writes an audible mono WAV of plausible length."""
    out = tmp_path / "speech.wav"
    result = synthesize(make_settings(tmp_path, tts_engine="espeak"), SENTENCE, out)
    assert (result.engine, result.voice) == ("espeak-ng", "en-us")
    rate, seconds, peak = _read(out)
    assert rate == 22050 and 2.0 < seconds < 8.0 and peak > 3000


def test_other_languages_fall_back_to_espeak(tmp_path: Path, no_espeak_program: None) -> None:
    """No Piper voice speaks Spanish here: a Spanish job is spoken by eSpeak NG's Spanish voice; a job
    may also ask for an eSpeak NG voice by name."""
    settings = make_settings(tmp_path)
    spanish = synthesize(settings, "Hola a todos, bienvenidos.", tmp_path / "es.wav", language="es")
    assert (spanish.engine, spanish.voice, spanish.language) == ("espeak-ng", "es", "es")
    german = synthesize(settings, "Guten Morgen.", tmp_path / "de.wav", voice="de")
    assert (german.engine, german.language) == ("espeak-ng", "de")
    assert _read(tmp_path / "es.wav")[1] > 0.8


def test_speaking_rate_changes_both_engines(tmp_path: Path, no_espeak_program: None) -> None:
    """tts_speed scales Piper and eSpeak NG alike; tts_rate is eSpeak NG's words per minute; calls do
    not leak settings into each other."""
    for engine in ("piper", "espeak"):
        slow, fast, again = (tmp_path / f"{engine}-{n}.wav" for n in ("slow", "fast", "again"))
        synthesize(make_settings(tmp_path, tts_engine=engine, tts_speed=0.7), SENTENCE, slow)
        synthesize(make_settings(tmp_path, tts_engine=engine, tts_speed=1.5), SENTENCE, fast)
        synthesize(make_settings(tmp_path, tts_engine=engine, tts_speed=0.7), SENTENCE, again)
        assert _read(fast)[1] < 0.7 * _read(slow)[1], engine
        assert abs(_read(again)[1] - _read(slow)[1]) < 0.1 * _read(slow)[1], engine  # Piper varies a little
    slow_words, fast_words = tmp_path / "w100.wav", tmp_path / "w300.wav"
    synthesize(make_settings(tmp_path, tts_engine="espeak", tts_rate=100), SENTENCE, slow_words)
    synthesize(make_settings(tmp_path, tts_engine="espeak", tts_rate=300), SENTENCE, fast_words)
    assert _read(fast_words)[1] < 0.6 * _read(slow_words)[1]


# --- voices ------------------------------------------------------------------------------------------------


def test_unknown_voices_are_refused_with_what_exists(tmp_path: Path, no_espeak_program: None) -> None:
    """A job asking for a voice that does not exist gets InvalidInput naming the installed voices; the
    same name as the configured default is a ConfigError (a setting to change)."""
    with pytest.raises(InvalidInput, match=f"no voice called 'xx-nope'.*{PIPER_VOICE}"):
        synthesize(make_settings(tmp_path), "hello", tmp_path / "x.wav", voice="xx-nope")
    with pytest.raises(ConfigError, match="tts_voice: there is no voice called 'xx-nope'"):
        synthesize(make_settings(tmp_path, tts_voice="xx-nope"), "hello", tmp_path / "x.wav")


def test_piper_voices_are_found_by_name_and_file(tmp_path: Path) -> None:
    """Piper voices are named by their file (the voice package's, or a copy in model_dir/voices) and may
    be asked for by name; a configured piper_model that does not exist is a ConfigError."""
    settings = make_settings(tmp_path)
    packaged = choose_voice(settings, PIPER_VOICE, None)
    assert packaged.engine == "piper" and packaged.path is not None
    voices = settings.models / "voices"
    voices.mkdir(parents=True)
    for suffix in ("", ".json"):
        (voices / f"en_US-copy-medium.onnx{suffix}").symlink_to(Path(f"{packaged.path}{suffix}"))
    assert choose_voice(settings, "en_US-copy-medium", None).path == voices / "en_US-copy-medium.onnx"
    with pytest.raises(ConfigError, match="does not exist"):
        choose_voice(make_settings(tmp_path, piper_model=tmp_path / "missing.onnx"), None, None)


def test_without_piper_the_default_is_espeak_and_piper_voices_name_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_espeak_program: None
) -> None:
    """piper-tts not installed: the default falls back to eSpeak NG; asking for a Piper voice says to
    install the 'voice' extra."""
    monkeypatch.setitem(sys.modules, "piper", None)
    result = synthesize(make_settings(tmp_path), SENTENCE, tmp_path / "x.wav")
    assert result.engine == "espeak-ng"
    with pytest.raises(ConfigError, match=r"pip install 'mouthpiece-avatar\[voice\]'"):
        synthesize(make_settings(tmp_path), SENTENCE, tmp_path / "y.wav", voice=PIPER_VOICE)


def test_without_any_engine_the_error_names_the_voice_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_espeak_program: None
) -> None:
    """Neither Piper nor eSpeak NG installed (the core install): a ConfigError naming the 'voice' extra."""
    monkeypatch.setitem(sys.modules, "piper", None)
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    espeak.library.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"pip install 'mouthpiece-avatar\[voice\]'"):
            synthesize(make_settings(tmp_path), SENTENCE, tmp_path / "x.wav")
    finally:
        espeak.library.cache_clear()


# --- text --------------------------------------------------------------------------------------------------


def test_mentions_and_emoji_are_spoken_as_names_and_words(
    whisper: LoadedWhisper, tmp_path: Path, no_espeak_program: None
) -> None:
    """An announcement with a member mention, a channel, a custom emoji and an emoji: Piper says the
    member's display name and the emoji's name, and Whisper hears words there, not digits or symbols."""
    text = "Congratulations <@80351110224678912> <:party_parrot:1234567890> 🎉 see <#456789> for details!"
    names = Names(users={"80351110224678912": "Alice"}, channels={"456789": "general"})
    result = synthesize(make_settings(tmp_path), speakable(text, "en", names), tmp_path / "a.wav")
    assert "Alice" in result.spoken and "party parrot" in result.spoken and "party popper" in result.spoken
    assert not any(c.isdigit() for c in result.spoken) and "<" not in result.spoken
    heard = words_of(" ".join(w.text for w in recognize(whisper, wav_16k(tmp_path / "a.wav"), "en").words))
    print(f"heard: {' '.join(heard)}")
    assert "alice" in heard and "general" in heard and "party" in heard  # Piper samples: "parrot" varies
    assert not any(any(c.isdigit() for c in w) for w in heard)


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


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no system espeak-ng program")
def test_system_program_is_used_when_present(tmp_path: Path) -> None:
    """With espeak-ng on PATH, it writes the WAV (a separate process)."""
    out = tmp_path / "speech.wav"
    synthesize(make_settings(tmp_path, tts_engine="espeak"), SENTENCE, out)
    assert _read(out)[1] > 2.0


# --- repeatable speech -------------------------------------------------------------------------------------


def _leading_silence(path: Path) -> tuple[float, float]:
    """Seconds before the first and after the last sample louder than -40 dBFS."""
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = array("h", wav.readframes(wav.getnframes()))
    loud = [i for i, s in enumerate(samples) if abs(s) > 328]
    return loud[0] / rate, (len(samples) - loud[-1]) / rate


def test_piper_says_the_same_text_the_same_way_every_time(tmp_path: Path) -> None:
    """The same text, voice and settings give the same bytes, in this process and in a fresh one (the
    voice noise is seeded); another text gives other audio, and the key tells them apart."""
    settings = make_settings(tmp_path)
    first = synthesize(settings, SENTENCE, tmp_path / "1.wav")
    synthesize(settings, "Something else entirely.", tmp_path / "other.wav")
    second = synthesize(settings, SENTENCE, tmp_path / "2.wav")
    assert first.engine == "piper" and first == second
    assert (tmp_path / "1.wav").read_bytes() == (tmp_path / "2.wav").read_bytes()
    assert (tmp_path / "1.wav").read_bytes() != (tmp_path / "other.wav").read_bytes()
    script = (
        "import sys; from pathlib import Path; from stages.lib.speech.synthesis import synthesize; from tests.conftest import "
        "make_settings; synthesize(make_settings(Path(sys.argv[1])), sys.argv[2], Path(sys.argv[3]))"
    )
    other_process = tmp_path / "3.wav"
    subprocess.run([sys.executable, "-c", script, str(tmp_path), SENTENCE, str(other_process)], check=True)
    assert other_process.read_bytes() == (tmp_path / "1.wav").read_bytes()


def test_the_key_names_what_is_spoken_and_how(tmp_path: Path) -> None:
    """``plan`` gives the synthesis and its cache key without speaking: equal for equal requests,
    different for another text, voice or speed."""
    settings = make_settings(tmp_path)
    key = plan(settings, SENTENCE).key
    assert plan(settings, SENTENCE).key == key
    assert plan(settings, SENTENCE + " Again.").key != key
    assert plan(settings, SENTENCE, voice="de").key != key
    assert plan(make_settings(tmp_path, tts_speed=1.2), SENTENCE).key != key


@pytest.mark.parametrize("engine", ["piper", "espeak"])
def test_speech_has_a_lead_in_and_a_tail_of_silence(
    engine: str, tmp_path: Path, no_espeak_program: None
) -> None:
    """The first word starts after about ``LEAD_IN`` seconds of silence and the clip ends with at least
    ``TAIL`` seconds of it, with either engine."""
    out = tmp_path / "speech.wav"
    synthesize(make_settings(tmp_path, tts_engine=engine), SENTENCE, out)
    lead, tail = _leading_silence(out)
    assert LEAD_IN <= lead < LEAD_IN + 0.25
    assert tail >= TAIL
