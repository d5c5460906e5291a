"""Add an example stage with an option to a copy of a checkout, for real, and check that it works there.

The stage: ``backdrop`` (backdrop replacement between render and enhance; here it hands the
manifest on unchanged) with the job option ``backdrop`` (a colour name). What it takes on a checkout
with the stage registry:

- its package, ``stages/backdrop/__init__.py``;
- ``pipeline/registry.py``: one ``register_stage`` line and its name in ``DEFAULT_CHAIN``;
- ``pipeline/contracts.py``: one ``JobOptions`` field, with where it is offered;
- ``docker-compose.yml`` and ``infra/k8s/mouthpiece.yaml``: its worker (the enhance worker's blocks,
  copied) — asked for by tests/test_infra.py;
- ``docs/architecture.md``: its row in the stage table — asked for by tests/pipeline/test_registry.py.

Then the registry, contract, layer, deployment-file and option tests run in the copy, and the files that
differ from the checkout are listed.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

STAGE = '''"""backdrop: replaces the picture's backdrop (example stage: hands the manifest on)."""

from __future__ import annotations

from pipeline.contracts import Manifest, Role
from pipeline.stage import ManifestStage, StageContext


class Backdrop(ManifestStage):
    """Backdrop replacement between render and enhance."""

    name = "backdrop"
    requires = frozenset({Role.audio, Role.avatar})

    def run(self, ctx: StageContext, inputs: Manifest) -> list[Manifest]:
        return [inputs.advance(self.name, {"backdrop": ctx.spec.options.backdrop})]


STAGE = Backdrop()
'''

OPTION = """    backdrop: Annotated[
        str | None, Offered(cli="replace the backdrop with this colour", form=True, page=True)
    ] = Field(None, max_length=40, description="a colour name for the backdrop; none: keep it")
"""

CHECKS = [
    "tests/pipeline/test_registry.py",
    "tests/pipeline/test_stage.py",
    "tests/pipeline/test_contracts.py",
    "tests/test_layers.py",
    "tests/test_infra.py::test_deployment_files_run_the_registered_default_chain_and_nothing_else",
    "tests/test_infra.py::test_compose_has_a_worker_per_stage_and_the_cluster_services",
    "tests/test_infra.py::test_compose_minio_targets_match_the_routing_table",
]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise SystemExit(f"{path}: cannot find {old!r}")
    path.write_text(text.replace(old, new, 1))


def clone_compose(path: Path) -> None:
    """The enhance worker's service and MinIO target, copied for backdrop."""
    text = path.read_text()
    minio = "".join(line + "\n" for line in text.splitlines() if "_ENHANCE:" in line)
    text = text.replace(minio, minio + minio.replace("_ENHANCE", "_BACKDROP").replace("enhance", "backdrop"))
    service = re.search(r"^  enhance:\n(?:(?:    .*)?\n)*", text, re.M)
    assert service is not None
    text = text.replace(service.group(0), service.group(0) + service.group(0).replace("enhance", "backdrop"))
    path.write_text(text)


def clone_k8s(path: Path) -> None:
    """Every Kubernetes object of the enhance worker, copied for backdrop."""
    docs = path.read_text().split("\n---\n")
    out = []
    for doc in docs:
        out.append(doc)
        if "mouthpiece-enhance" in doc:
            out.append(doc.replace("enhance", "backdrop"))
    path.write_text("\n---\n".join(out))


def apply_example_stage(root: Path, tmp: Path) -> None:
    copy = tmp / "copy"
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
    for rel in files.stdout.splitlines():
        src = root / rel
        if src.is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / rel)
    if not (copy / "pipeline" / "registry.py").read_text().count("register_stage("):
        print("--apply: this checkout has no stage registry (register_stage); nothing applied")
        return
    (copy / "stages" / "backdrop").mkdir()
    (copy / "stages" / "backdrop" / "__init__.py").write_text(STAGE)
    registry = copy / "pipeline" / "registry.py"
    edit(
        registry,
        'register_stage("render", "stages.render:STAGE", "Rendering")\n',
        'register_stage("render", "stages.render:STAGE", "Rendering")\n'
        'register_stage("backdrop", "stages.backdrop:STAGE", "Replacing the backdrop")\n',
    )
    edit(registry, '"render", "enhance", "publish")', '"render", "backdrop", "enhance", "publish")')
    edit(
        copy / "pipeline" / "contracts.py",
        "    face: Annotated[FaceChoice",
        OPTION + "    face: Annotated[FaceChoice",
    )
    clone_compose(copy / "docker-compose.yml")
    clone_k8s(copy / "infra" / "k8s" / "mouthpiece.yaml")
    edit(
        copy / "docs" / "architecture.md",
        "| enhance | `stages/enhance.py` |",
        "| backdrop | `stages/backdrop/` | `audio`, `avatar` | the picture with its backdrop replaced |\n"
        "| enhance | `stages/enhance.py` |",
    )
    touched = sorted(
        rel
        for rel in files.stdout.splitlines()
        if (root / rel).is_file() and not filecmp.cmp(root / rel, copy / rel, shallow=False)
    )
    print(f"--apply: added stages/backdrop/ and touched {len(touched)} files: {', '.join(touched)}")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *CHECKS],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )
    print(
        f"--apply: the checks in the copy: {done.stdout.strip().splitlines()[-1] if done.stdout else done.stderr}"
    )
    flags = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "submit", "--help"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )
    print(f"--apply: `mouthpiece submit --help` offers --backdrop: {'--backdrop' in flags.stdout}")
    if done.returncode != 0:
        print(done.stdout[-3000:])
        raise SystemExit(1)
