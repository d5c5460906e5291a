"""Decoding frames and audio in-process (PyAV), lazily, with a prefetching thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np

from pipeline.errors import FFmpegError

T = TypeVar("T")
AUDIO_RATE = 16_000
"""The one sample rate of normalized voices (mono, 16-bit WAV): every stage reads voices at it."""


# --- decoding ---------------------------------------------------------------------------------------


def decode_frames(path: Path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of the first video stream, in order."""
    for pixels in decode_lazily(path):
        yield pixels()


def decode_lazily(
    path: Path, size: tuple[int, int] | None = None, *, grey: bool = False, full_range: bool = True
) -> Iterator[Callable[[], np.ndarray]]:
    """Per frame of the first video stream, a function giving its RGB pixels: frames nobody looks at
    are decoded (the codec needs them) but never converted, which is most of the cost. ``size``
    (width, height): pixels scaled to that size while converting (cheaper than converting, then scaling).
    ``grey``: H×W luma instead of RGB (nearly free from YUV; what landmark models look at), in full range
    unless ``full_range`` is False (then the Y plane as stored: what a comparison of two files must not
    use, and what the face detectors were tuned on)."""
    scaled: dict[str, Any] = {} if size is None else {"width": size[0], "height": size[1]}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if grey:
                yield LumaFrame(frame, size, full_range)
            else:
                yield partial(frame.to_ndarray, format="rgb24", **scaled)


class LumaFrame:
    """A decoded frame not yet converted (``decode_lazily(grey=True)``): calling it gives its luma;
    ``rgb()`` its colour at the same size, for the few frames a caller wants in colour too."""

    def __init__(self, frame: Any, size: tuple[int, int] | None, full_range: bool) -> None:
        self.frame, self.size, self.full_range = frame, size, full_range

    def __call__(self) -> np.ndarray:
        return _luma(self.frame, self.size, self.full_range)

    def rgb(self) -> np.ndarray:
        """H×W×3 RGB pixels (swscale converts with the frame's own colour range and matrix)."""
        scaled = {} if self.size is None else {"width": self.size[0], "height": self.size[1]}
        return np.asarray(self.frame.to_ndarray(format="rgb24", **scaled))


def _luma(frame: Any, size: tuple[int, int] | None, full_range: bool = True) -> np.ndarray:
    """A frame's luma in full range (0 black, 255 white): the Y plane itself for planar YUV (no
    conversion; limited-range Y, 16..235, is stretched by a lookup table), else converted to grey.

    One range for every file matters when two are compared: a JPEG avatar decodes to full-range
    ``yuvj420p`` and our videos are limited-range ``yuv420p``; their raw Y planes differ by 8–12 levels
    where the pictures are the same. The plane is scaled before it is stretched (the stretch is a
    per-level map, so the order changes levels by rounding only) and both run in OpenCV: a quarter of
    the pixels to map at 720p, about a sixth of the cost of stretching first."""
    import cv2  # only here: most users of this module never read luma

    if frame.format.name.startswith(("yuv", "yuvj")) and frame.format.is_planar:
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        luma: np.ndarray = rows[: frame.height, : frame.width]
        stretch = full_range and not is_full_range(frame)
    else:
        luma, stretch = frame.to_ndarray(format="gray"), False
    if size is not None and (luma.shape[1], luma.shape[0]) != size:
        luma = cv2.resize(luma, size, interpolation=cv2.INTER_AREA)
    if stretch:
        return np.asarray(cv2.LUT(luma, _LIMITED_TO_FULL))
    return np.ascontiguousarray(luma)


_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)
JPEG_RANGE = 2
"""FFmpeg's AVCOL_RANGE_JPEG (full range); 0 (unspecified) and 1 (MPEG) are limited range for YUV."""


def is_full_range(frame: Any) -> bool:
    """Whether a decoded YUV frame's luma spans 0..255 (``yuvj*`` formats, or tagged full range)."""
    return bool(frame.format.name.startswith("yuvj") or getattr(frame, "color_range", 0) == JPEG_RANGE)


