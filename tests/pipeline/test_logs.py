"""Logging: JSON lines off a terminal, job_id/stage on lines from worker threads, secrets scrubbed."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
import structlog

from pipeline.logs import configure_logging
from tests.conftest import make_settings


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    yield None
    structlog.reset_defaults()


def test_stage_lines_are_json_with_job_and_stage_even_from_threads(tmp_path: Path) -> None:
    """Off a terminal every line is JSON; lines logged in a stage's thread carry job_id and stage."""
    out = io.StringIO()
    configure_logging(make_settings(tmp_path, log_format="auto"), stream=out)
    log = structlog.get_logger("test")

    async def runner() -> None:
        with structlog.contextvars.bound_contextvars(job_id="j123", stage="render", task="a0"):
            await asyncio.to_thread(log.info, "frame_batch", frames=64)

    asyncio.run(runner())
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["event"] == "frame_batch" and line["frames"] == 64
    assert (line["job_id"], line["stage"], line["task"]) == ("j123", "render", "a0")
    assert line["level"] == "info" and "timestamp" in line


def test_configured_secrets_never_reach_a_log_line(tmp_path: Path) -> None:
    """A secret setting's value is replaced wherever it appears in a logged value."""
    out = io.StringIO()
    hook = "https://discord.com/api/webhooks/1/very-secret-webhook-token"
    configure_logging(make_settings(tmp_path, discord_welcome_webhook=hook), stream=out)
    structlog.get_logger("test").warning("post_failed", url=hook, detail=f"POST {hook} -> 500")
    text = out.getvalue()
    assert "very-secret-webhook-token" not in text and "***" in text


def test_library_warnings_and_log_records_are_json_lines(tmp_path: Path) -> None:
    """watchdog's RuntimeWarning (a watched folder moved away) and standard-library log records come out
    as JSON lines like every other, not as raw text lines in the JSON log."""
    import logging
    import warnings

    out = io.StringIO()
    configure_logging(make_settings(tmp_path, log_format="json"), stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(
            "Callback with id 'x' does not exist for watch /in/.done and therefore cannot be removed",
            RuntimeWarning,
            stacklevel=1,
        )
    logging.getLogger("watchdog.observers.inotify_buffer").warning("inotify queue %s", "overflowed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["python_warning", "inotify queue overflowed"]
    assert lines[0]["category"] == "RuntimeWarning" and "cannot be removed" in lines[0]["message"]
    assert lines[1]["logger"] == "watchdog.observers.inotify_buffer" and lines[1]["level"] == "warning"
