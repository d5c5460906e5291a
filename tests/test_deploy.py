"""The cluster path, for real, on loopback: every service of docker-compose.yml as its own process.

A 3-node NATS cluster with JetStream (stream replicas 3, auth as compose configures it), SeaweedFS with
its server-side events followed by the bridge, the ingress, the reconcile service, and one ``mouthpiece
process per stage with two render workers — each started with the command and environment that
docker-compose.yml gives that service (read from the file, secrets from a .env made by
infra/gen-env.sh, service host names mapped to loopback ports), so the compose wiring is under test.

Six jobs are submitted by uploading to the bucket with a plain S3 client, while the batch is hit by:
a render worker SIGKILLed mid-render, the NATS node leading the stream SIGKILLed, the bridge SIGKILLed
with two job specs uploaded while it is down (it must replay them from its stored position), and the
bridge down again while SeaweedFS is SIGKILLed a moment after the last spec's upload (all restarted, as
compose's restart policy does). What a SeaweedFS SIGKILL loses: not the objects (they are on disk when
S3 answers) but the filer's metadata-log events not yet flushed (it flushes about once a minute), so
the last spec's event never reaches the bridge; the reconcile service finds the input without a job and
starts it. Expected: six videos, each a real one (video and audio streams, as long as its voice, every
frame decodes), each posted once, no dead letter, and the last job started by reconcile. The backlog
service (`mouthpiece backlog --serve`, what the Kubernetes ScaledJobs scale on) is read throughout: it
rises with the uploads, counts renders in flight, and is zero at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from minio import Minio
from PIL import Image

from pipeline import ASSETS_DIR
from pipeline.bus.natsserver import free_port, nats_server_binary
from pipeline.registry import DEFAULT_CHAIN
from tests.compose_env import Compose, read_dotenv
from tests.pipeline.discord.conftest import FakeDiscord, ThreadServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parent.parent
JOBS = 6
TRANSCRIPT = "And so my fellow Americans"
# what an operator would put in .env for this box: R3 stream, short waits (a test has minutes, not hours)
EXTRA_ENV = {
    "MOUTHPIECE_STREAM_REPLICAS": "3",
    "MOUTHPIECE_ACK_WAIT": "10",
    "MOUTHPIECE_DRAIN_SECONDS": "20",
    "MOUTHPIECE_RENDER_DRAIN_SECONDS": "20",
}
SCALE = {"render": 2}  # workers per stage where one is not enough
WORKERS = ["bridge", "reconcile", "ingress", *(s for s in DEFAULT_CHAIN for _ in range(SCALE.get(s, 1)))]
# what the test adds to every service (not in compose): reconcile looks at stuck manifests after 30 s
# (SeaweedFS's kill can lose a manifest's event too), not 300 s
SERVICE_ENV = {"MOUTHPIECE_RECONCILE_STUCK_AFTER": "30"}
CLIP_SECONDS = [2.4 + 0.1 * i for i in range(JOBS)]


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        return self

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"--- {self.name} ---\n" + "\n".join(text[-lines:])


@dataclass
class Deployment:
    root: Path
    procs: list[Proc] = field(default_factory=list)

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc.start())
        return proc

    def restart_exited(self) -> None:
        """compose's ``restart: unless-stopped``: a service process that died is started again."""
        for proc in self.procs:
            if proc.popen is not None and proc.popen.poll() is not None and proc.name != "init":
                proc.restarts += 1
                proc.start()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.procs)


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else "weed"


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def make_media(folder: Path) -> tuple[bytes, list[bytes]]:
    """A small face (the astronaut's head, 192 px) and six short, different voice clips (first words of
    the JFK clip)."""
    face = Image.open(ASSETS_DIR / "astronaut.png").convert("RGB").crop((96, 16, 416, 336)).resize((192, 192))
    buf = io.BytesIO()
    face.save(buf, format="PNG")
    audio, rate = soundfile.read(ASSETS_DIR / "jfk.flac", dtype="float32")
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    clips = []
    for i in range(JOBS):
        clip = mono[: int(rate * CLIP_SECONDS[i])] * np.float32(0.9 + 0.01 * i)
        out = io.BytesIO()
        soundfile.write(out, clip, rate, format="WAV")
        clips.append(out.getvalue())
    return buf.getvalue(), clips


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Deployment, Compose, dict[str, int]]]:
    env_file = tmp_path / ".env"
    subprocess.run(
        ["sh", str(ROOT / "infra/gen-env.sh"), "--out", str(env_file)], check=True, capture_output=True
    )
    env = {**read_dotenv(env_file), **EXTRA_ENV}
    ports = {f"nats{i}": free_port() for i in range(3)} | {f"route{i}": free_port() for i in range(3)}
    ports |= {f"mon{i}": free_port() for i in range(3)} | {f"weed{i}": free_port() for i in range(10)}
    ports["ingress"] = free_port()
    ports["backlog"] = free_port()
    hosts = {
        "nats:4222": f"127.0.0.1:{ports['nats0']}",
        "seaweedfs:8333": f"127.0.0.1:{ports['weed6']}",
        "seaweedfs:18888": f"127.0.0.1:{ports['weed5']}",
    }
    compose = Compose(ROOT / "docker-compose.yml", env, hosts)
    dep = Deployment(tmp_path)
    try:
        yield dep, compose, ports
    finally:
        dep.stop()


