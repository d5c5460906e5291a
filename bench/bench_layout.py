"""The house's layout, measured: the yardsticks of docs/architecture.md's "Layout, measured" table.

    python bench/bench_layout.py [ROOT]          # the figures for a checkout (default: this one)
    python bench/bench_layout.py --apply [ROOT]  # also add an example stage with an option, for real,
                                                 # in a temporary copy, and check that it works there

Figures (each computed the same way on any checkout, so before and after compare):

- **files to touch for a new stage with an option**: the files that enumerate the stages (a Python
  literal naming four or more of them, a YAML or Markdown file that lists every one of them as a worker
  or a table row), the files that enumerate job options (a Python literal naming three or more of
  ``JobOptions``' fields, or, outside tests, three ``"--<option>"`` flags, or a template naming three;
  in tests only module constants count), the module declaring ``JobOptions``, and the new stage's own
  package (bench/ is not counted);
- **largest module** (lines) under pipeline/ and stages/;
- **upward imports**: a module importing one of a package whose highest layer is above its own (a
  package is as high as its highest module: importing any part of it couples you to all of it), and
  pairs of modules or packages importing each other;
- **the layer table** of tests/test_layers.py: modules per layer; loose modules in pipeline/'s root;
  what else than the five stage packages lives in stages/.

``--apply`` works on a checkout with the stage registry (``pipeline.registry.REGISTRY``): it copies the
tracked files to a temporary folder, adds ``stages/background`` (a pass-through stage between render and
enhance) with one registry line and one ``JobOptions`` field, adds its workers to the deployment files,
runs the registry, layer, deploy-file and option tests there, and prints the files it touched.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

STAGES = ("validate", "detect", "render", "enhance", "publish")


def tracked(root: Path) -> list[Path]:
    """The checkout's files (``git ls-files``; every file but caches where it is not a git checkout,
    e.g. ``git archive 2deea71 | tar -x -C DIR``)."""
    if not (root / ".git").exists():
        return [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    return [root / line for line in out.splitlines() if (root / line).is_file()]


def option_names(root: Path) -> set[str]:
    """``JobOptions``' field names, read from the module that declares it."""
    for path in (root / "pipeline").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "JobOptions":
                return {
                    s.target.id
                    for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                }
    raise SystemExit("no JobOptions class found")


def declares_job_options(path: Path) -> bool:
    return path.suffix == ".py" and "class JobOptions(" in path.read_text()


def literal_strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Dict):
        items = [k for k in node.keys if k is not None]
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        items = list(node.elts)
    else:
        return set()
    return {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}


def is_test(path: Path) -> bool:
    return "tests" in path.parts


def enumerates(path: Path, names: set[str], at_least: int) -> bool:
    """A Python literal in ``path`` naming ``at_least`` of ``names`` (or, for ``--flags``, as many
    ``add_argument`` calls; for templates, as many form fields)."""
    text = path.read_text(errors="replace")
    if path.suffix == ".py":
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return False
        # in tests, only module constants (a test's own examples are not a list to keep in step)
        nodes = (
            ast.walk(tree)
            if not is_test(path)
            else (
                n.value
                for n in tree.body
                if isinstance(n, ast.Assign | ast.AnnAssign) and n.value is not None
            )
        )
        for node in nodes:
            if len(literal_strings(node) & names) >= at_least:
                return True
        flags = {n for n in names if f'"--{n.replace("_", "-")}"' in text and not is_test(path)}
        return len(flags) >= at_least
    if path.suffix == ".html":
        return len({n for n in names if re.search(rf'name="{n}"', text)}) >= at_least
    return False


def lists_every_stage(path: Path) -> bool:
    """A deployment file with a worker for each stage, or a Markdown table with a row for each."""
    text = path.read_text(errors="replace")
    if path.suffix in (".yml", ".yaml"):
        return all(re.search(rf'"worker",\s*"{s}"|-\s*worker\s*\n\s*-\s*{s}\b', text) for s in STAGES)
    if path.suffix == ".md":
        return all(re.search(rf"^\| {s} \|", text, re.M) for s in STAGES)
    return False


