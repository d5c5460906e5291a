"""Speed of the viseme renderer and of pocketsphinx timing on this machine.

Prints ms/frame of ``VisemeRenderer.render`` on the astronaut at 512×512 and placed in a 1280×720
frame (the 11 s JFK clip at 25 fps), without pocketsphinx (loudness only: the drawing cost) and with
forced alignment; then, at 720p with dlib's 68 landmarks, the visemes of the forced alignment given
(as the render stage gives them) and ``motion: lively`` (blinks, head motion with its head mask), the
drawing cost per frame of her smile (her own teeth move with her lips) and of the same face with the
mouth closed (teeth, gums and tongue painted), best of three; then seconds for forced alignment, phone
recognition and word recognition of the clip (11 s) and of it three times over (33 s).

    .venv/bin/python bench/bench_viseme.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import librosa
import numpy as np
import soundfile

from pipeline.contracts import FaceFrame, FaceTrack, JobOptions, Motion, SpeechTiming
from stages.lib.faces.landmarks import DlibDetector, face_box
from stages.lib.speech import align as speech
from stages.lib.speech.fallback import timing_from_audio
from stages.render.base import SAMPLE_RATE, RenderRequest
from stages.render.motion import Animated
from stages.render.viseme import VisemeRenderer

ASSETS = Path(__file__).resolve().parents[1] / "pipeline" / "assets"
TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def load_audio() -> np.ndarray:
    stereo, rate = soundfile.read(ASSETS / "jfk.flac", dtype="float32")
    return librosa.resample(stereo.mean(axis=1), orig_sr=rate, target_sr=SAMPLE_RATE)


def astronaut(size: tuple[int, int], zoom: float = 1.0) -> tuple[np.ndarray, FaceFrame]:
    """The astronaut centred in a ``size`` (w, h) frame, scaled to its height (``zoom`` > 1 crops to the
    head first, for a close-up), with a Haar box."""
    image = cv2.cvtColor(np.asarray(cv2.imread(str(ASSETS / "astronaut.png"))), cv2.COLOR_BGR2RGB)
    side = int(512 / zoom)
    top, left = max(0, 115 - side // 2), max(0, 235 - side // 2)
    image = image[top : top + side, left : left + side]
    width, height = size
    image = cv2.resize(image, (height, height), interpolation=cv2.INTER_CUBIC)
    frame = np.zeros((height, width, 3), np.uint8)
    offset = (width - height) // 2
    frame[:, offset : offset + height] = image
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    x, y, w, h = max(cascade.detectMultiScale(gray, 1.1, 5, minSize=(60, 60)), key=lambda b: b[2] * b[3])
    return frame, FaceFrame(box=(float(x), float(y), float(x + w), float(y + h)))


def render_ms_per_frame(
    audio: np.ndarray, size: tuple[int, int], align: bool, zoom: float = 1.0, fps: float = 25.0
) -> float:
    """Milliseconds per output frame of a whole ``render`` call (with or without pocketsphinx)."""
    frame, face = astronaut(size, zoom)
    n = int(np.ceil(len(audio) / SAMPLE_RATE * fps))
    track = FaceTrack(detector="haar", width=size[0], height=size[1], fps=fps, frames=[face])
    request = RenderRequest(audio, fps, n, track, JobOptions(transcript=TRANSCRIPT))
    renderer = VisemeRenderer(use_alignment=align)
    started = time.perf_counter()
    count = sum(1 for _ in renderer.render(request, ((i, frame, face) for i in range(n)), lambda _: None))
    return (time.perf_counter() - started) * 1000 / count


def closed_mouth(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``frame`` with the mouth inside the inner lips inpainted shut (a closed-mouth portrait)."""
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.rint(points[60:68]).astype(np.int32)], 255)
    return np.asarray(cv2.inpaint(frame, cv2.dilate(mask, np.ones((3, 3), np.uint8)), 5, cv2.INPAINT_TELEA))


def lively_ms_per_frame(
    audio: np.ndarray, timing: SpeechTiming, closed: bool, fps: float = 25.0
) -> tuple[float, float]:
    """Best of three: (wall, CPU) ms per output frame of the viseme renderer with ``motion: lively`` at
    1280×720 with dlib's landmarks and the clip's visemes given (no pocketsphinx in the timing). The CPU
    time (all threads) is the figure to compare on a shared machine."""
    frame, _ = astronaut((1280, 720))
    (found,) = DlibDetector().detect(frame)
    assert found.landmarks is not None
    points = np.asarray(found.landmarks, np.float64)
    if closed:
        frame = closed_mouth(frame, points)
    face = FaceFrame(box=face_box(found.landmarks), landmarks=[(float(x), float(y)) for x, y in points])
    n = int(np.ceil(len(audio) / SAMPLE_RATE * fps))
    track = FaceTrack(detector="dlib", width=1280, height=720, fps=fps, frames=[face])
    request = RenderRequest(
        audio, fps, n, track, JobOptions(transcript=TRANSCRIPT), speech=timing, motion=Motion.lively,
        seed=7, still=True,
    )  # fmt: skip
    wall, cpu = float("inf"), float("inf")
    for _ in range(3):
        renderer = Animated(VisemeRenderer())
        started, used = time.perf_counter(), time.process_time()
        count = sum(1 for _ in renderer.render(request, ((i, frame, face) for i in range(n)), lambda _: None))
        wall = min(wall, (time.perf_counter() - started) * 1000 / count)
        cpu = min(cpu, (time.process_time() - used) * 1000 / count)
    return wall, cpu


def seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    audio = load_audio()
    speech.recognize_phones(audio[:SAMPLE_RATE])  # build both decoders outside the timings
    speech.recognize(audio[:SAMPLE_RATE])
    for size, zoom in (((512, 512), 1.0), ((1280, 720), 1.0), ((1280, 720), 2.5)):
        draw = render_ms_per_frame(audio, size, align=False, zoom=zoom)
        full = render_ms_per_frame(audio, size, align=True, zoom=zoom)
        name = f"{size[0]}x{size[1]}" + (f" close-up x{zoom}" if zoom != 1.0 else "")
        print(f"render {name}: {draw:.2f} ms/frame drawing, {full:.2f} ms/frame with alignment")
    timing = timing_from_audio(audio, TRANSCRIPT)
    for closed in (False, True):
        wall, cpu = lively_ms_per_frame(audio, timing, closed)
        mouth = "closed mouth, painted interior" if closed else "smile, her own teeth"
        print(
            f"render 1280x720 landmarks + lively motion ({mouth}): {wall:.2f} ms/frame wall "
            f"({1000 / wall:.0f} frames/s), {cpu:.2f} ms/frame CPU"
        )
    for copies in (1, 3):
        clip = np.concatenate([audio] * copies)
        text = " ".join([TRANSCRIPT] * copies)
        length = len(clip) / SAMPLE_RATE
        print(f"align {length:.0f} s: {seconds(partial(speech.align, clip, text)):.2f} s")
        print(f"recognize_phones {length:.0f} s: {seconds(partial(speech.recognize_phones, clip)):.2f} s")
        print(f"recognize (words) {length:.0f} s: {seconds(partial(speech.recognize, clip)):.2f} s")


if __name__ == "__main__":
    main()
