"""Faces on this machine: landmarks ms/frame at 720p, the tracker's cost per frame, render frames/s.

    python bench/bench_faces.py            # 720p (the astronaut photo placed in a 1280x720 frame)
    python bench/bench_faces.py --height 1080

Prints, for a 1280x720 frame holding the astronaut (face about 250 px wide):

- dlib: whole-frame HOG search (scaled to 640 px), search in a crop around a known face, the 68-point
  shape predictor from a box, and the face descriptor (used only to tell people apart after a cut);
- the tracker on a 10 s moving-head clip (decoded H.264 included): ms per frame, detector runs;
- render frames/s at that size: viseme with landmarks (motion none and subtle: blinks + head motion);
- the quality measure on the rendered clip: ms per frame.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import librosa
import numpy as np
import soundfile

from pipeline import ASSETS_DIR
from pipeline.config import Settings, load_settings
from pipeline.contracts import FaceTrack, JobOptions, Motion
from pipeline.media import FrameWriter, decode_frames, decode_lazily, mux
from stages.detect.track import build_track
from stages.lib.faces.landmarks import DlibDetector, FaceDescriber
from stages.lib.faces.tracker import track_faces
from stages.lib.quality import measure
from stages.lib.speech.fallback import timing_from_audio
from stages.render.base import SAMPLE_RATE, RenderRequest
from stages.render.motion import Animated
from stages.render.viseme import VisemeRenderer

TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
FPS = 25.0


def frame_of(height: int, t: float = 0.0) -> np.ndarray:
    """The astronaut scaled to the frame's height in a 16:9 frame, turned ±6° and drifting with ``t``."""
    photo = cv2.cvtColor(np.asarray(cv2.imread(str(ASSETS_DIR / "astronaut.png"))), cv2.COLOR_BGR2RGB)
    width = height * 16 // 9 // 2 * 2
    face = cv2.resize(photo, (height, height), interpolation=cv2.INTER_CUBIC)
    frame = np.full((height, width, 3), 40, np.uint8)
    x = (width - height) // 2
    frame[:, x : x + height] = face
    turn = cv2.getRotationMatrix2D((x + height * 0.44, height * 0.25), 6 * math.sin(t), 1.0)
    turn[0, 2] += 0.02 * width * math.sin(0.7 * t)
    return cv2.warpAffine(frame, turn, (width, height), borderMode=cv2.BORDER_REFLECT)


def ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) * 1000 / repeat


def speech() -> np.ndarray:
    stereo, rate = soundfile.read(ASSETS_DIR / "jfk.flac", dtype="float32")
    return librosa.resample(stereo.mean(axis=1), orig_sr=rate, target_sr=SAMPLE_RATE)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    detector, describer = DlibDetector(), FaceDescriber()
    still = frame_of(args.height)
    (face,) = detector.detect(still)
    assert face.landmarks is not None
    print(f"frame {still.shape[1]}x{still.shape[0]}, face {face.width:.0f} px wide")
    print(f"dlib HOG, whole frame:        {ms(lambda: detector.detect(still), 10):7.1f} ms")
    print(f"dlib HOG, crop around a face: {ms(lambda: detector.detect_near(still, face.box), 20):7.1f} ms")
    print(f"dlib 68 landmarks from a box: {ms(lambda: detector.landmarks(still, face.box), 50):7.1f} ms")
    print(f"dlib face descriptor:         {ms(lambda: describer.describe(still, face.landmarks), 5):7.1f} ms")
    with tempfile.TemporaryDirectory(prefix="mp-bench-faces-") as tmp:
        folder = Path(tmp)
        settings = load_settings(None, data_dir=folder)
        n = int(args.seconds * FPS)
        clip = folder / "clip.mp4"
        width = still.shape[1]
        with FrameWriter(settings, clip, width, args.height, FPS) as writer:
            for i in range(n):
                writer.write(frame_of(args.height, i / FPS))
        started = time.perf_counter()
        tracked = track_faces(decode_lazily(clip, grey=True), n, detector)  # as the detect stage runs it
        seconds = time.perf_counter() - started
        print(
            f"tracker (decode + landmarks every frame, detector every 5th): {seconds * 1000 / n:.1f} ms/frame, "
            f"{tracked.detector_runs} detector runs for {n} frames"
        )
        started = time.perf_counter()
        sum(1 for pixels in decode_lazily(clip, grey=True) if pixels() is not None)
        decode = time.perf_counter() - started
        print(f"  of which H.264 decoding alone: {decode * 1000 / n:.1f} ms/frame")
        track = build_track(
            tracked.found, width=width, height=args.height, fps=FPS, detector="dlib", cuts=tracked.cuts
        )
        render_fps(clip, track, folder, settings)


def render_fps(clip: Path, track: FaceTrack, folder: Path, settings: Settings) -> None:
    frames = list(decode_frames(clip))
    n = len(frames)
    audio = np.resize(speech(), int(n / FPS * SAMPLE_RATE))
    timing = timing_from_audio(audio, None)
    out: list[np.ndarray] = []
    for motion in (Motion.none, Motion.subtle):
        request = RenderRequest(audio, FPS, n, track, JobOptions(), speech=timing, motion=motion, seed=1)
        renderer = Animated(VisemeRenderer())
        started = time.perf_counter()
        out = list(
            renderer.render(request, ((i, f, track.frames[i]) for i, f in enumerate(frames)), lambda _: None)
        )
        fps = n / (time.perf_counter() - started)
        print(f"viseme render, landmarks, motion {motion.value}: {fps:.1f} frames/s")
    silent, wav, video = folder / "silent.mp4", folder / "voice.wav", folder / "talking.mp4"
    with FrameWriter(settings, silent, frames[0].shape[1], frames[0].shape[0], FPS) as writer:
        for frame in out:
            writer.write(frame)
    soundfile.write(str(wav), audio, SAMPLE_RATE)
    mux(settings, silent, wav, video, len(audio) / SAMPLE_RATE)
    landmarker = DlibDetector()  # loaded once per worker (warm-up), not per measure: outside the clock
    started = time.perf_counter()
    report = measure(video, landmarker=landmarker)
    seconds = time.perf_counter() - started
    print(
        f"quality measure: {seconds * 1000 / n:.1f} ms/frame (offset {report.offset_ms} ms, score {report.score})"
    )


if __name__ == "__main__":
    main()
