"""Calibration of the quality report: known sync offsets, measured; false flags on default renders.

    python bench/bench_quality.py            # the full grid (about 10-20 minutes on 2 busy cores)
    python bench/bench_quality.py --quick    # three renders, four shifts

1. Makes faces and voices: the astronaut as JPEG and PNG (scikit-image's copy), the bundled photo at
   256, 512 and 1024 px, moving-head clips at 512×512 and 1280×720 (the photo panned and tilted with ffmpeg); JFK, JFK with
   two 1.5 s pauses, and Piper's speech with pauses (when piper-tts and a voice are installed).
2. Renders them with the real pipeline and default options (`mouthpiece render`: photos get subtle
   motion) and reads each render's own quality report: none of them may be flagged.
3. Copies each render with its sound moved by -200, -120, -60, +60, +120, +200 and +300 ms, both in
   the container (`-itsoffset`, an edit list) and baked into re-encoded streams, and measures each
   copy (`stages.lib.quality.measure`, as `mouthpiece assess` does). Truth: the shift (a render is in sync
   by construction: the mouth is driven by the very audio it is muxed with). Shows every estimate's
   error and whether the flag is right: flagged exactly when the offset is outside ITU-R BT.1359's
   acceptable window (90 ms early .. 185 ms late).
4. Per-frame cost (CPU time of this process: wall time depends on what else the machine runs) of the
   landmarks on the 512 px moving clip: HOG on every frame, HOG every 5th frame or when the face moved
   (what the report does), and the old tracker (landmarks carried from frame to frame, a detection
   every 25); the whole report's cost a frame on the 720p moving-head render; and the mouth motion in
   pauses each reads on the renders with pauses (the old tracker's drift shows there as motion the
   mouth does not make).

Prints a Markdown table and figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import soundfile

from pipeline import ASSETS_DIR
from pipeline.cli import main as cli
from pipeline.config import load_settings
from pipeline.contracts import QualityReport
from pipeline.media import decode_lazily, ffmpeg_binary, shifted_sound
from pipeline.reports import ACCEPTABLE_EARLY_MS, ACCEPTABLE_LATE_MS
from stages.lib.faces.detection import Detection
from stages.lib.faces.landmarks import DlibDetector
from stages.lib.faces.tracker import follow_faces
from stages.lib.quality import HOG_EVERY, landmarks_every_frame, measure
from stages.lib.quality.analysis import mouth_opening, silence_motion
from stages.lib.speech.fallback import speaking_weight, speech_regions

SHIFTS_MS = (-200, -120, -60, 60, 120, 200, 300)
QUICK_SHIFTS_MS = (-120, -60, 120, 200)
PIPER_TEXT = (
    "Good morning. Today we test the report. It should stay quiet in the pauses, and honest about the sync."
)


@dataclass
class Render:
    name: str
    video: Path
    report: QualityReport


def run(args: list[str]) -> None:
    import subprocess

    subprocess.run(args, check=True, capture_output=True)


def faces(folder: Path, ffmpeg: str) -> dict[str, Path]:
    """The avatars: photos as JPEG and PNG, the bundled photo at three sizes, a moving-head clip."""
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    bundled = np.asarray(cv2.imread(str(ASSETS_DIR / "astronaut.png")))
    found = {"jpeg": folder / "astronaut.jpg", "png": folder / "astronaut.png"}
    cv2.imwrite(str(found["jpeg"]), astronaut, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(found["png"]), astronaut)
    for side in (256, 512, 1024):
        found[f"bundled-{side}"] = folder / f"bundled-{side}.png"
        cv2.imwrite(
            str(found[f"bundled-{side}"]), cv2.resize(bundled, (side, side), interpolation=cv2.INTER_AREA)
        )
    found["moving"] = folder / "moving.mp4"
    pan = "crop=400:400:'56+40*sin(2*PI*t/2)':'56+30*sin(2*PI*t/3)',scale=512:512"
    run([ffmpeg, "-v", "error", "-y", "-loop", "1", "-i", str(found["png"]), "-vf", pan, "-t", "8", "-r", "25",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(found["moving"])])  # fmt: skip
    found["moving-720p"] = folder / "moving-720p.mp4"
    pan = "scale=1400:1400,crop=1280:720:'60+60*sin(2*PI*t/2)':'60+40*sin(2*PI*t/3)'"
    run([ffmpeg, "-v", "error", "-y", "-loop", "1", "-i", str(found["png"]), "-vf", pan, "-t", "12", "-r", "25",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(found["moving-720p"])])  # fmt: skip
    return found


def voices(folder: Path) -> dict[str, Path]:
    """JFK, JFK with two 1.5 s pauses, and Piper's speech with pauses (when installed)."""
    stereo, rate = soundfile.read(ASSETS_DIR / "jfk.flac", dtype="float32", always_2d=True)
    mono = stereo.mean(axis=1)
    gap = np.zeros(int(1.5 * rate), np.float32)
    cut = (int(3.2 * rate), int(7.5 * rate))
    found = {"jfk": ASSETS_DIR / "jfk.flac", "pauses": folder / "pauses.wav"}
    soundfile.write(
        str(found["pauses"]),
        np.concatenate([mono[: cut[0]], gap, mono[cut[0] : cut[1]], gap, mono[cut[1] :]]),
        rate,
    )
    try:
        from stages.lib.speech.synthesis import synthesize

        found["piper"] = folder / "piper.wav"
        said = synthesize(
            load_settings(None, data_dir=folder / "tts"), PIPER_TEXT, found["piper"], language="en"
        )
        print(f"(speech by {said.engine}, voice {said.voice})")
    except Exception as exc:  # a bench: say why Piper is missing and go on
        print(f"(no Piper speech: {exc})")
        found.pop("piper", None)
    return found


