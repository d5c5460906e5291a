"""ComfyUI's AUDIO and IMAGE values become files the pipeline reads, named by content, and back."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from mouthpiece_comfyui.media import audio_from_file, audio_to_wav, images_to_files, silence_wav

JFK = Path(__file__).resolve().parents[2] / "pipeline" / "assets" / "jfk.flac"


def test_audio_round_trip_keeps_length_and_sound(tmp_path: Path) -> None:
    """JFK (11 s) read as AUDIO, written as WAV, read again: same length, same samples (16-bit)."""
    audio = audio_from_file(JFK)
    assert audio["sample_rate"] == 48_000 and audio["waveform"].shape[:2] == (1, 1)
    assert audio["waveform"].shape[-1] / 48_000 == pytest.approx(11.0, abs=0.05)
    wav = audio_to_wav(audio, tmp_path)
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48_000, 1, 2)
        assert w.getnframes() == audio["waveform"].shape[-1]
    again = audio_from_file(wav)["waveform"]
    assert torch.allclose(again, audio["waveform"].clamp(-1, 1), atol=2e-4)  # 16-bit: clipped at full scale
    assert audio_to_wav(audio, tmp_path) == wav  # content-named: the same voice is the same file


def test_stereo_batch_item_and_empty_voice(tmp_path: Path) -> None:
    stereo = {"waveform": torch.rand(2, 2, 4800) * 2 - 1, "sample_rate": 44_100}
    second = audio_to_wav(stereo, tmp_path, item=1)
    with wave.open(str(second)) as w:
        assert (w.getnchannels(), w.getnframes(), w.getframerate()) == (2, 4800, 44_100)
    assert audio_to_wav(stereo, tmp_path, item=0) != second
    with pytest.raises(ValueError, match="the voice is empty"):
        audio_to_wav({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16_000}, tmp_path)


def test_image_batch_becomes_one_png_per_picture(tmp_path: Path) -> None:
    from PIL import Image

    batch = torch.rand(3, 64, 48, 3)
    batch[1] = batch[0]
    paths = images_to_files(batch, tmp_path)
    assert len(paths) == 3 and paths[0] == paths[1] != paths[2]
    first = np.asarray(Image.open(paths[0]))
    assert first.shape == (64, 48, 3)
    assert np.abs(first.astype(float) / 255 - batch[0].numpy()).max() <= 1 / 255
    with pytest.raises(ValueError, match=r"\[batch, height, width, channels\]"):
        images_to_files(torch.rand(2, 3, 8), tmp_path)


def test_silence_is_a_short_valid_wav(tmp_path: Path) -> None:
    with wave.open(str(silence_wav(tmp_path))) as w:
        assert w.getnframes() == 16_000 and w.readframes(10) == b"\x00" * 20


def test_frame_batch_becomes_one_clip(tmp_path: Path) -> None:
    """An IMAGE batch taken as frames: one H.264 clip, every frame, the asked rate, odd sizes cropped even."""
    from mouthpiece_comfyui.media import frames_to_video
    from pipeline.config import MediaSettings
    from pipeline.media import count_frames, probe

    frames = torch.linspace(0, 1, 12).reshape(12, 1, 1, 1).expand(12, 65, 47, 3).contiguous()
    clip = frames_to_video(frames, tmp_path, 12.0, MediaSettings())
    info = probe(clip)
    assert (info.width, info.height, info.video_codec) == (46, 64, "h264")
    assert count_frames(clip) == 12 and info.duration == pytest.approx(1.0, abs=0.1)
    assert frames_to_video(frames, tmp_path, 12.0, MediaSettings()) == clip
    with pytest.raises(ValueError, match="frames must be an IMAGE batch"):
        frames_to_video(torch.rand(4, 4, 3), tmp_path, 25.0, MediaSettings())
