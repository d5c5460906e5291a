"""Wav2Lip's audio features: the mel spectrogram exactly as upstream computes it, and its windows.

Upstream (``hparams.py``, ``audio.py``): 16 kHz; preemphasis 0.97; STFT n_fft 800, hop 200, window 800
(hann, centred); magnitude; 80 slaney-normalised mel bands over 55..7600 Hz; 20·log10(max(1e-5, x)) − 20
dB; normalised to [−4, 4] by ``clip(8·(S + 100)/100 − 4, −4, 4)``. That gives 80 mel columns a second.

The one deliberate choice: upstream pinned librosa 0.7, whose STFT pads the signal ends by reflection
(librosa ≥ 0.10 pads with zeros); the released checkpoints were trained on reflection-padded features,
so reflection it is. It only changes the first and last two columns.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import librosa
import numpy as np
import scipy.signal

from pipeline.errors import InvalidInput
from pipeline.media import AUDIO_RATE

SAMPLE_RATE = AUDIO_RATE  # the one rate of normalized voices: pipeline.media.AUDIO_RATE
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
MEL_STEP = 16
"""Mel columns the network sees per video frame (0.2 s)."""
COLUMNS_PER_SECOND = SAMPLE_RATE / HOP
SILENCE = -MAX_ABS
"""The normalised value of silence (and of anything 100 dB below the reference)."""


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """The normalised mel spectrogram (80, T) float32 of mono 16 kHz samples, T = len(wav) // 200 + 1.

    Raises ``InvalidInput`` for an empty, multi-channel or non-finite signal.
    """
    wav = _checked(wav)
    emphasised = scipy.signal.lfilter([1.0, -PREEMPHASIS], [1.0], wav)
    with warnings.catch_warnings():
        # clips under 800 samples are fine (reflection-padded like the rest); librosa warns regardless
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        spectrum = librosa.stft(y=emphasised, n_fft=N_FFT, hop_length=HOP, win_length=WIN, pad_mode="reflect")
    mel = mel_basis() @ np.abs(spectrum)
    return normalize(amp_to_db(mel) - REF_LEVEL_DB).astype(np.float32)


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """The (80, 401) mel filterbank upstream uses (librosa's default slaney normalisation)."""
    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)
    basis.setflags(write=False)  # cached and shared
    return basis


def amp_to_db(x: np.ndarray) -> np.ndarray:
    """Amplitude to decibels, floored at −100 dB (amplitude 1e-5)."""
    floor = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    return 20 * np.log10(np.maximum(floor, x))


def normalize(s: np.ndarray) -> np.ndarray:
    """Decibels (reference removed) to the symmetric [−4, 4] range, clipped."""
    scaled = (2 * MAX_ABS) * ((s - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS
    return np.clip(scaled, -MAX_ABS, MAX_ABS)


def mel_windows(mel: np.ndarray, n_frames: int, fps: float, first: int = 0) -> np.ndarray:
    """The network's mel input for video frames ``first .. first + n_frames - 1``: (n_frames, 80, 16).

    Frame i takes columns [int(i·80/fps), +16), or the last 16 columns once that runs past the end
    (upstream's rule). A spectrogram shorter than 16 columns is padded on the right with silence.
    ``first`` lets a caller take the windows batch by batch instead of all at once.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if mel.shape[1] < MEL_STEP:
        mel = np.pad(mel, ((0, 0), (0, MEL_STEP - mel.shape[1])), constant_values=SILENCE)
    last = mel.shape[1] - MEL_STEP
    step = COLUMNS_PER_SECOND / fps  # computed once, as upstream does, so rounding matches it
    starts = np.array([min(int(i * step), last) for i in range(first, first + n_frames)], dtype=np.int64)
    columns = starts[:, None] + np.arange(MEL_STEP)[None, :]
    return np.ascontiguousarray(mel[:, columns].transpose(1, 0, 2), dtype=np.float32)


def _checked(wav: np.ndarray) -> np.ndarray:
    """``wav`` as a 1-D float64 array, or InvalidInput saying why it cannot be used."""
    samples = np.asarray(wav)
    if samples.ndim != 1:
        raise InvalidInput(f"the voice must be mono samples, got an array of shape {samples.shape}")
    if samples.size == 0:
        raise InvalidInput("the voice clip is empty")
    samples = samples.astype(np.float64)
    if not np.all(np.isfinite(samples)):
        raise InvalidInput("the voice clip contains invalid (NaN or infinite) samples")
    return samples
