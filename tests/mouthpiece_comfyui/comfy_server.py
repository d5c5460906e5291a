"""A real ComfyUI for the node pack's tests: the vendored snapshot extracted to a temporary folder, its
own virtual environment (built once per snapshot and cached), the pack installed by the documented
command, the server started on the CPU on a free loopback port.

The environment is ComfyUI's ``requirements.txt`` (torch 2.14 + torchvision from PyPI; torchaudio left
out, ``requests`` added; see ``../shared/vendor/README.md``), about 6 GB: it is built into
``MOUTHPIECE_COMFYUI_VENV`` when set, else ``$XDG_CACHE_HOME/mouthpiece/comfyui-<snapshot hash>/venv``
(``~/.cache`` without XDG_CACHE_HOME), and reused while its ``.complete`` marker names the snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT.parent / "shared" / "vendor" / "comfyui-0.3.64.tar.gz"


def snapshot_hash(path: Path = SNAPSHOT) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def venv_dir(digest: str) -> Path:
    configured = os.environ.get("MOUTHPIECE_COMFYUI_VENV")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mouthpiece" / f"comfyui-{digest}" / "venv"


def extract(dest: Path) -> Path:
    with tarfile.open(SNAPSHOT) as tar:
        tar.extractall(dest, filter="data")
    (folder,) = [p for p in dest.iterdir() if p.is_dir()]
    return folder


def ensure_venv(comfy: Path, digest: str) -> Path:
    """ComfyUI's Python, building its environment first when the cache has none for this snapshot."""
    venv = venv_dir(digest)
    marker = venv / ".complete"
    if marker.is_file() and marker.read_text().strip() == digest:
        return venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    wanted = [
        line.strip()
        for line in (comfy / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("torchaudio")
    ]
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *wanted, "requests"], check=True
    )
    marker.write_text(digest)
    return venv / "bin" / "python"


def install_pack(comfy: Path, python: Path) -> str:
    """The documented command: ``mouthpiece comfyui install COMFYUI --python PY``; its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "comfyui", "install", str(comfy), "--python", str(python)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def _without_pythonpath() -> dict[str, str]:
    """Our environment minus PYTHONPATH: ComfyUI must import the pack it has installed, not this checkout."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


class Comfy:
    """A running ComfyUI and its HTTP API."""

    def __init__(self, folder: Path, python: Path, port: int, env: dict[str, str]) -> None:
        self.folder, self.port = folder, port
        self.log = folder / "comfyui.log"
        self.proc = subprocess.Popen(
            [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"],
            cwd=folder, env={**_without_pythonpath(), **env}, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "ComfyUI exited:\n" + self.log.read_text()[-3000:]
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("ComfyUI did not answer /system_stats:\n" + self.log.read_text()[-3000:])

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return json.load(r)

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=60) as r:
            data: bytes = r.read()
            return data

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(self.base + path, data=json.dumps(body or {}).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as r:
            text = r.read()
            return json.loads(text) if text else None

    def post_raw(self, path: str, data: bytes) -> None:
        request = urllib.request.Request(self.base + path, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
