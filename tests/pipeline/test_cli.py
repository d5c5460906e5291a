"""The command line with careless and hostile arguments: every refusal one sentence, no traceback, and
``-o`` never overwrites an input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MOUTHPIECE_DATA_DIR": str(tmp / "data")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def refused(result: subprocess.CompletedProcess[str], sentence: str) -> None:
    """Exit 2, and stderr is one line: the sentence, no traceback."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"mouthpiece: {sentence}"]


@pytest.fixture
def files(tmp_path: Path, assets: Path) -> Path:
    (tmp_path / "voice.flac").write_bytes((assets / "jfk.flac").read_bytes())
    (tmp_path / "face.png").write_bytes((assets / "astronaut.png").read_bytes())
    (tmp_path / "folder.flac").mkdir()
    os.mkfifo(tmp_path / "pipe.flac")
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (
            ["folder.flac", "face.png"],
            "folder.flac is a folder, not a file: give the voice clip or picture file itself",
        ),
        (
            ["pipe.flac", "face.png"],
            "pipe.flac is a named pipe, not a file: give the voice clip or picture file itself",
        ),
        (
            ["voice.flac", "/dev/null"],
            "/dev/null is a device, not a file: give the voice clip or picture file itself",
        ),
        (["voice.flac", "nope.png"], "nope.png does not exist: check the path"),
        (["voice.flac", "empty.png"], "empty.png is empty: send the file again once it is completely saved"),
    ],
)
def test_render_says_what_a_non_file_is(files: Path, args: list[str], sentence: str) -> None:
    """A folder, a FIFO, a device, a missing or an empty file: named, said what it is, no traceback, and
    the FIFO is never opened (the command returns)."""
    refused(cli(files, "render", *args, "-o", "out.mp4"), sentence)


def test_output_pointing_at_an_input_is_refused(files: Path) -> None:
    """-o naming the voice clip, the photo, or a hard link to the photo is refused before any work; the
    inputs are unchanged."""
    digest = hashlib.sha256((files / "voice.flac").read_bytes()).hexdigest()
    os.link(files / "face.png", files / "alias.mp4")
    for output in ("voice.flac", "./face.png", "alias.mp4"):
        result = cli(files, "render", "voice.flac", "face.png", "-o", output)
        shown = os.path.normpath(output)
        refused(
            result, f"-o {shown} is one of the input files; it would be overwritten: give another output name"
        )
    assert hashlib.sha256((files / "voice.flac").read_bytes()).hexdigest() == digest


@pytest.mark.parametrize(
    ("option", "length", "limit"),
    [("--name", 121, 120), ("--transcript", 20_001, 20_000), ("--checkpoint", 256, 255)],
)
def test_over_long_options_are_refused_in_a_sentence(
    files: Path, option: str, length: int, limit: int
) -> None:
    """render and submit: an option over its limit is one sentence, not a validation traceback."""
    sentence = f"{option} is {length} characters long; the limit is {limit}: give a shorter one"
    for command in (
        ["render", "voice.flac", "face.png", "-o", "o.mp4"],
        ["submit", "voice.flac", "face.png"],
    ):
        refused(cli(files, *command, option, "x" * length), sentence)


@pytest.mark.slow
@pytest.mark.integration
def test_output_folder_beside_the_inputs_never_overwrites_them(tmp_path: Path, assets: Path) -> None:
    """render v.flac v.mp4 -o . would publish v.mp4 over the avatar video: it is written under another name,
    and the avatar is unchanged."""
    import cv2

    from pipeline.media import FrameWriter
    from tests.conftest import make_settings

    subprocess.run(
        [sys.executable, "-c", "import imageio_ffmpeg,subprocess,sys;subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(),"
         f"'-v','error','-i',{str(assets / 'jfk.flac')!r},'-t','1.5',{str(tmp_path / 'v.flac')!r}],check=True)"],
        check=True,
    )  # fmt: skip
    face = cv2.cvtColor(cv2.imread(str(assets / "astronaut.png")), cv2.COLOR_BGR2RGB)
    with FrameWriter(make_settings(tmp_path / "s"), tmp_path / "v.mp4", 512, 512, 25.0) as writer:
        for _ in range(10):
            writer.write(face)
    before = (tmp_path / "v.mp4").read_bytes()
    result = cli(tmp_path, "render", "v.flac", "v.mp4", "-o", ".", "--renderer", "none", timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "v.mp4").read_bytes() == before
    [written] = [tmp_path / line for line in result.stdout.split() if line.endswith(".mp4")]  # and its report
    assert written.name.startswith("v-") and written.name.endswith(".mp4") and written.stat().st_size > 0


