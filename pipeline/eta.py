"""How long a job has left: stage timings this installation measured, and the progress line people see.

**Learning.** Each time a stage finishes a task, the runner calls ``learn``: the stage's seconds per second
of voice (``seconds / max(audio, MIN_AUDIO)``) goes into a moving average kept in the work bucket
(``stats/timings.json``, ``pipeline.contracts.Timings``), by stage and, for render, by renderer
(``render/viseme``, ``render/wav2lip``): what this machine did, not a guess. Writes are read-modify-write,
serialized within a process; two processes finishing at once may lose one sample, never the file.

**Estimating.** ``estimate`` folds a job's stage records: for every video (task) the stages it has left,
the one it is in counted by its progress, each at the measured rate times the voice's length. Stages run
one task after another on each worker, so the remaining work of every video is summed (an estimate that
errs long rather than short). With no measurement for a stage the job still needs, there is no
estimate, and the line says so instead of inventing one.

**Showing.** ``Smoother`` keeps what was last shown per job, so a new estimate may fall freely but rises
only slowly above what the last one, counted down, would say now: the time left never jumps back up
wildly. ``progress_line`` writes "video 2 of 5 · render 40 % · about 1 min 30 s left". Discord's edits,
the console and ``status --follow`` all show it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import structlog
from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.contracts import (
    FINAL_STATES,
    JobRecord,
    Manifest,
    StageRate,
    StageRecord,
    State,
    Timings,
    utcnow,
)
from pipeline.errors import MouthpieceError
from pipeline.keys import manifest_key, spec_key, timings_key
from pipeline.storage.base import ObjectStore

log = structlog.get_logger("mouthpiece.eta")

MIN_AUDIO = 2.0
"""Seconds of voice a job counts as at least (a stage has fixed costs a 0.3 s clip does not pay for)."""
WEIGHT = 0.3
"""Weight of the newest run in the moving average."""
RISE = 0.25
"""Share of an upward jump in the estimate shown at once (the rest is not shown unless it persists)."""
NO_ESTIMATE = "no time estimate yet (nothing measured here so far)"
NO_AUDIO_YET = "time left known once the voice clip is read"


def rate_key(stage: str, renderer: str | None) -> str:
    return f"render/{renderer or 'viseme'}" if stage == "render" else stage


# --- learning --------------------------------------------------------------------------------------------


def read_timings(store: ObjectStore, settings: Settings) -> Timings:
    """The measured timings (empty when none yet or unreadable)."""
    if store.stat(settings.bucket_work, timings_key()) is None:
        return Timings()
    try:
        return Timings.model_validate_json(store.get(settings.bucket_work, timings_key()))
    except (ValidationError, MouthpieceError):
        log.warning("timings_unreadable")
        return Timings()


def learn(
    store: ObjectStore, settings: Settings, stage: str, renderer: str | None, audio: float, seconds: float
) -> StageRate:
    """Add one measured run (``seconds`` for ``audio`` seconds of voice) and store the timings."""
    with _LEARNING:  # workers of one process never lose each other's samples
        return _learn(store, settings, stage, renderer, audio, seconds)


_LEARNING = threading.Lock()


def _learn(
    store: ObjectStore, settings: Settings, stage: str, renderer: str | None, audio: float, seconds: float
) -> StageRate:
    timings = read_timings(store, settings)
    key = rate_key(stage, renderer)
    sample = seconds / max(audio, MIN_AUDIO)
    old = timings.rates.get(key)
    if old is None:
        rate = StageRate(seconds_per_audio_second=sample)
    else:
        mixed = (1 - WEIGHT) * old.seconds_per_audio_second + WEIGHT * sample
        rate = StageRate(seconds_per_audio_second=mixed, samples=old.samples + 1, updated_at=utcnow())
    timings.rates[key] = rate
    store.put(
        settings.bucket_work, timings_key(), timings.model_dump_json(indent=1).encode(),
        content_type="application/json",
    )  # fmt: skip
    return rate


def learn_from_run(
    store: ObjectStore,
    settings: Settings,
    stage: str,
    renderer: str | None,
    outputs: list[Manifest],
    seconds: float,
) -> None:
    """``learn`` from a finished run whose manifests say how long the voice is (best effort)."""
    if not outputs:
        return
    try:
        learn(store, settings, stage, renderer, outputs[0].media.audio_seconds, seconds)
    except MouthpieceError as exc:  # timings are a nicety: never fail a stage over them
        log.info("timings_not_stored", reason=exc.reason)


# --- estimating --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Where a job is: video ``video`` of ``videos``, ``stage`` at ``fraction``; ``seconds`` left or None."""

    video: int
    videos: int
    stage: str | None
    fraction: float | None
    seconds: float | None
    measured: bool = True
    """False when a stage the job still needs was never measured here (else the voice is not read yet)."""


