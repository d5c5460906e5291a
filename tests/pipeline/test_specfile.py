"""Job spec files in plain words: what is wrong, where, and never the validation library's phrasing."""

from __future__ import annotations

import pytest

from pipeline.errors import InvalidInput
from pipeline.specfile import parse_spec

LIBRARY_WORDS = (
    "Value error",
    "instance of",
    "after validation",
    "Input should",
    "String should",
    "pydantic",
)


@pytest.mark.parametrize(
    ("name", "raw", "reason"),
    [
        ("job.yaml", b"audio: [unclosed\n", "job spec job.yaml is not valid YAML (line 2, column 1)"),
        ("job.json", b'{"audio": 1', "job spec job.json is not valid JSON (line 1, column 12)"),
        ("job.yaml", b"just words\n", "job spec job.yaml must be a set of fields"),
        ("job.yaml", b"\xff\xfe\x00", "job spec job.yaml is not text (UTF-8)"),
        ("job.yaml", b"avatars: [x.png]\n", "job spec job.yaml is not valid: give exactly one of 'audio'"),
        (
            "job.yaml",
            b"audio: a.flac\nname: " + b"n" * 500 + b"\n",
            "'name' is 500 characters long; the limit is 120",
        ),
        ("job.yaml", b"audio: a.flac\nvoice: b.flac\n", "'voice' is not a field of a job spec"),
        ("job.yaml", b"audio: a.flac\noptions: {renderer: magic}\n", "'options.renderer' must be one of"),
        (
            "job.yaml",
            b"audio: a.flac\noptions: {enhance: perhaps}\n",
            "'options.enhance' must be true or false",
        ),
        (
            "job.yaml",
            b"audio: a.flac\ndestinations: [{kind: ftp}]\n",
            "the kind of 'destinations[1]' must be one of",
        ),
        (
            "job.yaml",
            b"audio: a.flac\ndestinations: [{kind: discord_webhook, url: 'http://127.0.0.1:1/admin'}]\n",
            "'destinations[1].url': the webhook URL does not have the shape of a Discord webhook",
        ),
        ("job.json", b"[" * 100_000, "job spec job.json is not valid JSON"),
        (
            "job.yaml",
            b"audio: a.flac\n" + b"#" * (1024 * 1024),
            "is 1024 KB; a spec is a small JSON or YAML file",
        ),
    ],
)
def test_spec_refusals_are_plain_sentences(name: str, raw: bytes, reason: str) -> None:
    """Broken YAML/JSON, wrong shapes, unknown or over-long fields, bad destinations and bombs: each one
    sentence that names the spec and the field, free of library wording."""
    with pytest.raises(InvalidInput) as caught:
        parse_spec(raw, name)
    assert reason in caught.value.reason
    assert not any(word in caught.value.reason for word in LIBRARY_WORDS)


def test_a_yaml_alias_bomb_is_refused_quickly() -> None:
    """Nested aliases (a 'billion laughs') are refused by the contract's shape, not expanded."""
    bomb = b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for level in "bcdefghi":
        prev = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n".encode()
    bomb += b"audio: a.flac\navatars: *i\n"
    with pytest.raises(InvalidInput, match=r"job spec bomb\.yaml is not valid"):
        parse_spec(bomb, "bomb.yaml")
