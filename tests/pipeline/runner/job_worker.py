"""A stage Job as Kubernetes runs it, for tests/pipeline/runner/test_scale_down.py: ``mouthpiece worker
validate --max-messages 1`` (what ``cli._worker`` does: the stack attached to MOUTHPIECE_NATS_URL,
SIGTERM/SIGINT handlers that set stop and drain) with the stage swapped for the runner tests' ``Ingest``
working for ``argv[1]`` seconds, so a run's length is chosen by the test; with ``argv[2]``, each run of
the stage appends a line to that file (how a test counts the stage's side effects across processes).
Run with ``python -m tests.pipeline.runner.job_worker SECONDS [RUNS_FILE]``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from pipeline.config import load_settings
from pipeline.logs import configure_logging
from pipeline.stack import Stack, stop_on_signals
from pipeline.stage import StageContext
from tests.pipeline.runner.conftest import Behaviour, Ingest, slow


def counted(behaviour: Behaviour, runs_file: Path) -> Behaviour:
    """``behaviour``, after appending a line to ``runs_file``."""

    def run(ctx: StageContext, inputs: Any) -> None:
        with runs_file.open("a") as f:
            f.write(f"{ctx.job_id} {ctx.attempt}\n")
        behaviour(ctx, inputs)

    return run


async def main(seconds: float, runs_file: Path | None = None) -> int:
    settings = load_settings()
    configure_logging(settings)
    stack = await Stack.open(settings, mode="attach")
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        worker = stack.worker("validate", ("default",))
        behaviour = slow(seconds, step=0.1)
        worker.impl = Ingest(counted(behaviour, runs_file) if runs_file else behaviour)
        await worker.serve(stop, max_messages=1)
    finally:
        await stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(float(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)))