def render(folder: Path, name: str, voice: Path, face: Path) -> Render:
    """One default render through the real pipeline (`mouthpiece render`), with its own report."""
    out = folder / f"{name}.mp4"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli(["--data-dir", str(folder / "data"), "render", str(voice), str(face), "-o", str(out)])
    if code not in (0, 3):
        raise SystemExit(f"render {name} failed (exit {code})")
    report = QualityReport.model_validate_json(out.with_name(f"{name}.quality.json").read_text())
    return Render(name, out, report)


def expected_flag(offset_ms: float) -> bool:
    return offset_ms < -ACCEPTABLE_EARLY_MS or offset_ms > ACCEPTABLE_LATE_MS


def calibrate(renders: list[Render], shifts: tuple[int, ...], folder: Path) -> list[str]:
    settings = load_settings(None, data_dir=folder)
    detector = DlibDetector()
    rows, errors, wrong = [], [], 0
    for r in renders:
        for shift in shifts:
            for baked in (False, True):
                copy = folder / f"{r.name}{shift:+d}{'b' if baked else 'c'}.mp4"
                shifted_sound(settings, r.video, copy, shift / 1000, baked=baked)
                got = measure(copy, landmarker=detector)
                truth = shift
                error = None if got.offset_ms is None else got.offset_ms - truth
                right = got.flagged == expected_flag(shift)
                wrong += not right
                if error is not None:
                    errors.append(abs(error))
                rows.append(
                    f"| {r.name} | {shift:+d} | {'baked' if baked else 'container'} | "
                    f"{'—' if got.offset_ms is None else f'{got.offset_ms:+.1f}'} | "
                    f"{'—' if error is None else f'{error:+.1f}'} | {got.offset_confidence:.2f} | "
                    f"{'yes' if got.flagged else 'no'} | {'yes' if expected_flag(shift) else 'no'} | "
                    f"{'ok' if right else 'WRONG'} |"
                )
                copy.unlink()
    print("| render | shift ms | how | estimate ms | error ms | confidence | flagged | should be | |")
    print("|---|---:|---|---:|---:|---:|---|---|---|")
    print("\n".join(rows))
    n = len(rows)
    missing = n - len(errors)
    summary = [
        f"copies: {n}; estimates within 20 ms: {sum(e <= 20 for e in errors)} of {n}"
        f" (no estimate: {missing}); largest error {max(errors, default=0):.1f} ms, median "
        f"{float(np.median(errors)) if errors else 0:.1f} ms",
        f"flags right: {n - wrong} of {n}",
    ]
    print("\n".join(summary))
    return summary


