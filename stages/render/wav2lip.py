"""The Wav2Lip generator network (Prajwal et al., 2020), written from the published architecture.

Module and parameter names are identical to upstream's ``models/wav2lip.py`` and ``models/conv.py``, so
the released checkpoints (``wav2lip.pth``, ``wav2lip_gan.pth``) load with ``strict=True``: 36,298,035
parameters, 352 state_dict entries (BatchNorm running statistics included).

Shapes: ``Wav2Lip()(audio, face)`` takes a mel window ``(B, 1, 80, 16)`` and a face ``(B, 6, 96, 96)``
(the lower-half-masked crop, then the reference crop, BGR in [0, 1]) and returns the generated face
``(B, 3, 96, 96)`` in [0, 1], BGR.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import ConfigError

N_PARAMETERS = 36_298_035
N_STATE_ENTRIES = 352
FACE_SIZE = 96
MEL_STEP = 16
N_MELS = 80


class Conv2d(nn.Module):
    """Conv → BatchNorm → ReLU; with ``residual`` the input is added before the ReLU (same shape)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class Conv2dTranspose(nn.Module):
    """ConvTranspose → BatchNorm → ReLU."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int, stride: int, padding: int, output_padding: int = 0
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(channels: int) -> Conv2d:
    """A residual 3×3 block that keeps the shape."""
    return Conv2d(channels, channels, 3, 1, 1, residual=True)


def _face_encoder() -> nn.ModuleList:
    """96×96×6 → 1×1×512, keeping seven scales for the decoder's skip connections."""
    return nn.ModuleList(
        [
            nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96
            nn.Sequential(Conv2d(16, 32, 3, 2, 1), _res(32), _res(32)),  # 48
            nn.Sequential(Conv2d(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),  # 24
            nn.Sequential(Conv2d(64, 128, 3, 2, 1), _res(128), _res(128)),  # 12
            nn.Sequential(Conv2d(128, 256, 3, 2, 1), _res(256), _res(256)),  # 6
            nn.Sequential(Conv2d(256, 512, 3, 2, 1), _res(512)),  # 3
            nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1
        ]
    )


def _audio_encoder() -> nn.Sequential:
    """80×16 mel window → 1×1×512 embedding."""
    return nn.Sequential(
        Conv2d(1, 32, 3, 1, 1),
        _res(32),
        _res(32),
        Conv2d(32, 64, 3, (3, 1), 1),
        _res(64),
        _res(64),
        Conv2d(64, 128, 3, 3, 1),
        _res(128),
        _res(128),
        Conv2d(128, 256, 3, (3, 2), 1),
        _res(256),
        Conv2d(256, 512, 3, 1, 0),
        Conv2d(512, 512, 1, 1, 0),
    )


def _face_decoder() -> nn.ModuleList:
    """1×1 → 96×96; each block's input is the previous output concatenated with a face feature."""
    return nn.ModuleList(
        [
            nn.Sequential(Conv2d(512, 512, 1, 1, 0)),  # 1
            nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), _res(512)),  # 3
            nn.Sequential(Conv2dTranspose(1024, 512, 3, 2, 1, 1), _res(512), _res(512)),  # 6
            nn.Sequential(Conv2dTranspose(768, 384, 3, 2, 1, 1), _res(384), _res(384)),  # 12
            nn.Sequential(Conv2dTranspose(512, 256, 3, 2, 1, 1), _res(256), _res(256)),  # 24
            nn.Sequential(Conv2dTranspose(320, 128, 3, 2, 1, 1), _res(128), _res(128)),  # 48
            nn.Sequential(Conv2dTranspose(160, 64, 3, 2, 1, 1), _res(64), _res(64)),  # 96
        ]
    )


class Wav2Lip(nn.Module):
    """The Wav2Lip generator; see the module docstring for shapes and conventions."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = _face_encoder()
        self.audio_encoder = _audio_encoder()
        self.face_decoder_blocks = _face_decoder()
        self.output_block = nn.Sequential(
            Conv2d(80, 32, 3, 1, 1), nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0), nn.Sigmoid()
        )

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """audio (B, 1, 80, 16), face (B, 6, 96, 96) → generated face (B, 3, 96, 96) in [0, 1]."""
        feats = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        x = self.audio_encoder(audio)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), feats.pop()), dim=1)
        return self.output_block(x)


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Wav2Lip:
    """The Wav2Lip network with the weights of ``path``, on ``device``, in eval mode.

    Accepts upstream's format (a dict whose ``state_dict`` keys may carry DataParallel's ``module.``
    prefix) and a bare state dict. Raises ``ConfigError`` naming the file when it is missing, is not a
    PyTorch file, or does not hold exactly the Wav2Lip weights (missing/unexpected keys, wrong shapes).
    """
    path = Path(path)
    state = _state_dict_of(_read(path), path)
    model = Wav2Lip()
    _check_state(state, model.state_dict(), path)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _read(path: Path) -> Any:
    """The unpickled contents of a torch file, tensors on the CPU (moved to the device after checks)."""
    if not path.is_file():
        raise ConfigError(f"the wav2lip checkpoint {path} does not exist (see `mouthpiece models`)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses arbitrary objects; a real checkpoint holds only tensors, dicts and numbers
        raise ConfigError(
            f"{path.name} is not a Wav2Lip checkpoint: it holds objects other than tensors ({_gist(exc)})"
        ) from exc
    except Exception as exc:  # torch.load fails in many ways on foreign files (KeyError for text, ...)
        raise ConfigError(f"{path.name} is not a PyTorch file ({type(exc).__name__}: {_gist(exc)})") from exc


def _gist(exc: BaseException) -> str:
    """The gist of an error message: its last non-empty line, shortened (torch gives paragraphs of advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else repr(exc))[:200]


def _state_dict_of(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``checkpoint``, with DataParallel's ``module.`` prefix removed."""
    if not isinstance(checkpoint, Mapping):
        raise ConfigError(
            f"{path.name} is not a Wav2Lip checkpoint: it holds a {type(checkpoint).__name__}, not a dict"
        )
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path.name} is not a Wav2Lip checkpoint: it has no 'state_dict' of tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _check_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise a ConfigError saying what differs between ``state`` and the network's own state dict."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys such as {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys such as {', '.join(unexpected[:3])}")
    if wrong:
        k = wrong[0]
        shapes = f"{tuple(state[k].shape)} instead of {tuple(expected[k].shape)}"
        problems.append(f"{len(wrong)} tensors of the wrong shape such as {k} {shapes}")
    if problems:
        raise ConfigError(f"{path.name} is not a Wav2Lip checkpoint: {'; '.join(problems)}")