# --- status ---------------------------------------------------------------------------------------------


def test_status_of_nothing_says_so(tmp_path: Path) -> None:
    """An empty data directory, nothing running: a header, "No jobs yet" with what to do first (`up`,
    or `render`; not the inbox, which nothing watches yet), and "No failed drops"."""
    result = cli(tmp_path, "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("mouthpiece on ") and lines[0].endswith(": 0 jobs")
    assert lines[1].startswith("No jobs yet, and mouthpiece is not running here: `mouthpiece up` starts it")
    assert "mouthpiece render VOICE PHOTO -o out.mp4" in lines[1]
    assert lines[-1] == "No failed drops."


def test_status_lists_jobs_with_times_outputs_reasons_and_failed_drops(tmp_path: Path, assets: Path) -> None:
    """The table has a header; each job its state, stage, source, start time and elapsed time, its
    output paths or its reason; failed drops follow with their reasons. --json carries the same."""
    import json

    from pipeline.contracts import FailedDrop, State
    from pipeline.drops import record_failed_drop
    from tests.conftest import make_settings
    from tests.pipeline.console.conftest import Harness, make_job

    h = Harness(make_settings(tmp_path))
    done = make_job(h, assets, State.done, nonce="a")
    failed = make_job(h, assets, State.failed, nonce="b")
    record_failed_drop(
        h.store, h.settings, FailedDrop(name="notes.txt", reason="notes.txt is not a supported file")
    )
    result = cli(tmp_path, "status")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "2 jobs (1 done, 1 failed)" in out.splitlines()[0]
    header = next(line for line in out.splitlines() if line.startswith("JOB"))
    assert header.split() == ["JOB", "STATE", "STAGE", "SOURCE", "STARTED", "ELAPSED", "NAME"]
    assert f"-> outputs/{done}/greeting.mp4" in out
    assert "astronaut.png has no face in it" in out
    row = next(line for line in out.splitlines() if line.startswith(failed))
    assert row.split()[1:4] == ["failed", "detect", "folder"]
    assert "FAILED DROPS" in out and "notes.txt: notes.txt is not a supported file" in out
    data = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert {j["job_id"] for j in data["jobs"]} == {done, failed}
    assert data["failed_drops"][0]["name"] == "notes.txt"


def test_status_follow_prints_the_table_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`status --follow` keeps printing the table (here not a terminal: a table per change) until
    interrupted, then exits 0."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MOUTHPIECE_DATA_DIR": str(tmp_path / "data")}
    # as a terminal runs it: a suite started in the background (``cmd &``) has SIGINT ignored, and the
    # child would inherit that (Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "status", "--follow"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None
    shown = []
    deadline = time.monotonic() + 60  # a loaded CI machine can take seconds to import
    while time.monotonic() < deadline and not any("Ctrl-C stops" in line for line in shown):
        line = proc.stdout.readline()
        if not line:
            break
        shown.append(line)
    time.sleep(1.0)  # in its wait now: the interrupt tested is the one a person gives the live table
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    out = "".join(shown) + rest
    assert proc.returncode == 0, err
    assert "No jobs yet" in out and "Updated live; Ctrl-C stops." in out


