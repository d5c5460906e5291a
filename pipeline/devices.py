"""Where models run: one rule for every model (face detection, Wav2Lip, Whisper); and how many CPUs
this process may use (``usable_cores``).

``auto`` is CUDA when torch is installed and sees a GPU, else the CPU; asking for CUDA where there is
none is a ``ConfigError`` saying what to change. torch is imported only here and only when asked (the
default install has no torch: the ``neural`` extra brings it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pipeline.errors import ConfigError


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """The device a model should run on for the ``device`` setting (``auto``, ``cpu``, ``cuda[:N]``)."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise ConfigError(
            f"the device setting is {device!r} but there is no CUDA GPU here (or torch is not installed): "
            "set MOUTHPIECE_DEVICE=auto or cpu"
        )
    return device


def usable_cores() -> int:
    """CPUs this process may use: the ones it may be scheduled on (``taskset``, a cpuset), fewer when a
    CPU quota caps it (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``: a Kubernetes CPU limit,
    ``docker --cpus``), rounded up; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup quota allows this process (e.g. 1.5), or None when there is none."""
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "150000 100000"
    except (OSError, ValueError):
        try:  # v1
            limit = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota, every = int(limit), int(period)
    except ValueError:  # "max": no limit
        return None
    return quota / every if quota > 0 and every > 0 else None
