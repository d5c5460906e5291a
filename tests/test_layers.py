"""The module layers of docs/architecture.md, enforced: imports go down the layers, the runtime reaches
stages only through the registry, and stages do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.registry import HOUSE_STAGES

ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    # 0: no project imports
    "errors": 0, "config": 0, "messages": 0, "webhooks": 0, "storage.base": 0, "__init__": 0,
    "discord.__init__": 0, "ingress.__init__": 0, "registry": 0,
    # 1: contracts
    "contracts": 1,
    # 2: pure helpers on contracts
    "owner": 2, "devices": 2, "keys": 2, "specfile": 2, "faults": 2, "logs": 2, "media.__init__": 2, "media.run": 2, "media.probe": 2, "media.decode": 2, "media.normalize": 2, "reports": 2,
    "media.encode": 2, "media.finish": 2, "media.sniff": 2, "bus.natsserver": 2,
    # 3: the bus, the stores, events
    "bus.__init__": 3, "bus.memory": 3, "events": 3, "storage.local": 3, "storage.s3": 3, "storage.emitting": 3,
    "storage.__init__": 3, "destinations.__init__": 3, "destinations.policy": 3, "destinations.base": 3, "httputil": 3, "seaweedfs.__init__": 3, "seaweedfs.filer_pb": 3,
    "seaweedfs.records": 3,
    # 4: what stages are given, status, submitting, Discord's API
    "stage": 4, "status": 4, "submit": 4, "modelfiles": 4, "notifications": 4, "drops": 4, "eta": 4,
    "discord.api": 4, "discord.signature": 4, "discord.interactions": 4, "ingress.safe": 4,
    # 5: the registry and services built on the above
    "reconcile": 5, "seaweedfs.bridge": 5, "discord.mentions": 5, "discord.commands": 5, "discord.fetch": 5, "discord.progress": 5, "discord.fairness": 5,
    "runner.decide": 5, "metrics": 5, "ingress.markers": 5, "ingress.settle": 5, "ingress.drop": 5,
    "characters": 5,
    # 6: the runner, controls, the test environment
    "gc": 6, "discord.routes": 6, "discord.library": 6, "destinations.discord": 6, "destinations.folder": 6, "destinations.targets": 6, "runner.records": 6, "runner.handler": 6, "runner.worker": 6, "runner.__init__": 6, "runner": 6, "control": 6, "testing": 6, "ingress.shelves": 6,
    "backlog": 6,
    # 7-8: processes and entry points
    "stack": 7, "ingress.folder": 7, "ingress.http": 8, "cli.parser": 9, "cli.local": 9, "cli.jobs": 9, "cli.services": 9, "cli.admin": 9, "cli.__init__": 9, "cli.__main__": 9, "characters_cli": 9,
    # the web console: served by the HTTP ingress
    "console.__init__": 8, "console.app": 8, "console.auth": 8, "console.index": 8, "console.views": 8,
    "console.upload": 8, "console.base": 8, "console.pages": 8, "console.files": 8,
    "console.actions": 8, "console.api": 8, "console.throttle": 8, "console.characters": 8,
}  # fmt: skip
STAGE_PACKAGES = set(HOUSE_STAGES)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] in ("pipeline", "stages")}


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_every_pipeline_module_has_a_layer_and_imports_only_below_or_beside_it() -> None:
    """A pipeline module importing one of a higher layer fails here (so does a module with no layer:
    give it one in LAYERS and in docs/architecture.md)."""
    problems = []
    for path in sorted(ROOT.joinpath("pipeline").rglob("*.py")):
        name = module_of(path).removeprefix("pipeline.")
        if name not in LAYERS:
            problems.append(f"{name} has no layer")
            continue
        for target in imports(path):
            if target.startswith("stages"):
                continue  # checked below
            other = target.removeprefix("pipeline.") if target != "pipeline" else "__init__"
            other = other if other in LAYERS else f"{other}.__init__"
            if LAYERS.get(other, 99) > LAYERS[name]:
                problems.append(f"{name} (layer {LAYERS[name]}) imports {other} (layer {LAYERS.get(other)})")
    assert problems == []


def test_the_runtime_reaches_stages_only_through_the_registry() -> None:
    """Nothing in pipeline/ imports a stage module except pipeline.registry."""
    offenders = [
        f"{module_of(p)} imports {t}"
        for p in ROOT.joinpath("pipeline").rglob("*.py")
        for t in imports(p)
        if t.startswith("stages") and module_of(p) != "pipeline.registry"
    ]
    assert offenders == []


def test_stages_do_not_import_each_other() -> None:
    """A stage package (validate, detect, render, enhance, publish) imports no other stage package;
    shared support modules (speech, subtitles, tts, ...) import none at all."""
    offenders = []
    for path in ROOT.joinpath("stages").rglob("*.py"):
        parts = path.relative_to(ROOT / "stages").with_suffix("").parts
        own = parts[0]
        for target in imports(path):
            segments = target.split(".")
            if segments[0] != "stages" or len(segments) < 2:
                continue
            if segments[1] in STAGE_PACKAGES and segments[1] != own:
                offenders.append(f"{module_of(path)} imports {target}")
    assert offenders == []
