"""The model-file registry: names, presence and checksums, and fetching over HTTP (from a loopback server)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from face_alignment.api import models_urls as fan_urls
from face_alignment.detection.sfd.sfd_detector import models_urls as sfd_urls

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.modelfiles import (
    MUSETALK_FILES,
    ModelFile,
    fetch_model,
    known_models,
    model_path,
    model_status,
    musetalk_present,
)

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: several streamed chunks


class _Files(BaseHTTPRequestHandler):
    """Serves ``files`` (path → bytes); 404 for anything else."""

    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving /model.bin and /empty.bin; yields its base URL."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    _Files.files = {"/model.bin": PAYLOAD, "/empty.bin": b""}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_known_models(tmp_path: Path) -> None:
    """Both Wav2Lip checkpoints, face-alignment's two files, the optional restorer and the Whisper model
    folder are listed."""
    models = {m.name: m for m in known_models(_settings(tmp_path))}
    assert set(models) == {
        "wav2lip.pth",
        "wav2lip_gan.pth",
        "s3fd-619a316812.pth",
        "2DFAN4-11f355bf06.pth.tar",
        "face_restoration.pt",
        "faster-whisper-base",
        *(m.name for m in MUSETALK_FILES),
    }
    assert models["faster-whisper-base"].directory and models["faster-whisper-base"].optional
    assert models["face_restoration.pt"].optional and not models["wav2lip_gan.pth"].optional
    assert models["wav2lip_gan.pth"].default_url is None


def test_face_alignment_names_and_urls_match_the_package(tmp_path: Path) -> None:
    """Our face-alignment file names and URLs are the installed face_alignment package's own."""
    models = {m.name: m for m in known_models(_settings(tmp_path))}
    for url in (sfd_urls["s3fd"], fan_urls["2DFAN-4"]):
        name = url.rsplit("/", 1)[1]
        assert models[name].default_url == url
        assert models[name].used_by == "detect:face_alignment"


def test_configured_checkpoint_is_listed(tmp_path: Path) -> None:
    """A configured checkpoint other than the two known ones is listed; a path stays a path."""
    names = [m.name for m in known_models(_settings(tmp_path, wav2lip_checkpoint="mine.pth"))]
    assert names[0] == "mine.pth" and "wav2lip_gan.pth" in names
    settings = _settings(tmp_path, wav2lip_checkpoint="/opt/w/mine.pth")
    assert model_path(settings, "/opt/w/mine.pth") == Path("/opt/w/mine.pth")
    assert model_path(settings, "mine.pth") == settings.models / "mine.pth"


def test_model_status(tmp_path: Path) -> None:
    """Present files report their SHA-256; absent ones report None."""
    settings = _settings(tmp_path)
    settings.models.mkdir(parents=True)
    (settings.models / "wav2lip_gan.pth").write_bytes(b"weights")
    rows = {model.name: (path, present, sha) for model, path, present, sha in model_status(settings)}
    assert rows["wav2lip_gan.pth"] == (
        settings.models / "wav2lip_gan.pth",
        True,
        hashlib.sha256(b"weights").hexdigest(),
    )
    assert rows["wav2lip.pth"] == (settings.models / "wav2lip.pth", False, None)


def test_fetch_from_settings_url(tmp_path: Path, server: str) -> None:
    """The URL in model_urls is downloaded into the model dir, its SHA-256 echoed, no temp file left."""
    settings = _settings(tmp_path, model_urls={"wav2lip_gan.pth": f"{server}/model.bin"})
    lines: list[str] = []
    path = fetch_model(settings, "wav2lip_gan.pth", echo=lines.append)
    assert path == settings.models / "wav2lip_gan.pth"
    assert path.read_bytes() == PAYLOAD
    assert lines == [
        f"wav2lip_gan.pth: {len(PAYLOAD)} bytes, sha256 {hashlib.sha256(PAYLOAD).hexdigest()} -> {path}"
    ]
    assert [p.name for p in settings.models.iterdir()] == ["wav2lip_gan.pth"]


