"""MuseTalk model directories with deterministic random weights, in the published file layout.

For tests, the parity reference script and benchmarks: the published weights cannot be downloaded on
every machine, and neither speed nor the math depends on the weights' values. ``write_models`` writes
``musetalkV15/{musetalk.json,unet.pth}``, ``sd-vae-ft-mse/{config.json,diffusion_pytorch_model.safetensors}``
and ``whisper-tiny/{config.json,model.safetensors,preprocessor_config.json}`` exactly as the real
files are laid out, so ``musetalk.load_models`` (and upstream's own loaders) read them unchanged.

``REAL``: the published architectures (UNet config as ``musetalkV15/musetalk.json``, the SD VAE,
Whisper tiny). ``TINY``: the same classes and block types with narrow channels, for fast tests.
Weights come from ``musetalk.seeded_`` (numpy's generator: the same values under any torch version).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stages.render import musetalk as mt

UNET_REAL: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
"""``musetalkV15/musetalk.json`` as published (TMElyralab/MuseTalk on the Hugging Face Hub)."""

VAE_REAL: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}
"""stabilityai/sd-vae-ft-mse's ``config.json`` (the architecture fields)."""

WHISPER_REAL: dict[str, Any] = {
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_layers": 4,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "vocab_size": 51865,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}
"""openai/whisper-tiny's ``config.json`` (the architecture fields)."""


@dataclass(frozen=True)
class Configs:
    unet: dict[str, Any]
    vae: dict[str, Any]
    whisper: dict[str, Any] = field(default_factory=lambda: dict(WHISPER_REAL))


REAL = Configs(UNET_REAL, VAE_REAL, WHISPER_REAL)
TINY = Configs(
    {**UNET_REAL, "block_out_channels": [32, 64, 64, 64], "layers_per_block": 1},
    {**VAE_REAL, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1},
    # Whisper tiny's encoder unchanged (5 hidden states of 384: the UNet's token shape); a 1-layer decoder
    # with a small vocabulary, which never runs here
    {
        **WHISPER_REAL,
        "decoder_layers": 1,
        "vocab_size": 128,
        **dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"), 1),
        "suppress_tokens": [],
        "begin_suppress_tokens": [],
    },
)


def write_models(folder: Path, configs: Configs = TINY, seed: int = 0) -> Path:
    """Write the three model folders into ``folder`` (the model directory) and return it."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    unet_dir = folder / mt.UNET_DIR
    unet_dir.mkdir(parents=True, exist_ok=True)
    (unet_dir / mt.UNET_CONFIG).write_text(json.dumps(configs.unet, indent=2))
    unet: Any = mt.seeded_(UNet2DConditionModel.from_config(configs.unet), seed)
    torch.save(unet.state_dict(), unet_dir / mt.UNET_WEIGHTS)  # a bare state dict, as published

    vae: Any = mt.seeded_(AutoencoderKL.from_config(configs.vae), seed + 1)
    vae.save_pretrained(folder / mt.VAE_DIR)

    whisper: Any = mt.seeded_(WhisperModel(WhisperConfig(**configs.whisper)), seed + 2)
    whisper.save_pretrained(folder / mt.WHISPER_DIR)
    WhisperFeatureExtractor(feature_size=configs.whisper["num_mel_bins"]).save_pretrained(
        folder / mt.WHISPER_DIR
    )
    return folder