def test_a_console_beyond_loopback_without_a_password_is_refused(tmp_path: Path) -> None:
    """`mouthpiece ingress --host 0.0.0.0` (and `up` with that host) without a console password or token:
    exit 2 and one sentence, before anything starts."""
    refused(
        cli(tmp_path, "ingress", "--host", "0.0.0.0"),
        "the console would listen on 0.0.0.0 without a password: set MOUTHPIECE_CONSOLE_PASSWORD (or "
        "MOUTHPIECE_CONSOLE_TOKEN), listen on 127.0.0.1, or turn the console off with MOUTHPIECE_CONSOLE=false",
    )
    env_result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "up"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MOUTHPIECE_DATA_DIR": str(tmp_path / "data"), "MOUTHPIECE_INGRESS_HOST": "0.0.0.0"},
    )  # fmt: skip
    assert env_result.returncode == 2 and "without a password" in env_result.stderr


# --- text to video, and job spec files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (
            ["render", "-o", "x.mp4"],
            "give a voice clip (and photos of the face), a job spec file, or --say TEXT",
        ),
        (
            ["render", "job.yaml", "face.png", "-o", "x.mp4"],
            "job.yaml is a job spec: it names its own voice and avatars, give it alone",
        ),
        (
            ["submit", "voice.flac", "job.json"],
            "job.json is a job spec, not a voice clip or picture: give it alone, as the job",
        ),
        (["say", " ", "face.png"], "there is no text to speak"),
        (
            ["render", "--say", "x" * 2001, "-o", "x.mp4"],
            "the text to speak is 2001 characters; the limit is 2000",
        ),
    ],
)
def test_text_and_spec_mistakes_are_refused_before_anything_starts(
    files: Path, args: list[str], sentence: str
) -> None:
    """Nothing to speak or render, a spec with other files, a spec as a picture, empty or overlong text:
    one sentence, exit 2, and no data directory made."""
    (files / "job.yaml").write_text("audio: voice.flac\n")
    (files / "job.json").write_text('{"audio": "voice.flac"}')
    refused(cli(files, *args), sentence)
    assert not (files / "data").exists()


def test_an_unknown_voice_is_refused_with_the_voices_there_are(files: Path) -> None:
    result = cli(files, "say", "Hello.", "face.png", "--voice", "nobody")
    assert result.returncode == 2 and "there is no voice called 'nobody'" in result.stderr
    assert "en_US-joe-medium" in result.stderr


def _jobs(tmp: Path) -> list[dict]:
    import json

    return json.loads(cli(tmp, "status", "--json").stdout)["jobs"]


@pytest.mark.slow
@pytest.mark.integration
def test_say_makes_a_video_of_the_text(files: Path) -> None:
    """`say TEXT face.png`: Piper speaks, the face is lip-synced, the video lands at the default name in
    the working directory with the text's length; one job, done, named by its voice in the notes."""
    import json

    from pipeline.media import probe

    result = cli(files, "say", "Welcome to the stream, everyone!", "face.png", timeout=400)
    assert result.returncode == 0, result.stderr
    video = files / "mouthpiece-say.mp4"
    assert str(video.name) in result.stdout
    info = probe(video)
    assert info.has_video and info.has_audio and 2.0 < info.duration < 6.0
    [job] = _jobs(files)
    assert job["name"] == "Welcome to the stream, everyone!"
    status = json.loads(cli(files, "status", job["job_id"], "--json").stdout)
    assert status["state"] == "done" and any("Piper" in note for note in status["notes"])


@pytest.mark.slow
@pytest.mark.integration
def test_render_of_a_spec_file_renders_that_spec_once(files: Path) -> None:
    """`render job.yaml -o out.mp4`: the spec's voice, avatar and options are used, exactly one job is
    made (the spec is not uploaded as a medium, where it would start a second job) and it is done."""
    (files / "job.yaml").write_text(
        "name: spec-job\nspeech: 'Doors open at seven.'\navatars: [face.png]\noptions:\n  renderer: none\n"
    )
    result = cli(files, "render", "job.yaml", "-o", "out.mp4", timeout=400)
    assert result.returncode == 0, result.stderr
    assert (files / "out.mp4").stat().st_size > 0
    jobs = _jobs(files)
    assert [(j["state"], j["name"]) for j in jobs] == [("done", "spec-job")]
