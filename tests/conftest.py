"""Shared fixtures: settings in a temporary data dir, a real nats-server, a real S3 server (SeaweedFS).

Servers are started once per test session and shared; each test isolates itself with its own stream,
subject prefix, buckets and data directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from pipeline import ASSETS_DIR
from pipeline.bus.natsserver import EmbeddedNats, free_port
from pipeline.config import Settings, load_settings

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _private_user_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test touches the real per-user data directory (``~/.local/share/mouthpiece``): a command
    started without a data directory (and with no ``.mouthpiece/`` above it) uses a private one, so one
    run's jobs never show up in the next run's pages."""
    before = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if before is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = before


@pytest.fixture(scope="session")
def assets() -> Path:
    """The bundled public-domain media: jfk.flac (11 s speech) and astronaut.png (a face)."""
    return ASSETS_DIR


@pytest.fixture(scope="session")
def jfk() -> np.ndarray:
    """The JFK clip as the stages see speech: mono float32 at 16 kHz."""
    stereo, rate = soundfile.read(ASSETS_DIR / "jfk.flac", dtype="float32")
    return librosa.resample(stereo.mean(axis=1), orig_sr=rate, target_sr=16_000)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Test-only media under tests/data."""
    return DATA


def make_settings(tmp: Path, **overrides: object) -> Settings:
    """Settings for a test: its own data dir, stream and subjects; short timings."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "data_dir": tmp / "data",
        "stream": f"T{tag}",
        "subject_prefix": f"t{tag}",
        "ack_wait": 5.0,
        "backoff": [0.2],
        "max_deliver": 3,
        "settle_seconds": 0.3,
        "reconcile_interval": 0.0,
        "drain_seconds": 20.0,
        "log_format": "json",
    }
    values.update(overrides)
    return load_settings(None, **values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real JetStream nats-server on loopback, for the whole session."""
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


class SeaweedS3:
    """``weed mini``: a real SeaweedFS with an S3 API, on free loopback ports."""

    access_key = "mouthpiece"
    secret_key = "mouthpiece-secret"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = [free_port() for _ in range(10)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports[6]}"

    def start(self) -> SeaweedS3:
        weed = (
            str(Path(sys.executable).parent / "weed")
            if (Path(sys.executable).parent / "weed").exists()
            else shutil.which("weed") or "weed"
        )
        p = self.ports
        args = [
            weed,
            "mini",
            f"-dir={self.root}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p[0]}",
            f"-master.port.grpc={p[1]}",
            f"-volume.port={p[2]}",
            f"-volume.port.grpc={p[3]}",
            f"-filer.port={p[4]}",
            f"-filer.port.grpc={p[5]}",
            f"-s3.port={p[6]}",
            f"-s3.port.grpc={p[7]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={p[8]}",
            f"-admin.port.grpc={p[9]}",
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        log = (self.root / "weed.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        from minio import Minio

        client = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "weed exited; see weed.log"
            try:
                client.bucket_exists("probe-bucket")
                return
            except Exception:
                time.sleep(0.2)
        raise TimeoutError("SeaweedFS S3 did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("weed")).start()
    yield server
    server.stop()


def s3_settings(tmp: Path, server: SeaweedS3, **overrides: object) -> Settings:
    """Settings for the S3 store on the SeaweedFS server, with buckets unique to the test."""
    tag = uuid.uuid4().hex[:8]
    return make_settings(
        tmp,
        store="s3",
        s3_endpoint=server.endpoint,
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
        bucket_inputs=f"in-{tag}",
        bucket_work=f"work-{tag}",
        bucket_outputs=f"out-{tag}",
        **overrides,
    )