def audio_seconds(store: ObjectStore, settings: Settings, job_id: str, task: str = "a0") -> float | None:
    """The voice's length, from the first task's validate manifest (None before validate finished)."""
    key = manifest_key(job_id, task, settings.chain[0])
    if store.stat(settings.bucket_work, key) is None:
        return None
    try:
        return Manifest.model_validate_json(store.get(settings.bucket_work, key)).media.audio_seconds
    except (ValidationError, MouthpieceError):
        return None


def estimate(
    chain: list[str],
    job: JobRecord | None,
    records: list[StageRecord],
    timings: Timings,
    audio: float | None,
    renderer: str | None,
    live: dict[str, float] | None = None,
) -> Estimate:
    """The job's place and time left. ``live`` maps ``task/stage`` to fractions fresher than the records'
    (progress notes)."""
    tasks = list(job.tasks) if job else []
    by_key = {(r.task, r.stage): r for r in records}
    live = live or {}
    if not tasks:  # validate has not made the tasks yet
        first = by_key.get(("job", chain[0]))
        fraction = _fraction(first, live.get(f"job/{chain[0]}")) if first else None
        measured = all(rate_key(s, renderer) in timings.rates for s in chain)
        return Estimate(1, 1, chain[0], fraction, None, measured)
    rates = {s: timings.rates.get(rate_key(s, renderer)) for s in chain}
    voice = max(audio or 0.0, MIN_AUDIO)
    measured = all(rate is not None for rate in rates.values())
    known = audio is not None and measured
    left = 0.0
    finished = 0
    current: tuple[str, float | None] | None = None
    for task in tasks:
        stage, fraction, remaining = _task_left(chain, task, by_key, live)
        if stage is None:
            finished += 1
            continue
        if current is None:
            current = (stage, fraction)
        if known:
            for s, share in remaining:
                rate = rates[s]
                assert rate is not None
                left += share * rate.seconds_per_audio_second * voice
    stage, fraction = current if current else (None, None)
    video = min(finished + 1, len(tasks))
    return Estimate(video, len(tasks), stage, fraction, left if known and current else None, measured)


def _task_left(
    chain: list[str], task: str, by_key: dict[tuple[str, str], StageRecord], live: dict[str, float]
) -> tuple[str | None, float | None, list[tuple[str, float]]]:
    """(stage the task is in, its fraction, [(stage, share of it left)]); stage None when finished."""
    remaining: list[tuple[str, float]] = []
    here: tuple[str, float | None] | None = None
    for index, stage in enumerate(chain):
        record = by_key.get(("job" if index == 0 else task, stage))
        if record is not None and record.state in FINAL_STATES:
            if record.state != State.done:
                return None, None, []  # failed or cancelled: nothing more will run
            continue
        fraction = _fraction(record, live.get(f"{task}/{stage}")) if record is not None else None
        if here is None:
            here = (stage, fraction)
        remaining.append((stage, 1.0 - (fraction or 0.0)))
    if here is None:
        return None, None, []
    return here[0], here[1], remaining


