"""The stage registry: stages by name, and the start-up check that a configured chain can work."""

from __future__ import annotations

import pytest

from pipeline.config import STAGES
from pipeline.errors import ConfigError
from pipeline.registry import check_chain, get_stage
from pipeline.stage import Stage


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
