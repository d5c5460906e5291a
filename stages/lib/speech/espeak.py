"""The eSpeak NG library (from the ``espeakng-loader`` wheel, part of the ``voice`` extra), via ctypes.

Two uses, both in-process and offline:

- ``speak(text, voice, rate)``: 16-bit mono PCM of the text (the TTS fallback engine);
- ``phonemize(words, voice)``: each word's IPA phonemes (speech timing for languages pocketsphinx does not
  know: phonemes spread over each word's time span).

libespeak-ng keeps global state (the current voice, the synth callback), so every call holds one lock.
``EspeakMissing`` (a ``ConfigError``) names the extra to install when the library is absent.
"""

from __future__ import annotations

import ctypes
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline import install_hint
from pipeline.errors import ConfigError, EspeakMissing

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flag values (speak_lib.h)
AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_RATE = 1
POS_CHARACTER = 1
CHARS_UTF8 = 1
PHONEMES_IPA = 0x02
PHONEME_SEPARATOR = ord("_") << 8
"""``espeak_TextToPhonemes`` mode: IPA, phonemes separated by ``_`` (bits 8-23 hold the separator)."""

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_lock = threading.Lock()

VOICE_OF_LANGUAGE = {"zh": "cmn", "en": "en-us", "pt": "pt-br", "nb": "nb", "no": "nb"}
"""eSpeak NG voice names for ISO 639-1 codes that differ from the code itself."""


@dataclass(frozen=True)
class Library:
    lib: Any
    sample_rate: int


def espeak_voice(language: str | None) -> str:
    """The eSpeak NG voice for an ISO 639-1 language code (``en-us`` when none is given)."""
    return VOICE_OF_LANGUAGE.get(language or "en", language or "en-us")


def available() -> bool:
    """Whether the library can be loaded (without raising)."""
    try:
        library()
    except ConfigError:
        return False
    return True


@lru_cache(maxsize=1)
def library() -> Library:
    """The initialized libespeak-ng and its sample rate (once per process)."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise EspeakMissing(
            f"eSpeak NG is not installed: install mouthpiece with the 'voice' extra ({install_hint('voice')})"
        ) from exc
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_dir = Path(espeakng_loader.get_data_path()).parent  # the folder holding espeak-ng-data
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"the eSpeak NG library could not be loaded: {exc}") from exc
    _declare(lib)
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_dir).encode(), 0)
    if rate <= 0:
        raise ConfigError(f"the eSpeak NG library did not start (data in {data_dir})")
    return Library(lib, rate)


def _declare(lib: Any) -> None:
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip


def has_voice(voice: str) -> bool:
    """Whether eSpeak NG knows ``voice`` (a language code such as ``de`` or a name such as ``en-us``)."""
    lib = library().lib
    with _lock:
        return bool(lib.espeak_SetVoiceByName(voice.encode()) == 0)


def speak(text: str, voice: str, rate: int) -> tuple[bytes, int]:
    """16-bit mono PCM of ``text`` and its sample rate. ``ConfigError`` for an unknown voice."""
    library_ = library()
    lib = library_.lib
    chunks: list[bytes] = []

    def collect(samples: Any, count: int, events: Any) -> int:
        if count > 0:
            chunks.append(ctypes.string_at(samples, count * 2))
        return 0  # 0: go on synthesizing

    callback = _SYNTH_CALLBACK(collect)  # kept referenced until synthesis ends
    encoded = text.encode()
    with _lock:
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ConfigError(f"eSpeak NG has no voice {voice!r} (use a language code such as en-us, de, es)")
        lib.espeak_SetParameter(ESPEAK_RATE, int(rate), 0)
        status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    if status != 0 or not chunks:
        raise ConfigError(f"eSpeak NG could not speak the text (status {status})")
    return b"".join(chunks), library_.sample_rate


def phonemize(words: list[str], voice: str) -> list[list[str]]:
    """Each word's IPA phonemes (stress marks and language-switch marks removed; [] for none).

    ``ConfigError`` for an unknown voice; ``EspeakMissing`` without the library.
    """
    lib = library().lib
    with _lock:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ConfigError(f"eSpeak NG has no voice {voice!r}")
        return [split_phonemes(_text_to_phonemes(lib, word)) for word in words]


def _text_to_phonemes(lib: Any, text: str) -> str:
    """All clauses of ``text`` as one IPA string (``espeak_TextToPhonemes`` returns a clause per call)."""
    buffer = ctypes.create_string_buffer(text.encode())
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    parts: list[str] = []
    while pointer.value:
        result = lib.espeak_TextToPhonemes(
            ctypes.byref(pointer), CHARS_UTF8, PHONEMES_IPA | PHONEME_SEPARATOR
        )
        if result:
            parts.append(result.decode("utf-8", errors="replace"))
    return " ".join(parts)


_SWITCH = re.compile(r"\([a-z-]+\)")
_MARKS = str.maketrans("", "", "ˈˌ‿|")


def split_phonemes(ipa: str) -> list[str]:
    """``"ɡ_ˈuː_t_ə_n"`` -> ``["ɡ", "uː", "t", "ə", "n"]``: split at separators and spaces, without stress
    marks or eSpeak's language-switch marks (``(en)``)."""
    cleaned = _SWITCH.sub("", ipa).translate(_MARKS)
    return [p for p in re.split(r"[_\s]+", cleaned) if p]