def start_nats(dep: Deployment, compose: Compose, ports: dict[str, int], i: int) -> Proc:
    """One node of a 3-node cluster: compose's nats command (its config file, auth from the env), with
    the volume paths and ports mapped, plus the cluster routes."""
    service = compose.service("nats")
    args = [nats_server_binary()]
    for arg in service.command:
        if arg == "/etc/nats/nats.conf":
            arg = str(ROOT / "infra/nats/nats.conf")
        elif arg == "/data":
            arg = str(dep.root / f"nats{i}")
        args.append(arg)
    routes = ",".join(f"nats://127.0.0.1:{ports[f'route{j}']}" for j in range(3))
    args += ["-a", "127.0.0.1", "-p", str(ports[f"nats{i}"]), "-m", str(ports[f"mon{i}"]), "-n", f"n{i}"]
    args += [
        "--cluster_name",
        "mouthpiece",
        "--cluster",
        f"nats://127.0.0.1:{ports[f'route{i}']}",
        "--routes",
        routes,
    ]
    env = {"PATH": os.environ["PATH"], **service.environment}
    return Proc(f"nats{i}", args, env, dep.root / f"nats{i}.log")


def start_seaweedfs(dep: Deployment, compose: Compose, ports: dict[str, int]) -> Proc:
    service = compose.service("seaweedfs")
    p = [ports[f"weed{i}"] for i in range(10)]
    args = [weed_binary()] + [
        a if a != "-dir=/data" else f"-dir={dep.root / 'weed'}" for a in service.command
    ]
    args += ["-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-master.port={p[0]}", f"-master.port.grpc={p[1]}"]
    args += [
        f"-volume.port={p[2]}",
        f"-volume.port.grpc={p[3]}",
        f"-filer.port={p[4]}",
        f"-filer.port.grpc={p[5]}",
    ]
    args += [f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", f"-admin.port={p[8]}", f"-admin.port.grpc={p[9]}"]
    args += ["-s3.port.iceberg=0", "-s3.port.lance=0"]
    (dep.root / "weed").mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(dep.root), **service.environment}
    return Proc("seaweedfs", args, env, dep.root / "seaweedfs.log")


def mouthpiece(
    dep: Deployment, compose: Compose, name: str, index: int, ports: dict[str, int], **extra: str
) -> Proc:
    """A mouthpiece service process: compose's command and environment; the container's volumes
    (data dir, models) become folders of this process. ``extra``: what the test adds (the fake
    Discord's origin, allowed as a webhook host in place of discord.com)."""
    service = compose.service(name)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(dep.root),
        "PYTHONPATH": str(ROOT),
        **service.environment,
        "MOUTHPIECE_DATA_DIR": str(dep.root / f"{name}{index}"),
        "MOUTHPIECE_MODEL_DIR": str(dep.root / "models"),
        **extra,
    }
    command = list(service.command)
    if name == "ingress":
        command[command.index("--port") + 1] = str(ports["ingress"])
        command[command.index("--host") + 1] = "127.0.0.1"
    return Proc(
        f"{name}{index}",
        [sys.executable, "-m", "pipeline.cli", *command],
        env,
        dep.root / f"{name}{index}.log",
    )


