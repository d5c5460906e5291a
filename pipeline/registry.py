"""The stage registry: the one list of stages, and the check that a configured chain can work.

The runtime (runner, stack, CLI) reaches stages only through here; each stage module is imported
lazily, so a worker imports only the stage it serves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache

from pipeline.config import STAGES
from pipeline.contracts import QualityReport
from pipeline.errors import ConfigError
from pipeline.stage import Stage


@cache
def get_stage(name: str) -> Stage:
    """The stage called ``name``: the ``STAGE`` object of the module ``stages.<name>`` (imported on
    first use). ``pipeline.config.STAGES`` is the one list of stage names, in the default chain's order."""
    if name not in STAGES:
        raise ConfigError(f"there is no stage called {name!r}; the stages are {', '.join(STAGES)}")
    stage: Stage = importlib.import_module(f"stages.{name}").STAGE
    return stage


def video_assessor() -> Callable[..., QualityReport]:
    """The quality report of any video file (``stages.quality.assess_file``; the ``assess`` command),
    imported on first use like the stages."""
    assessor: Callable[..., QualityReport] = importlib.import_module("stages.quality").assess_file
    return assessor


def check_chain(chain: list[str] | tuple[str, ...]) -> None:
    """Raise ``ConfigError`` with a sentence saying what to change if ``chain`` cannot work: unknown or
    repeated stages, a first stage that does not take uploads, a last stage that is not publish, or a
    stage that needs an artifact no earlier stage provides."""
    unknown = [name for name in chain if name not in STAGES]
    if unknown:
        raise ConfigError(
            f"unknown stage(s) {', '.join(unknown)} in the chain; the stages are {', '.join(STAGES)}"
        )
    if len(set(chain)) != len(chain) or len(chain) < 2:
        raise ConfigError("the chain must name at least two stages, each once")
    stages = [get_stage(name) for name in chain]
    if not stages[0].takes_upload:
        raise ConfigError(f"the chain must start with validate, not {chain[0]}")
    if chain[-1] != "publish":
        raise ConfigError(f"the chain must end with publish, not {chain[-1]}")
    _check_artifacts(stages)


def _check_artifacts(stages: list[Stage]) -> None:
    available: set[str] = set()
    for stage in stages:
        missing = sorted(stage.requires - available)
        if missing:
            makers = [n for n in STAGES if set(missing) & get_stage(n).provides]
            hint = f"; put {' and '.join(makers)} before it" if makers else ""
            raise ConfigError(
                f"{stage.name} needs {', '.join(missing)}, which no stage before it makes{hint}"
            )
        available |= stage.provides
