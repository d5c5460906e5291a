"""Every console endpoint: pages, the JSON API, files, uploads, cancel, retry, sign-in, CSRF, size caps,
content sniffing, and that no secret ever appears in a response.

The console runs in-process (httpx's ASGI transport) on the local store and the in-memory bus; jobs
are laid out in the store as the runner leaves them (``conftest.make_job``)."""

from __future__ import annotations

import asyncio
import json
import re
from html import escape as html_escape
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from pipeline.console.auth import check_exposure
from pipeline.contracts import (
    DeadLetter,
    DiscordInteractionDestination,
    DiscordWebhookDestination,
    FailedDrop,
    JobSpec,
    State,
)
from pipeline.drops import record_failed_drop
from pipeline.errors import ConfigError
from pipeline.keys import cancel_key, dead_letter_key
from pipeline.status import job_status
from tests.conftest import make_settings
from tests.pipeline.console.conftest import Harness, csrf_of, make_job, running

WEBHOOK = "https://discord.com/api/webhooks/123456789/" + "W" * 60
INTERACTION_TOKEN = "aW50ZXJhY3Rpb24" + "T" * 60
SECRETS = {
    "s3_secret_key": "s3-secret-" + "k" * 20,
    "s3_access_key": "s3-access-" + "a" * 12,
    "discord_bot_token": "bot-token-" + "b" * 40,
    "discord_announce_webhook": "https://discord.com/api/webhooks/987/" + "A" * 60,
    "ingress_token": "relay-token-" + "r" * 30,
    "minio_webhook_token": "minio-token-" + "m" * 30,
    "nats_password": "nats-password-" + "n" * 20,
    "console_token": "console-token-" + "c" * 30,
}


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def wait_loaded(harness: Harness, client: httpx.AsyncClient) -> None:
    await client.get("/api/session")  # starts the index
    for _ in range(200):
        if harness.console.index.loaded:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("the index did not load")


# --- pages -------------------------------------------------------------------------------------------


def test_job_list_page_shows_jobs_newest_first_and_failed_drops(tmp_path: Path, assets: Path) -> None:
    """GET / lists the jobs (name, source, state, elapsed) newest first, and the failed drops with their
    reason; security headers and an HttpOnly, SameSite session cookie come with it."""
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with running(settings) as h:
            old = make_job(h, assets, State.done, age=600, nonce="old")
            new = make_job(h, assets, State.failed, age=60, nonce="new")
            record_failed_drop(
                h.store, settings, FailedDrop(name="notes.txt", reason="notes.txt is not a supported file")
            )
            async with h.client() as client:
                await wait_loaded(h, client)
            async with h.client() as client:
                page = await client.get("/")
        assert page.status_code == 200
        html = page.text
        assert html.index(new) < html.index(old)
        assert "greeting" in html and "folder" in html and "astronaut.png has no face in it" in html
        assert "notes.txt is not a supported file" in html
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"

    run(go())


def test_empty_console_says_there_are_no_jobs(tmp_path: Path) -> None:
    """With nothing submitted the list says so, and that there are no failed drops."""

    async def go() -> None:
        async with running(make_settings(tmp_path)) as h, h.client() as client:
            await wait_loaded(h, client)
            html = (await client.get("/")).text
        assert "No jobs yet" in html and "No failed drops." in html

    run(go())


def test_job_page_shows_graph_player_subtitles_inputs_and_downloads(
    tmp_path: Path, assets: Path, small_mp4: Path
) -> None:
    """GET /jobs/ID: one box per stage with its state and seconds, the video with its subtitle track,
    the input thumbnails, options and download links; the graph alone with ?partial=graph."""

    async def go() -> None:
        async with running(make_settings(tmp_path)) as h:
            job = make_job(h, assets, State.done, video=small_mp4)
            async with h.client() as client:
                page = await client.get(f"/jobs/{job}")
                graph = await client.get(f"/jobs/{job}?partial=graph")
                missing = await client.get("/jobs/j0000000000000000000")
                bad = await client.get("/jobs/..%2Fetc")
        html = page.text
        assert page.status_code == 200
        assert html.count('class="box state-done"') == 5
        assert f'src="/jobs/{job}/files/greeting.mp4"' in html
        assert (
            f'<track kind="subtitles" srclang="en" label="Subtitles" src="/jobs/{job}/files/greeting.vtt" default>'
            in html
        )
        assert f'src="/jobs/{job}/inputs/a0"' in html and f'src="/jobs/{job}/inputs/audio"' in html
        assert "subtitles" in html and "soft" in html
        assert graph.text.lstrip().startswith('<div class="graph"') and "<html" not in graph.text
        assert missing.status_code == 404 and bad.status_code == 404

    run(go())