def backlog_service(dep: Deployment, compose: Compose, ports: dict[str, int]) -> Proc:
    """`mouthpiece backlog --serve`, what the Kubernetes ScaledJobs scale on, with the workers' settings."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(dep.root),
        "PYTHONPATH": str(ROOT),
        **compose.service("validate").environment,
        "MOUTHPIECE_DATA_DIR": str(dep.root / "backlog"),
    }
    args = [sys.executable, "-m", "pipeline.cli", "backlog", "--serve", "--host", "127.0.0.1"]
    args += ["--port", str(ports["backlog"])]
    return Proc("backlog", args, env, dep.root / "backlog.log")


class BacklogSampler:
    """Reads /backlog twice a second in a thread, keeping every answer (what KEDA would have seen)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/backlog"
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(0.5):
            with contextlib.suppress(Exception):
                self.samples.append(self.read())

    def read(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url, timeout=5) as r:
            return dict(json.loads(r.read()))

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(10)


def test_compose_deployment_survives_killed_render_nats_bridge_and_seaweedfs(
    deployment: tuple[Deployment, Compose, dict[str, int]],
) -> None:
    """6 uploads → 6 real videos, each posted once, no dead letter, although a render worker, the NATS
    stream leader, the bridge (twice) and SeaweedFS are SIGKILLed while the batch runs; the bridge replays
    what was uploaded while it was down, reconcile starts the job whose event SeaweedFS lost, and no
    service other than those killed ever exits."""
    dep, compose, ports = deployment
    discord = FakeDiscord()
    server = ThreadServer(discord.app()).start()
    sampler = BacklogSampler(ports["backlog"])
    try:
        nats_nodes = [dep.add(start_nats(dep, compose, ports, i)) for i in range(3)]
        wait_for(lambda: all(_healthy(ports[f"mon{i}"]) for i in range(3)), 60, "NATS cluster with JetStream")
        weed = dep.add(start_seaweedfs(dep, compose, ports))
        s3 = _client(compose)
        wait_for(lambda: s3.bucket_exists("probe-bucket") is not None, 60, "SeaweedFS S3")
        init = mouthpiece(dep, compose, "init", 0, ports).start()
        assert init.popen is not None and init.popen.wait(120) == 0, init.tail(40)
        extra = {"MOUTHPIECE_DISCORD_WEBHOOK_HOSTS": server.origin, **SERVICE_ENV}
        workers = [dep.add(mouthpiece(dep, compose, n, i, ports, **extra)) for i, n in enumerate(WORKERS)]
        bridge = next(w for w in workers if w.name.startswith("bridge"))
        reconcile = next(w for w in workers if w.name.startswith("reconcile"))
        renders = [w for w in workers if w.name.startswith("render")]
        dep.add(backlog_service(dep, compose, ports))
        wait_for(lambda: sampler.read()["total"] == 0, 60, "the backlog service")
        stream = asyncio.run(_stream_info(compose))
        sampler.start()

        _submit(s3, compose, server.origin, range(3))
        killed_render = _kill_a_render_mid_render(dep, s3, compose, renders)
        leader = asyncio.run(_stream_info(compose))["leader"]
        node = nats_nodes[int(str(leader).removeprefix("n"))]
        node.kill()
        time.sleep(5)
        dep.restart_exited()  # the NATS node and the render worker come back

        # the bridge dies; two specs arrive while it is down; restarted, it replays them from its offset
        bridge.kill()
        replay_from = bridge.log.stat().st_size
        _submit(s3, compose, server.origin, range(3, 5))
        time.sleep(2)
        dep.restart_exited()
        wait_for(
            lambda: _bridged(bridge, replay_from) >= {"jobs/deploy-3.json", "jobs/deploy-4.json"},
            90,
            "the restarted bridge replaying the specs uploaded while it was down",
        )

        # the bridge down again, the last spec uploaded, SeaweedFS SIGKILLed before its filer flushes
        bridge.kill()
        _submit(s3, compose, server.origin, range(5, 6))
        time.sleep(0.5)
        weed.kill()
        time.sleep(2)
        dep.restart_exited()  # SeaweedFS and the bridge come back
        finished = _wait_finished(dep, s3, compose, timeout=480)
        wait_for(lambda: sampler.read()["total"] == 0, 60, "the backlog falling to zero")
        sampler.stop()
        assert killed_render is not None, "no render was caught mid-render"
        assert len(finished) == JOBS, f"{len(finished)} of {JOBS} jobs finished\n{dep.tails()}"
        assert "jobs/deploy-5.json" not in _bridged(bridge, 0), "the filer kept the event: see the docstring"
        assert "jobs/deploy-5.json" in _reconciled(reconcile), reconcile.tail(40)
        # the number KEDA scales on rose with the uploads, counted renders in flight, and is zero now
        assert max(doc["total"] for doc in sampler.samples) >= 2
        assert any(doc["stages"]["render"]["default"]["in_flight"] >= 1 for doc in sampler.samples)
        assert sampler.read()["total"] == 0

        bucket_out = compose.env.get("MOUTHPIECE_BUCKET_OUTPUTS", "outputs")
        videos = [
            o.object_name
            for o in s3.list_objects(bucket_out, recursive=True)
            if str(o.object_name).endswith(".mp4")
        ]
        assert len(videos) == JOBS, videos
        _probe_outputs(s3, bucket_out, dep.root / "probe")
        posts = [r.path for r in discord.with_files()]
        assert sorted(posts) == sorted(f"/api/webhooks/9/tok-{i}" for i in range(JOBS)), posts  # each once
        letters = list(s3.list_objects("work", prefix="dead-letter/", recursive=True))
        assert not letters, [str(o.object_name) for o in letters]
        assert stream["replicas"] == 3, f"the stream has {stream['replicas']} replica(s), not 3"
        # compose restarts a crashed service quietly; here only the processes killed may have restarted:
        # no worker exits while the killed NATS leader's successor is elected (its bus calls wait it out),
        # not even the killed render restarted into the election
        restarts = {p.name: p.restarts for p in dep.procs if p.restarts}
        expected = {node.name: 1, bridge.name: 2, weed.name: 1, killed_render.name: 1}
        assert restarts == expected, f"services that crashed: {restarts}\n{dep.tails()}"
    except BaseException:
        print(dep.tails())
        raise
    finally:
        sampler.stop()
        server.stop()


