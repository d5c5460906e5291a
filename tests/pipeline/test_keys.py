"""Key validation, the work-bucket layout and the routing table."""

from __future__ import annotations

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError, InvalidKey
from pipeline.keys import (
    check_key,
    manifest_key,
    parse_manifest_key,
    resolve_relative,
    route,
    routing_table,
)

JOB = "j0123456789abcdef012"


def test_check_key_accepts_ordinary_keys() -> None:
    """Ordinary keys, with spaces, '+' and unicode, pass unchanged."""
    for key in ["a", "jobs/x/job.json", "audio/my voice+1.flac", "é/ü.png"]:
        assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "/a", "a/../b", "..", "a/./b", "a//b", "a\x00", "C:/x", "\\x", "a/"])
def test_check_key_rejects_unsafe_keys(key: str) -> None:
    """Absolute, parent-escaping, NUL, empty-segment and folder keys are refused."""
    with pytest.raises(InvalidKey):
        check_key(key)


def test_resolve_relative_stays_in_spec_folder() -> None:
    """Media named by a spec resolve next to it and can never climb out of the bucket."""
    assert resolve_relative("jobs/x/job.json", "voice.flac") == "jobs/x/voice.flac"
    assert resolve_relative("job.json", "voice.flac") == "voice.flac"
    with pytest.raises(InvalidKey):
        resolve_relative("jobs/x/job.json", "../../etc/passwd")


def test_manifest_keys_roundtrip() -> None:
    """A manifest key parses back into job, task and stage; other keys do not parse."""
    key = manifest_key(JOB, "a2", "detect")
    assert key == f"jobs/{JOB}/a2/detect.manifest.json"
    assert parse_manifest_key(key) == (JOB, "a2", "detect")
    assert parse_manifest_key(f"jobs/{JOB}/records/a0.detect.json") is None


def test_routing_table_follows_the_chain() -> None:
    """Inputs feed validate; each stage's manifest feeds the next stage of the configured chain."""
    full = load_settings()
    assert route(full, "inputs", "jobs/x/job.json") == "validate"
    assert route(full, "inputs", "jobs/x/job.yaml") == "validate"
    assert route(full, "inputs", "audio/hello.flac") == "validate"
    assert route(full, "inputs", "jobs/x/voice.flac") is None
    assert route(full, "work", manifest_key(JOB, "a0", "validate")) == "detect"
    assert route(full, "work", manifest_key(JOB, "a0", "enhance")) == "publish"
    assert route(full, "work", manifest_key(JOB, "a0", "publish")) is None
    assert route(full, "work", f"jobs/{JOB}/records/a0.validate.json") is None
    short = load_settings(chain=["validate", "publish"])
    assert route(short, "work", manifest_key(JOB, "a0", "validate")) == "publish"
    assert len(routing_table(short)) == 5


def test_routing_rules_do_not_overlap() -> None:
    """No object matches two rules (MinIO refuses overlapping notification rules)."""
    rules = routing_table(load_settings())
    for i, a in enumerate(rules):
        for b in rules[i + 1 :]:
            if a.bucket != b.bucket:
                continue
            prefix_overlap = a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix)
            suffix_overlap = a.suffix.endswith(b.suffix) or b.suffix.endswith(a.suffix)
            assert not (prefix_overlap and suffix_overlap), (a, b)


def test_chain_must_start_with_validate_and_end_with_publish() -> None:
    """A chain that skips validate or publish, or repeats a stage, is a settings error."""
    for chain in (["detect", "publish"], ["validate", "render"], ["validate", "render", "render", "publish"]):
        with pytest.raises(ConfigError, match="MOUTHPIECE_CHAIN"):
            load_settings(chain=chain)


@pytest.mark.parametrize(
    "text",
    ["j" + "0" * 19 + "\n", "j" + "0" * 19 + "\r", " j" + "0" * 19, "j" + "0" * 20, "J" + "0" * 19, ""],
)
def test_job_ids_are_matched_in_full(text: str) -> None:
    """A trailing newline (which ``$`` lets through), a leading space or one digit more is not an id;
    keys are never made from such a text."""
    from pipeline.keys import cancel_key, is_job_id

    assert not is_job_id(text)
    with pytest.raises(InvalidKey):
        cancel_key(text)


def test_manifest_and_session_keys_are_matched_in_full() -> None:
    from pipeline.keys import console_session_key, is_task, parse_manifest_key

    job = "j" + "a" * 19
    assert parse_manifest_key(f"jobs/{job}/a0/detect.manifest.json") == (job, "a0", "detect")
    assert parse_manifest_key(f"jobs/{job}/a0/detect.manifest.json\n") is None
    assert parse_manifest_key(f"jobs/{job}/a0\n/detect.manifest.json") is None
    assert is_task("a12") and not is_task("a12\n") and not is_task("job\n")
    assert console_session_key("f" * 64) == "console/sessions/" + "f" * 64 + ".json"
    with pytest.raises(InvalidKey):
        console_session_key("f" * 64 + "\n")


def test_render_pools_by_renderer() -> None:
    """musetalk jobs go to render's own musetalk pool, wav2lip jobs to neural, the rest to default."""
    from pipeline.contracts import JobOptions, JobSpec
    from pipeline.keys import pool_for, pools_of

    def spec(renderer: str) -> JobSpec:
        return JobSpec(audio="voice.wav", options=JobOptions(renderer=renderer))

    assert pools_of("render") == ("default", "neural", "musetalk")
    assert pool_for("render", spec("musetalk")) == "musetalk"
    assert pool_for("render", spec("wav2lip")) == "neural"
    assert pool_for("render", spec("viseme")) == "default"
    assert pool_for("detect", spec("musetalk")) == "default"
