"""MuseTalk 1.5 (TMElyralab, MIT code; weights allowed for any purpose): its networks and inference math.

Written from upstream's published interfaces (github.com/TMElyralab/MuseTalk at 0a89dec, the 1.5 path of
``scripts/inference.py``), not copied. The networks are the stock ``diffusers`` / ``transformers``
classes upstream uses, so the published files load unchanged from the model directory:

- ``musetalkV15/musetalk.json`` + ``musetalkV15/unet.pth``: a ``UNet2DConditionModel`` (8 latent channels
  in: the masked crop's 4 and the reference crop's 4; 4 out; cross-attention over 384-wide audio tokens).
- ``sd-vae-ft-mse/``: Stability's fine-tuned SD VAE (``AutoencoderKL``), 256 px crop ↔ 4×32×32 latents.
- ``whisper-tiny/``: OpenAI's Whisper tiny (``WhisperModel``; only the encoder runs) and its feature
  extractor (log-mel, 30 s windows).

Per output frame i at ``fps`` (upstream's math, step by step; each is a function here and is compared
with upstream's own code in ``tests/stages/render/test_musetalk.py``):

1. audio tokens (``audio_features``): the encoder's hidden states (embeddings + every layer, 5 × 384 for
   tiny) at 50 per second, cut to the audio's length, padded with zeros (left 2·⌈50/fps⌉, right
   6·⌈50/fps⌉ positions), and frame i takes the 10 positions from ⌊i·50/fps⌋: 50 tokens of 384.
   Upstream truncates fps to an integer here (``int(fps)``); we use the true rate, which is the same at
   integer rates and keeps 29.97 fps in sync.
2. crop box (``crop_box``): from 68 landmarks, x from the leftmost to the rightmost point, bottom at the
   lowest point, top as far above the nose's point 29 as the lowest point is below it (not above the
   frame); without usable landmarks, the detector's box. Then 10 px more at the bottom (``extra_margin``).
3. VAE inputs: the crop resized to 256×256 (Lanczos), RGB /255, a copy with its lower half zeroed, both
   normalised to [−1, 1]; each encoded to the latent distribution's mean (or a sample, see below) × the
   VAE's scaling factor; concatenated (masked, reference) → 8×32×32.
4. UNet: one step at timestep 0 with the audio tokens plus a sinusoidal positional encoding
   (``positional_encoding``) as ``encoder_hidden_states``.
5. VAE decode of ``pred / scaling``, ``(x/2 + 0.5)`` clamped to [0, 1], ×255 rounded to uint8: a 256×256
   face, resized (bilinear) to the crop box.
6. blend (``blend_face``): upstream pastes the face into a square 1.5× the box and then that square into
   the frame through a mask: the face-parsing mask (a separate BiSeNet network) inside the box, kept only
   below the middle of the square, Gaussian-blurred with a kernel of 5 % of the square's width. We keep
   that composition exactly and replace BiSeNet's mask by ``lower_face_mask``: the hull of the landmarks
   of the jaw and nose (the part MuseTalk regenerates), so no second network is needed.

Latent mean vs sample: upstream's inference encodes with ``latent_dist.sample()`` (random noise of the
VAE's own variance), its training with ``.mode()`` (the mean). We use the mean — what the UNet was
trained on, deterministic, and so cacheable by content; ``encode_latents(..., generator=g)`` samples as
upstream's inference does (the parity test uses it to compare with upstream's seeded draw).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pipeline.errors import ConfigError

FACE_SIZE = 256
LATENT_SIZE = 32
AUDIO_RATE = 16_000
TOKENS_PER_SECOND = 50  # Whisper's encoder: one position per 20 ms
PAD_LEFT = 2
PAD_RIGHT = 2
WINDOW = 2 * (PAD_LEFT + PAD_RIGHT + 1)  # 10 encoder positions per frame
SEGMENT_SECONDS = 30  # Whisper's input window
EXTRA_MARGIN = 10  # pixels added below the box (upstream's v1.5 default)
EXPAND = 1.5  # the blend square is this many times the box's larger side
UPPER_BOUNDARY = 0.5  # the blend mask starts this far down the square
D_MODEL = 384  # Whisper tiny's width = the UNet's cross-attention width

UNET_DIR = "musetalkV15"
UNET_CONFIG = "musetalk.json"
UNET_WEIGHTS = "unet.pth"
VAE_DIR = "sd-vae-ft-mse"
WHISPER_DIR = "whisper-tiny"

Box = tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------------
# Loading the published files
# --------------------------------------------------------------------------------------------------


@dataclass
class MuseTalkModels:
    """The three networks and the feature extractor, in eval mode on one device."""

    # Any: diffusers' and transformers' classes are not typed precisely enough for mypy (decorated
    # methods, dynamic attributes such as ``config``); they are UNet2DConditionModel, AutoencoderKL,
    # WhisperModel and WhisperFeatureExtractor
    unet: Any
    vae: Any
    whisper: Any
    features: Any
    pe: torch.Tensor  # (1, max_len, 384) positional encoding

    @property
    def scaling(self) -> float:
        return float(self.vae.config.scaling_factor)

    def to(self, device: torch.device, dtype: torch.dtype) -> MuseTalkModels:
        # the dtype only when it changes: diffusers warns on every dtype cast, even float32 to float32
        cast = {"dtype": dtype} if dtype != next(self.unet.parameters()).dtype else {}
        self.unet.to(device=device, **cast)
        self.vae.to(device=device, **cast)
        self.whisper.to(device=device, dtype=dtype)
        self.pe = self.pe.to(device=device, dtype=dtype)
        return self


def load_models(models_dir: Path) -> MuseTalkModels:
    """Load ``musetalkV15/``, ``sd-vae-ft-mse/`` and ``whisper-tiny/`` from ``models_dir`` (CPU, fp32).

    ``ConfigError`` naming the missing or unreadable file and ``mouthpiece models --fetch musetalk``.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperFeatureExtractor, WhisperModel

    unet_dir, vae_dir, whisper_dir = (models_dir / d for d in (UNET_DIR, VAE_DIR, WHISPER_DIR))
    for need in (
        unet_dir / UNET_CONFIG,
        unet_dir / UNET_WEIGHTS,
        vae_dir / "config.json",
        whisper_dir / "config.json",
    ):
        if not need.is_file():
            raise ConfigError(
                f"the musetalk renderer needs {need.relative_to(models_dir)} in {models_dir} "
                "(`mouthpiece models --fetch musetalk` on a connected machine)"
            )
    try:
        config = json.loads((unet_dir / UNET_CONFIG).read_text())
        unet = UNet2DConditionModel.from_config(config)
        state = torch.load(unet_dir / UNET_WEIGHTS, map_location="cpu", weights_only=True)
        unet.load_state_dict(state, strict=True)
        vae = AutoencoderKL.from_pretrained(vae_dir)
        whisper = WhisperModel.from_pretrained(whisper_dir)
        features = WhisperFeatureExtractor.from_pretrained(whisper_dir)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise ConfigError(
            f"the musetalk model files in {models_dir} do not load: {(lines or [repr(exc)])[0][:300]}"
        ) from exc
    width = int(unet.config.cross_attention_dim)
    if width != whisper.config.d_model:
        raise ConfigError(
            f"{UNET_DIR}/{UNET_CONFIG} attends to {width}-wide audio but {WHISPER_DIR} gives {whisper.config.d_model}"
        )
    return MuseTalkModels(unet.eval(), vae.eval(), whisper.eval(), features, positional_encoding(width))