def test_fetch_url_argument_wins(tmp_path: Path, server: str) -> None:
    """An explicit URL overrides the settings' one (here a URL that would fail)."""
    settings = _settings(tmp_path, model_urls={"wav2lip.pth": f"{server}/missing"})
    path = fetch_model(settings, "wav2lip.pth", f"{server}/model.bin", echo=lambda _: None)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("route", ["/missing", "/empty.bin"])
def test_failed_fetch_keeps_the_old_file(tmp_path: Path, server: str, route: str) -> None:
    """A 404 or an empty body is a ConfigError; an existing file is untouched and no partial file remains."""
    settings = _settings(tmp_path)
    settings.models.mkdir(parents=True)
    (settings.models / "wav2lip.pth").write_bytes(b"old")
    with pytest.raises(ConfigError, match=r"wav2lip\.pth"):
        fetch_model(settings, "wav2lip.pth", f"{server}{route}", echo=lambda _: None)
    assert [p.name for p in settings.models.iterdir()] == ["wav2lip.pth"]
    assert (settings.models / "wav2lip.pth").read_bytes() == b"old"


def test_fetch_without_url(tmp_path: Path) -> None:
    """A known file with no URL anywhere, or an unknown name, is a ConfigError saying what to set."""
    settings = _settings(tmp_path)
    with pytest.raises(ConfigError, match="set model_urls"):
        fetch_model(settings, "wav2lip_gan.pth", echo=lambda _: None)
    with pytest.raises(ConfigError, match="unknown model file"):
        fetch_model(settings, "nonsense.bin", echo=lambda _: None)


@pytest.mark.parametrize("name", ["../escape.pth", "sub/dir.pth", "", ".."])
def test_fetch_refuses_paths(tmp_path: Path, name: str) -> None:
    """Names that are not plain file names are refused before any download."""
    with pytest.raises(ConfigError, match="plain file name"):
        fetch_model(_settings(tmp_path), name, "http://127.0.0.1:9/x", echo=lambda _: None)


def test_model_file_defaults() -> None:
    """A ModelFile has no URL and is required unless said otherwise."""
    model = ModelFile("a.pth", "render:x", "test")
    assert model.default_url is None and not model.optional


def test_musetalk_files_fetched_into_upstream_layout(tmp_path: Path, server: str) -> None:
    """``fetch_model("musetalk")`` downloads every MuseTalk file to its place in the published layout;
    each has a Hugging Face URL and a licence, and the renderer's files then count as present."""
    assert all(m.default_url and m.default_url.startswith("https://huggingface.co/") for m in MUSETALK_FILES)
    assert all(m.licence and m.used_by == "render:musetalk" for m in MUSETALK_FILES)
    _Files.files = {f"/{m.name}": m.name.encode() * 1000 for m in MUSETALK_FILES}
    urls = {m.name: f"{server}/{m.name}" for m in MUSETALK_FILES}
    settings = _settings(tmp_path, model_urls=urls)
    assert not musetalk_present(settings)
    lines: list[str] = []
    fetch_model(settings, "musetalk", echo=lines.append)
    assert len(lines) == len(MUSETALK_FILES)
    for m in MUSETALK_FILES:
        assert (settings.models / m.name).read_bytes() == m.name.encode() * 1000
    assert musetalk_present(settings)
    rows = {model.name: present for model, _, present, _ in model_status(settings)}
    assert all(rows[m.name] for m in MUSETALK_FILES)


def test_musetalk_weights_in_either_published_format(tmp_path: Path) -> None:
    """The VAE's and Whisper's ``.bin`` weights (what upstream's script downloads) count as present."""
    settings = _settings(tmp_path)
    names = {m.name for m in MUSETALK_FILES} - {
        "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
        "whisper-tiny/model.safetensors",
    }
    for name in [*names, "sd-vae-ft-mse/diffusion_pytorch_model.bin", "whisper-tiny/pytorch_model.bin"]:
        (settings.models / name).parent.mkdir(parents=True, exist_ok=True)
        (settings.models / name).write_bytes(b"w")
    assert musetalk_present(settings)
    (settings.models / "whisper-tiny/pytorch_model.bin").unlink()
    assert not musetalk_present(settings)
