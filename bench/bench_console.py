"""Console benchmark: the job list with 1,000 jobs.

Lays out N jobs in a local store as the runner leaves them (job record, spec, a record per stage, the
stored status of finished jobs; one in ten still running), then measures:

- building the console's index (once, at start) and the fold of every job that `mouthpiece status`
  used to do, for comparison;
- the server's answer to ``GET /`` (first page), ``GET /?page=10`` and ``GET /api/jobs`` over HTTP;
- with Debian's Chromium present, the page load in a real browser (navigation to load event).

    python bench/bench_console.py              # 1,000 jobs
    python bench/bench_console.py --jobs 5000

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from starlette.applications import Starlette

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.bus.memory import MemoryBus
from pipeline.bus.natsserver import free_port
from pipeline.config import Settings, load_settings
from pipeline.console import Console
from pipeline.console.index import JobIndex
from pipeline.contracts import REVEAL, JobRecord, JobSpec, Run, StageRecord, State, job_id_for
from pipeline.ingress.http import serve_app
from pipeline.keys import job_record_key, output_key, spec_key
from pipeline.logs import configure_logging
from pipeline.status import job_status, list_jobs, write_record, write_status
from pipeline.storage import open_store
from pipeline.storage.base import ObjectStore


def lay_out(store: ObjectStore, settings: Settings, count: int) -> None:
    """``count`` jobs: nine in ten finished (done, a few failed), one in ten running in render."""
    now = datetime.now(UTC)
    for n in range(count):
        job_id = job_id_for(settings.bucket_inputs, f"jobs/bench-{n}/job.json", f"{n:032x}")
        spec = JobSpec(name=f"clip {n}", audio="voice.flac", avatars=["face.png"], source="folder")
        store.put(settings.bucket_work, spec_key(job_id), spec.model_dump_json(context=REVEAL).encode())
        start = now - timedelta(minutes=count - n)
        record = JobRecord(job_id=job_id, source_bucket=settings.bucket_inputs, source_key=f"jobs/bench-{n}/job.json",
                           name=f"clip {n}", tasks={"a0": "face.png"}, chain=list(settings.chain), created_at=start)  # fmt: skip
        store.put(settings.bucket_work, job_record_key(job_id), record.model_dump_json().encode())
        running = n % 10 == 0
        for i, stage in enumerate(settings.chain):
            if running and stage == "enhance":
                break
            state = State.running if running and stage == "render" else State.done
            if n % 37 == 0 and stage == "detect":
                state = State.failed
            began = start + timedelta(seconds=i)
            ended = None if state == State.running else began + timedelta(seconds=1)
            write_record(store, settings, StageRecord(
                job_id=job_id, task="job" if i == 0 else "a0", stage=stage, state=state, started_at=began,
                finished_at=ended, seconds=1.0 if ended else None, code="no_face" if state == State.failed else None,
                runs=[Run(n=1, worker="bench", started_at=began, ended_at=ended, outcome="done" if ended else "running")],
                outputs=[f"outputs/{job_id}/clip.mp4"] if stage == "publish" else [],
            ))  # fmt: skip
            if state == State.failed:
                break
        if not running:
            store.put(settings.bucket_outputs, output_key(job_id, "clip.mp4"), b"video")
            write_status(store, settings, job_id)


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


async def serve_and_measure(settings: Settings, store: ObjectStore, rounds: int) -> dict[str, float]:
    console = Console(settings, store, MemoryBus())
    app = Starlette(routes=console.routes())
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_app(app, "127.0.0.1", port, stop, "bench"))
    url = f"http://127.0.0.1:{port}"
    figures: dict[str, float] = {}
    # a fresh connection per request: keep-alive with this client adds a delayed-ACK wait (~40 ms) here
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await client.get("/api/session")
        while not console.index.loaded:
            await asyncio.sleep(0.05)
        for path in ("/", "/?page=10", "/api/jobs", "/ops"):
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                response = await client.get(path)
                times.append(time.perf_counter() - start)
                assert response.status_code == 200
            figures[path] = statistics.median(times)
        figures["bytes /"] = len((await client.get("/")).content)
        figures.update(await asyncio.to_thread(browser_load, url))
    stop.set()
    await server
    await console.close()
    return figures


def browser_load(url: str) -> dict[str, float]:
    """Median times of loading the job list in headless Chromium: response end, DOM ready, load event
    (from the navigation's start), and first contentful paint; empty without Chromium."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        return {}
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_window_size(1280, 900)
    try:
        rows = []
        for _ in range(7):
            browser.get(url + "/")
            time.sleep(0.2)
            rows.append(browser.execute_script(
                "const e = performance.getEntriesByType('navigation')[0];"
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "return [e.responseEnd, e.domContentLoadedEventEnd, e.loadEventEnd, p ? p.startTime : 0]"
            ))  # fmt: skip
        names = ("browser response", "browser DOM ready", "browser load", "browser first paint")
        return {n: statistics.median(r[i] for r in rows[1:]) / 1000 for i, n in enumerate(names)}
    finally:
        browser.quit()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, data_dir=Path(tmp), log_level="warning", log_format="json")
        configure_logging(settings)
        store = open_store(settings)
        made = timed(lay_out, store, settings, args.jobs)
        print(f"laid out {args.jobs} jobs in {made:.1f} s")
        index = JobIndex(settings, store)
        print(f"console index build (once, at start): {timed(index.load):.2f} s")
        fold = timed(lambda: [job_status(store, settings, j) for j in list_jobs(store, settings)])
        print(f"fold of every job (what `status` used to do per call): {fold:.2f} s")
        figures = asyncio.run(serve_and_measure(settings, store, args.rounds))
        for path in ("/", "/?page=10", "/api/jobs", "/ops"):
            print(f"GET {path:11} median {figures[path] * 1000:.1f} ms")
        print(f"GET / is {figures['bytes /'] / 1024:.0f} KB (one page of {settings.console_page_size} jobs)")
        for name in ("browser response", "browser DOM ready", "browser load", "browser first paint"):
            if name in figures:
                print(f"Chromium, {name[8:]:14} (median of 6 loads of /): {figures[name] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
