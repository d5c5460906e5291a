"""Speech benchmark: real-time factors (seconds of work per second of audio; lower is faster) of Whisper
recognition, of the whole speech timing (Whisper + VAD + pocketsphinx alignment), and of Piper and eSpeak NG
synthesis, on this machine's CPU.

    python bench/bench_speech.py            # JFK (11 s) and 30 s of speech, a 4-sentence announcement

Prints figures; asserts nothing. Each figure is the best of ``--repeat`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import ASSETS_DIR
from pipeline.config import load_settings
from pipeline.media import load_audio, normalize_audio
from stages.lib.speech.recognition import recognize, whisper_model
from stages.lib.speech.synthesis import synthesize
from stages.lib.speech.timing import build_timing

ANNOUNCEMENT = (
    "Good evening everyone, and welcome to the community call. "
    "Tonight we will look at the new release, which is out on May 3rd. "
    "Thanks to the forty two people who sent us feedback. "
    "Please keep your questions for the end, and enjoy the show!"
)


def best(run: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` runs, after one warm-up run."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def wav_seconds(path: Path) -> float:
    import soundfile

    info = soundfile.info(str(path))
    return info.frames / info.samplerate


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mp-bench-speech-") as tmp:
        work = Path(tmp)
        settings = load_settings(data_dir=work / "data", log_level="warning", asr="whisper")
        normalize_audio(settings, ASSETS_DIR / "jfk.flac", work / "jfk.wav")
        jfk = load_audio(work / "jfk.wav")
        thirty = np.tile(jfk, 3)[: 30 * 16_000]
        start = time.perf_counter()
        whisper = whisper_model(settings)
        assert whisper is not None
        print(f"Whisper load: {time.perf_counter() - start:.2f} s ({whisper.name}, CPU)")
        print(f"{'what':44} {'audio s':>8} {'work s':>8} {'RTF':>6}")
        for name, audio in (("JFK", jfk), ("30 s of speech", thirty)):
            seconds = len(audio) / 16_000
            heard = best(lambda a=audio: recognize(whisper, a), args.repeat)
            print(f"{'Whisper base, ' + name:44} {seconds:8.1f} {heard:8.2f} {heard / seconds:6.3f}")
            timed = best(lambda a=audio: build_timing(a, whisper=whisper), args.repeat)
            print(
                f"{'speech timing (Whisper+VAD+align), ' + name:44} {seconds:8.1f} {timed:8.2f} {timed / seconds:6.3f}"
            )
        for engine in ("piper", "espeak"):
            config = load_settings(data_dir=work / "data", log_level="warning", tts_engine=engine)
            out = work / f"{engine}.wav"
            spent = best(lambda c=config, o=out: synthesize(c, ANNOUNCEMENT, o), args.repeat)
            seconds = wav_seconds(out)
            label = "Piper en_US-joe-medium" if engine == "piper" else "eSpeak NG en-us"
            print(f"{label + ', announcement':44} {seconds:8.1f} {spent:8.2f} {spent / seconds:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
