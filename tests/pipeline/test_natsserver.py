"""The embedded nats-server: started from any thread without Python code between fork and exec, and
gone when the process that started it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.bus.natsserver import dying_with_parent

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_parent_leaves_no_server_behind(tmp_path: Path) -> None:
    """A process that starts the server from a worker thread (as ``Stack.open`` does) while other
    threads load libraries, then is SIGKILLed: the server (run through setpriv, the same process) is
    gone within 5 s."""
    script = textwrap.dedent(
        """
        import sys, threading
        from concurrent.futures import ThreadPoolExecutor
        from pathlib import Path
        from pipeline.bus.natsserver import EmbeddedNats

        def load() -> None:  # other threads importing C extensions while the server starts
            import ctypes, sqlite3, decimal  # noqa: F401

        pool = ThreadPoolExecutor(4)  # kept: the signal follows the thread that started the server
        for _ in range(3):
            pool.submit(load)
        nats = pool.submit(EmbeddedNats(Path(sys.argv[1])).start).result(timeout=30)
        print(nats.proc.pid, flush=True)
        threading.Event().wait()
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "nats")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert parent.stdout is not None
    server = int(parent.stdout.readline())
    assert _alive(server)
    with open(f"/proc/{server}/cmdline", "rb") as f:
        assert b"nats-server" in f.read()  # setpriv exec'd it: the pid is the server's
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server)


def test_the_server_command_sets_the_signal_by_exec_not_by_python_code() -> None:
    """On Linux the command is wrapped in ``setpriv --pdeathsig TERM --`` (found on the path); the
    program and its arguments follow unchanged."""
    cmd = ["/bin/nats-server", "-js", "-p", "4222"]
    wrapped = dying_with_parent(cmd)
    if sys.platform.startswith("linux") and wrapped != cmd:
        assert wrapped[1:4] == ["--pdeathsig", "TERM", "--"] and wrapped[4:] == cmd
        assert Path(wrapped[0]).name == "setpriv"
    else:
        assert wrapped == cmd