def _log_events(proc: Proc, start: int = 0) -> list[dict[str, object]]:
    """The JSON log lines a service wrote (from byte ``start`` of its log)."""
    with proc.log.open("rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").splitlines()
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _bridged(bridge: Proc, start: int) -> set[str]:
    """Keys the bridge published (``bridge_event``) in its log from byte ``start``."""
    return {str(e.get("key")) for e in _log_events(bridge, start) if e.get("event") == "bridge_event"}


def _reconciled(reconcile: Proc) -> set[str]:
    """Keys the reconcile service announced."""
    found: set[str] = set()
    for event in _log_events(reconcile):
        if event.get("event") == "reconciled":
            found |= {str(k) for k in event.get("keys", [])}  # type: ignore[attr-defined]
    return found


def _probe_outputs(s3: Minio, bucket: str, folder: Path) -> None:
    """Every finished job's video is a real one: an H.264 video stream and an audio stream, as long as
    its voice clip (±0.15 s), and every video and audio frame decodes."""
    import av

    folder.mkdir(exist_ok=True)
    for obj in s3.list_objects(bucket, recursive=True):
        if not str(obj.object_name).endswith("/status.json"):
            continue
        status = json.loads(s3.get_object(bucket, str(obj.object_name)).read())
        index = int(str(status["name"]).removeprefix("deploy-"))
        (video,) = [k for k in status["outputs"] if k.endswith(".mp4")]
        video_key = str(video).removeprefix(f"{bucket}/")  # status names outputs as bucket/key
        path = folder / f"{index}.mp4"
        s3.fget_object(bucket, video_key, str(path))
        with av.open(str(path)) as container:
            assert container.streams.video and container.streams.audio, video_key
            assert container.duration is not None
            seconds = container.duration / av.time_base
            assert abs(seconds - CLIP_SECONDS[index]) <= 0.15, (video_key, seconds, CLIP_SECONDS[index])
            frames = sum(1 for _ in container.decode(video=0))
        with av.open(str(path)) as container:
            samples = sum(f.samples for f in container.decode(audio=0))
            rate = container.streams.audio[0].rate
        fps = 25.0
        assert frames >= int(CLIP_SECONDS[index] * fps * 0.9), (video_key, frames)
        assert abs(samples / rate - CLIP_SECONDS[index]) <= 0.15, (video_key, samples / rate)


