"""A deployment's jobs: ``submit``, ``status``, ``cancel``, ``retry``, ``dead-letters``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import structlog

from pipeline.cli.local import _wait
from pipeline.cli.parser import _asked, _check_inputs
from pipeline.config import (
    Settings,
    data_dir_origin,
)
from pipeline.contracts import (
    JobStatus,
    QualitySummary,
    State,
)
from pipeline.errors import MouthpieceError
from pipeline.reports import offset_words
from pipeline.stack import Stack, running_stack
from pipeline.status import job_status
from pipeline.storage import ObjectStore, open_store
from pipeline.submit import (
    submit,
)

log = structlog.get_logger("mouthpiece.cli")


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_submit(settings, args))


async def _submit(settings: Settings, args: argparse.Namespace) -> int:
    asked = _asked(settings, args)
    _check_inputs(settings, asked.audio, asked.avatars)
    url = settings.nats_url or running_stack(settings)
    if url is None:  # nothing running: write straight into the bucket; `up` picks it up (reconcile)
        store = await asyncio.to_thread(open_store, settings)
        submitted = await asyncio.to_thread(submit, store, settings, asked)
        print(f"{submitted.job_id} queued; it runs when `mouthpiece up` is running")
        return 0
    stack = await Stack.open(settings)
    try:
        submitted = await asyncio.to_thread(submit, stack.store, settings, asked)
        print(submitted.job_id)
        if args.wait:
            status = await _wait(stack, submitted.job_id)
            print(status.model_dump_json(indent=2))
            return 0 if status.state == State.done else 1
        return 0
    finally:
        await stack.close()


def _existing_store(settings: Settings) -> ObjectStore | None:
    """The store, for commands that only read; None, with a line saying where it looked, when the local
    data directory holds no buckets (looking never creates an empty data directory)."""
    if settings.store == "local" and not (settings.data_dir / "buckets").is_dir():
        print(
            f"mouthpiece: no mouthpiece data in {settings.data_dir} ({data_dir_origin(settings)})",
            file=sys.stderr,
        )
        return None
    return open_store(settings)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    store = _existing_store(settings)
    if store is None and args.follow and not args.job:
        store = _await_store(settings, args.limit)
        if store is None:
            return 0  # interrupted before anything arrived
    if store is None:  # nothing there yet (said on stderr): the same answer as for an empty store
        if args.job:
            return 1
        if args.json:
            print(json.dumps({"jobs": [], "total": 0, "failed_drops": []}, indent=2))
        else:
            print(_status_table(settings, _NoJobs(), args.limit))
        return 0
    if args.job:
        status = job_status(store, settings, args.job)
        if status is None:
            print(f"mouthpiece: no job {args.job}", file=sys.stderr)
            return 1
        print(status.model_dump_json(indent=2) if args.json else _describe(status))
        return 0
    if args.follow:
        return _follow(settings, store, args.limit)
    from pipeline.console.index import JobIndex

    index = JobIndex(settings, store)
    index.load()  # stored statuses of finished jobs, folds of the others: no fold of 1,000 jobs
    jobs, total = index.page(1, max(1, args.limit))
    if args.json:
        data = {
            "jobs": [j.to_json() for j in jobs],
            "total": total,
            "failed_drops": [d.model_dump(mode="json") for d in index.drops],
        }
        print(json.dumps(data, indent=2))
        return 0
    print(_status_table(settings, index, args.limit))
    return 0


def _await_store(settings: Settings, limit: int) -> ObjectStore | None:
    """``status --follow`` before the data directory exists: the empty table, then the store once a
    stack creates it; None when interrupted first."""
    print(_status_table(settings, _NoJobs(), limit, live=True) + "\n", flush=True)
    try:
        while not (settings.data_dir / "buckets").is_dir():
            time.sleep(1.0)
    except KeyboardInterrupt:
        return None
    return open_store(settings)


class _NoJobs:
    """The job index of a data directory that holds nothing yet."""

    def __init__(self) -> None:
        self.progress: dict[str, dict[str, float]] = {}
        self.drops: list[Any] = []

    def page(self, number: int, size: int) -> tuple[list[Any], int]:
        return [], 0

    def counts(self) -> dict[str, int]:
        return {}


def _status_table(settings: Settings, index: Any, limit: int, live: bool = False) -> str:
    """The recent jobs (newest first) with a header, their outputs or reasons, then the failed drops."""
    jobs, total = index.page(1, max(1, limit))
    counts = index.counts()
    summary = ", ".join(
        f"{counts[s]} {s}" for s in ("running", "queued", "done", "failed", "cancelled") if s in counts
    )
    lines = [
        f"mouthpiece on {settings.data_dir}: {total} job{'s' if total != 1 else ''}"
        + (f" ({summary})" if summary else "")
    ]
    if not jobs:
        lines.append(_no_jobs_hint(settings))
    else:
        lines.append("")
        lines.append(f"{'JOB':21} {'STATE':9} {'STAGE':14} {'SOURCE':8} {'STARTED':19} {'ELAPSED':>8}  NAME")
        for j in jobs:
            stage = j.stage or "-"
            note = index.progress.get(j.job_id, {})
            if not j.finished and note:
                stage = f"{stage} {max(note.values()):.0%}" if j.stage else stage
            started = j.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            lines.append(
                f"{j.job_id:21} {j.state:9} {stage:14} {j.source[:8]:8} {started:19} {_seconds(j.elapsed()):>8}  {j.name}"
                + (" FLAGGED" if j.flagged else "")
            )
            if not j.finished and getattr(j, "eta", None):
                lines.append(f"{'':21} ~ {j.eta}")
            lines.extend(f"{'':21} -> {o}" for o in j.outputs)
            if j.reason and j.state in ("failed", "cancelled"):
                lines.append(f"{'':21} {j.reason}")
        if total > len(jobs):
            lines.append(f"({total - len(jobs)} older job(s) not shown: --limit N shows more)")
    lines.append("")
    if index.drops:
        lines.append("FAILED DROPS (files that never became a job)")
        for d in index.drops[:limit]:
            lines.append(f"{d.at.astimezone():%Y-%m-%d %H:%M:%S}  {d.name}: {d.reason}")
    else:
        lines.append("No failed drops.")
    if live:
        lines.append("")
        lines.append("Updated live; Ctrl-C stops.")
    return "\n".join(lines)


def _no_jobs_hint(settings: Settings) -> str:
    """What to do when there are no jobs: the inbox and submit only work while mouthpiece runs."""
    if settings.nats_url or running_stack(settings):
        return (
            f"No jobs yet: drop a voice clip into {settings.inbox}, or run `mouthpiece submit VOICE [PHOTO]`."
        )
    return (
        "No jobs yet, and mouthpiece is not running here: `mouthpiece up` starts it (then drop a voice clip "
        f"into {settings.inbox} or use the console), or `mouthpiece render VOICE PHOTO -o out.mp4` makes "
        "one video now."
    )


def _seconds(value: float) -> str:
    if value < 100:
        return f"{value:.1f}s"
    if value < 6000:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _follow(settings: Settings, store: Any, limit: int) -> int:
    """``status --follow``: the table, redrawn as jobs change (fed by the bus when a stack runs)."""
    from pipeline.bus import NatsBus
    from pipeline.console.index import JobIndex

    async def go() -> None:
        url = settings.nats_url or running_stack(settings)
        bus = None
        if url is not None:
            with contextlib.suppress(MouthpieceError, OSError):
                bus = await NatsBus.connect(url, settings)
        index = JobIndex(settings, store)
        if bus is None:
            index.rescan_every = 5.0  # nothing tells us about new jobs: look for them more often
        await index.start(bus)
        tty = sys.stdout.isatty()
        shown = ""
        try:
            while True:
                await asyncio.sleep(0.5)
                if not index.loaded:
                    continue
                text = _status_table(settings, index, limit, live=True)
                key = text if tty else _without_elapsed(text)
                if key != shown:
                    print(("\033[H\033[2J" if tty else "") + text + ("" if tty else "\n"), flush=True)
                    shown = key
        finally:
            await index.close()
            if bus is not None:
                await bus.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return 0


def _without_elapsed(text: str) -> str:
    """The table less its ticking columns and time estimates (a log gets a new table only when something
    happened)."""
    return "\n".join(
        line[:76] + line[84:] if line.startswith("j") else line
        for line in text.splitlines()
        if not line.startswith(f"{'':21} ~ ")
    )


def _describe(status: JobStatus) -> str:
    lines = [f"job {status.job_id} ({status.name or 'unnamed'}): {status.state.value}"]
    if status.reason:
        lines.append(f"  reason: {status.reason}")
    for task, t in status.tasks.items():
        lines.append(f"  {task}: {t.state.value} at {t.stage or '-'}{' — ' + t.reason if t.reason else ''}")
        if t.quality is not None:
            lines.append(f"    quality: {_quality_line(t.quality)}")
    if status.timings:
        lines.append("  timings: " + ", ".join(f"{s} {v:.2f}s" for s, v in status.timings.items()))
    lines.append(f"  last change: {status.updated_at.astimezone():%Y-%m-%d %H:%M:%S}")
    lines.extend(f"  output: {o}" for o in status.outputs)
    lines.extend(f"  note: {n}" for n in status.notes)
    return "\n".join(lines)


def _quality_line(quality: QualitySummary) -> str:
    """``0.93, the voice is 6 ms late`` or ``0.41, the voice is 200 ms late FLAGGED (<the problems>)``."""
    text = f"{quality.score:.2f}"
    if quality.offset_ms is not None:
        text += f", {offset_words(quality.offset_ms)}"
    if quality.flagged:
        text += " FLAGGED"
    if quality.problems:
        text += f" ({'; '.join(quality.problems)})"
    return text


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> JobStatus:
        from pipeline.control import cancel_job

        stack = await Stack.open(settings, mode="attach")
        try:
            return await cancel_job(stack.store, settings, stack.bus, args.job, by="cli")
        finally:
            await stack.close()

    status = asyncio.run(go())
    print(f"{status.job_id}: {status.state.value}")
    return 0


def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> list[str]:
        from pipeline.reconcile import retry_job

        stack = await Stack.open(settings, mode="attach")
        try:
            return await asyncio.to_thread(retry_job, stack.announcer, settings, args.job)
        finally:
            await stack.close()

    triggers = asyncio.run(go())
    if not triggers:
        print(f"mouthpiece: job {args.job} has no failed stage to retry", file=sys.stderr)
        return 1
    for trigger in triggers:
        print(f"re-announced {trigger}")
    return 0


def cmd_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.contracts import DeadLetter

    store = _existing_store(settings)
    prefix = f"dead-letter/{args.stage}/" if args.stage else "dead-letter/"
    letters = (
        []
        if store is None
        else [
            DeadLetter.model_validate_json(store.get(settings.bucket_work, info.key))
            for info in store.list(settings.bucket_work, prefix)
        ]
    )
    for letter in letters:
        print(f"{letter.at:%Y-%m-%d %H:%M:%S}  {letter.stage:8} {letter.job_id or '-':21} {letter.reason}")
    if not letters:
        print(
            f"no dead letters{f' for {args.stage}' if args.stage else ''}: the runner has given up on nothing"
        )
    return 0
