"""Running ffmpeg: the binary to use, and one runner for every command line (errors carry its stderr)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import ffmpeg

from pipeline.config import MediaSettings
from pipeline.errors import ConfigError, FFmpegError, RetryableError


@lru_cache(maxsize=4)
def _find_ffmpeg(configured: str | None) -> str:
    if configured:
        if not Path(configured).is_file() and not shutil.which(configured):
            raise ConfigError(f"ffmpeg_path {configured} does not exist")
        return configured
    if found := shutil.which("ffmpeg"):
        return found
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise ConfigError("no ffmpeg: install imageio-ffmpeg or set MOUTHPIECE_FFMPEG_PATH") from exc


def ffmpeg_binary(settings: MediaSettings) -> str:
    return _find_ffmpeg(settings.ffmpeg_path)


def _tail(stderr: bytes, lines: int = 4) -> str:
    text = stderr.decode(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:])


def run_ffmpeg(
    settings: MediaSettings, stream: Any, what: str, *, flags: Sequence[str] = ("-loglevel", "error")
) -> subprocess.CompletedProcess[bytes]:
    """Run an ffmpeg-python graph (overwriting outputs); raise ``FFmpegError`` saying ``what`` failed,
    or ``RetryableError`` when ffmpeg was killed (out of memory, a stopping node: not the file's fault)."""
    args = ffmpeg.compile(stream, cmd=ffmpeg_binary(settings), overwrite_output=True)
    args[1:1] = ["-hide_banner", "-nostdin", *flags]
    proc = subprocess.run(args, capture_output=True, check=False)
    if proc.returncode < 0:
        raise RetryableError(f"{what} was interrupted: ffmpeg got signal {-proc.returncode}")
    if proc.returncode != 0:
        detail = _tail(proc.stderr)
        raise FFmpegError(f"{what} failed: {detail or 'ffmpeg exit code ' + str(proc.returncode)}", detail)
    return proc
