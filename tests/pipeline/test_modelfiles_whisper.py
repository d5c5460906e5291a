"""The Whisper model in the model registry: the PyPI-packaged pieces joined once, listed, fetched by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.modelfiles import fetch_model, model_status, packaged_whisper, whisper_model_dir


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_cache_dir=tmp_path / "cache", **values)  # type: ignore[arg-type]


def test_packaged_whisper_is_joined_once_and_listed(tmp_path: Path) -> None:
    """The two packages' pieces become one model folder in the model cache (model.bin equal to the
    pieces end to end, config and tokenizer beside it), built once; ``model_status`` lists it with the
    same SHA-256 before and after the join."""
    settings = _settings(tmp_path)
    packaged = packaged_whisper("base")
    assert packaged is not None and len(packaged.model_parts) == 2
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in packaged.model_parts)).hexdigest()
    [before] = [r for r in model_status(settings) if r.model.name == "faster-whisper-base"]
    assert before.present and before.sha256 == digest
    folder = whisper_model_dir(settings)
    assert folder is not None and folder.parent == tmp_path / "cache"
    assert {p.name for p in folder.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.json",
    }
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert whisper_model_dir(settings) == folder and (folder / "model.bin").stat().st_mtime_ns == stamp
    [after] = [r for r in model_status(settings) if r.model.name == "faster-whisper-base"]
    assert after.path == folder and after.sha256 == digest
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no half-built folders


def test_a_model_in_the_model_directory_or_a_path_wins(tmp_path: Path) -> None:
    """``model_dir/faster-whisper-NAME`` is used as it is; ``asr_model`` may be a folder path, and one
    without model.bin is a ConfigError; a name nothing provides gives None (pocketsphinx)."""
    settings = _settings(tmp_path, asr_model="small")
    assert whisper_model_dir(settings) is None
    own = settings.models / "faster-whisper-small"
    own.mkdir(parents=True)
    (own / "model.bin").write_bytes(b"weights")
    assert whisper_model_dir(settings) == own
    assert whisper_model_dir(_settings(tmp_path, asr_model=str(own))) == own
    with pytest.raises(ConfigError, match=r"no model\.bin"):
        whisper_model_dir(_settings(tmp_path, asr_model=str(tmp_path)))


def test_fetching_whisper_is_by_name(tmp_path: Path) -> None:
    """``--fetch faster-whisper-NAME`` downloads by name: a URL does not apply, an unknown name is a
    ConfigError before any download."""
    settings = _settings(tmp_path)
    with pytest.raises(ConfigError, match="--url does not apply"):
        fetch_model(settings, "faster-whisper-base", "https://example.invalid/model.bin")
    with pytest.raises(ConfigError, match="no Whisper model called 'enormous'"):
        fetch_model(settings, "faster-whisper-enormous", echo=lambda line: None)
