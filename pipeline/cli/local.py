"""Making a video on this machine: ``render`` and ``demo`` (and waiting for a job, showing progress)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from pipeline import ASSETS_DIR
from pipeline.cli.parser import FLAGGED, _asked, _check_inputs, _options, _same_file
from pipeline.config import (
    Settings,
)
from pipeline.contracts import (
    JobOptions,
    JobStatus,
    Progress,
    State,
)
from pipeline.errors import ConfigError
from pipeline.eta import job_line, renderer_of
from pipeline.keys import progress_subject
from pipeline.messages import users_fault
from pipeline.reports import quality_sentences, verdict
from pipeline.stack import Stack, running_stack
from pipeline.status import job_status, read_job, read_records
from pipeline.submit import (
    Submission,
    submit,
)

log = structlog.get_logger("mouthpiece.cli")
DEMO_TRANSCRIPT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def cmd_render(settings: Settings, args: argparse.Namespace) -> int:
    asked = _asked(settings, args)
    settings, options = _local_checkpoint(settings, asked.options)
    asked = replace(asked, options=options)
    _check_inputs(settings, asked.audio, asked.avatars, args.output)
    return asyncio.run(_render(settings, asked, args.output))


def _local_checkpoint(settings: Settings, options: JobOptions) -> tuple[Settings, JobOptions]:
    """``--checkpoint PATH`` names a file on this machine: the workers this command starts load it (a job
    option may only name a file in the model directory, since it travels to workers elsewhere). The
    settings and options the command then runs with."""
    given = options.checkpoint
    if given is None or ("/" not in given and not Path(given).is_file()):
        return settings, options
    path = Path(given).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"checkpoint {given} does not exist")
    if settings.nats_url or running_stack(settings):
        raise ConfigError(
            f"workers elsewhere cannot read {path}: copy it into {settings.models} and pass its file name"
        )
    local = settings.model_copy(update={"wav2lip_checkpoint": str(path)})
    return local, options.model_copy(update={"checkpoint": None, "renderer": "wav2lip"})


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    options = _options(args)
    if options.transcript is None:
        options = options.model_copy(update={"transcript": DEMO_TRANSCRIPT})
    sample = Submission(
        audio=ASSETS_DIR / "jfk.flac", avatars=(ASSETS_DIR / "astronaut.png",), options=options, name="demo"
    )
    code = asyncio.run(_render(settings, sample, args.output))
    if code in (0, FLAGGED):
        print(f"The demo video is at {args.output.resolve()}")
    return code


async def _render(settings: Settings, asked: Submission, output: Path) -> int:
    stack = await Stack.open(settings)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        if stack.owner:
            tasks = await stack.run_workers(list(settings.chain), stop)
        status = await _submit_and_wait(stack, asked)
        # a batch where some avatars failed still hands over the videos that were made
        inputs = [p for p in [asked.audio, *asked.avatars] if p is not None]
        written = (
            await asyncio.to_thread(_download_outputs, stack, status, output, inputs)
            if status.outputs
            else []
        )
        details = [] if status.state == State.done else await asyncio.to_thread(_details, stack, status)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stack.close()
    if status.state != State.done:  # said last, after the shutdown lines, so it is what people see
        print(f"mouthpiece: failed: {status.reason or 'unknown reason'}", file=sys.stderr)
        for line in details:  # the person at this terminal runs the server: give them the detail
            print(f"  detail: {line}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return _flagged_lines(status)


def _flagged_lines(status: JobStatus) -> int:
    """Say on stderr which videos the quality report flags and why; ``FLAGGED`` if any, else 0."""
    flagged = {task: t.quality for task, t in status.tasks.items() if t.quality and t.quality.flagged}
    for task, quality in flagged.items():
        outputs = status.tasks[task].outputs
        name = outputs[0].rsplit("/", 1)[-1] if outputs else f"task {task}"
        print(f"mouthpiece: flagged: {name}: {verdict(quality)}", file=sys.stderr)
    if flagged:
        print(
            f"  (`mouthpiece assess VIDEO` explains the report; `mouthpiece status {status.job_id}` keeps it)",
            file=sys.stderr,
        )
    return FLAGGED if flagged else 0


def _details(stack: Stack, status: JobStatus) -> list[str]:
    """The full reasons of a job's failures that are not the user's own mistake (for operators)."""
    if users_fault(status.code):
        return []
    records = read_records(stack.store, stack.settings, status.job_id)
    failed = [r for r in records if r.state == State.failed and r.reason]
    told = status.reason or ""  # the status already says the first failure's reason (for_operators)
    return list(
        dict.fromkeys(
            f"{r.stage}: {r.reason}" for r in failed if (r.reason or "")[1:].strip(" .") not in told
        )
    )


async def _submit_and_wait(stack: Stack, asked: Submission) -> JobStatus:
    settings = stack.settings
    submitted = await asyncio.to_thread(submit, stack.store, settings, asked)
    previous = await asyncio.to_thread(job_status, stack.store, settings, submitted.job_id)
    if previous is not None and previous.state == State.failed:  # same input failed before: try afresh
        submitted = await asyncio.to_thread(
            submit,
            stack.store,
            settings,
            replace(asked, nonce=str(time.time())),
        )
    return await _wait(stack, submitted.job_id)


async def _wait(stack: Stack, job_id: str) -> JobStatus:
    """Poll the job's status until it finishes, showing progress on stderr."""
    display = _ProgressDisplay(job_id)

    async def on_progress(data: bytes) -> None:
        display.note(Progress.model_validate_json(data))

    await stack.bus.subscribe(progress_subject(stack.settings, job_id), on_progress)
    while True:
        if stack.failures:  # our own workers died: nobody will finish this job
            raise ConfigError("; ".join(stack.failures))
        status = await asyncio.to_thread(job_status, stack.store, stack.settings, job_id)
        if status is not None:
            if not status.finished and display.eta_due(status.stage):
                display.eta = await asyncio.to_thread(_eta_line, stack, job_id)
            display.show(status)
            if status.finished:
                display.end()
                return status
        await asyncio.sleep(0.3)