def positional_encoding(d_model: int = D_MODEL, max_len: int = 5000) -> torch.Tensor:
    """The sinusoidal table added to the audio tokens: sin at even, cos at odd channels (1, max_len, d)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table[None]


# --------------------------------------------------------------------------------------------------
# 1. Audio tokens
# --------------------------------------------------------------------------------------------------


def encoder_states(models: MuseTalkModels, audio: np.ndarray) -> torch.Tensor:
    """Whisper's hidden states of ``audio`` (16 kHz mono): (T, layers + 1, d), T = ⌊seconds·50⌋.

    The audio is cut into 30 s segments (each padded to 30 s by the extractor) and their encodings
    concatenated, as upstream does; runs in the models' dtype on their device.
    """
    param = next(models.whisper.parameters())
    step = SEGMENT_SECONDS * AUDIO_RATE
    parts = []
    for start in range(0, max(1, len(audio)), step):
        segment = np.asarray(audio[start : start + step], np.float32)
        mel = models.features(segment, sampling_rate=AUDIO_RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            hidden = models.whisper.encoder(
                mel.to(param.device, param.dtype), output_hidden_states=True
            ).hidden_states
        parts.append(torch.stack(hidden, dim=2)[0])  # (1500, layers + 1, d)
    states = torch.cat(parts)
    return states[: math.floor(len(audio) / AUDIO_RATE * TOKENS_PER_SECOND)]


def audio_windows(states: torch.Tensor, fps: float, first: int, count: int) -> torch.Tensor:
    """Frames ``first .. first+count-1``'s audio tokens, (count, WINDOW·(layers+1), d), from ``states``.

    Frame i reads the WINDOW positions from ⌊i·50/fps⌋ of the states padded with zeros: 2·⌈50/fps⌉
    before, 6·⌈50/fps⌉ after (upstream's padding; frames past the end read zeros).
    """
    ratio = TOKENS_PER_SECOND / fps
    left = math.ceil(ratio) * PAD_LEFT  # the right padding (6·⌈50/fps⌉) only makes late windows read zeros
    starts = torch.tensor([math.floor(i * ratio) for i in range(first, first + count)], dtype=torch.long)
    # gather the windows instead of padding all the states (a long voice would be copied every batch)
    index = (starts[:, None] + torch.arange(WINDOW) - left).to(states.device)
    inside = (index >= 0) & (index < len(states))
    picked = (
        states[index.clamp(0, max(0, len(states) - 1))]
        if len(states)
        else states.new_zeros((count, WINDOW, *states.shape[1:]))
    )
    windows = torch.where(
        inside[:, :, None, None], picked, torch.zeros((), dtype=states.dtype, device=states.device)
    )
    return windows.flatten(1, 2)


def with_position(tokens: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """``tokens`` (B, L, d) plus the positional encoding of positions 0..L-1."""
    return tokens + pe[:, : tokens.shape[1]].to(tokens.dtype)


# --------------------------------------------------------------------------------------------------
# 2. Crop box
# --------------------------------------------------------------------------------------------------


def crop_box(
    box: tuple[float, float, float, float],
    landmarks: list[tuple[float, float]] | np.ndarray | None,
    height: int,
    width: int,
    extra_margin: int = EXTRA_MARGIN,
) -> Box | None:
    """Upstream's v1.5 face box from 68 landmarks (see the module docstring), else the detector's box;
    with ``extra_margin`` below, clipped to the frame's height. None when the box is empty.

    Landmarks are truncated to integers first, as upstream does with its detector's points.
    """
    candidate: tuple[int, int, int, int] | None = None
    if landmarks is not None and len(landmarks) == 68:
        points = np.asarray(landmarks, np.float32).astype(np.int32)
        bottom = int(points[:, 1].max())
        nose = int(points[29, 1])
        top = max(0, nose - (bottom - nose))
        x1, x2 = int(points[:, 0].min()), int(points[:, 0].max())
        if bottom - top > 0 and x2 - x1 > 0 and x1 >= 0:
            candidate = (x1, top, x2, bottom)
    if candidate is None:
        candidate = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
    x1, y1, x2, y2 = candidate
    y2 = min(y2 + extra_margin, height)
    x1, y1, x2 = max(0, x1), max(0, y1), min(width, x2)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def face_crop(frame: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels at 256×256 (Lanczos, as upstream), same channel order as ``frame``."""
    x1, y1, x2, y2 = box
    return cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LANCZOS4)


