"""The node pack on a real ComfyUI 0.3.64 (the vendored snapshot): installed by the documented command,
listed by /object_info, each example workflow run through POST /prompt and followed on /ws, the videos
fetched through /history and /view and probed, Cancel (POST /interrupt) stopping a long run, the no-face
branch taken, Upload into a real SeaweedFS and Notify to a Discord stand-in on loopback."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import av
import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.conftest import SeaweedS3
from tests.mouthpiece_comfyui.comfy_server import (
    ROOT,
    SNAPSHOT,
    Comfy,
    ensure_venv,
    extract,
    install_pack,
    snapshot_hash,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(
        not SNAPSHOT.is_file(),
        reason=f"the ComfyUI snapshot {SNAPSHOT} is absent (it lives in ../shared/vendor)",
    ),
]

EXAMPLES = ROOT / "mouthpiece_comfyui" / "examples"
NODES = {
    "MouthpieceLoadVoice": ((), ("AUDIO",)),
    "MouthpieceTextToSpeech": ((), ("AUDIO",)),
    "MouthpieceDetectFace": (("IMAGE", "VIDEO", "AUDIO"), ("MOUTHPIECE_FACES", "INT", "BOOLEAN")),
    "MouthpieceLipSync": (("AUDIO", "IMAGE", "VIDEO", "MOUTHPIECE_FACES"), ("VIDEO",)),
    "MouthpieceEnhance": (("VIDEO",), ("VIDEO",)),
    "MouthpieceSubtitles": (("VIDEO",), ("VIDEO", "STRING")),
    "MouthpieceBackground": (("VIDEO", "IMAGE"), ("VIDEO",)),
    "MouthpieceIfFace": (("BOOLEAN", "VIDEO"), ("VIDEO",)),
    "MouthpieceUpload": (("VIDEO",), ("STRING", "STRING")),
    "MouthpieceNotify": (("VIDEO",), ("STRING",)),
    "MouthpieceSubmit": (("AUDIO", "IMAGE", "VIDEO"), ("VIDEO", "STRING")),
}
WEBHOOK_TOKEN = "tok-" + "s" * 60


class FakeDiscord:
    """Discord's channel webhook endpoint on loopback: records each POST, answers as Discord does."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.posts.append(
                    {"path": self.path, "type": self.headers.get("Content-Type", ""), "body": body}
                )
                answer = json.dumps({"id": "1234567890", "channel_id": "42"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.origin}/api/webhooks/123456789012345678/{WEBHOOK_TOKEN}"


def _inputs(folder: Path) -> None:
    """The avatars and voice the examples name, in ComfyUI's input folder (made here, not only bundled)."""
    assets = ROOT / "pipeline" / "assets"
    astronaut = Image.open(assets / "astronaut.png").convert("RGB")
    astronaut.save(folder / "astronaut.png")
    ImageOps.mirror(astronaut).resize((400, 400)).save(folder / "avatar-2.jpg", quality=90)
    astronaut.crop((60, 0, 460, 400)).save(folder / "avatar-3.png")
    y, x = np.mgrid[0:360, 0:640]
    gradient = np.dstack([x * 255 // 640, y * 255 // 360, np.full_like(x, 128)]).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "no-face.png")
    (folder / "jfk.flac").write_bytes((assets / "jfk.flac").read_bytes())


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("weed")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def discord() -> Iterator[FakeDiscord]:
    fake = FakeDiscord()
    yield fake
    fake.server.shutdown()


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory, s3: SeaweedS3, discord: FakeDiscord) -> Iterator[Comfy]:
    from pipeline.bus.natsserver import free_port

    folder = extract(tmp_path_factory.mktemp("comfyui"))
    python = ensure_venv(folder, snapshot_hash())
    said = install_pack(folder, python)
    assert "custom_nodes/mouthpiece" in said
    _inputs(folder / "input")
    env = {
        "MOUTHPIECE_COMFYUI_DATA_DIR": str(folder / "mouthpiece-data"),
        "MOUTHPIECE_MODEL_DIR": str(folder / "mouthpiece-models"),
        "MOUTHPIECE_S3_ACCESS_KEY": s3.access_key,
        "MOUTHPIECE_S3_SECRET_KEY": s3.secret_key,
        "MOUTHPIECE_DISCORD_WEBHOOK_HOSTS": discord.origin,
        "MOUTHPIECE_DISCORD_COMFYUI_WEBHOOK": discord.url,
        "OMP_NUM_THREADS": "2",
    }
    server = Comfy(folder, python, free_port(), env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def run(
    comfy: Comfy, workflow: dict[str, Any], *, on_message: Any = None, timeout: float = 300
) -> dict[str, Any]:
    """POST a workflow and follow /ws until it ends; the messages, the prompt id and its history entry."""
    import websocket

    client = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy.port}/ws?clientId={client}", timeout=timeout)
    messages: list[dict[str, Any]] = []
    try:
        prompt_id = comfy.post("/prompt", {"prompt": workflow, "client_id": client})["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = ws.recv()
            if not isinstance(raw, str):
                continue
            message = json.loads(raw)
            message["at"] = time.monotonic()
            if message.get("data", {}).get("prompt_id") not in (None, prompt_id):
                continue
            messages.append(message)
            if on_message is not None:
                on_message(message)
            kind, data = message["type"], message.get("data", {})
            if kind in ("execution_error", "execution_interrupted", "execution_success"):
                break
            if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
        else:
            raise TimeoutError(f"the workflow did not end within {timeout} s")
    finally:
        ws.close()
    history: dict[str, Any] = {}
    for _ in range(100):  # the history entry is written just after the last message
        history = comfy.get(f"/history/{prompt_id}").get(prompt_id, {})
        if history.get("status", {}).get("completed") is not None:
            break
        time.sleep(0.1)
    return {"messages": messages, "prompt_id": prompt_id, "history": history}


def succeeded(result: dict[str, Any]) -> None:
    """Assert the run succeeded, showing the node's error when it did not."""
    errors = [m["data"] for m in result["messages"] if m["type"] == "execution_error"]
    detail = [(e["node_type"], e["exception_message"], "".join(e["traceback"][-2:])) for e in errors]
    assert result["history"]["status"]["status_str"] == "success", detail or result["history"]["status"]


def load(name: str) -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads((EXAMPLES / f"{name}.api.json").read_text())
    return workflow


def videos(comfy: Comfy, result: dict[str, Any], node: str, tmp_path: Path) -> list[Path]:
    """The videos a Save Video node made, fetched through /view."""
    files = []
    for item in result["history"]["outputs"][node]["images"]:
        query = urlencode(
            {"filename": item["filename"], "subfolder": item["subfolder"], "type": item["type"]}
        )
        dst = tmp_path / item["filename"]
        dst.write_bytes(comfy.get_bytes(f"/view?{query}"))
        files.append(dst)
    return files


def streams(path: Path) -> dict[str, float]:
    """Stream type → duration in seconds."""
    with av.open(str(path)) as container:
        return {s.type: float(s.duration * s.time_base) for s in container.streams if s.duration}


def kinds(result: dict[str, Any]) -> list[str]:
    return [m["type"] for m in result["messages"]]


def test_object_info_lists_every_node_with_comfyui_types(comfy: Comfy) -> None:
    """Every node is registered, under 'mouthpiece', taking and giving ComfyUI's own types."""
    info = comfy.get("/object_info")
    for name, (takes, gives) in NODES.items():
        assert name in info, f"{name} missing from /object_info"
        node = info[name]
        assert node["category"] == "mouthpiece"
        declared = {spec[0] if isinstance(spec[0], str) else "COMBO"
                    for part in ("required", "optional") for spec in node["input"].get(part, {}).values()}  # fmt: skip
        assert set(takes) <= declared, (name, declared)
        assert tuple(node["output"]) == gives
    assert info["MouthpieceLipSync"]["output_is_list"] == [True]


def test_single_video_has_progress_and_the_voice_length(comfy: Comfy, tmp_path: Path) -> None:
    """Load Voice + Load Image → Lip-sync → Enhance → Save Video: progress on the long nodes, each node
    executed, an H.264 + AAC video as long as the voice (JFK, 11.0 s)."""
    result = run(comfy, load("single-video"))
    succeeded(result)
    progressed = {m["data"]["node"] for m in result["messages"] if m["type"] == "progress"}
    assert {"3", "4"} <= progressed
    lipsync = [
        m["data"]["value"] / m["data"]["max"]
        for m in result["messages"]
        if m["type"] == "progress" and m["data"]["node"] == "3"
    ]
    assert len(lipsync) > 10 and lipsync[-1] == 1.0
    executed = {m["data"]["node"] for m in result["messages"] if m["type"] == "executed"}
    assert "5" in executed
    (video,) = videos(comfy, result, "5", tmp_path)
    found = streams(video)
    assert set(found) == {"video", "audio"}
    assert found["audio"] == pytest.approx(11.0, abs=0.15)
    assert found["video"] == pytest.approx(11.0, abs=0.15)


def test_one_voice_three_avatars_makes_three_videos(comfy: Comfy, tmp_path: Path) -> None:
    """A batch of three pictures (PNG, JPEG, a crop) under one synthesized voice: three videos, each with
    the voice's length; and the same with the batch split into a list (ComfyUI maps Lip-sync over it)."""
    result = run(comfy, load("three-avatars"))
    succeeded(result)
    made = videos(comfy, result, "8", tmp_path)
    assert len(made) == 3
    lengths = [streams(v) for v in made]
    assert all(set(s) == {"video", "audio"} for s in lengths)
    assert max(s["audio"] for s in lengths) - min(s["audio"] for s in lengths) < 0.05
    as_clip = load("three-avatars")  # the same batch taken as the frames of one clip: one video
    as_clip["7"]["inputs"].update(image_batch="frames of one clip", fps=3.0)
    as_clip["8"]["inputs"]["filename_prefix"] = "mouthpiece/three-frames"
    clip = run(comfy, as_clip)
    succeeded(clip)
    (one,) = videos(comfy, clip, "8", tmp_path)
    assert streams(one)["video"] == pytest.approx(lengths[0]["audio"], abs=0.15)
    as_list = load("three-avatars")
    as_list["9"] = {"class_type": "RebatchImages", "inputs": {"images": ["6", 0], "batch_size": 1}}
    as_list["7"]["inputs"]["image"] = ["9", 0]
    as_list["8"]["inputs"]["filename_prefix"] = "mouthpiece/three-list"
    listed = run(comfy, as_list)
    succeeded(listed)
    assert len(videos(comfy, listed, "8", tmp_path)) == 3


def test_no_face_takes_its_branch(comfy: Comfy, tmp_path: Path) -> None:
    """A picture without a face: Detect Face says so, If Face takes the voice-over branch (the Lip-sync
    that would refuse never runs), and the queue ends in success with a video of the voice's length."""
    result = run(comfy, load("no-face-branch"))
    succeeded(result)
    executed = [
        m["data"]["node"] for m in result["messages"] if m["type"] == "executing" and m["data"]["node"]
    ]
    assert "5" in executed and "4" not in executed
    (video,) = videos(comfy, result, "7", tmp_path)
    assert streams(video)["audio"] == pytest.approx(11.0, abs=0.15)


def test_speech_video_upload_notify(
    comfy: Comfy, s3: SeaweedS3, discord: FakeDiscord, tmp_path: Path
) -> None:
    """Text → speech → lip-sync → background blur → burned subtitles → Save Video, Upload into a real
    SeaweedFS bucket and Notify a Discord webhook (a stand-in on loopback) with the video and the link.
    No credential or webhook token appears in ComfyUI's history or log."""
    from minio import Minio

    workflow = load("speech-to-upload")
    workflow["7"]["inputs"]["endpoint"] = s3.endpoint
    before = len(discord.posts)
    result = run(comfy, workflow)
    succeeded(result)
    address = result["history"]["outputs"]["7"]["text"][0]
    assert address.startswith("s3://outputs/comfyui/") and address.endswith(".mp4")
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
    stored = tmp_path / "stored.mp4"
    client.fget_object("outputs", address.removeprefix("s3://outputs/"), str(stored))
    (saved,) = videos(comfy, result, "6", tmp_path)
    assert streams(stored) == pytest.approx(streams(saved), abs=0.01)  # Save Video remuxes it
    assert set(streams(stored)) == {"video", "audio"}
    (post,) = discord.posts[before:]
    assert post["path"].startswith("/api/webhooks/123456789012345678/")
    assert b"Your weekly update is ready." in post["body"] and b"X-Amz-Signature" in post["body"]
    assert b'filename="' in post["body"] and b".mp4" in post["body"]
    shown = json.dumps(result["history"]) + comfy.log.read_text(errors="replace")
    assert s3.secret_key not in shown and WEBHOOK_TOKEN not in shown


def test_cancel_stops_a_long_run(comfy: Comfy) -> None:
    """POST /interrupt while Lip-sync renders: the run ends as interrupted within two seconds."""
    workflow = load("single-video")
    workflow["3"]["inputs"]["motion"] = "lively"  # not the single-video test's prompt: nothing cached
    del workflow["4"]
    workflow["5"]["inputs"]["video"] = ["3", 0]
    pressed: list[float] = []

    def press(message: dict[str, Any]) -> None:
        data = message.get("data", {})
        if (
            not pressed
            and message["type"] == "progress"
            and data.get("node") == "3"
            and data["value"] / data["max"] > 0.3
        ):
            comfy.post("/interrupt")
            pressed.append(time.monotonic())

    result = run(comfy, workflow, on_message=press)
    assert pressed, "Lip-sync never reported progress"
    end = result["messages"][-1]
    assert end["type"] == "execution_interrupted", kinds(result)
    assert end["at"] - pressed[0] < 2.0


def test_errors_are_sentences(comfy: Comfy) -> None:
    """Lip-sync without a voice fails on its node with a sentence saying what to connect."""
    workflow = load("single-video")
    del workflow["3"]["inputs"]["voice"]
    result = run(comfy, workflow)
    (error,) = [m["data"] for m in result["messages"] if m["type"] == "execution_error"]
    assert error["node_id"] == "3"
    assert error["exception_type"].endswith("NodeError")
    assert error["exception_message"].strip().startswith("connect a voice (AUDIO)")


def test_ui_examples_are_the_api_examples_and_load_in_comfyuis_page(comfy: Comfy, tmp_path: Path) -> None:
    """Each committed UI-format example is its API example laid out (against the live /object_info), and
    ComfyUI's own page (headless Chromium) loads it with every node known and the widget values set.
    The speech-to-upload graph's screenshot is kept (MOUTHPIECE_UPDATE_SCREENSHOTS=1 writes it to
    docs/images/)."""
    import os
    import shutil

    from mouthpiece_comfyui.workflows import api_to_ui

    info = comfy.get("/object_info")
    examples = sorted(EXAMPLES.glob("*.api.json"))
    assert len(examples) == 4
    driver = _browser()
    try:
        comfy.post_raw("/settings/Comfy.TutorialCompleted", b"true")  # no first-run template dialog
        driver.get(comfy.base + "/")
        _wait(
            lambda: driver.execute_script("return !!(window.app && window.app.graph && window.app.canvas)"),
            90,
        )
        for api_file in examples:
            api = json.loads(api_file.read_text())
            ui = json.loads(api_file.with_name(api_file.name.replace(".api.json", ".json")).read_text())
            assert ui == api_to_ui(api, info), (
                f"{api_file.name}: regenerate with python -m mouthpiece_comfyui.workflows"
            )
            said = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "window.app.loadGraphData(arguments[0]).then(() => done('ok')).catch(e => done(String(e)))",
                ui,
            )
            assert said == "ok"
            loaded = driver.execute_script(
                "return window.app.graph._nodes.map(n => [String(n.id), n.type, !!LiteGraph.registered_node_types[n.type],"
                " Object.fromEntries((n.widgets || []).map(w => [w.name, w.value]))])"
            )
            assert sorted(row[0] for row in loaded) == sorted(api)
            for node_id, kind, known, widgets in loaded:
                assert known and kind == api[node_id]["class_type"]
                for name, value in api[node_id]["inputs"].items():
                    if name in widgets:
                        assert widgets[name] == value, (api_file.name, node_id, name)
        shot = tmp_path / "comfyui-speech-to-upload.png"
        shown = json.loads((EXAMPLES / "speech-to-upload.json").read_text())
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1]; window.app.loadGraphData(arguments[0]).then(done)",
            shown,
        )
        driver.execute_script(
            "const c = window.app.canvas; c.ds.scale = 0.95; c.ds.offset = [10, 10]; c.setDirty(true, true);"
        )
        time.sleep(1.5)
        driver.save_screenshot(str(shot))
        Image.open(shot).crop((0, 0, 2180, 740)).save(shot)
        if os.environ.get("MOUTHPIECE_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(shot, ROOT / "docs" / "images" / shot.name)
    finally:
        driver.quit()


def _browser() -> Any:
    import os
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium = next(
        (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None
    )
    driver = next(
        (p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "") if p and os.path.exists(p)),
        None,
    )
    if chromium is None or driver is None:
        message = "headless Chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_window_size(2360, 1100)
    browser.set_page_load_timeout(90)
    return browser


def _wait(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise TimeoutError("ComfyUI's page did not come up")


@pytest.fixture(scope="module")
def mouthpiece_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`mouthpiece up` (no HTTP service) on a data folder of its own; the folder."""
    import os
    import subprocess
    import sys

    home = tmp_path_factory.mktemp("mouthpiece-up")
    data = home / "mouthpiece"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MOUTHPIECE_DATA_DIR": str(data)}
    up = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "up", "--no-ingress"], cwd=home, env=env,
                          stdout=(home / "up.log").open("wb"), stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait(lambda: (data / "stack.json").is_file(), 60)
        yield data
    finally:
        up.terminate()
        up.wait(60)


def submit_workflow(data: Path, text: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "MouthpieceTextToSpeech", "inputs": {"text": text, "voice": "", "language": ""}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "avatar-3.png"}},
        "3": {
            "class_type": "MouthpieceSubmit",
            "inputs": {
                "voice": ["1", 0],
                "image": ["2", 0],
                "renderer": "viseme",
                "subtitles": "soft",
                "data_dir": str(data),
                "timeout_minutes": 5,
            },
        },
        "4": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["3", 0],
                "filename_prefix": "mouthpiece/submitted",
                "format": "auto",
                "codec": "auto",
            },
        },
    }


def test_submit_drives_a_running_mouthpiece(comfy: Comfy, mouthpiece_up: Path, tmp_path: Path) -> None:
    """Text to Speech → Submit to mouthpiece, against `mouthpiece up` on its own data folder: the job
    runs in mouthpiece's workers, its stage progress moves the node's bar, and the published video comes
    back into the graph (Save Video) with the voice's length."""
    result = run(comfy, submit_workflow(mouthpiece_up, "Sent to the cluster."))
    succeeded(result)
    bar = [
        m["data"]["value"] / m["data"]["max"]
        for m in result["messages"]
        if m["type"] == "progress" and m["data"]["node"] == "3"
    ]
    assert len({round(v, 2) for v in bar}) >= 3 and bar[-1] == 1.0
    (video,) = videos(comfy, result, "4", tmp_path)
    found = streams(video)
    assert {"video", "audio"} <= set(found)
    assert abs(found["video"] - found["audio"]) < 0.1
    assert list((mouthpiece_up / "buckets" / "outputs").glob("j*/*.mp4")), "mouthpiece published nothing"


def test_cancel_during_submit_cancels_the_job(comfy: Comfy, mouthpiece_up: Path) -> None:
    """Cancel while the cluster works on a submitted job: the node stops and the job is cancelled in
    mouthpiece (its status says so; nothing is published)."""
    from pipeline.contracts import JobStatus

    before = {p.name for p in (mouthpiece_up / "buckets" / "outputs").glob("j*")}
    pressed: list[float] = []

    def press(message: dict[str, Any]) -> None:
        data = message.get("data", {})
        if not pressed and message["type"] == "progress" and data.get("node") == "3" and data["value"] > 0:
            comfy.post("/interrupt")
            pressed.append(time.monotonic())

    text = "This job is cancelled from ComfyUI before it is finished, so no video is published for it."
    result = run(comfy, submit_workflow(mouthpiece_up, text), on_message=press)
    assert pressed and result["messages"][-1]["type"] == "execution_interrupted", kinds(result)
    assert result["messages"][-1]["at"] - pressed[0] < 2.0
    (job,) = {p.name for p in (mouthpiece_up / "buckets" / "outputs").glob("j*")} - before
    status = JobStatus.model_validate_json(
        (mouthpiece_up / "buckets" / "outputs" / job / "status.json").read_text()
    )
    assert status.state.value == "cancelled"
    assert not list((mouthpiece_up / "buckets" / "outputs" / job).glob("*.mp4"))


def test_wav2lip_renders_inside_comfyui(comfy: Comfy, tmp_path: Path) -> None:
    """The neural renderer runs on ComfyUI's own torch, its checkpoint named by the widget (a seeded
    random-init network saved in upstream's format: no lip-sync weights are packaged anywhere)."""
    import torch

    from stages.render.wav2lip import Wav2Lip

    torch.manual_seed(0)
    model = Wav2Lip().eval()
    models = comfy.folder / "mouthpiece-models"  # MOUTHPIECE_MODEL_DIR of the ComfyUI process
    models.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "global_step": 0}
    torch.save(state, models / "wav2lip_seeded.pth")
    workflow = load("three-avatars")
    for node in ("3", "4", "5", "6"):
        del workflow[node]
    workflow["7"]["inputs"].update(
        image=["2", 0], renderer="wav2lip", checkpoint="wav2lip_seeded.pth", motion="none"
    )
    workflow["8"]["inputs"]["filename_prefix"] = "mouthpiece/wav2lip"
    workflow["1"]["inputs"]["text"] = "Hello there."  # short: CPU inference of the network is slow
    result = run(comfy, workflow)
    succeeded(result)
    (video,) = videos(comfy, result, "8", tmp_path)
    found = streams(video)
    assert set(found) == {"video", "audio"} and abs(found["video"] - found["audio"]) < 0.1