def landmark_costs(clip: Path, renders: list[Render]) -> None:
    """ms a frame of the landmarks on the moving clip (HOG on every frame, HOG every ``HOG_EVERY``th,
    the old tracker), the whole report's CPU a frame on the 720p render, and the mouth motion in pauses
    each way of placing landmarks reads on the renders with pauses."""
    detector = DlibDetector()
    frames = [pixels() for pixels in decode_lazily(clip, grey=True)]
    n = len(frames)
    counted = _Counting(detector)
    started = time.process_time()
    every = [p for _, p in landmarks_every_frame(_lazy(frames), n, detector, hog_every=1)]
    per_frame = (time.process_time() - started) * 1000 / n
    started = time.process_time()
    few = [p for _, p in landmarks_every_frame(_lazy(frames), n, counted)]
    fewer = (time.process_time() - started) * 1000 / n
    started = time.process_time()
    tracked = [s.found for s in follow_faces(_lazy(frames), n, detector, detect_every=25)]
    tracker = (time.process_time() - started) * 1000 / n
    drift = [
        float(np.hypot(*(a[48:68].mean(axis=0) - b[0].landmarks[48:68].mean(axis=0))))
        for a, b in zip(every, tracked, strict=True)
        if a is not None and b and b[0].landmarks is not None
    ]
    apart = [
        float(np.hypot(*(a - b).T).mean())
        for a, b in zip(every, few, strict=True)
        if a is not None and b is not None
    ]
    print(
        f"\nlandmarks on the moving clip ({n} frames of {frames[0].shape[1]}x{frames[0].shape[0]}, decoded):"
    )
    print(
        f"  HOG on every frame: {per_frame:.1f} ms CPU a frame, a face on {sum(p is not None for p in every)}"
    )
    print(f"  HOG every {HOG_EVERY}th frame or when the face moved (the report): {fewer:.1f} ms CPU a frame, "
          f"HOG on {counted.hog} of {n} frames, points {np.mean(apart):.2f} px from the every-frame ones")  # fmt: skip
    print(f"  old tracker (a detection every 25 frames): {tracker:.1f} ms CPU a frame; its mouth is "
          f"{np.mean(drift):.1f} px (max {np.max(drift):.1f}) from the per-frame one")  # fmt: skip
    for r in renders:
        if "720p" in r.name:
            started = time.process_time()
            report = measure(r.video, landmarker=detector)
            cost = (time.process_time() - started) * 1000 / report.frames
            print(f"\nthe whole report (measure, decoding included) of {r.name}: {cost:.1f} ms CPU a frame")
    print(
        "\nmouth motion in pauses (0: still; over 0.25 is flagged): HOG every frame / the report / old tracker"
    )
    for r in renders:
        if "pauses" not in r.name and "piper" not in r.name:
            continue
        motion = [_pause_motion(r.video, detector, how) for how in ("every", "report", "old")]
        print(f"  {r.name}: {motion[0]:.3f} / {motion[1]:.3f} / {motion[2]:.3f}")


class _Counting:
    """The real detector, counting its HOG searches."""

    name = "dlib"

    def __init__(self, inner: DlibDetector) -> None:
        self.inner, self.hog = inner, 0

    def detect(self, frame: np.ndarray) -> list[Detection]:
        self.hog += 1
        return self.inner.detect(frame)

    def detect_near(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> list[Detection]:
        self.hog += 1
        return self.inner.detect_near(frame, box)

    def landmarks(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        return self.inner.landmarks(frame, box)


def _lazy(frames: list[np.ndarray]) -> Iterator[Callable[[], np.ndarray]]:
    """Decoded frames as the lazy frames the landmark code takes."""
    return (partial(np.asarray, f) for f in frames)


def _pause_motion(video: Path, detector: DlibDetector, how: str) -> float:
    frames = list(decode_lazily(video, grey=True))
    n = len(frames)
    if how == "old":
        points = [
            s.found[0].landmarks if s.found else None
            for s in follow_faces(iter(frames), n, detector, detect_every=25)
        ]
    else:
        hog_every = 1 if how == "every" else HOG_EVERY
        points = [p for _, p in landmarks_every_frame(iter(frames), n, detector, hog_every=hog_every)]
    mouth = np.array([np.nan if p is None else mouth_opening(p) for p in points])
    from stages.lib.quality import aligned_audio

    speaking = speaking_weight(speech_regions(aligned_audio(video)), 25.0, n)
    value = silence_motion(mouth, speaking)
    return float("nan") if value is None else value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two renders and four shifts")
    parser.add_argument("--keep", type=Path, help="make everything in this folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = args.keep or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        ffmpeg = ffmpeg_binary(load_settings(None, data_dir=folder))
        face, voice = faces(folder, ffmpeg), voices(folder)
        plan = [
            ("jfk-jpeg", "jfk", "jpeg"),
            ("pauses-moving", "pauses", "moving"),
            ("pauses-720p", "pauses", "moving-720p"),
        ]
        if not args.quick:
            plan += [
                ("jfk-png", "jfk", "png"),
                ("pauses-256", "pauses", "bundled-256"),
                ("pauses-1024", "pauses", "bundled-1024"),
                ("piper-512", "piper" if "piper" in voice else "pauses", "bundled-512"),
            ]
        renders = []
        print("default renders (their own quality report):")
        print("| render | score | flagged | offset ms | confidence | pauses | flicker | away from face |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for name, v, f in plan:
            started = time.perf_counter()
            r = render(folder, name, voice[v], face[f])
            q = r.report
            print(f"| {name} | {q.score:.2f} | {'yes' if q.flagged else 'no'} | {q.offset_ms} | "
                  f"{q.offset_confidence:.2f} | {q.silence_motion} | {q.mouth_flicker} | {q.outside_change} |"
                  f"  <!-- {time.perf_counter() - started:.0f} s -->")  # fmt: skip
            renders.append(r)
        print(f"false flags on default renders: {sum(r.report.flagged for r in renders)} of {len(renders)}\n")
        calibrate(renders, QUICK_SHIFTS_MS if args.quick else SHIFTS_MS, folder)
        landmark_costs(face["moving"], renders)


if __name__ == "__main__":
    main()