def _healthy(port: int) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?js-enabled-only=true", timeout=2) as r:
        return bool(r.status == 200)


def _client(compose: Compose) -> Minio:
    env = compose.service("validate").environment
    return Minio(
        env["MOUTHPIECE_S3_ENDPOINT"],
        access_key=env["MOUTHPIECE_S3_ACCESS_KEY"],
        secret_key=env["MOUTHPIECE_S3_SECRET_KEY"],
        secure=False,
    )


async def _stream_info(compose: Compose) -> dict[str, object]:
    import nats

    env = compose.service("validate").environment
    nc = await nats.connect(
        env["MOUTHPIECE_NATS_URL"], user=env["MOUTHPIECE_NATS_USER"], password=env["MOUTHPIECE_NATS_PASSWORD"]
    )
    try:
        info = await nc.jetstream().stream_info("MOUTHPIECE")
        leader = info.cluster.leader if info.cluster else "n0"
        return {"replicas": info.config.num_replicas, "leader": leader}
    finally:
        await nc.close()


def _submit(s3: Minio, compose: Compose, discord_origin: str, jobs: range) -> None:
    """Upload the media of ``jobs`` (the face with the first), then one job spec per job (the spec's
    event starts the job)."""
    face, clips = make_media(Path())

    def put(key: str, data: bytes) -> None:
        s3.put_object("inputs", key, io.BytesIO(data), len(data))

    if jobs.start == 0:
        put("jobs/media/face.png", face)
    for i in jobs:
        put(f"jobs/media/voice-{i}.wav", clips[i])
    for i in jobs:
        spec = {
            "name": f"deploy-{i}",
            "audio": f"media/voice-{i}.wav",
            "avatars": ["media/face.png"],
            "options": {"renderer": "viseme", "subtitles": "none", "transcript": TRANSCRIPT},
            "destinations": [{"kind": "discord_webhook", "url": f"{discord_origin}/api/webhooks/9/tok-{i}"}],
        }
        put(f"jobs/deploy-{i}.json", json.dumps(spec).encode())


def _records(s3: Minio, suffix: str) -> list[dict[str, object]]:
    out = []
    for obj in s3.list_objects("work", prefix="jobs/", recursive=True):
        name = str(obj.object_name)
        if "/records/" in name and name.endswith(suffix):
            try:
                out.append(json.loads(s3.get_object("work", name).read()))
            except Exception:
                continue
    return out


def _kill_a_render_mid_render(
    dep: Deployment, s3: Minio, compose: Compose, renders: list[Proc]
) -> Proc | None:
    """SIGKILL the render worker that a running render record names, while it runs; the one killed."""
    pids = {p.popen.pid: p for p in renders if p.popen is not None}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for record in _records(s3, ".render.json"):
            pid = int(str(record.get("worker", "::")).split(":")[1] or 0)
            if record.get("state") == "running" and pid in pids:
                pids[pid].kill()
                return pids[pid]
        time.sleep(0.2)
    return None


def _wait_finished(dep: Deployment, s3: Minio, compose: Compose, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    finished: list[str] = []
    while time.monotonic() < deadline:
        dep.restart_exited()
        finished = []
        for obj in s3.list_objects("outputs", recursive=True):
            if str(obj.object_name).endswith("/status.json"):
                status = json.loads(s3.get_object("outputs", str(obj.object_name)).read())
                if status["state"] in ("done", "failed"):
                    assert status["state"] == "done", (status.get("reason"), status.get("tasks"))
                    finished.append(status["job_id"])
        if len(finished) >= JOBS:
            return finished
        time.sleep(2)
    return finished