def test_failed_job_page_says_why_in_the_box_and_offers_retry(tmp_path: Path, assets: Path) -> None:
    """A failed stage's box carries the reason in words; later boxes are skipped; Retry is offered."""

    async def go() -> None:
        async with running(make_settings(tmp_path)) as h:
            job = make_job(h, assets, State.failed, failed_stage="detect")
            async with h.client() as client:
                html = (await client.get(f"/jobs/{job}")).text
        assert re.search(r'box state-failed" data-task="a0" data-stage="detect"', html)
        assert "astronaut.png has no face in it" in html
        assert html.count("box state-skipped") == 3
        assert 'id="retry"' in html and 'id="cancel"' not in html

    run(go())


def test_files_are_served_with_byte_ranges_and_inputs_only_as_media(
    tmp_path: Path, assets: Path, small_mp4: Path
) -> None:
    """The video answers Range requests (206) so players can seek; an input is served as the type its
    bytes say; a name not among the job's outputs, or an input that is not media, is 404."""

    async def go() -> None:
        async with running(make_settings(tmp_path)) as h:
            job = make_job(h, assets, State.done, video=small_mp4)
            async with h.client() as client:
                whole = await client.get(f"/jobs/{job}/files/greeting.mp4")
                part = await client.get(f"/jobs/{job}/files/greeting.mp4", headers={"Range": "bytes=0-99"})
                vtt = await client.get(f"/jobs/{job}/files/greeting.vtt")
                download = await client.get(f"/jobs/{job}/files/greeting.mp4?download=1")
                other = await client.get(f"/jobs/{job}/files/status.json")
                face = await client.get(f"/jobs/{job}/inputs/a0")
                voice = await client.get(f"/jobs/{job}/inputs/audio")
                nothing = await client.get(f"/jobs/{job}/inputs/a7")
        assert whole.status_code == 200 and whole.content == small_mp4.read_bytes()
        assert whole.headers["content-type"] == "video/mp4"
        assert part.status_code == 206 and len(part.content) == 100
        assert vtt.headers["content-type"].startswith("text/vtt") and vtt.text.startswith("WEBVTT")
        assert "attachment" in download.headers["content-disposition"]
        assert other.status_code == 404
        assert (
            face.headers["content-type"] == "image/png"
            and face.content == (assets / "astronaut.png").read_bytes()
        )
        assert voice.headers["content-type"] in ("audio/flac", "audio/x-flac")
        assert nothing.status_code == 404

    run(go())


def test_new_job_form_offers_the_options(tmp_path: Path) -> None:
    """GET /new: the voice and photo drop zones, text to speak, and renderer/style/subtitles choices."""

    async def go() -> None:
        async with running(make_settings(tmp_path)) as h, h.client() as client:
            html = (await client.get("/new")).text
        assert 'name="voice"' in html and 'name="faces"' in html and "multiple" in html
        assert 'name="speech"' in html and 'name="transcript"' in html
        for option in ("viseme", "wav2lip", "cartoon", "burn", "lively"):
            assert f'value="{option}"' in html

    run(go())


