"""Wav2Lip's mel features (checked against an independent numpy computation) and the window rule."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from pipeline.errors import InvalidInput
from stages.render.audio import mel_windows, melspectrogram


def _reference_mel(wav: np.ndarray) -> np.ndarray:
    """Upstream's mel, written out step by step: preemphasis, reflect-padded framed FFT, mel, dB, scale."""
    x = wav.astype(np.float64)
    emphasised = np.concatenate(([x[0]], x[1:] - 0.97 * x[:-1]))
    padded = np.pad(emphasised, 400, mode="reflect")
    n_cols = 1 + (len(padded) - 800) // 200
    frames = np.stack([padded[200 * t : 200 * t + 800] for t in range(n_cols)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic, as librosa's 'hann'
    magnitude = np.abs(np.fft.rfft(frames * hann, axis=1)).T  # (401, T)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, norm="slaney")
    db = 20 * np.log10(np.maximum(1e-5, basis @ magnitude)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def test_matches_independent_computation() -> None:
    """On a short chord with noise, every value equals the step-by-step numpy computation."""
    rng = np.random.default_rng(7)
    t = np.arange(4000) / 16000
    wav = (
        0.3 * np.sin(2 * np.pi * 220 * t)
        + 0.1 * np.sin(2 * np.pi * 1800 * t)
        + 0.01 * rng.standard_normal(4000)
    )
    wav = wav.astype(np.float32)
    mel = melspectrogram(wav)
    expected = _reference_mel(wav)
    assert mel.shape == expected.shape == (80, 21)
    assert mel.dtype == np.float32
    np.testing.assert_allclose(mel, expected, atol=2e-4)
    assert mel.max() > 0 and mel.min() < -2  # the test signal spans the range, not just a clipped floor


def test_silence_is_minus_four() -> None:
    """Silence sits on the −100 dB floor: every value is −4, one column per 200 samples plus one."""
    mel = melspectrogram(np.zeros(16000, np.float32))
    assert mel.shape == (80, 81)
    assert np.all(mel == -4.0)


def test_sine_on_a_bin_by_hand() -> None:
    """A 1 kHz tone (exactly FFT bin 50) has the closed-form mel of a hann-windowed sinusoid.

    The periodic hann window's DFT is 400 at 0 and −200 at ±1, so a cosine of amplitude B on bin 50 gives
    magnitudes 100B, 200B, 100B on bins 49, 50, 51 and nothing elsewhere; B is the tone's amplitude times
    the preemphasis gain |1 − 0.97·e^(−jω)|. Every column whose frame lies inside the signal is that.
    """
    wav = (0.9 * np.sin(2 * np.pi * 1000 * np.arange(8000) / 16000)).astype(np.float32)
    amplitude = 0.9 * abs(1 - 0.97 * np.exp(-2j * np.pi * 1000 / 16000))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    bands = amplitude * (100 * basis[:, 49] + 200 * basis[:, 50] + 100 * basis[:, 51])
    expected = np.clip(8 * ((20 * np.log10(np.maximum(1e-5, bands)) - 20 + 100) / 100) - 4, -4, 4)
    mel = melspectrogram(wav)
    assert mel.shape == (80, 41)
    np.testing.assert_allclose(mel[:, 3:38], np.repeat(expected[:, None], 35, axis=1), atol=1e-3)
    assert 1.0 < expected.max() < 4.0 and (expected == -4.0).sum() > 60  # one loud band, the rest floor


@pytest.mark.parametrize("n", [1, 199, 200, 12345])
def test_column_count(n: int) -> None:
    """T = len // 200 + 1 (centred frames)."""
    assert melspectrogram(np.full(n, 0.1, np.float32)).shape == (80, n // 200 + 1)


@pytest.mark.parametrize(
    "wav",
    [np.zeros((2, 100), np.float32), np.zeros(0, np.float32), np.array([0.0, np.nan, 0.1], np.float32)],
    ids=["stereo", "empty", "nan"],
)
def test_rejects_unusable_audio(wav: np.ndarray) -> None:
    """Multi-channel, empty or non-finite audio raises InvalidInput."""
    with pytest.raises(InvalidInput):
        melspectrogram(wav)


def _numbered(columns: int) -> np.ndarray:
    """A (80, columns) spectrogram whose every value is its column index."""
    return np.tile(np.arange(columns, dtype=np.float32), (80, 1))


@pytest.mark.parametrize("fps", [25.0, 30.0, 29.97, 24.0])
def test_window_rule(fps: float) -> None:
    """Frame i starts at column int(i·80/fps), and takes the last 16 columns once it would run past the end."""
    mel = _numbered(100)
    windows = mel_windows(mel, 60, fps)
    assert windows.shape == (60, 80, 16) and windows.dtype == np.float32
    for i, window in enumerate(windows):
        start = int(i * (80.0 / fps))
        start = 100 - 16 if start + 16 > 100 else start
        assert np.array_equal(window, mel[:, start : start + 16]), i


def test_windows_from_an_offset() -> None:
    """``first`` gives the same windows as taking them all and slicing."""
    mel = _numbered(300)
    assert np.array_equal(mel_windows(mel, 20, 25.0, first=37), mel_windows(mel, 57, 25.0)[37:])


def test_short_spectrogram_padded_with_silence() -> None:
    """Fewer than 16 columns: the window is the spectrogram followed by silence (−4)."""
    windows = mel_windows(_numbered(10), 3, 25.0)
    assert windows.shape == (3, 80, 16)
    assert np.array_equal(windows[2, :, :10], _numbered(10))
    assert np.all(windows[:, :, 10:] == -4.0)


def test_real_speech(speech: np.ndarray) -> None:
    """Three seconds of speech give 241 columns in range, loud in speech bands and varying over time."""
    mel = melspectrogram(speech)
    assert mel.shape == (80, 241)
    assert mel.min() >= -4 and mel.max() <= 4
    assert mel[5:40].max() > 1.0  # voiced speech energy below ~2 kHz
    assert mel.std(axis=1).mean() > 0.5  # syllables and pauses, not a steady tone
