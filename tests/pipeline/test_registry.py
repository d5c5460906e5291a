"""The stage registry: stages by name, and the start-up check that a configured chain can work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import STAGES
from pipeline.errors import ConfigError
from pipeline.registry import check_chain
from pipeline.stage import Stage, get_stage


def test_every_stage_is_a_registered_object_with_its_contract() -> None:
    """Each name in the one stage list resolves to a Stage with a name, and the first takes uploads."""
    stages = [get_stage(name) for name in STAGES]
    assert all(isinstance(s, Stage) for s in stages)
    assert [s.name for s in stages] == list(STAGES)
    assert stages[0].takes_upload and not any(s.takes_upload for s in stages[1:])


def test_the_default_chain_and_the_short_one_work() -> None:
    """validate → detect → render → enhance → publish, and validate → publish (loop the avatar)."""
    check_chain(STAGES)
    check_chain(["validate", "publish"])


@pytest.mark.parametrize(
    ("chain", "sentence"),
    [
        (
            ["validate", "render", "publish"],
            "render needs faces, which no stage before it makes; put detect before it",
        ),
        (["validate", "detect", "publish", "render"], "the chain must end with publish, not render"),
        (["detect", "validate", "publish"], "the chain must start with validate, not detect"),
        (["validate", "dub", "publish"], "unknown stage(s) dub in the chain"),
        (["validate", "publish", "publish"], "each once"),
    ],
)
def test_an_impossible_chain_is_refused_saying_what_to_change(chain: list[str], sentence: str) -> None:
    """A chain that cannot work fails at start-up with a sentence that names the fix."""
    with pytest.raises(ConfigError) as caught:
        check_chain(chain)
    assert sentence in caught.value.reason


def test_the_registry_is_the_one_list_the_settings_the_labels_and_the_default_chain_come_from() -> None:
    """``config.STAGES`` is the registry's names, the default chain setting is ``DEFAULT_CHAIN`` (its
    own list), and a stage's label is the one it was registered with."""
    from pipeline.config import RunnerSettings
    from pipeline.registry import DEFAULT_CHAIN, REGISTRY, label

    assert tuple(REGISTRY) == STAGES
    assert RunnerSettings().chain == list(DEFAULT_CHAIN)
    assert label("render") == "Rendering"
    assert label("detect") == REGISTRY["detect"].label


def test_a_name_is_registered_once() -> None:
    """Registering another object under a taken name is refused, naming both; the same entry again is not."""
    from pipeline.registry import REGISTRY, register_stage

    again = REGISTRY["render"]
    assert register_stage(again.name, again.target, again.label) == again
    with pytest.raises(ConfigError) as caught:
        register_stage("render", "elsewhere:STAGE", "Painting")
    assert "two stages are registered as 'render'" in caught.value.reason


PLUGIN_STAGE = """
from pipeline.stage import ManifestStage


class Background(ManifestStage):
    name = "background"
    requires = frozenset({"avatar"})
    may_provide = frozenset({"video"})

    def run(self, ctx, manifest):
        return [manifest.advance(self.name)]


STAGE = Background()
"""


def test_a_plugin_outside_stages_registers_a_stage_through_its_entry_point(tmp_path: Path) -> None:
    """An installed distribution with a ``mouthpiece.stages`` entry point adds its stage: the registry
    lists it, ``get_stage`` returns it, a chain may name it, and the default chain is unchanged."""
    package = tmp_path / "mouthpiece_background"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "stage.py").write_text(PLUGIN_STAGE)
    (package / "register.py").write_text(
        "from pipeline.registry import register_stage\n"
        'register_stage("background", "mouthpiece_background.stage:STAGE", "Replacing the background")\n'
    )
    info = tmp_path / "mouthpiece_background-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mouthpiece-background\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[mouthpiece.stages]\nbackground = mouthpiece_background.register\n"
    )
    script = (
        "from pipeline.registry import DEFAULT_CHAIN, REGISTRY, check_chain, label\n"
        "from pipeline.stage import get_stage\n"
        "from pipeline.config import STAGES, RunnerSettings\n"
        "chain = ['validate', 'detect', 'render', 'background', 'enhance', 'publish']\n"
        "check_chain(chain)\n"
        "print(get_stage('background').name, label('background'), 'background' in STAGES,\n"
        "      'background' in DEFAULT_CHAIN, RunnerSettings(chain=chain).chain == chain)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path)])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["background", "Replacing", "the", "background", "True", "False", "True"]


def _roles(cell: str) -> set[str]:
    """The roles a table cell names: back-quoted words outside parentheses."""
    while (shorter := re.sub(r"\([^()]*\)", "", cell)) != cell:
        cell = shorter
    return set(re.findall(r"`([a-z_]+)`", cell))


def test_the_architecture_documents_stage_table_is_the_registry() -> None:
    """docs/architecture.md's "Stages" table lists the registry's stages in order, each with its module
    and exactly the roles its object requires, provides and may provide."""
    from pipeline.registry import REGISTRY

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "architecture.md").read_text()
    section = text.split("\n## Stages\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith(("| stage ", "| ---"))
    ]
    assert [row[0] for row in rows] == list(REGISTRY)
    for name, module, requires, provides in rows:
        stage = get_stage(name)
        path = REGISTRY[name].target.split(":")[0].replace(".", "/")
        assert module == (f"`{path}.py`" if (root / f"{path}.py").exists() else f"`{path}/`"), name
        assert _roles(requires) == set(stage.requires), name
        always, _, sometimes = provides.partition("may provide")
        assert _roles(always) == set(stage.provides), name
        assert _roles(sometimes) == set(stage.may_provide), name