def files_to_touch(root: Path) -> tuple[list[str], list[str]]:
    """(files naming the stages, files naming the options) a new stage with an option must edit."""
    options = option_names(root)
    stage_sites, option_sites = [], []
    for path in tracked(root):
        rel = str(path.relative_to(root))
        if path.suffix not in (".py", ".yml", ".yaml", ".md", ".html") or rel.startswith("bench/"):
            continue
        if lists_every_stage(path) or (path.suffix == ".py" and enumerates(path, set(STAGES), 4)):
            stage_sites.append(rel)
        if declares_job_options(path) or enumerates(path, options, 3):
            option_sites.append(rel)
    return sorted(stage_sites), sorted(option_sites)


def layer_table(root: Path) -> dict[str, int]:
    tree = ast.parse((root / "tests" / "test_layers.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            if isinstance(target, ast.Name) and target.id == "LAYERS" and node.value is not None:
                table: dict[str, int] = ast.literal_eval(node.value)
                return table
    raise SystemExit("no LAYERS table in tests/test_layers.py")


def project_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {n.removeprefix("pipeline.") for n in found if n.startswith("pipeline.")}


def upward_imports(root: Path, layers: dict[str, int]) -> tuple[list[str], list[str]]:
    """(imports into a package whose highest layer is above the importer's, pairs importing each other)."""

    def top_layer(module: str) -> tuple[str, int]:
        package = module.split(".")[0]
        if (root / "pipeline" / package).is_dir():
            return package, max(v for k, v in layers.items() if k.split(".")[0] == package)
        return module, layers.get(module, layers.get(f"{module}.__init__", -1))

    def unit(module: str) -> str:
        package = module.split(".")[0]
        return package if (root / "pipeline" / package).is_dir() else module

    upward, edges = [], set()
    for path in sorted((root / "pipeline").rglob("*.py")):
        name = ".".join(path.relative_to(root / "pipeline").with_suffix("").parts)
        mine = layers.get(name)
        for target in project_imports(path):
            if unit(target) == unit(name):
                continue
            edges.add((unit(name), unit(target)))
            package, height = top_layer(target)
            if mine is not None and height > mine:
                upward.append(f"{name} (layer {mine}) -> {target} ({package}: up to layer {height})")
    cycles = sorted({" <-> ".join(sorted((a, b))) for a, b in edges if (b, a) in edges})
    return upward, cycles


def largest_modules(root: Path, n: int = 3) -> list[tuple[int, str]]:
    sizes = [
        (len(p.read_text().splitlines()), str(p.relative_to(root)))
        for top in ("pipeline", "stages")
        for p in (root / top).rglob("*.py")
    ]
    return sorted(sizes, reverse=True)[:n]


def report(root: Path) -> None:
    stage_sites, option_sites = files_to_touch(root)
    touched = sorted(set(stage_sites) | set(option_sites))
    layers = layer_table(root)
    upward, cycles = upward_imports(root, layers)
    by_layer: dict[int, int] = defaultdict(int)
    for layer in layers.values():
        by_layer[layer] += 1
    loose = sorted(p.name for p in (root / "pipeline").glob("*.py"))
    stage_dir = sorted(
        p.name
        for p in (root / "stages").iterdir()
        if p.name not in {*STAGES, *(f"{s}.py" for s in STAGES)}
        and p.name not in ("__init__.py", "py.typed", "__pycache__")
    )
    print(f"checkout: {root}")
    print(f"files to touch for a new stage with an option: {len(touched) + 1} (its package + {len(touched)})")
    print(f"  naming the stages ({len(stage_sites)}): {', '.join(stage_sites)}")
    print(f"  naming the options ({len(option_sites)}): {', '.join(option_sites)}")
    print("largest modules: " + ", ".join(f"{path} {lines}" for lines, path in largest_modules(root)))
    print(f"upward imports: {len(upward)}")
    for line in upward:
        print(f"  {line}")
    print(f"modules or packages importing each other: {len(cycles)}")
    for line in cycles:
        print(f"  {line}")
    print(
        f"layer table: {len(layers)} modules in {len(by_layer)} layers: "
        + ", ".join(f"{k}:{by_layer[k]}" for k in sorted(by_layer))
    )
    print(f"loose modules in pipeline/: {len(loose)}")
    print(f"in stages/ beside the five stage packages: {len(stage_dir)}: {', '.join(stage_dir)}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--apply"]
    here = Path(args[0]).resolve() if args else Path(__file__).resolve().parents[1]
    report(here)
    if "--apply" in sys.argv:
        sys.path.insert(0, str(Path(__file__).parent))
        from layout_apply import apply_example_stage

        with tempfile.TemporaryDirectory() as tmp:
            apply_example_stage(here, Path(tmp))
