"""Where models run: one rule for every model (face detection, Wav2Lip, Whisper).

``auto`` is CUDA when torch is installed and sees a GPU, else the CPU; asking for CUDA where there is
none is a ``ConfigError`` saying what to change. torch is imported only here and only when asked (the
default install has no torch: the ``neural`` extra brings it).
"""

from __future__ import annotations

from pipeline.errors import ConfigError


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """The device a model should run on for the ``device`` setting (``auto``, ``cpu``, ``cuda[:N]``)."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise ConfigError(
            f"the device setting is {device!r} but there is no CUDA GPU here (or torch is not installed): "
            "set MOUTHPIECE_DEVICE=auto or cpu"
        )
    return device
