"""The model files renderers and detectors use: what they are, whether they are here, how to fetch them.

All live in one directory (``settings.models``, default DATA_DIR/models), so an air-gapped install is a
copy of that directory. No weights are committed; ``fetch_model`` downloads one file from
``settings.model_urls[name]`` or the file's default URL (only face-alignment's files have one: the
Wav2Lip checkpoints are distributed by hand, so their URL must be configured).

face-alignment's files keep the names face_alignment 1.5 gives them (the basenames of its download URLs,
what it caches in ``$TORCH_HOME/hub/checkpoints``), so a hub cache can be copied in as it is; the
detector loads them from this directory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx
import structlog

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.stage import sha256_file

log = structlog.get_logger()

FACE_ALIGNMENT_URL = "https://www.adrianbulat.com/downloads/python-fan/"
FACE_RESTORATION_FILE = "face_restoration.pt"
CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """One model file: its name in the model directory, who uses it, and where it comes from."""

    name: str
    used_by: str
    description: str
    default_url: str | None = None
    optional: bool = False


class ModelStatus(NamedTuple):
    """A model file as found on this machine; sha256 is None when the file is absent."""

    model: ModelFile
    path: Path
    present: bool
    sha256: str | None


_BUILTIN = (
    ModelFile("wav2lip.pth", "render:wav2lip", "Wav2Lip generator (most accurate lip sync)"),
    ModelFile("wav2lip_gan.pth", "render:wav2lip", "Wav2Lip generator trained with a GAN (sharper mouth)"),
    ModelFile(
        "s3fd-619a316812.pth",
        "detect:face_alignment",
        "S3FD face detector",
        FACE_ALIGNMENT_URL + "s3fd-619a316812.pth",
    ),
    ModelFile(
        "2DFAN4-11f355bf06.pth.tar",
        "detect:face_alignment",
        "2D-FAN 68-point face landmarks",
        FACE_ALIGNMENT_URL + "2DFAN4-11f355bf06.pth.tar",
    ),
    ModelFile(
        FACE_RESTORATION_FILE,
        "render:wav2lip",
        "face restoration, TorchScript (B,3,512,512) in [-1,1] RGB → same (a GFPGAN/CodeFormer export)",
        optional=True,
    ),
)


def known_models(settings: Settings) -> list[ModelFile]:
    """Every model file mouthpiece knows, plus the configured Wav2Lip checkpoint if it is another one."""
    models = list(_BUILTIN)
    if settings.wav2lip_checkpoint not in {m.name for m in models}:
        models.insert(
            0, ModelFile(settings.wav2lip_checkpoint, "render:wav2lip", "configured Wav2Lip checkpoint")
        )
    restore = settings.face_restore_model
    if restore is not None and restore not in {m.name for m in models}:
        models.append(ModelFile(restore, "render:wav2lip", "configured face restoration (TorchScript)"))
    return models


def model_path(settings: Settings, name: str) -> Path:
    """Where the file ``name`` is: a path as given, a bare name in the model directory."""
    given = Path(name).expanduser()
    return given if given.is_absolute() or len(given.parts) > 1 else settings.models / name


def model_status(settings: Settings) -> list[ModelStatus]:
    """Each known model file with its path, presence and SHA-256 (hashing reads every present file)."""
    rows = []
    for model in known_models(settings):
        path = model_path(settings, model.name)
        present = path.is_file()
        rows.append(ModelStatus(model, path, present, sha256_file(path) if present else None))
    return rows


def fetch_model(
    settings: Settings,
    name: str,
    url: str | None = None,
    *,
    echo: Callable[[str], None] = print,
    timeout: float = 60.0,
) -> Path:
    """Download model file ``name`` into the model directory and return its path.

    The URL is ``url``, else ``settings.model_urls[name]``, else the file's default URL. The body is
    streamed to a temporary file beside the target and renamed over it only when complete, so an
    interrupted download never leaves a truncated model. ``echo`` gets one line with the size and
    SHA-256. Raises ConfigError for an unsafe or unknown name, no URL, or a failed download.
    """
    if Path(name).name != name or name in {"", ".", ".."}:
        raise ConfigError(f"model name {name!r} must be a plain file name (it goes into {settings.models})")
    source = url or settings.model_urls.get(name) or _default_url(settings, name)
    target = settings.models / name
    target.parent.mkdir(parents=True, exist_ok=True)
    size, digest = _download(source, target, timeout)
    log.info("model_fetched", name=name, url=source, bytes=size, sha256=digest)
    echo(f"{name}: {size} bytes, sha256 {digest} -> {target}")
    return target


def _default_url(settings: Settings, name: str) -> str:
    """The built-in URL of ``name``, or a ConfigError saying how to give one."""
    known = {m.name: m.default_url for m in known_models(settings)}
    if name not in known:
        raise ConfigError(f"unknown model file {name!r}; known: {', '.join(known)} (or give a URL)")
    default = known[name]
    if default is None:
        raise ConfigError(
            f"no download URL for {name}: set model_urls = {{{name!r} = '<url>'}} in the settings"
        )
    return default


def _download(url: str, target: Path, timeout: float) -> tuple[int, str]:
    """Stream ``url`` into ``target`` atomically; (bytes, sha256). ConfigError on any failure."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    digest, size = hashlib.sha256(), 0
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as r,
        ):
            r.raise_for_status()
            for chunk in r.iter_bytes(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        if size == 0:
            raise ConfigError(f"downloading {target.name} from {url} gave an empty file")
        tmp.chmod(0o644)  # mkstemp makes it private; a model directory is shared by the workers
        os.replace(tmp, target)
    except httpx.HTTPError as exc:
        raise ConfigError(f"downloading {target.name} from {url} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return size, digest.hexdigest()
