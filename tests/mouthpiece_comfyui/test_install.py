"""`mouthpiece comfyui install`: refuses what is not a ComfyUI, finds its Python, writes the custom-node
folder and proves the nodes import with that Python (pip left out here: the slow tests run it)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from mouthpiece_comfyui.install import comfyui_version, find_python, install, pip_target
from pipeline.cli import main
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def fake_comfyui(tmp_path: Path, version: str = "0.3.64") -> Path:
    root = tmp_path / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    (root / "main.py").write_text("")
    (root / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    return root


def test_not_a_comfyui_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a ComfyUI folder"):
        comfyui_version(tmp_path)
    assert comfyui_version(fake_comfyui(tmp_path)) == "0.3.64"


def test_python_is_found_or_asked_for(tmp_path: Path) -> None:
    root = fake_comfyui(tmp_path)
    with pytest.raises(ConfigError, match="--python"):
        find_python(root, None)
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "venv" / "bin" / "python").write_text("")
    assert find_python(root, None) == root / "venv" / "bin" / "python"
    with pytest.raises(ConfigError, match="there is no Python"):
        find_python(root, tmp_path / "nope")


def test_pip_installs_this_source_tree() -> None:
    assert pip_target("voice", editable=False) == [f"{ROOT}[voice]"]
    assert pip_target("", editable=True) == ["-e", str(ROOT)]


@pytest.fixture
def own_logging() -> Iterator[None]:
    """``main`` configures logging to this test's captured stderr, which pytest closes after it: the
    configuration the other tests log through is put back."""
    config, root = structlog.get_config(), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("own_logging")
def test_install_writes_the_custom_node_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The CLI command writes custom_nodes/mouthpiece (entry and MIT licence) and imports the nodes."""
    root = fake_comfyui(tmp_path, "0.3.70")
    python = tmp_path / "python"  # ComfyUI's Python stand-in: ours, with the pack installed (on its path)
    python.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")  # stripped for ComfyUI's Python
    assert main(["comfyui", "install", str(root), "--python", str(python), "--no-pip"]) == 0
    folder = root / "custom_nodes" / "mouthpiece"
    assert "NODE_CLASS_MAPPINGS" in (folder / "__init__.py").read_text()
    assert (folder / "LICENSE").read_text().startswith("MIT License")
    said = capsys.readouterr()
    assert "custom_nodes/mouthpiece" in said.out and "tested with 0.3.64" in said.err
    done = install(root, python, pip=False)
    assert done.comfyui_version == "0.3.70"