def decode_audio(path: Path, rate: int = AUDIO_RATE, origin: float = 0.0) -> np.ndarray:
    """The first audio stream of any media file as mono float32 samples at ``rate`` (empty: none).
    Stream timestamps are honoured: sample 0 is at ``origin`` seconds of the container's timeline (the
    picture's first frame, for a measure against it); audio that starts later is preceded by silence,
    audio that starts earlier is cut, as a player would play it against that moment.

    The samples go into one array sized from the file's duration as they are decoded: ten minutes of
    sound peak at about the result's size (37 MiB), not at three and a half times it (list, join, copy)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, np.float32)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        out = _Samples(_expected_samples(container, stream, rate))
        start: float | None = None
        for frame in container.decode(stream):
            if start is None and frame.pts is not None and frame.time_base is not None:
                start = float(frame.pts * frame.time_base)
                out.add(np.zeros(max(0, round((start - origin) * rate)), np.float32))  # starts late
            for piece in resampler.resample(frame):
                out.add(piece.to_ndarray().reshape(-1))
        for piece in resampler.resample(None):
            out.add(piece.to_ndarray().reshape(-1))
    samples = out.samples()
    if start is None:  # no frame carried a time: the stream is taken to start at 0 (rare: joined then)
        start = 0.0
        samples = np.concatenate([np.zeros(max(0, round(-origin * rate)), np.float32), samples])
    early = round((origin - start) * rate)
    return samples[early:] if early > 0 else samples


def _expected_samples(container: Any, stream: Any, rate: int) -> int:
    """About how many samples the stream decodes to (a second more than its duration says)."""
    seconds = 0.0
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    return int((seconds + 1.0) * rate)


class _Samples:
    """Float32 samples appended into one array that grows (doubling) only past its first size."""

    def __init__(self, capacity: int) -> None:
        self._buffer = np.empty(max(capacity, 1024), np.float32)
        self._n = 0

    def add(self, chunk: np.ndarray) -> None:
        end = self._n + len(chunk)
        if end > len(self._buffer):
            grown = np.empty(max(end, 2 * len(self._buffer)), np.float32)
            grown[: self._n] = self._buffer[: self._n]
            self._buffer = grown
        self._buffer[self._n : end] = chunk
        self._n = end

    def samples(self) -> np.ndarray:
        """The samples (a view; copied when the array is mostly unused, so the slack is not kept)."""
        used = self._buffer[: self._n]
        return used.copy() if self._n < len(self._buffer) // 2 else used


def stream_seconds(path: Path) -> tuple[float, float]:
    """(video, audio) stream durations in seconds of a media file (0 for a missing stream), from the
    streams' own durations (an MP4's edit lists included)."""
    with av.open(str(path)) as container:
        found = []
        for streams in (container.streams.video, container.streams.audio):
            stream = streams[0] if streams else None
            if stream is None or stream.duration is None or stream.time_base is None:
                found.append(0.0)
                continue
            begin = float((stream.start_time or 0) * stream.time_base)
            found.append(begin + float(stream.duration * stream.time_base))
    return found[0], found[1]


def stream_starts(path: Path) -> tuple[float | None, float | None]:
    """(video, audio) start times in seconds of a media file's first video and audio streams (None for
    a missing stream): where a player starts each, edit lists and ``start_time`` included. A stream
    that starts later than the other plays later: ``-itsoffset 0.18`` on the audio gives (0, 0.18)."""
    with av.open(str(path)) as container:
        found: list[float | None] = []
        for streams in (container.streams.video, container.streams.audio):
            stream = streams[0] if streams else None
            if stream is None:
                found.append(None)
            elif stream.start_time is not None and stream.time_base is not None:
                found.append(float(stream.start_time * stream.time_base))
            else:
                found.append(0.0)
    return found[0], found[1]


FRAME_BUFFER_BYTES = 48 * 2**20
"""What one frame queue (decoded frames read ahead, rendered frames waiting for the encoder) may hold:
at 1080p eight RGB frames, at 720p seventeen. The slowest side sets the pace and a few frames absorb
its jitter: the deeper queues before (24 + 32 frames) held about 250 MiB more of a 1080p render's memory,
and cutting them changed its render stage's CPU by less than the measuring noise."""


def frames_within(width: int, height: int, budget: int = FRAME_BUFFER_BYTES, least: int = 4) -> int:
    """How many ``width``×``height`` RGB frames fit in ``budget`` bytes (at least ``least``)."""
    return max(least, budget // max(1, width * height * 3))


def prefetch(items: Iterable[T], depth: int = 16) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead (decode while the caller works).

    An exception in the producer is raised in the consumer; abandoning the iterator stops the producer.
    """
    buffer: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((False, None))
        except BaseException as exc:  # handed to the consumer
            buffer.put((False, exc))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            more, item = buffer.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()


def read_first_frame(path: Path) -> np.ndarray:
    for frame in decode_frames(path):
        return frame
    raise FFmpegError(f"{path.name} has no video frames")


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 samples in [-1, 1] of a 16 kHz WAV written by ``normalize_audio``."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if rate != AUDIO_RATE:
        raise FFmpegError(f"{path.name} is {rate} Hz, expected {AUDIO_RATE} (not a normalized clip)")
    return np.ascontiguousarray(data.mean(axis=1))
