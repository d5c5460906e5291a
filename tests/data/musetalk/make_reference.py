"""Make ``reference.npz``: MuseTalk 1.5's intermediate results computed by upstream's own code.

Upstream: github.com/TMElyralab/MuseTalk at commit UPSTREAM_COMMIT (MIT). Its code is not in this
repository: give a checkout (or ``git archive`` of it) with ``--upstream``; it is imported from there at
run time. Run from the repository root with the neural extra, diffusers, transformers and einops:

    git --git-dir=<MuseTalk>/.git archive 0a89dec musetalk | tar -x -C /tmp/musetalk
    python tests/data/musetalk/make_reference.py --upstream /tmp/musetalk

Models: ``stages.render.musetalk_seeded.TINY`` (``--configs tiny``, the committed file: the published classes and block types, narrow channels;
Whisper tiny's real encoder) with weights from ``musetalk.seeded_(…, seed 0)``, written in the published
layout and loaded by upstream's own loaders (``musetalk.utils.utils.load_all_model``'s classes ``VAE``,
``UNet``, ``PositionalEncoding``; ``AudioProcessor``; ``transformers.WhisperModel``). The test rebuilds the
same weights (numpy's generator: independent of torch's initialisation). ``--configs real --out PATH``
makes the same reference at the published sizes (``REAL``: the 850 M-parameter UNet of ``musetalk.json``,
the SD VAE), for a one-off check that is too big to commit or to rebuild in every test run.

Inputs: the astronaut photo and its dlib landmarks; the JFK clip's first second at 16 kHz; 25 fps.

Upstream functions used per step (each result stored; ``tests/stages/render/test_musetalk.py`` compares
ours with them):

- features: ``AudioProcessor.get_audio_feature`` + ``get_whisper_chunk``.
- box: ``preprocessing.get_landmark_and_bbox`` with its two detectors replaced by stand-ins that return
  our landmarks (as DWPose's 133 whole-body points, face at 23:91) and our face box; the v1.5
  ``extra_margin`` line of ``scripts/inference.py``.
- crop + latents: the crop/resize line of ``scripts/inference.py``, then ``VAE.get_latents_for_unet``
  (which *samples* the latent distribution: global seed 7 before the call).
- UNet: ``unet.model(latents, [0], encoder_hidden_states=pe(chunks)).sample`` as in ``inference.py``.
- decode: ``VAE.decode_latents``; blend: ``blending.get_image`` (mode "jaw") with its face-parsing
  network replaced by our ``lower_face_mask`` (the one part we do not reproduce: BiSeNet's weights).
- mean path: ``utils.get_image_pred`` (training's: latents from the distribution's mode) → decoded face
  and blended frame, what our renderer makes.

Shims (stand-ins installed in ``sys.modules`` before importing upstream): ``torchvision.transforms``
(only ``Normalize``, which ``VAE`` uses: torchvision's CPU wheel is not installable beside this torch),
``mmpose`` and ``face_detection`` (the detectors, see above).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import cv2
import librosa
import numpy as np
import soundfile
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from stages.lib.faces.landmarks import DlibDetector  # noqa: E402
from stages.render import musetalk as mt  # noqa: E402
from stages.render.musetalk_seeded import REAL, TINY, write_models  # noqa: E402

UPSTREAM_COMMIT = "0a89dec45a0192b824e3cf4daf96c239440c5ed8"
OUT = Path(__file__).with_name("reference.npz")
ASSETS = ROOT / "pipeline" / "assets"
FPS = 25
FRAMES = (0, 12, 24)  # feature windows stored (of 25)
SEED = 7


def _install_shims(landmarks: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Stand-ins for the modules upstream imports that cannot run here (see the module docstring)."""

    class Normalize:
        def __init__(self, mean: list[float], std: list[float]) -> None:
            self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) / self.std

    transforms = types.ModuleType("torchvision.transforms")
    transforms.Normalize = Normalize  # type: ignore[attr-defined]
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = transforms  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": torchvision, "torchvision.transforms": transforms})

    keypoints = np.zeros((1, 133, 2), np.float32)
    keypoints[0, 23:91] = landmarks
    result = types.SimpleNamespace(pred_instances=types.SimpleNamespace(keypoints=keypoints))
    apis = types.ModuleType("mmpose.apis")
    apis.init_model = lambda *a, **k: object()  # type: ignore[attr-defined]
    apis.inference_topdown = lambda model, image: [result]  # type: ignore[attr-defined]
    structures = types.ModuleType("mmpose.structures")
    structures.merge_data_samples = lambda results: results[0]  # type: ignore[attr-defined]
    sys.modules.update(
        {"mmpose": types.ModuleType("mmpose"), "mmpose.apis": apis, "mmpose.structures": structures}
    )

    class FaceAlignment:
        def __init__(self, *a: object, **k: object) -> None:
            pass

        def get_detections_for_batch(self, images: np.ndarray) -> list[tuple[int, int, int, int]]:
            return [box for _ in images]

    detection = types.ModuleType("face_detection")
    detection.FaceAlignment = FaceAlignment  # type: ignore[attr-defined]
    detection.LandmarksType = types.SimpleNamespace(_2D=2)  # type: ignore[attr-defined]
    sys.modules["face_detection"] = detection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="a MuseTalk checkout at UPSTREAM_COMMIT")
    parser.add_argument(
        "--configs",
        choices=("tiny", "real"),
        default="tiny",
        help="tiny: the committed reference; real: the published sizes (850 M-parameter UNet, several GB "
        "of memory and disk, minutes on a CPU), for a one-off check (see the test module's docstring)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    args = parser.parse_args()
    configs = REAL if args.configs == "real" else TINY
    torch.set_num_threads(2)

    photo = cv2.imread(str(ASSETS / "astronaut.png"))
    assert photo is not None
    rgb = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    (face,) = DlibDetector().detect(rgb)
    landmarks = np.asarray(face.landmarks, np.float32)
    fx1, fy1, fx2, fy2 = (int(v) for v in face.box)
    face_box = (fx1, fy1, fx2, fy2)
    stereo, rate = soundfile.read(ASSETS / "jfk.flac", dtype="float32", frames=44_100, always_2d=True)
    audio = librosa.resample(stereo.mean(axis=1), orig_sr=rate, target_sr=16_000).astype(np.float32)

    import diffusers
    import transformers

    # the libraries look for torchvision when first imported: import them before the shim exists
    _ = (diffusers.AutoencoderKL, diffusers.UNet2DConditionModel, transformers.WhisperModel)
    _install_shims(landmarks, face_box)
    sys.path.insert(0, str(args.upstream))
    from musetalk.models.unet import PositionalEncoding, UNet
    from musetalk.models.vae import VAE
    from musetalk.utils import blending, preprocessing
    from musetalk.utils.audio_processor import AudioProcessor
    from musetalk.utils.utils import get_image_pred
    from transformers import WhisperModel

    ref: dict[str, np.ndarray] = {"audio": audio, "landmarks": landmarks, "face_box": np.array(face_box)}
    with tempfile.TemporaryDirectory() as tmp:
        models = write_models(Path(tmp) / "models", configs, seed=0)
        wav = Path(tmp) / "voice.wav"
        soundfile.write(wav, audio, 16_000, subtype="FLOAT")  # librosa.load gives these samples back
        frame_png = Path(tmp) / "00000000.png"
        cv2.imwrite(str(frame_png), bgr)

        # features
        processor = AudioProcessor(feature_extractor_path=str(models / mt.WHISPER_DIR))
        whisper = WhisperModel.from_pretrained(models / mt.WHISPER_DIR).eval()
        features, length = processor.get_audio_feature(str(wav))
        with torch.no_grad():
            chunks = processor.get_whisper_chunk(features, "cpu", torch.float32, whisper, length, fps=FPS)
        ref["n_windows"] = np.array(len(chunks))
        ref["windows"] = chunks[list(FRAMES)].numpy()

        # box and crop
        coords, frames = preprocessing.get_landmark_and_bbox([str(frame_png)], 0)
        x1, y1, x2, y2 = coords[0]
        y2 = min(y2 + mt.EXTRA_MARGIN, frames[0].shape[0])
        box = (int(x1), int(y1), int(x2), int(y2))
        ref["box"] = np.array(box)
        crop = cv2.resize(frames[0][y1:y2, x1:x2], (256, 256), interpolation=cv2.INTER_LANCZOS4)
        ref["crop_bgr"] = crop

        # latents (sampled, as inference.py), UNet, decode, blend
        vae = VAE(model_path=str(models / mt.VAE_DIR))
        vae.vae.eval()
        torch.manual_seed(SEED)
        latents = vae.get_latents_for_unet(crop)
        ref["latents_sampled"] = latents.numpy()
        unet = UNet(
            str(models / mt.UNET_DIR / mt.UNET_CONFIG),
            str(models / mt.UNET_DIR / mt.UNET_WEIGHTS),
            device="cpu",
        )
        unet.model.eval()
        pe = PositionalEncoding(d_model=384)
        batch = torch.cat([latents, latents])
        tokens = chunks[[FRAMES[0], FRAMES[1]]]
        with torch.no_grad():
            pred = unet.model(batch, torch.tensor([0]), encoder_hidden_states=pe(tokens)).sample
            decoded = vae.decode_latents(pred)
        ref["unet_out"] = pred.numpy()
        ref["decoded_bgr"] = decoded
        parsing = mt.lower_face_mask(box, landmarks)
        square, _ = mt.square_mask(box, parsing)

        def fp(image: object, mode: str = "raw") -> object:
            from PIL import Image

            full = np.zeros((square[3] - square[1], square[2] - square[0]), np.uint8)
            full[y1 - square[1] : y2 - square[1], x1 - square[0] : x2 - square[0]] = parsing
            return Image.fromarray(full)

        def blended(face_bgr: np.ndarray) -> np.ndarray:
            res = cv2.resize(face_bgr.astype(np.uint8), (x2 - x1, y2 - y1))
            return blending.get_image(bgr.copy(), res, [x1, y1, x2, y2], mode="jaw", fp=fp)

        ref["final_bgr"] = blended(decoded[0])

        # the mean path (training's get_image_pred): what the renderer computes
        pixels = torch.from_numpy(crop[..., ::-1].copy()).permute(2, 0, 1).float()[None, None] / 127.5 - 1.0

        def net(x: torch.Tensor, t: torch.Tensor, audio_prompts: torch.Tensor) -> torch.Tensor:
            return unet.model(x, t, encoder_hidden_states=pe(audio_prompts)).sample

        image = get_image_pred(pixels, pixels, chunks[[FRAMES[0]]], vae.vae, net, torch.float32)
        mean_face = ((image / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        ref["mean_decoded_rgb"] = mean_face
        ref["mean_final_bgr"] = blended(mean_face[0][..., ::-1])
    ref["upstream_commit"] = np.array(UPSTREAM_COMMIT)
    ref["configs"] = np.array(args.configs)
    # only the square blended through is stored of the frames (the rest is the photo, checked by the test)
    sx1, sy1, sx2, sy2 = (max(0, v) for v in mt.blend_square(box))
    for key in ("final_bgr", "mean_final_bgr"):
        assert np.array_equal(
            np.delete(ref[key], np.s_[sy1:sy2], axis=0), np.delete(bgr, np.s_[sy1:sy2], axis=0)
        )
        ref[key] = ref[key][sy1:sy2, sx1:sx2]
    np.savez_compressed(args.out, **ref)  # type: ignore[arg-type]  # numpy's stub reads **kwds as allow_pickle
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): box {box}, {len(chunks)} windows")


if __name__ == "__main__":
    main()
