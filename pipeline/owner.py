"""Who a process is, and whether a process that once held work is still alive.

A claim or a scratch folder names its owner: host, boot id, pid and the process's start time. On the
same host (and boot) an owner is dead at once when its pid no longer runs or now belongs to a process
that started at another moment — so a restarted ``mouthpiece up`` or worker takes its predecessor's
tasks back without waiting. On other hosts only the owner's heartbeats tell (see the runner).
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from functools import cache
from pathlib import Path

from pipeline.contracts import Owner

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@cache
def boot_id() -> str:
    """This host's boot id ("" where the system does not say)."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot; 0 where unknown, -1 if it does not run)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return -1
    except OSError:
        return 0
    # the command name (field 2) may hold spaces and parentheses: fields after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of the whole line: starttime


@cache
def _tag() -> str:
    return uuid.uuid4().hex[:6]


def current_owner() -> Owner:
    """This process, as it names itself in claims and scratch folders."""
    pid = os.getpid()
    host = socket.gethostname()
    return Owner(
        host=host,
        boot=boot_id(),
        pid=pid,
        started=max(0, process_start(pid)),
        worker=f"{host}:{pid}:{_tag()}",
    )


def known_dead(owner: Owner) -> bool:
    """True when ``owner`` certainly no longer runs: it ran on this host (this boot) and its process is
    gone or was replaced. False when it runs, or when this host cannot tell (another host)."""
    me = current_owner()
    if owner.host != me.host or owner.boot != me.boot or not owner.boot:
        return False
    if owner.pid == me.pid:
        return owner.started != me.started
    started = process_start(owner.pid)
    if started == -1:
        return True
    return bool(owner.started) and started != owner.started


def scratch_name(prefix: str) -> str:
    """A folder-name prefix that identifies this process (see ``dead_scratch``)."""
    me = current_owner()
    return f"{prefix}-{me.pid}-{me.started}-"


def scratch_root(data_dir: Path) -> Path:
    """The data directory's scratch folder (``tmp/``), created: every process's temporary folders go in it."""
    root = data_dir / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def scratch_folder(data_dir: Path, prefix: str) -> Path:
    """A new folder of this process in the scratch folder, named by ``scratch_name`` so that a later
    start removes it if this process dies before it does."""
    return Path(tempfile.mkdtemp(prefix=scratch_name(prefix), dir=scratch_root(data_dir)))


def dead_scratch(name: str) -> bool:
    """Whether a scratch folder named by ``scratch_name`` belongs to a process that no longer runs."""
    parts = name.split("-")
    if len(parts) < 4 or not (parts[-3].isdigit() and parts[-2].isdigit()):
        return False
    pid, started = int(parts[-3]), int(parts[-2])
    running = process_start(pid)
    return running == -1 or (started != 0 and running != started)