# --------------------------------------------------------------------------------------------------
# 3–5. VAE and UNet
# --------------------------------------------------------------------------------------------------


def vae_inputs(crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 256, 256, 3) uint8 RGB crops → (masked, reference) (B, 3, 256, 256) in [−1, 1]; the masked
    copy has its lower half at −1 (zero before normalising, as upstream)."""
    # contiguous: a permuted (channels-last) tensor makes the convolutions take other kernels (other sums)
    reference = crops.permute(0, 3, 1, 2).contiguous().float() / 255.0
    masked = reference.clone()
    masked[:, :, FACE_SIZE // 2 :] = 0.0
    return (masked - 0.5) / 0.5, (reference - 0.5) / 0.5  # upstream's Normalize(0.5, 0.5)


def encode_latents(
    models: MuseTalkModels, crops: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, 256, 256, 3) uint8 RGB crops → the UNet's image input (B, 8, 32, 32): masked then reference
    latents × scaling. The mean of the latent distribution; with ``generator``, a sample (upstream's
    inference draws the masked crop's noise first, then the reference's)."""
    param = next(models.vae.parameters())
    parts = []
    for image in vae_inputs(crops):
        dist = models.vae.encode(image.to(param.device, param.dtype)).latent_dist
        latent = dist.mode() if generator is None else dist.sample(generator=generator)
        parts.append(latent * models.scaling)
    return torch.cat(parts, dim=1)


