"""Job options are declared once, on ``JobOptions``: the CLI's flags, the console's form fields and the
options a job page lists are read from the fields' ``Offered`` declarations, with their values."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli.parser import _parser
from pipeline.console.base import _choices
from pipeline.console.upload import OPTION_FIELDS
from pipeline.console.views import SHOWN_OPTIONS
from pipeline.contracts import JobOptions, Motion, Offered, offered, option_values


def _flags(command: str) -> dict[str, argparse.Action]:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions if a.option_strings}


def test_every_option_offered_on_the_command_line_is_a_flag_of_submit_render_and_demo() -> None:
    """Each ``Offered(cli=...)`` field is ``--<name>`` with its help and its values as choices."""
    assert set(offered("cli")) >= {"renderer", "style", "subtitles", "transcript", "motion", "min_quality"}
    for command in ("submit", "render", "demo"):
        flags = _flags(command)
        for name, use in offered("cli").items():
            action = flags[name]
            assert action.option_strings == ["--" + name.replace("_", "-")]
            assert action.help == use.cli
            assert action.choices == option_values(name)
        assert not {n for n in flags if n in JobOptions.model_fields} - set(offered("cli"))


def test_a_typed_flag_becomes_the_job_option() -> None:
    """``--motion lively --min-quality 0.7`` reaches the job's options; a value the contract does not
    allow is refused by the parser, before anything starts."""
    from pipeline.cli.parser import _options

    args = _parser().parse_args(["submit", "v.flac", "--motion", "lively", "--min-quality", "0.7"])
    options = _options(args)
    assert options.motion is Motion.lively and options.min_quality == 0.7
    with pytest.raises(SystemExit):
        _parser().parse_args(["submit", "v.flac", "--renderer", "oil-paint"])


def test_the_console_form_and_the_job_page_follow_the_declarations() -> None:
    """The new-job form takes the ``form`` options (a choice list for each with values, default
    first), and a job page lists the ``page`` options."""
    assert tuple(offered("form")) == OPTION_FIELDS
    assert tuple(offered("page")) == SHOWN_OPTIONS
    choices = _choices()
    assert set(choices) == {n for n in offered("form") if option_values(n)}
    assert choices["renderer"][0] == "viseme" and choices["motion"][0] == ""


def test_an_option_offers_itself_where_its_declaration_says() -> None:
    """``offered`` reads the ``Offered`` declaration of each field and nothing else."""
    declared = {
        name: next(m for m in info.metadata if isinstance(m, Offered))
        for name, info in JobOptions.model_fields.items()
        if any(isinstance(m, Offered) for m in info.metadata)
    }
    assert offered("page") == {n: d for n, d in declared.items() if d.page}
    assert "fail_on_low_quality" not in declared  # a spec-only option: no flag, no form field
