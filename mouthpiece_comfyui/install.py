"""``mouthpiece comfyui install /path/to/ComfyUI``: the pack into a ComfyUI, in one command.

1. installs this mouthpiece (the source tree it runs from, else the same version from the package
   index) into ComfyUI's own Python with pip — the nodes run inside ComfyUI's process, so the pipeline
   must import there; torch is not among mouthpiece's core requirements, so ComfyUI's torch is left as
   it is;
2. writes ``custom_nodes/mouthpiece/`` (a two-line ``__init__.py`` importing ``mouthpiece_comfyui`` and
   the MIT licence) — ComfyUI's ordinary custom-node mechanism;
3. imports the nodes with ComfyUI's Python to prove it worked.

Tested with ComfyUI 0.3.64; needs a ComfyUI with the ``VIDEO`` type (``comfy_api.input_impl``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError

PACK = Path(__file__).resolve().parent
FOLDER_NAME = "mouthpiece"
TESTED = "0.3.64"
PYTHON_CANDIDATES = ("venv/bin/python", ".venv/bin/python", "venv/Scripts/python.exe", ".venv/Scripts/python.exe",
                     "../python_embeded/python.exe")  # fmt: skip


@dataclass(frozen=True)
class Installed:
    folder: Path
    python: Path
    comfyui_version: str
    source: str


def comfyui_version(root: Path) -> str:
    """The version a ComfyUI folder says it is (``comfyui_version.py``); ConfigError if it is not one."""
    if not (root / "main.py").is_file() or not (root / "custom_nodes").is_dir():
        raise ConfigError(f"{root} is not a ComfyUI folder (no main.py and custom_nodes/ in it)")
    text = (root / "comfyui_version.py").read_text() if (root / "comfyui_version.py").is_file() else ""
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("'\"")
    return "unknown"


def find_python(root: Path, given: Path | None) -> Path:
    """ComfyUI's Python: the one given, else a virtual environment inside the ComfyUI folder."""
    if given is not None:
        if not given.exists():
            raise ConfigError(f"there is no Python at {given}")
        return given
    for candidate in PYTHON_CANDIDATES:
        if (root / candidate).exists():
            return root / candidate
    raise ConfigError(
        f"no Python environment found in {root}; say which Python runs ComfyUI with --python "
        "(for example --python /path/to/ComfyUI/venv/bin/python)"
    )


def source_tree() -> Path | None:
    """The mouthpiece source tree this code runs from (None when installed from a wheel)."""
    root = PACK.parent
    return root if (root / "pyproject.toml").is_file() and (root / "pipeline").is_dir() else None


def pip_target(extras: str, editable: bool) -> list[str]:
    tree = source_tree()
    suffix = f"[{extras}]" if extras else ""
    if tree is None:
        from importlib.metadata import version

        if editable:
            raise ConfigError(
                "--editable needs mouthpiece's source tree; this mouthpiece was installed from a package"
            )
        return [f"mouthpiece{suffix}=={version('mouthpiece')}"]
    return ["-e", f"{tree}{suffix}"] if editable else [f"{tree}{suffix}"]


def install(root: Path, python: Path | None = None, *, extras: str = "voice", editable: bool = False,
            pip: bool = True) -> Installed:  # fmt: skip
    """Install the pack into the ComfyUI at ``root`` (see the module docstring)."""
    root = root.expanduser().resolve()
    found = comfyui_version(root)
    interpreter = find_python(root, python)
    target = pip_target(extras, editable)
    if pip:
        _run(
            [str(interpreter), "-m", "pip", "install", "--quiet", *target],
            "installing mouthpiece into ComfyUI's Python",
        )
    folder = root / "custom_nodes" / FOLDER_NAME
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PACK / "custom_node" / "__init__.py", folder / "__init__.py")
    shutil.copyfile(PACK / "LICENSE", folder / "LICENSE")
    _run([str(interpreter), "-c", "import mouthpiece_comfyui.nodes as n; print(len(n.NODE_CLASS_MAPPINGS))"],
         "importing the nodes with ComfyUI's Python")  # fmt: skip
    return Installed(folder, interpreter, found, " ".join(target))


def _run(argv: list[str], what: str) -> None:
    """Run ComfyUI's Python without our PYTHONPATH: pip must see (and replace) what is installed in
    ComfyUI's environment, and the import check must find the nodes there, not in a checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise ConfigError(f"{what} failed:\n{tail}")


def main_install(root: Path, python: Path | None, extras: str, editable: bool, pip: bool) -> int:
    """The CLI's ``comfyui install``: prints what it did, one line each."""
    done = install(root, python, extras=extras, editable=editable, pip=pip)
    print(f"installed mouthpiece ({done.source}) into {done.python}")
    print(f"nodes: {done.folder}")
    if done.comfyui_version != TESTED:
        print(f"note: ComfyUI {done.comfyui_version}; the pack is tested with {TESTED}", file=sys.stderr)
    print("restart ComfyUI; the nodes are under 'mouthpiece' in its node library")
    return 0
