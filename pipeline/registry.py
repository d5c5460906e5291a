"""The stage registry: every stage once (name → where its object lives, its label), the default chain, and
the rules a chain must follow — the one place each of these is written.

Everything else is derived from here: ``pipeline.config.STAGES`` and the default ``chain`` setting, the
CLI's stage choices, the labels of Discord's progress replies, the layer test's stage packages, the
deployment test's workers (docker-compose.yml and infra/k8s are checked against it), and
docs/architecture.md's stage table (checked by a test).

Adding a stage to this house: a package ``stages/<name>/`` with a ``STAGE`` object (a
``pipeline.stage.FirstStage`` or ``pipeline.stage.Stage``), one ``register_stage`` line below, and, if
deployments should run it by default, its name in ``DEFAULT_CHAIN``. A stage from another distribution
(a plugin) registers itself: its package declares an entry point in the group ``mouthpiece.stages``
whose value is a module that calls ``register_stage`` when imported::

    [project.entry-points."mouthpiece.stages"]
    background = "mouthpiece_background.register"

    # mouthpiece_background/register.py
    from pipeline.registry import register_stage
    register_stage("background", "mouthpiece_background.stage:STAGE", "Replacing the background")

A plugin stage joins a deployment's chain when the operator names it (``MOUTHPIECE_CHAIN``); the
default chain is never changed by installing something.

This module sits in the bottom layer (no project imports but the error tree) so the settings can use
it; stage modules are imported only when a stage is asked for (``load_stage``), so a worker imports
only the stage it serves. ``pipeline.stage.get_stage`` is the typed way in for the runtime.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pipeline.errors import ConfigError

PLUGIN_GROUP = "mouthpiece.stages"


@dataclass(frozen=True)
class StageEntry:
    """One registered stage: its name (subject, consumer, records), where its object lives
    (``module:attribute``), what people are shown while it works, and the chain positions it may hold."""

    name: str
    target: str
    label: str
    takes_upload: bool = False
    """It starts a job from an uploaded object: it may (and only it may) be first in a chain."""
    publishes: bool = False
    """It delivers the job to its destinations: a chain ends with it."""


REGISTRY: dict[str, StageEntry] = {}
"""Every stage, by name, in registration order."""


def register_stage(
    name: str, target: str, label: str, *, takes_upload: bool = False, publishes: bool = False
) -> StageEntry:
    """Add a stage to the registry (a plugin calls this from its entry point's module). A name may be
    registered once; registering the same entry again is harmless (a module imported twice)."""
    entry = StageEntry(name, target, label, takes_upload, publishes)
    if not name.isidentifier() or name != name.lower():
        raise ConfigError(f"a stage name is a lower-case identifier, not {name!r}")
    if name in REGISTRY and REGISTRY[name] != entry:
        raise ConfigError(f"two stages are registered as {name!r}: {REGISTRY[name].target} and {target}")
    REGISTRY[name] = entry
    return entry


# --- the house's stages ------------------------------------------------------------------------------
register_stage("validate", "stages.validate:STAGE", "Preparing", takes_upload=True)
register_stage("detect", "stages.detect:STAGE", "Finding the face")
register_stage("render", "stages.render:STAGE", "Rendering")
register_stage("enhance", "stages.enhance:STAGE", "Polishing")
register_stage("publish", "stages.publish:STAGE", "Uploading", publishes=True)

DEFAULT_CHAIN: tuple[str, ...] = ("validate", "detect", "render", "enhance", "publish")
"""The chain a deployment runs when ``MOUTHPIECE_CHAIN`` is not set (the default of ``Settings.chain``)."""

HOUSE_STAGES: tuple[str, ...] = tuple(REGISTRY)
"""The stages this distribution ships (the packages under ``stages/``), before any plugin."""


def _load_plugins() -> None:
    """Import each ``mouthpiece.stages`` entry point's module (each calls ``register_stage``)."""
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            point.load()
        except Exception as exc:  # a broken plugin must say which one, not stop the import with a trace
            raise ConfigError(
                f"the stage plugin {point.name} ({point.value}) cannot be loaded: {exc}"
            ) from exc


_load_plugins()


def stage_names() -> tuple[str, ...]:
    """Every registered stage's name (the house's in chain order, then plugins')."""
    return tuple(REGISTRY)


def label(name: str) -> str:
    """What people are shown while stage ``name`` works ("Rendering"); an unknown name, capitalised."""
    entry = REGISTRY.get(name)
    return entry.label if entry else name.capitalize()


def entry(name: str) -> StageEntry:
    """The registry's entry for ``name``; ``ConfigError`` naming the stages there are otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"there is no stage called {name!r}; the stages are {', '.join(REGISTRY)}"
        ) from None


@cache
def load_stage(name: str) -> Any:
    """The object registered as ``name`` (its module imported on first use). Use
    ``pipeline.stage.get_stage``, which also checks that it is a stage."""
    module, _, attribute = entry(name).target.partition(":")
    return getattr(importlib.import_module(module), attribute or "STAGE")


# --- the chain rules (the settings and the start-up check both use these sentences) -------------------


def chain_problem(chain: list[str] | tuple[str, ...]) -> str | None:
    """What is wrong with the chain's shape, in a sentence saying what to change; None if nothing:
    every stage registered, each once, at least two, the first takes uploads, the last publishes."""
    unknown = [name for name in chain if name not in REGISTRY]
    if unknown:
        return f"unknown stage(s) {', '.join(unknown)} in the chain; the stages are {', '.join(REGISTRY)}"
    if len(set(chain)) != len(chain) or len(chain) < 2:
        return "the chain must name at least two stages, each once"
    if not REGISTRY[chain[0]].takes_upload:
        first = " or ".join(n for n, e in REGISTRY.items() if e.takes_upload)
        return f"the chain must start with {first}, not {chain[0]}"
    if not REGISTRY[chain[-1]].publishes:
        last = " or ".join(n for n, e in REGISTRY.items() if e.publishes)
        return f"the chain must end with {last}, not {chain[-1]}"
    return None


def check_chain(chain: list[str] | tuple[str, ...]) -> None:
    """Raise ``ConfigError`` with a sentence saying what to change if ``chain`` cannot work: its shape
    (``chain_problem``), or a stage that needs an artifact no earlier stage provides (this imports the
    chain's stage modules: run it at start-up, not while reading settings)."""
    problem = chain_problem(chain)
    if problem:
        raise ConfigError(problem)
    available: set[str] = set()
    for name in chain:
        stage = load_stage(name)
        missing = sorted(set(stage.requires) - available)
        if missing:
            makers = [n for n in REGISTRY if n != name and set(missing) & set(load_stage(n).provides)]
            hint = f"; put {' and '.join(makers)} before it" if makers else ""
            raise ConfigError(f"{name} needs {', '.join(missing)}, which no stage before it makes{hint}")
        available |= set(stage.provides)