def test_new_job_form_offers_only_what_this_install_can_do(
    tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One machine without the voice extra and without a Wav2Lip checkpoint: the text box is disabled with
    the extra's install command, wav2lip is offered disabled, and a form asking for either anyway is
    refused in a sentence before anything is uploaded. With workers elsewhere everything is offered."""
    import sys

    from stages.lib.speech import espeak

    monkeypatch.setitem(sys.modules, "piper", None)
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    monkeypatch.setattr("stages.lib.speech.synthesis.shutil.which", lambda name: None)
    espeak.library.cache_clear()
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with running(settings) as h, h.client() as client:
            html = (await client.get("/new")).text
            token = await csrf_of(client)
            said = await client.post(
                "/api/jobs", headers={"X-CSRF-Token": token}, data={"speech": "Hello there."}
            )
            neural = await client.post(
                "/api/jobs",
                headers={"X-CSRF-Token": token},
                files=[("voice", ("v.flac", (assets / "jfk.flac").read_bytes(), "audio/flac"))],
                data={"renderer": "wav2lip"},
            )
            assert list(h.store.list(settings.bucket_inputs, "jobs/")) == []
        assert re.search(r'<textarea name="speech"[^>]* disabled', html)
        assert "pip install &#39;mouthpiece-avatar[voice]&#39;" in html
        assert re.search(r'<option value="wav2lip"[^>]* disabled', html) and "(not installed here)" in html
        assert said.status_code == 422 and "cannot speak a text" in said.json()["error"]
        assert neural.status_code == 422 and "wav2lip needs" in neural.json()["error"]

    try:
        run(go())
        from pipeline.console.upload import unavailable

        assert unavailable(settings.model_copy(update={"nats_url": "nats://elsewhere:4222"})) == {}
    finally:
        espeak.library.cache_clear()


def test_operations_page_lists_queues_dead_letters_and_models(tmp_path: Path, assets: Path) -> None:
    """GET /ops and /api/ops: per-stage queue depth (messages waiting on the bus), dead letters with a
    Retry button, model files with where they are (the packaged Whisper is not "missing") and, for the
    missing ones, what happens without them."""
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with running(settings) as h:
            job = make_job(h, assets, State.failed)
            letter = DeadLetter(
                stage="detect",
                subject="x",
                deliveries=3,
                reason="gave up after 3 runs",
                payload="{}",
                job_id=job,
            )
            h.store.put(
                settings.bucket_work, dead_letter_key("detect", "7-abc"), letter.model_dump_json().encode()
            )
            await h.bus.publish(f"{settings.subject_prefix}.stage.render", b"{}")
            await h.bus.publish(f"{settings.subject_prefix}.stage.render", b"{}")
            async with h.client() as client:
                html = (await client.get("/ops")).text
                data = (await client.get("/api/ops")).json()
        assert "gave up after 3 runs" in html and f'action="/jobs/{job}/retry?back=ops"' in html
        assert "wav2lip_gan.pth" in html
        models = {m["name"]: m for m in data["models"]}
        assert models["wav2lip_gan.pth"]["state"] == "missing" and not models["wav2lip_gan.pth"]["present"]
        assert "without it: " + html_escape(models["wav2lip_gan.pth"]["without"]) in html
        # the Whisper folder: installed as packages with mouthpiece, not a missing file
        assert models["faster-whisper-base"]["state"] in {"packaged", "present"}
        assert models["faster-whisper-base"]["present"] and models["faster-whisper-base"]["size"] > 50e6
        render = next(q for q in data["queues"] if q["stage"] == "render" and q["pool"] == "default")
        assert render["pending"] == 2
        assert data["dead_letters"][0]["job_id"] == job

    run(go())


# --- the JSON API ---------------------------------------------------------------------------------------


def test_api_lists_pages_and_describes_a_job(tmp_path: Path, assets: Path) -> None:
    """GET /api/jobs pages the summaries; GET /api/jobs/ID gives status, graph, outputs and options;
    GET /api/drops the failed drops."""
    settings = make_settings(tmp_path, console_page_size=5)

    async def go() -> None:
        async with running(settings) as h:
            jobs = [make_job(h, assets, State.done, nonce=str(i), age=100 - i) for i in range(7)]
            record_failed_drop(h.store, settings, FailedDrop(name="x.txt", reason="x.txt is text"))
            async with h.client() as client:
                await wait_loaded(h, client)
                first = (await client.get("/api/jobs")).json()
                second = (await client.get("/api/jobs?page=2")).json()
                one = (await client.get(f"/api/jobs/{jobs[0]}")).json()
                drops = (await client.get("/api/drops")).json()
                unknown = await client.get("/api/jobs/j1111111111111111111")
        assert first["total"] == 7 and len(first["jobs"]) == 5 and len(second["jobs"]) == 2
        assert first["jobs"][0]["job_id"] == jobs[-1]
        assert one["status"]["state"] == "done" and [b["stage"] for b in one["graph"]] == settings.chain
        assert {o["name"] for o in one["outputs"]} == {"greeting.mp4", "greeting.vtt"}
        assert drops["drops"][0]["name"] == "x.txt"
        assert unknown.status_code == 404

    run(go())


def test_upload_through_the_api_submits_like_a_folder_drop(tmp_path: Path, assets: Path) -> None:
    """POST /api/jobs with a voice clip, a photo and options → 202 and the job id; the spec in the
    inputs bucket names the files by their real formats, says source console, and keeps the names the
    user gave (metadata); the job is listed at once."""
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with running(settings) as h, h.client() as client:
            token = await csrf_of(client)
            response = await client.post(
                "/api/jobs",
                headers={"X-CSRF-Token": token},
                files=[
                    ("voice", ("My Voice.flac", (assets / "jfk.flac").read_bytes(), "audio/flac")),
                    ("faces", ("Grüße Foto.png", (assets / "astronaut.png").read_bytes(), "image/png")),
                ],
                data={"renderer": "none", "style": "photo", "subtitles": "burn", "transcript": "ask not"},
            )
            assert response.status_code == 202, response.text
            job = response.json()["job_id"]
            listed = (await client.get("/api/jobs")).json()
            specs = [i for i in h.store.list(settings.bucket_inputs, "jobs/") if i.key.endswith("/job.json")]
            spec = JobSpec.model_validate_json(h.store.get(settings.bucket_inputs, specs[0].key))
            names = {
                i.key.rsplit("/", 1)[1]: i.metadata.get("filename")
                for i in h.store.list(settings.bucket_inputs, "jobs/")
            }
        assert [j["job_id"] for j in listed["jobs"]] == [job] and listed["jobs"][0]["source"] == "console"
        assert (
            spec.source == "console" and spec.audio == "My-Voice.flac" and spec.avatars == ["Gr-e-Foto.png"]
        )
        assert (spec.options.renderer, spec.options.style, spec.options.subtitles) == (
            "none",
            "photo",
            "burn",
        )
        assert spec.options.transcript == "ask not"
        assert [d.kind for d in spec.destinations] == ["folder"]  # one machine: the outbox gets it too
        assert names["Gr-e-Foto.png"] == "Gr%C3%BC%C3%9Fe Foto.png"

    run(go())


def test_the_form_post_goes_to_the_new_job_page(tmp_path: Path, assets: Path) -> None:
    """POST /jobs (the HTML form, CSRF field) answers 303 to /jobs/ID; text to speak works without a
    voice file."""

    async def go() -> None:
        async with running(make_settings(tmp_path)) as h, h.client() as client:
            token = await csrf_of(client)
            response = await client.post("/jobs", data={"csrf": token, "speech": "Welcome to the stream!"})
        assert response.status_code == 303 and re.fullmatch(
            r"/jobs/j[0-9a-f]{19}", response.headers["location"]
        )

    run(go())


@pytest.mark.parametrize(
    ("files", "data", "sentence"),
    [
        (
            [("voice", ("notes.flac", b"Just some notes\n" * 20, "audio/flac"))],
            {},
            "notes.flac is not audio or a video (it is a text file)",
        ),
        ([("voice", ("face.flac", "astronaut.png", "audio/flac"))], {}, "face.flac is not audio or a video"),
        (
            [
                ("voice", ("v.flac", "jfk.flac", "audio/flac")),
                ("faces", ("drawing.png", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "image/png")),
            ],
            {},
            "drawing.png is not an image or a video (it is an SVG drawing)",
        ),
        (
            [("voice", ("v.flac", "jfk.flac", "audio/flac"))],
            {"speech": "hello"},
            "give a voice clip or text to speak (one of the two)",
        ),
        ([], {}, "give a voice clip or text to speak"),
        (
            [("voice", ("v.flac", "jfk.flac", "audio/flac"))],
            {"renderer": "magic"},
            "the options cannot be used",
        ),
        ([("voice", ("empty.flac", b"", "audio/flac"))], {}, "empty.flac is empty"),
    ],
)
def test_uploads_are_sniffed_and_refused_in_a_sentence(
    tmp_path: Path, assets: Path, files: list, data: dict, sentence: str
) -> None:
    """A file is taken by what its bytes are, not its name: text or a picture as the voice, an SVG as
    the photo, both or neither of voice and text, a bad option → 422 with a sentence naming the file;
    nothing is uploaded to the inputs bucket."""
    settings = make_settings(tmp_path)
    real = [
        (field, (name, (assets / body).read_bytes() if isinstance(body, str) else body, kind))
        for field, (name, body, kind) in files
    ]

    async def go() -> None:
        async with running(settings) as h, h.client() as client:
            token = await csrf_of(client)
            response = await client.post(
                "/api/jobs", headers={"X-CSRF-Token": token}, files=real or None, data=data or {"x": ""}
            )
            form = await client.post("/jobs", files=real or None, data={"csrf": token, **data})
            uploaded = list(h.store.list(settings.bucket_inputs, "jobs/"))
        assert response.status_code == 422
        assert response.json()["error"].startswith(sentence), response.json()
        assert form.status_code == 422 and 'id="form-error"' in form.text
        assert uploaded == []

    run(go())


def test_uploads_over_the_size_limit_are_refused(tmp_path: Path, assets: Path) -> None:
    """A file over max_input_bytes → 422 naming it and the limit; a body over the whole-request cap
    (declared or streamed) → 413 before it is read."""
    settings = make_settings(tmp_path, max_input_bytes=100_000)
    voice = (assets / "jfk.flac").read_bytes()
    assert len(voice) > 100_000

    async def go() -> None:
        async with running(settings) as h, h.client() as client:
            token = await csrf_of(client)
            one = await client.post(
                "/api/jobs",
                headers={"X-CSRF-Token": token},
                files={"voice": ("big.flac", voice, "audio/flac")},
            )
            huge = b"\0" * (2 * 100_000 + 1024 * 1024 + 10)
            whole = await client.post(
                "/api/jobs",
                headers={"X-CSRF-Token": token},
                files={"voice": ("huge.flac", huge, "audio/flac")},
            )

            async def stream() -> object:
                yield b'--b\r\nContent-Disposition: form-data; name="voice"; filename="v.flac"\r\n\r\n'
                for _ in range(40):
                    yield b"x" * 65536

            chunked = await client.post(
                "/api/jobs",
                headers={"X-CSRF-Token": token, "Content-Type": "multipart/form-data; boundary=b"},
                content=stream(),
            )
        assert one.status_code == 422 and one.json()["error"].startswith("big.flac is ")
        assert "the limit is 0.1 MB" in one.json()["error"]
        assert whole.status_code == 413 and chunked.status_code == 413

    run(go())


def test_cancel_through_the_api_and_the_button(tmp_path: Path, assets: Path) -> None:
    """POST /api/jobs/ID/cancel → the status says cancelled, cancel.json is written (by console), and
    the bus hears it; the button (POST /jobs/ID/cancel) answers 303 back to the job; a finished job stays
    finished."""
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with running(settings) as h:
            job = make_job(h, assets, State.running, failed_stage="render")
            other = make_job(h, assets, State.running, failed_stage="detect", nonce="b")
            done = make_job(h, assets, State.done, nonce="c")
            heard: list[bytes] = []

            async def hear(data: bytes) -> None:
                heard.append(data)

            await h.bus.subscribe(f"{settings.subject_prefix}.control.cancel.*", hear)
            async with h.client() as client:
                token = await csrf_of(client)
                api = await client.post(f"/api/jobs/{job}/cancel", headers={"X-CSRF-Token": token})
                button = await client.post(f"/jobs/{other}/cancel", data={"csrf": token})
                finished = await client.post(f"/api/jobs/{done}/cancel", headers={"X-CSRF-Token": token})
                bad = await client.post("/api/jobs/nope/cancel", headers={"X-CSRF-Token": token})
            await asyncio.sleep(0.05)
            assert api.status_code == 200 and api.json()["state"] == "cancelled"
            assert json.loads(h.store.get(settings.bucket_work, cancel_key(job)))["by"] == "console"
            assert button.status_code == 303 and button.headers["location"] == f"/jobs/{other}?note=cancelled"
            assert job_status(h.store, settings, other).state == State.cancelled  # type: ignore[union-attr]
            assert finished.json()["state"] == "done"
            assert bad.status_code == 404
            assert set(heard) == {job.encode(), other.encode()}

    run(go())


def test_retry_reannounces_the_failed_stage(tmp_path: Path, assets: Path) -> None:
    """POST /api/jobs/ID/retry re-announces the failed stage's trigger (pipeline.reconcile.retry_job);
    a job with nothing failed says so."""
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with running(settings) as h:
            job = make_job(h, assets, State.failed, failed_stage="validate")
            done = make_job(h, assets, State.done, nonce="d")
            async with h.client() as client:
                token = await csrf_of(client)
                api = await client.post(f"/api/jobs/{job}/retry", headers={"X-CSRF-Token": token})
                button = await client.post(f"/jobs/{done}/retry", data={"csrf": token})
        assert api.status_code == 200 and len(api.json()["retried"]) == 1
        assert h.announced and h.announced[0][0] == f"{settings.subject_prefix}.stage.validate"
        assert button.headers["location"] == f"/jobs/{done}?note=nothing"

    run(go())


def test_events_stream_job_changes_and_progress(tmp_path: Path, assets: Path) -> None:
    """GET /events (server-sent events) sends a progress note as it is published on the bus, and a job
    summary when the job's records change; ``?job=`` keeps to one job."""
    settings = make_settings(tmp_path)

    async def go() -> list[tuple[str, dict]]:
        from pipeline.bus.natsserver import free_port
        from pipeline.ingress.http import serve_app

        async with running(settings) as h:
            job = make_job(h, assets, State.running, failed_stage="render")
            port = free_port()
            stop = asyncio.Event()
            server = asyncio.create_task(serve_app(h.app, "127.0.0.1", port, stop, "console"))
            await asyncio.sleep(0.3)
            seen: list[tuple[str, dict]] = []
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await wait_loaded(h, client)
                async with client.stream("GET", f"/events?job={job}") as stream:
                    note = {"job_id": job, "task": "a0", "stage": "render", "fraction": 0.5, "note": ""}
                    other = {**note, "job_id": "j2222222222222222222"}
                    await h.bus.notify(f"{settings.subject_prefix}.progress.x", json.dumps(other).encode())
                    await h.bus.notify(f"{settings.subject_prefix}.progress.{job}", json.dumps(note).encode())
                    make_job(h, assets, State.done, nonce="")  # same inputs: the same job, now done
                    kind = ""
                    async for line in stream.aiter_lines():
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: "):
                            seen.append((kind, json.loads(line[6:])))
                            if kind == "job" and seen[-1][1]["state"] == "done":
                                break
            stop.set()
            await server
            return seen

    seen = run(go())
    assert seen[0] == (
        "progress",
        {"job_id": seen[0][1]["job_id"], "task": "a0", "stage": "render", "fraction": 0.5, "note": ""},
    )
    assert all(data["job_id"] == seen[0][1]["job_id"] for _, data in seen)
    assert seen[-1][0] == "job" and seen[-1][1]["state"] == "done"


def test_metrics_endpoint_speaks_prometheus_text(tmp_path: Path, assets: Path) -> None:
    """GET /metrics: text format with jobs by state and the queue gauges."""

    async def go() -> httpx.Response:
        async with running(make_settings(tmp_path)) as h:
            make_job(h, assets, State.done)
            async with h.client() as client:
                await wait_loaded(h, client)
                return await client.get("/metrics")

    response = run(go())
    assert response.headers["content-type"].startswith(
        "text/plain; version=0.0.4"
    )  # every Prometheus reads it  # type: ignore[attr-defined]
    text = response.text  # type: ignore[attr-defined]
    assert 'mouthpiece_jobs{state="done"} 1.0' in text
    assert 'mouthpiece_queue_depth{pool="default",stage="render"} 0.0' in text


# --- access -----------------------------------------------------------------------------------------------


def test_listening_beyond_loopback_needs_a_password() -> None:
    """A console on 0.0.0.0 without a password or token is refused in one sentence; with one, or on
    loopback, or with the console off, it starts."""
    with pytest.raises(ConfigError, match="without a password: set MOUTHPIECE_CONSOLE_PASSWORD"):
        check_exposure(make_settings(Path("/tmp"), ingress_host="0.0.0.0"))
    check_exposure(make_settings(Path("/tmp"), ingress_host="0.0.0.0", console_password="s3cret-pass"))
    check_exposure(make_settings(Path("/tmp"), ingress_host="::1"))
    check_exposure(make_settings(Path("/tmp"), ingress_host="0.0.0.0", console=False))


def test_password_protects_pages_api_and_metrics(tmp_path: Path, assets: Path) -> None:
    """With a password: pages redirect to /login, the API and /metrics answer 401; a wrong password is
    refused; the right one gives a session (a fresh one: no fixation) that opens the pages; the token
    opens the API as a bearer token; signing out ends the session. Off loopback the cookie is Secure."""
    settings = make_settings(
        tmp_path, console_password="correct horse", console_token="tok-" + "t" * 30, ingress_host="0.0.0.0"
    )

    async def go() -> None:
        async with running(settings) as h:
            job = make_job(h, assets, State.done)
            # off loopback the cookie is Secure: the browser sends it back over https only
            async with h.client(base_url="https://console.example") as client:
                page = await client.get("/")
                assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
                assert "secure" in page.headers["set-cookie"].lower()
                for path in (
                    "/api/jobs",
                    f"/api/jobs/{job}",
                    "/metrics",
                    "/events",
                    "/api/ops",
                    "/api/drops",
                ):
                    assert (await client.get(path)).status_code == 401, path
                assert (await client.get(f"/jobs/{job}/files/greeting.mp4")).status_code == 303
                login = await client.get("/login")
                token = re.search(r'name="csrf" value="([0-9a-f]+)"', login.text).group(1)  # type: ignore[union-attr]
                before = client.cookies["mp_session"]
                wrong = await client.post("/login", data={"csrf": token, "password": "wrong", "next": "/ops"})
                assert wrong.status_code == 401 and "not right" in wrong.text
                right = await client.post(
                    "/login", data={"csrf": token, "password": "correct horse", "next": "/ops"}
                )
                assert right.status_code == 303 and right.headers["location"] == "/ops"
                assert client.cookies["mp_session"] != before
                assert (await client.get("/")).status_code == 200
                assert (await client.get("/metrics")).status_code == 200
                token = await csrf_of(client)
                await client.post("/logout", data={"csrf": token})
                assert (await client.get("/")).status_code == 303
            async with h.client(headers={"Authorization": "Bearer tok-" + "t" * 30}) as api:
                assert (await api.get("/api/jobs")).json()["total"] == 1
                assert (await api.get("/metrics")).status_code == 200
                cancel = await api.post(f"/api/jobs/{job}/cancel")  # bearer: no cookie, so no CSRF
                assert cancel.status_code == 200
            async with h.client(headers={"Authorization": "Bearer wrong"}) as api:
                assert (await api.get("/api/jobs")).status_code == 401

    run(go())


def test_every_post_needs_the_csrf_token_and_the_same_origin(tmp_path: Path, assets: Path) -> None:
    """A POST without the session's CSRF token, with another session's token, or from another site's
    page is refused (403) and changes nothing."""
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with running(settings) as h:
            job = make_job(h, assets, State.running, failed_stage="render")
            async with h.client() as client, h.client() as stranger:
                token = await csrf_of(client)
                theirs = await csrf_of(stranger)
                answers = [
                    await client.post(f"/jobs/{job}/cancel", data={}),
                    await client.post(f"/jobs/{job}/cancel", data={"csrf": theirs}),
                    await client.post(
                        f"/jobs/{job}/cancel",
                        data={"csrf": token},
                        headers={"Origin": "https://evil.example"},
                    ),
                    await client.post(f"/api/jobs/{job}/cancel"),
                    await client.post("/jobs", data={"speech": "hi"}),
                    await client.post("/login", data={"password": "x"}),
                ]
                assert [a.status_code for a in answers] == [403] * 6
                assert h.store.stat(settings.bucket_work, cancel_key(job)) is None
                ok = await client.post(
                    f"/jobs/{job}/cancel", data={"csrf": token}, headers={"Origin": "http://127.0.0.1:8080"}
                )
                assert ok.status_code == 303

    run(go())


def test_loopback_console_refuses_other_host_names(tmp_path: Path) -> None:
    """On loopback the Host header must name loopback: a page elsewhere cannot reach the console
    through a DNS name pointing at 127.0.0.1."""

    async def go() -> None:
        async with running(make_settings(tmp_path)) as h, h.client() as client:
            assert (await client.get("/", headers={"Host": "rebind.example:8080"})).status_code == 421
            assert (await client.get("/", headers={"Host": "localhost:8080"})).status_code == 200
            assert (await client.get("/", headers={"Host": "[::1]:8080"})).status_code == 200

    run(go())


def test_no_secret_is_ever_rendered(tmp_path: Path, assets: Path, small_mp4: Path) -> None:
    """With every secret setting set and a job whose spec holds a webhook URL and an interaction token,
    no page, fragment, API answer, event or metric contains any of them."""
    settings = make_settings(tmp_path, **SECRETS, discord_webhook_hosts="discord.com")
    destinations = [
        DiscordWebhookDestination(url=SecretStr(WEBHOOK)),
        DiscordInteractionDestination(application_id="123", token=SecretStr(INTERACTION_TOKEN)),
    ]

    async def go() -> list[str]:
        async with running(settings) as h:
            job = make_job(h, assets, State.done, video=small_mp4, destinations=destinations)
            failed = make_job(h, assets, State.failed, destinations=destinations, nonce="f")
            async with h.client(headers={"Authorization": f"Bearer {SECRETS['console_token']}"}) as client:
                await wait_loaded(h, client)
                paths = [
                    "/",
                    "/?partial=jobs",
                    "/new",
                    "/ops",
                    f"/jobs/{job}",
                    f"/jobs/{job}?partial=graph",
                    f"/jobs/{failed}",
                    "/api/jobs",
                    f"/api/jobs/{job}",
                    f"/api/jobs/{failed}",
                    "/api/ops",
                    "/api/drops",
                    "/api/session",
                    "/metrics",
                    f"/jobs/{job}/files/greeting.vtt",
                    "/login",
                ]
                bodies = [(await client.get(p)).text for p in paths]
                html = bodies[4]
                assert "a Discord channel (webhook)" in html and "a Discord reply" in html
                return bodies

    bodies = run(go())
    every = "\n".join(bodies)  # type: ignore[arg-type]
    for secret in [*SECRETS.values(), WEBHOOK, INTERACTION_TOKEN, "W" * 20, "T" * 20]:
        assert secret not in every


def test_a_job_failed_or_running_in_validate_is_shown_by_its_name(tmp_path: Path, assets: Path) -> None:
    """Before validate writes the job record (a job running in it, or refused by it) the list, the job
    page and its title show the name from the spec (the drop's), not the job id."""
    from pipeline.keys import job_record_key

    settings = make_settings(tmp_path)

    async def go() -> None:
        async with running(settings) as h, h.client() as client:
            failed = make_job(h, assets, State.failed, failed_stage="validate", nonce="f")
            moving = make_job(h, assets, State.running, failed_stage="validate", nonce="r")
            for job in (failed, moving):
                path = h.store.local_path(settings.bucket_work, job_record_key(job))
                assert path is not None
                path.unlink()
            await wait_loaded(h, client)
            listed = (await client.get("/api/jobs")).json()["jobs"]
            pages = [(await client.get(f"/jobs/{job}")).text for job in (failed, moving)]
        assert {(j["job_id"], j["name"]) for j in listed} == {(failed, "greeting"), (moving, "greeting")}
        for page in pages:
            assert re.search(r"<title>greeting\b", page), page[:300]

    run(go())


def test_a_cancelled_job_keeps_its_start_and_its_time_runs_to_the_cancel(
    tmp_path: Path, assets: Path
) -> None:
    """Jobs started a minute ago and cancelled now (one in render, its last report long ago; one still in
    validate, without a job record): the list keeps when each started, and each one's elapsed time is
    the minute up to the cancel, not the time to its last report."""
    from pipeline.keys import job_record_key

    settings = make_settings(tmp_path)

    async def go() -> None:
        async with running(settings) as h, h.client() as client:
            rendering = make_job(h, assets, State.running, failed_stage="render", nonce="a", age=60)
            validating = make_job(h, assets, State.running, failed_stage="validate", nonce="b", age=60)
            path = h.store.local_path(settings.bucket_work, job_record_key(validating))
            assert path is not None
            path.unlink()
            await wait_loaded(h, client)
            token = await csrf_of(client)
            before = {j["job_id"]: j for j in (await client.get("/api/jobs")).json()["jobs"]}
            for job in (rendering, validating):
                await client.post(f"/api/jobs/{job}/cancel", headers={"X-CSRF-Token": token})
        async with running(settings) as h, h.client() as client:  # read afresh, as after a restart
            await wait_loaded(h, client)
            after = {j["job_id"]: j for j in (await client.get("/api/jobs")).json()["jobs"]}
        for job in (rendering, validating):
            assert after[job]["state"] == "cancelled"
            assert after[job]["created_at"] == before[job]["created_at"]
            assert 58 <= after[job]["elapsed"] <= 75, after[job]

    run(go())