class _ProgressDisplay:
    """One status line on a terminal; a line per change otherwise."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.tty = sys.stderr.isatty()
        self.fraction: dict[str, float] = {}
        self.last = ""
        self.eta = ""
        self._eta_at = (0.0, "")

    def eta_due(self, stage: str | None) -> bool:
        """Whether to work the time left out again: once a second (it reads the job's records), and
        whenever the stage changes."""
        due = time.monotonic() - self._eta_at[0] >= 1.0 or (stage or "") != self._eta_at[1]
        if due:
            self._eta_at = (time.monotonic(), stage or "")
        return due

    def note(self, progress: Progress) -> None:
        self.fraction[progress.stage] = progress.fraction

    def show(self, status: JobStatus) -> None:
        stage = status.stage or "queued"
        pct = self.fraction.get(stage)
        done = " ".join(f"{s} {t:.1f}s" for s, t in status.timings.items())
        line = (
            f"[{self.job_id}] {status.state.value}: {stage}{f' {pct:.0%}' if pct is not None else ''}  {done}"
            + (f"  ({self.eta})" if self.eta and not status.finished else "")
        )
        if line == self.last:
            return
        if self.tty:
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
        elif line.split("  ")[0] != self.last.split("  ")[0]:
            print(line, file=sys.stderr, flush=True)
        self.last = line

    def end(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _eta_line(stack: Stack, job_id: str) -> str:
    """The job's "video 2 of 5 · render 40 % · about 1 min left" line (``pipeline.eta``)."""
    store, settings = stack.store, stack.settings
    job, records = read_job(store, settings, job_id), read_records(store, settings, job_id)
    return job_line(store, settings, job_id, job, records, renderer_of(store, settings, job_id))


def _download_outputs(
    stack: Stack, status: JobStatus, output: Path, inputs: Sequence[Path] = ()
) -> list[Path]:
    """Copy the job's videos (and subtitles, quality reports) from the outputs bucket to ``output``; a
    name that would land on one of the ``inputs`` (``-o .`` beside ``voice.mp4``) gets the job id added."""
    bucket = stack.settings.bucket_outputs
    files = [i for i in stack.store.list(bucket, f"{status.job_id}/") if not i.key.endswith("status.json")]
    videos = [i for i in files if i.key.endswith(".mp4")]
    if not videos:
        raise ConfigError(f"job {status.job_id} finished but the outputs bucket has no video for it")
    several = len(status.tasks) > 1 or output.is_dir() or str(output).endswith("/")
    written = []
    for info in files:
        name = info.key.rsplit("/", 1)[-1]
        if several:
            dest = output / name
        else:  # beside the video, named after it: out.mp4 → out.srt, out.quality.json
            stem = videos[0].key.rsplit("/", 1)[-1].removesuffix(".mp4")
            suffix = name[len(stem) :] if name.startswith(f"{stem}.") else Path(name).suffix
            dest = output if name.endswith(".mp4") else output.with_name(output.stem + suffix)
        if any(_same_file(dest, path) for path in inputs):
            dest = dest.with_name(f"{dest.stem}-{status.job_id[1:9]}{dest.suffix}")
        stack.store.download(bucket, info.key, dest)
        written.append(dest)
    return written


def cmd_assess(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.stage import video_assessor

    for path in (args.video, args.audio):
        if path is not None and not path.is_file():
            raise ConfigError(f"{path} does not exist: check the path")
    if not 0.0 <= args.min_quality <= 1.0:
        raise ConfigError("--min-quality is a score between 0 and 1")
    report = video_assessor()(args.video, audio=args.audio, threshold=args.min_quality)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(f"{args.video}:")
        print("\n".join(f"  {line}" for line in quality_sentences(report)))
    return FLAGGED if report.flagged else 0
