"""End to end, as people use it: `mouthpiece render`, `mouthpiece up` with a folder drop, and the S3
store on a real SeaweedFS. These run the whole configured chain with real media."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.contracts import QualityReport, State
from pipeline.media import probe
from pipeline.stack import Stack
from pipeline.submit import Submission, submit
from tests.conftest import s3_settings
from tests.pipeline.test_stack import wait_done

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MOUTHPIECE = [sys.executable, "-m", "pipeline.cli"]


def run_cli(args: list[str], cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with no data directory set: its per-user one is under ``cwd``."""
    environ = {**os.environ, "MOUTHPIECE_LOG_FORMAT": "json", "XDG_DATA_HOME": str(cwd / "xdg"), **env}
    environ.pop("MOUTHPIECE_DATA_DIR", None)
    return subprocess.run(
        [*MOUTHPIECE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environ
    )


def test_render_writes_playable_mp4_of_audio_length(tmp_path: Path, assets: Path) -> None:
    """`mouthpiece render speech.flac face.png -o out.mp4` → H.264 + AAC MP4, as long as the audio."""
    out = tmp_path / "out.mp4"
    result = run_cli(
        ["render", str(assets / "jfk.flac"), str(assets / "astronaut.png"), "-o", str(out)],
        tmp_path,
        MOUTHPIECE_LOG_LEVEL="info",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = probe(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert abs(info.duration - probe(assets / "jfk.flac").duration) <= 0.1
    assert (tmp_path / "xdg" / "mouthpiece").is_dir()  # no project here: the per-user data directory
    # its one job has passed validate: the speech models are not held through the render
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    released = [e for e in events if e["event"] == "models_released" and e["stage"] == "validate"]
    assert released and "pocketsphinx:decoders" in released[0]["models"]


def test_render_of_text_renamed_png_fails_naming_the_file(tmp_path: Path, assets: Path) -> None:
    """A text file renamed .png → non-zero exit and a reason that names the file; no output written."""
    fake = tmp_path / "portrait.png"
    fake.write_text("I am a text file, not a picture.\n" * 10)
    out = tmp_path / "out.mp4"
    result = run_cli(["render", str(assets / "jfk.flac"), str(fake), "-o", str(out)], tmp_path)
    assert result.returncode == 1
    assert "portrait.png" in result.stderr.splitlines()[-1]
    assert not out.exists()


def test_up_turns_a_folder_drop_into_a_video(tmp_path: Path, assets: Path) -> None:
    """`mouthpiece up`, a voice clip dropped in the inbox → a video in the outbox; Ctrl-C stops cleanly."""
    proc = subprocess.Popen(
        [*MOUTHPIECE, "up", "--no-ingress"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "MOUTHPIECE_LOG_FORMAT": "json",
            "MOUTHPIECE_SETTLE_SECONDS": "0.5",
            "MOUTHPIECE_DATA_DIR": ".mouthpiece",  # a project's own state, beside it
        },
    )
    inbox, outbox = tmp_path / ".mouthpiece" / "inbox", tmp_path / ".mouthpiece" / "outbox"
    try:
        deadline = time.monotonic() + 30
        while not inbox.is_dir() and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.copy(assets / "jfk.flac", inbox / ".greeting.flac")  # write hidden, then rename in
        os.rename(inbox / ".greeting.flac", inbox / "greeting.flac")
        deadline = time.monotonic() + 240
        while not list(outbox.glob("greeting*.mp4")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.5)
        videos = list(outbox.glob("greeting*.mp4"))
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert len(videos) == 1, "no video appeared in the outbox"
    assert abs(probe(videos[0]).duration - 11.0) <= 0.1
    assert code == 0
    assert not (tmp_path / ".mouthpiece" / "stack.json").exists()


def test_s3_store_runs_a_job(tmp_path: Path, assets: Path, nats_url: str, s3_server: object) -> None:
    """The same pipeline on the S3 store (a real SeaweedFS) with client-published events."""
    settings = s3_settings(tmp_path, s3_server, nats_url=nats_url)  # type: ignore[arg-type]

    async def main() -> object:
        stack = await Stack.open(settings)
        stop = asyncio.Event()
        tasks = await stack.run_workers(list(settings.chain), stop)
        try:
            asked = Submission(audio=assets / "jfk.flac", avatars=(assets / "astronaut.png",))
            submitted = await asyncio.to_thread(submit, stack.store, settings, asked)
            return await wait_done(stack, submitted.job_id, timeout=240)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await stack.close()

    status = asyncio.run(main())
    assert status.state == State.done, status.reason  # type: ignore[attr-defined]
    assert any(o.endswith(".mp4") for o in status.outputs)  # type: ignore[attr-defined]


def test_render_with_a_wav2lip_checkpoint_in_upstream_format(tmp_path: Path, assets: Path) -> None:
    """`--renderer wav2lip --checkpoint PATH` with a checkpoint saved as upstream saves them (random
    weights, `module.` prefix) loads strictly and renders a video end to end on the CPU; the random
    network paints a grey patch over the lower face, which the quality report flags (exit 3) as not the
    avatar's skin, pointing at the model files."""
    import soundfile
    import torch

    from stages.render.wav2lip import Wav2Lip

    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}
    checkpoint = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": state, "global_step": 0, "global_epoch": 0}, checkpoint)
    speech, rate = soundfile.read(str(assets / "jfk.flac"))
    voice = tmp_path / "short.wav"
    soundfile.write(str(voice), speech[: int(2.5 * rate)], rate)
    out = tmp_path / "neural.mp4"
    args = [
        "render",
        str(voice),
        str(assets / "astronaut.png"),
        "--renderer",
        "wav2lip",
        "--checkpoint",
        str(checkpoint),
        "-o",
        str(out),
    ]
    result = run_cli(args, tmp_path)
    # random weights draw a grey patch, not a mouth: the report flags the video (exit 3); it is written
    assert result.returncode == 3, result.stderr[-3000:]
    assert abs(probe(out).duration - 2.5) <= 0.1
    report = QualityReport.model_validate_json(out.with_suffix(".quality.json").read_text())
    assert report.skin_change is not None and report.skin_change > 15.0, report  # 22 measured; ours < 0.5
    assert any(p.startswith("the lower face does not look like the avatar's skin") for p in report.problems)


def test_render_with_a_missing_checkpoint_says_which_file(tmp_path: Path, assets: Path) -> None:
    """`--renderer wav2lip` without the checkpoint in the model directory fails naming the file."""
    result = run_cli(
        [
            "render",
            str(assets / "jfk.flac"),
            str(assets / "astronaut.png"),
            "--renderer",
            "wav2lip",
            "-o",
            str(tmp_path / "x.mp4"),
        ],
        tmp_path,
    )
    assert result.returncode == 1
    assert "wav2lip_gan.pth" in result.stderr.splitlines()[-1]
