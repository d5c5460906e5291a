"""Text to speech for announcements and welcomes, offline: ``synthesize(settings, text, dst)`` writes a WAV.

Engines, first that applies:

1. Piper, when ``settings.piper_model`` names a ``.onnx`` voice (needs the ``piper-tts`` package);
2. the system ``espeak-ng`` program, when it is on PATH (a separate process: isolated and parallel);
3. the eSpeak NG library shipped in the ``espeakng-loader`` wheel, driven through ctypes in-process
   (its state is global, so calls are serialized by a lock).

Voice and speed come from ``tts_voice`` and ``tts_rate``. Empty text raises ``InvalidInput``; an engine
that is missing or refuses the settings raises ``ConfigError`` with what to change.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import threading
import wave
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog

from pipeline.config import Settings
from pipeline.errors import ConfigError, InvalidInput

log = structlog.get_logger("mouthpiece.tts")

MAX_CHARS = 2000

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flag values (speak_lib.h)
AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_RATE = 1
POS_CHARACTER = 1
CHARS_UTF8 = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_lock = threading.Lock()


def synthesize(settings: Settings, text: str, dst: Path) -> None:
    """Speak ``text`` into the WAV file ``dst`` (mono, 16-bit, the engine's sample rate)."""
    text = clean_text(text)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if settings.piper_model is not None:
        _piper(settings.piper_model, text, dst)
        engine = "piper"
    elif (binary := shutil.which("espeak-ng")) is not None:
        _espeak_program(binary, settings, text, dst)
        engine = "espeak-ng"
    else:
        _espeak_library(settings, text, dst)
        engine = "libespeak-ng"
    log.info("speech_synthesized", engine=engine, chars=len(text), bytes=dst.stat().st_size)


def clean_text(text: str) -> str:
    """``text`` with control characters and runs of whitespace collapsed; ``InvalidInput`` if empty."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if not cleaned:
        raise InvalidInput("there is no text to speak")
    if len(cleaned) > MAX_CHARS:
        raise InvalidInput(f"the text to speak is {len(cleaned)} characters; the limit is {MAX_CHARS}")
    return cleaned


# --- Piper ---------------------------------------------------------------------------------------------


def _piper(model: Path, text: str, dst: Path) -> None:
    if not model.is_file():
        raise ConfigError(f"piper_model {model} does not exist")
    try:
        from piper import PiperVoice
    except ImportError as exc:
        raise ConfigError("piper_model is set but Piper is not installed: pip install piper-tts") from exc
    voice = _piper_voice(str(model), PiperVoice)
    with wave.open(str(dst), "wb") as wav:
        if hasattr(voice, "synthesize_wav"):  # piper-tts >= 1.3
            voice.synthesize_wav(text, wav)
        else:
            voice.synthesize(text, wav)


@lru_cache(maxsize=2)
def _piper_voice(model: str, loader: Any) -> Any:
    return loader.load(model)


# --- eSpeak NG, the program ----------------------------------------------------------------------------------


def _espeak_program(binary: str, settings: Settings, text: str, dst: Path) -> None:
    args = [binary, "-v", settings.tts_voice, "-s", str(settings.tts_rate), "-w", str(dst), "--stdin"]
    proc = subprocess.run(args, input=text.encode(), capture_output=True, timeout=120, check=False)
    if proc.returncode != 0 or not dst.is_file() or dst.stat().st_size <= 44:
        detail = proc.stderr.decode(errors="replace").strip()[-300:]
        raise ConfigError(
            f"espeak-ng failed with voice {settings.tts_voice!r}: {detail or 'no audio written'}"
        )


# --- eSpeak NG, the library (espeakng-loader) -----------------------------------------------------------------


@lru_cache(maxsize=1)
def _library() -> tuple[Any, int]:
    """The initialized libespeak-ng and its sample rate (once per process)."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise ConfigError("no speech engine: pip install espeakng-loader, or install espeak-ng") from exc
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_dir = Path(espeakng_loader.get_data_path()).parent  # the folder holding espeak-ng-data
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"the eSpeak NG library could not be loaded: {exc}") from exc
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_dir).encode(), 0)
    if rate <= 0:
        raise ConfigError(f"the eSpeak NG library did not start (data in {data_dir})")
    return lib, rate


def _espeak_library(settings: Settings, text: str, dst: Path) -> None:
    lib, rate = _library()
    chunks: list[bytes] = []

    def collect(samples: Any, count: int, events: Any) -> int:
        if count > 0:
            chunks.append(ctypes.string_at(samples, count * 2))
        return 0  # 0: go on synthesizing

    callback = _SYNTH_CALLBACK(collect)  # kept referenced until synthesis ends
    encoded = text.encode()
    with _lock:
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(settings.tts_voice.encode()) != 0:
            raise ConfigError(f"eSpeak NG has no voice {settings.tts_voice!r} (set tts_voice, e.g. en-us)")
        lib.espeak_SetParameter(ESPEAK_RATE, int(settings.tts_rate), 0)
        status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    if status != 0 or not chunks:
        raise ConfigError(f"eSpeak NG could not speak the text (status {status})")
    _write_wav(dst, b"".join(chunks), rate)


def _write_wav(dst: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(dst), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
