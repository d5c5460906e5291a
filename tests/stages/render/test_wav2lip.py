"""The Wav2Lip network: upstream's architecture and names, and checkpoint loading with clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pipeline.errors import ConfigError
from stages.render.wav2lip import N_PARAMETERS, N_STATE_ENTRIES, Conv2d, Wav2Lip, load_checkpoint


def test_parameter_and_state_counts(seeded_model: Wav2Lip) -> None:
    """The network has upstream's 36,298,035 parameters and 352 state_dict entries."""
    assert sum(p.numel() for p in seeded_model.parameters()) == 36_298_035 == N_PARAMETERS
    assert len(seeded_model.state_dict()) == 352 == N_STATE_ENTRIES


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("face_encoder_blocks.0.0.conv_block.0.weight", (16, 6, 7, 7)),
        ("face_encoder_blocks.6.1.conv_block.1.running_var", (512,)),
        ("audio_encoder.3.conv_block.0.weight", (64, 32, 3, 3)),
        ("audio_encoder.12.conv_block.0.weight", (512, 512, 1, 1)),
        ("face_decoder_blocks.1.0.conv_block.0.weight", (1024, 512, 3, 3)),
        ("face_decoder_blocks.6.2.conv_block.1.num_batches_tracked", ()),
        ("output_block.0.conv_block.0.weight", (32, 80, 3, 3)),
        ("output_block.1.bias", (3,)),
    ],
)
def test_upstream_parameter_names(seeded_model: Wav2Lip, key: str, shape: tuple[int, ...]) -> None:
    """Parameter names and shapes are upstream's (so released checkpoints load strictly)."""
    assert tuple(seeded_model.state_dict()[key].shape) == shape


def test_forward_shape_and_range(seeded_model: Wav2Lip) -> None:
    """(B,1,80,16) mel and (B,6,96,96) face give a (B,3,96,96) face in [0, 1]."""
    with torch.inference_mode():
        out = seeded_model(torch.randn(2, 1, 80, 16), torch.rand(2, 6, 96, 96))
    assert out.shape == (2, 3, 96, 96)
    assert 0.0 <= out.min().item() <= out.max().item() <= 1.0


def test_residual_block_adds_input_before_relu() -> None:
    """A residual block whose conv outputs zero returns relu(input); without residual, relu(0) = 0."""
    block = Conv2d(4, 4, 3, 1, 1, residual=True).eval()
    conv = block.conv_block[0]
    assert isinstance(conv, torch.nn.Conv2d) and conv.bias is not None
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    x = torch.randn(1, 4, 5, 5)
    with torch.inference_mode():
        assert torch.allclose(block(x), torch.relu(x))
        block.residual = False
        assert torch.count_nonzero(block(x)) == 0


def test_load_upstream_checkpoint(checkpoint_path: Path, seeded_model: Wav2Lip) -> None:
    """A checkpoint in upstream's format (``module.`` keys) loads strictly, in eval mode, every tensor equal."""
    model = load_checkpoint(checkpoint_path, "cpu")
    assert not model.training
    loaded, expected = model.state_dict(), seeded_model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_load_bare_state_dict(tmp_path: Path, seeded_model: Wav2Lip) -> None:
    """A plain state dict (no ``state_dict`` wrapper, no prefix) loads too."""
    path = tmp_path / "bare.pth"
    torch.save(seeded_model.state_dict(), path)
    model = load_checkpoint(path)
    key = "output_block.1.weight"
    assert torch.equal(model.state_dict()[key], seeded_model.state_dict()[key])


def _without(n: int) -> Callable[[dict[str, torch.Tensor]], object]:
    return lambda s: {"state_dict": dict(list(s.items())[n:])}


def _reshaped(s: dict[str, torch.Tensor]) -> object:
    return {"state_dict": {**s, "output_block.1.bias": torch.zeros(4)}}


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (_without(12), "12 missing keys such as face_encoder_blocks.0.0.conv_block.0.weight"),
        (
            lambda s: {"state_dict": {**s, "extra.weight": torch.zeros(1)}},
            "1 unexpected keys such as extra.weight",
        ),
        (_reshaped, "output_block.1.bias (4,) instead of (3,)"),
        (lambda s: {"global_step": 3}, "no 'state_dict' of tensors"),
        (lambda s: torch.zeros(3), "holds a Tensor, not a dict"),
    ],
    ids=["missing", "unexpected", "shape", "no-state-dict", "not-a-dict"],
)
def test_wrong_checkpoint_content(
    tmp_path: Path, seeded_model: Wav2Lip, content: Callable[[dict[str, torch.Tensor]], object], says: str
) -> None:
    """A torch file that is not a Wav2Lip checkpoint raises ConfigError naming the file and the problem."""
    path = tmp_path / "x.pth"
    torch.save(content(seeded_model.state_dict()), path)
    with pytest.raises(ConfigError, match=r"x\.pth is not a Wav2Lip checkpoint") as info:
        load_checkpoint(path)
    assert says in str(info.value)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"hello, I am not a model", "not a PyTorch file"),
        (b"", "not a PyTorch file"),
        (b"PK\x03\x04" + b"\x00" * 64, "not a PyTorch file"),
    ],
    ids=["text", "empty", "broken-zip"],
)
def test_not_a_torch_file(tmp_path: Path, data: bytes, says: str) -> None:
    """Bytes that are not a PyTorch file raise ConfigError naming the file."""
    path = tmp_path / "junk.pth"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=rf"junk\.pth is {says}"):
        load_checkpoint(path)


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    """A pickle holding arbitrary objects is refused (weights_only), with a ConfigError naming the file."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": Path("x")}, path)
    with pytest.raises(ConfigError, match=r"evil\.pth is not a Wav2Lip checkpoint: it holds objects"):
        load_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    """A checkpoint path that does not exist raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"nothere\.pth does not exist"):
        load_checkpoint(tmp_path / "nothere.pth")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_onto_cuda(checkpoint_path: Path) -> None:
    """On a GPU machine the checkpoint loads onto CUDA and runs there."""
    model = load_checkpoint(checkpoint_path, "cuda")
    with torch.inference_mode():
        out = model(torch.randn(2, 1, 80, 16, device="cuda"), torch.rand(2, 6, 96, 96, device="cuda"))
    assert out.device.type == "cuda" and out.shape == (2, 3, 96, 96)