def _fraction(record: StageRecord | None, live: float | None) -> float | None:
    if record is None or record.state != State.running:
        return live
    values = [v for v in (record.progress, live) if v is not None]
    return max(values) if values else 0.0


# --- showing ------------------------------------------------------------------------------------------------


class Smoother:
    """What was last shown per job, so the time left falls freely but never jumps back up wildly."""

    def __init__(self, clock: object = time.monotonic, keep: int = 2000) -> None:
        self._clock = clock
        self._shown: dict[str, tuple[float, float]] = {}
        self._keep = keep
        self._lock = threading.Lock()

    def show(self, job_id: str, seconds: float | None) -> float | None:
        """The seconds to show for a new raw estimate (None stays None)."""
        if seconds is None:
            return None
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            last = self._shown.get(job_id)
            if last is not None:
                projected = max(0.0, last[0] - (now - last[1]))
                if seconds > projected:
                    seconds = projected + (seconds - projected) * RISE
            self._shown[job_id] = (seconds, now)
            if len(self._shown) > self._keep:
                for old in list(self._shown)[: self._keep // 2]:
                    del self._shown[old]
        return seconds

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._shown.pop(job_id, None)


SMOOTHER = Smoother()
"""The process's smoother (the console's index, ``status --follow`` and the Discord forwarder share it)."""


def duration_words(seconds: float) -> str:
    """``about 1 min 30 s left``: rounded to 5 s under a minute, 10 s under ten minutes, minutes beyond."""
    if seconds < 5:
        return "a few seconds left"
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5)} s left"
    if seconds < 600:
        total = round(seconds / 10) * 10
        minutes, rest = divmod(total, 60)
        return f"about {minutes} min {rest} s left" if rest else f"about {minutes} min left"
    minutes = round(seconds / 60)
    hours, rest = divmod(minutes, 60)
    if hours:
        return f"about {hours} h {rest} min left" if rest else f"about {hours} h left"
    return f"about {minutes} min left"


def progress_line(est: Estimate, seconds: float | None = None) -> str:
    """ "video 2 of 5 · render 40 % · about 1 min 30 s left" (the first part only for several videos);
    ``seconds`` is the smoothed time left (default: the estimate's own)."""
    parts = [f"video {est.video} of {est.videos}"] if est.videos > 1 else []
    if est.stage is not None:
        parts.append(f"{est.stage} {round((est.fraction or 0.0) * 100)} %")
    left = est.seconds if seconds is None else seconds
    if left is not None:
        parts.append(duration_words(left))
    else:
        parts.append(NO_ESTIMATE if not est.measured else NO_AUDIO_YET)
    return " · ".join(parts)


_RENDERERS: dict[str, str | None] = {}


def renderer_of(store: ObjectStore, settings: Settings, job_id: str) -> str | None:
    """The renderer the job's stored spec asks for (remembered per job: it never changes)."""
    if job_id in _RENDERERS:
        return _RENDERERS[job_id]
    try:
        data = json.loads(store.get(settings.bucket_work, spec_key(job_id)))
        options = data.get("options") if isinstance(data, dict) else None
        found = options.get("renderer") if isinstance(options, dict) else None
    except (MouthpieceError, ValueError):
        return None  # not stored yet: ask again next time
    _RENDERERS[job_id] = found if isinstance(found, str) else None
    if len(_RENDERERS) > 5000:
        _RENDERERS.clear()
    return _RENDERERS[job_id]


def job_line(
    store: ObjectStore,
    settings: Settings,
    job_id: str,
    job: JobRecord | None,
    records: list[StageRecord],
    renderer: str | None,
    live: dict[str, float] | None = None,
    smoother: Smoother = SMOOTHER,
) -> str:
    """The progress line of a running job, smoothed (reads the timings and the voice's length)."""
    timings = read_timings(store, settings)
    audio = audio_seconds(store, settings, job_id, next(iter(job.tasks), "a0") if job else "a0")
    est = estimate(list(settings.chain), job, records, timings, audio, renderer, live)
    return progress_line(est, smoother.show(job_id, est.seconds))
