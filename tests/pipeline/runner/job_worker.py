"""A stage Job as Kubernetes runs it, for tests/pipeline/runner/test_scale_down.py: ``mouthpiece worker
validate --max-messages 1`` (what ``cli._worker`` does: the stack attached to MOUTHPIECE_NATS_URL,
SIGTERM/SIGINT handlers that set stop and drain) with the stage swapped for the runner tests' ``Ingest``
working for ``argv[1]`` seconds, so a run's length is chosen by the test. Run with
``python -m tests.pipeline.runner.job_worker SECONDS``."""

from __future__ import annotations

import asyncio
import sys

from pipeline.config import load_settings
from pipeline.logs import configure_logging
from pipeline.stack import Stack, stop_on_signals
from tests.pipeline.runner.conftest import Ingest, slow


async def main(seconds: float) -> int:
    settings = load_settings()
    configure_logging(settings)
    stack = await Stack.open(settings, mode="attach")
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        worker = stack.worker("validate", ("default",))
        worker.impl = Ingest(slow(seconds, step=0.1))
        await worker.serve(stop, max_messages=1)
    finally:
        await stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(float(sys.argv[1]))))
