"""Media I/O in one place: every ffmpeg command line and in-process decoding (PyAV), by section:

- ``run``: the ffmpeg binary and the one runner of command lines (``FFmpegError`` carries its stderr);
- ``probe``: what a file is (streams, displayed size after rotation, still or moving);
- ``decode``: frames and audio, lazily and prefetched; ``AUDIO_RATE``;
- ``normalize``: the validate stage's conversions (voice to 16 kHz WAV, avatar to constant-fps H.264);
- ``encode``: frames to H.264, muxing, fitting a size, looping a clip to a length;
- ``finish``: the enhance stage's one pass (loudness, filters, subtitles).

Stages turn ``FFmpegError`` on an upload into ``InvalidInput``; on our own files it is retried. Numpy
transforms live in the stages, not here. This module re-exports each section's public names."""

from __future__ import annotations

from pipeline.media.decode import (
    AUDIO_RATE,
    FRAME_BUFFER_BYTES,
    LumaFrame,
    decode_audio,
    decode_frames,
    decode_lazily,
    frames_within,
    load_audio,
    prefetch,
    read_first_frame,
    stream_seconds,
    stream_starts,
)
from pipeline.media.encode import (
    PICTURE_FINAL,
    FrameWriter,
    cycle_indices,
    frames_for,
    loops_forward,
    mux,
    reencode_to_bitrate,
    shifted_sound,
    source_indices,
)
from pipeline.media.finish import (
    FinishJob,
    Loudness,
    SubtitleFont,
    finish_args,
    finish_video,
    measure_loudness,
    subtitle_style,
)
from pipeline.media.normalize import (
    already_normalized,
    avatar_size,
    bounded_size,
    normalize_audio,
    normalize_avatar,
)
from pipeline.media.probe import Probe, count_frames, looks_like, probe
from pipeline.media.run import ffmpeg_binary

__all__ = [
    "AUDIO_RATE",
    "FRAME_BUFFER_BYTES",
    "PICTURE_FINAL",
    "FinishJob",
    "FrameWriter",
    "Loudness",
    "LumaFrame",
    "Probe",
    "SubtitleFont",
    "already_normalized",
    "avatar_size",
    "bounded_size",
    "count_frames",
    "cycle_indices",
    "decode_audio",
    "decode_frames",
    "decode_lazily",
    "ffmpeg_binary",
    "finish_args",
    "finish_video",
    "frames_for",
    "frames_within",
    "load_audio",
    "looks_like",
    "loops_forward",
    "measure_loudness",
    "mux",
    "normalize_audio",
    "normalize_avatar",
    "prefetch",
    "probe",
    "read_first_frame",
    "reencode_to_bitrate",
    "shifted_sound",
    "source_indices",
    "stream_seconds",
    "stream_starts",
    "subtitle_style",
]