def predict_latents(models: MuseTalkModels, latents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The UNet's single step at timestep 0: (B, 8, 32, 32) + tokens (B, L, d) → (B, 4, 32, 32)."""
    param = next(models.unet.parameters())
    timestep = torch.zeros(1, dtype=torch.long, device=param.device)
    hidden = with_position(tokens.to(param.device, param.dtype), models.pe)
    out: torch.Tensor = models.unet(latents.to(param.dtype), timestep, encoder_hidden_states=hidden).sample
    return out


def decode_faces(models: MuseTalkModels, latents: torch.Tensor) -> torch.Tensor:
    """(B, 4, 32, 32) predicted latents → (B, 256, 256, 3) uint8 RGB faces (on the models' device)."""
    param = next(models.vae.parameters())
    image = models.vae.decode((latents / models.scaling).to(param.dtype)).sample
    image = (image.float() / 2.0 + 0.5).clamp(0.0, 1.0)
    return (image * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)


# --------------------------------------------------------------------------------------------------
# 6. Blend
# --------------------------------------------------------------------------------------------------

LOWER_FACE = [*range(2, 15), 29]
"""iBUG-68 points outlining what MuseTalk regenerates: the jaw from cheek to cheek, and the nose's middle."""


def blend_square(box: Box) -> Box:
    """The square upstream blends through: centred on the box, ``EXPAND`` × its larger side (may leave
    the frame; the parts outside are ignored)."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    s = int(max(x2 - x1, y2 - y1) // 2 * EXPAND)
    return cx - s, cy - s, cx + s, cy + s


def lower_face_mask(box: Box, landmarks: list[tuple[float, float]] | np.ndarray | None) -> np.ndarray:
    """uint8 mask (box height × width), 255 on the lower face: our stand-in for upstream's face-parsing
    mask. With 68 landmarks, the hull of the jaw and nose points; without, the ellipse in the box."""
    x1, y1, x2, y2 = box
    mask = np.zeros((y2 - y1, x2 - x1), np.uint8)
    if landmarks is not None and len(landmarks) == 68:
        points = np.asarray(landmarks, np.float32)[LOWER_FACE] - np.array([x1, y1], np.float32)
        cv2.fillConvexPoly(mask, cv2.convexHull(np.rint(points).astype(np.int32)), 255)
    else:
        centre = ((x2 - x1) // 2, (y2 - y1) // 2)
        cv2.ellipse(mask, centre, (max(1, (x2 - x1) // 2), max(1, (y2 - y1) // 2)), 0, 0, 360, 255, -1)
    return mask


def square_mask(box: Box, parsing: np.ndarray) -> tuple[Box, np.ndarray]:
    """The blend square and its uint8 mask: ``parsing`` (box-sized) placed in the box, only rows below
    ``UPPER_BOUNDARY`` of the square kept, Gaussian-blurred (kernel 5 % of the square's width, odd)."""
    square = blend_square(box)
    sx1, sy1, sx2, sy2 = square
    side_w, side_h = sx2 - sx1, sy2 - sy1
    mask = np.zeros((side_h, side_w), np.uint8)
    x1, y1, x2, y2 = box
    mask[y1 - sy1 : y2 - sy1, x1 - sx1 : x2 - sx1] = parsing
    mask[: int(side_h * UPPER_BOUNDARY)] = 0
    kernel = int(0.05 * side_w // 2 * 2) + 1
    return square, cv2.GaussianBlur(mask, (kernel, kernel), 0)


def blend_face(
    frame: np.ndarray, face: np.ndarray, box: Box, mask: np.ndarray, weight: float = 1.0
) -> np.ndarray:
    """A copy of ``frame`` with ``face`` (box-sized) blended in through the square's ``mask`` (uint8), as
    upstream's paste does: out = frame + (face − frame)·mask/255 (PIL's rounding), ``weight`` scaling the
    mask (rest on silence). Pixels outside the box or where the mask is 0 are unchanged."""
    square = blend_square(box)
    sx1, sy1 = square[0], square[1]
    x1, y1, x2, y2 = box
    alpha = mask[y1 - sy1 : y2 - sy1, x1 - sx1 : x2 - sx1]
    out = frame.copy()
    region = out[y1:y2, x1:x2]
    if weight >= 1.0:
        # PIL's Image.paste with an L mask: (src·m + dst·(255 − m)) / 255, rounded with +128 and a shift
        mixed = _pil_blend(region, face, alpha)
    else:
        a = alpha.astype(np.float32) * np.float32(weight / 255.0)
        mixed = np.clip(np.rint(region * (1.0 - a[..., None]) + face * a[..., None]), 0, 255).astype(np.uint8)
    out[y1:y2, x1:x2] = mixed
    return out


def _pil_blend(dst: np.ndarray, src: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """PIL's integer alpha blend (``ImagingPaste`` with an L mask): BLEND(in1=src, in2=dst, mask)."""
    m = mask.astype(np.int32)[..., None]
    tmp = src.astype(np.int32) * m + dst.astype(np.int32) * (255 - m) + 128
    return ((tmp + (tmp >> 8)) >> 8).astype(np.uint8)


def seeded_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter of ``module`` from numpy's generator ``seed`` (weights N(0, 1/fan_in),
    norm scales 1 + N(0, 0.1²), biases N(0, 0.1²)): the same values under any torch version, for tests
    and benchmarks of the real architectures without the published weights."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            shape = tuple(p.shape)
            if len(shape) > 1:
                values = rng.normal(0.0, 1.0 / math.sqrt(max(1, int(np.prod(shape[1:])))), shape)
            elif name.endswith("weight"):
                values = 1.0 + rng.normal(0.0, 0.1, shape)
            else:
                values = rng.normal(0.0, 0.1, shape)
            p.copy_(torch.from_numpy(values.astype(np.float32)))
    return module


def describe(models: MuseTalkModels) -> dict[str, Any]:
    """Sizes for the log: parameters of each network."""
    return {
        "unet_parameters": sum(p.numel() for p in models.unet.parameters()),
        "vae_parameters": sum(p.numel() for p in models.vae.parameters()),
        "whisper_encoder_parameters": sum(p.numel() for p in models.whisper.encoder.parameters()),
    }
