"""The ComfyUI nodes: ComfyUI's own types in and out (``AUDIO``, ``IMAGE``, ``VIDEO``, ``BOOLEAN``), the
pipeline's stages inside (``mouthpiece_comfyui.engine``).

Every node reports progress on its bar and stops when ComfyUI's Cancel is pressed (``runtime.Progress``);
failures reach the node as one sentence (``NodeError``), never a pipeline traceback. Lip-sync takes a
batch of pictures, or is called once per picture of a list (ComfyUI maps a list over the node), and
hands on one ``VIDEO`` per avatar (an output list). An avatar without a face gets the voice over its
untouched picture, or a ``BOOLEAN`` from Detect Face steers the graph down another branch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mouthpiece_comfyui import runtime
from mouthpiece_comfyui.engine import Engine, NodeError, Take, changed, sentence
from mouthpiece_comfyui.media import (
    audio_from_file,
    audio_to_wav,
    frames_to_video,
    images_to_files,
    silence_wav,
)
from pipeline.contracts import JobOptions, option_values
from pipeline.errors import MouthpieceError

CATEGORY = "mouthpiece"
FACES = "MOUTHPIECE_FACES"
"""Detect Face's track: the takes (one per avatar) with their faces, for Lip-sync."""
TAKE_ATTRIBUTE = "mouthpiece_take"
"""Where a ``VIDEO`` made by these nodes keeps its take (so later nodes re-finish, not re-encode)."""

F = TypeVar("F", bound=Callable[..., Any])


def as_sentences(fn: F) -> F:
    """Node functions raise ``NodeError`` with a sentence for what went wrong (ComfyUI's Cancel passes)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MouthpieceError as exc:
            raise NodeError(sentence(exc)) from None
        except (ValueError, OSError) as exc:
            if runtime.is_interrupt(exc):
                raise
            raise NodeError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


# --- shared pieces ----------------------------------------------------------------------------------

RENDERERS = option_values("renderer") or []  # the lip-sync methods JobOptions declares
MOTIONS = ["auto", "none", "subtle", "lively"]
STYLES = ["auto", "photo", "cartoon"]
FACE_CHOICES = ["largest", "center"]
NO_FACE = ["voice over the picture", "stop with an error"]
IMAGE_BATCH = ["an avatar per picture", "frames of one clip"]
BATCH_WIDGETS = {
    "image_batch": (
        IMAGE_BATCH,
        {
            "default": IMAGE_BATCH[0],
            "tooltip": "what an IMAGE batch is: several avatars, or the frames of one clip",
        },
    ),
    "fps": (
        "FLOAT",
        {
            "default": 25.0,
            "min": 1.0,
            "max": 120.0,
            "step": 1.0,
            "tooltip": "frame rate of a clip given as frames",
        },
    ),
}


def _options(**widgets: Any) -> JobOptions:
    """Job options from widget values ('' and 'auto' mean the pipeline's default)."""
    values = {k: v for k, v in widgets.items() if v not in ("", "auto", None)}
    return JobOptions(**values)


def _video(path: Path, take: Take | None) -> Any:
    video = runtime.video_from_file(path)
    if take is not None:
        setattr(video, TAKE_ATTRIBUTE, take)
    return video


def _take_of(video: Any, engine: Engine, progress: runtime.Progress) -> Take:
    """The take a ``VIDEO`` carries, or one made now from any video (its own sound as the voice, its
    picture as the avatar, no lip-sync)."""
    take = getattr(video, TAKE_ATTRIBUTE, None)
    if isinstance(take, Take):
        return take
    path = runtime.video_path(video, engine.files)
    begun = engine.begin(path, [path], JobOptions(renderer="none", enhance=False), progress.part(0.0, 0.4))
    return engine.render(begun[0], JobOptions(renderer="none"), progress.part(0.4, 0.5))


def _avatars(engine: Engine, image: Any, video: Any, batch: str = "", fps: float = 25.0) -> list[Path]:
    """Avatar files: each picture of an IMAGE batch, or (``batch`` = FRAMES) the batch as one clip; and
    the VIDEO."""
    paths: list[Path] = []
    if image is not None:
        if batch == IMAGE_BATCH[1]:
            paths.append(frames_to_video(image, engine.files, fps, engine.settings))
        else:
            paths += images_to_files(image, engine.files)
    if video is not None:
        paths.append(runtime.video_path(video, engine.files))
    if not paths:
        raise NodeError("connect an avatar: a picture (IMAGE) or a clip (VIDEO) with a face in it")
    return paths


# --- nodes --------------------------------------------------------------------------------------------


class LoadVoice:
    """A voice clip from ComfyUI's input folder as ``AUDIO`` (any format ffmpeg reads; ComfyUI's own
    Load Audio needs torchaudio, which this loader does not)."""

    AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus", ".aac", ".webm", ".mp4")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        folder = runtime.input_dir()
        files = (
            sorted(p.name for p in folder.iterdir() if p.suffix.lower() in cls.AUDIO_SUFFIXES)
            if folder.is_dir()
            else []
        )
        return {
            "required": {
                "audio": (files, {"audio_upload": True, "tooltip": "a voice clip in ComfyUI's input folder"})
            }
        }

    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("voice",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load a voice clip (mp3, wav, flac, ogg, m4a...) as AUDIO."

    @classmethod
    def VALIDATE_INPUTS(cls, audio: str) -> bool | str:
        path = runtime.annotated_input(audio)
        return True if path.is_file() else f"there is no file {audio} in ComfyUI's input folder"

    @as_sentences
    def load(self, audio: str) -> tuple[Any]:
        path = runtime.annotated_input(audio)
        loaded = audio_from_file(path)
        if loaded["waveform"].shape[-1] == 0:
            raise NodeError(f"{audio} has no sound in it; choose a voice clip")
        return (loaded,)


class TextToSpeech:
    """Text spoken by the pipeline's voices (Piper where installed, else eSpeak NG) as ``AUDIO``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "text": (
                    "STRING",
                    {"multiline": True, "default": "Hello! This video was made by mouthpiece."},
                ),
                "voice": (
                    "STRING",
                    {"default": "", "tooltip": "a Piper voice or an eSpeak NG voice; empty: the default"},
                ),
                "language": (
                    "STRING",
                    {"default": "", "tooltip": "ISO 639-1 code (en, de, fr...); empty: the voice's"},
                ),
            }
        }

    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("voice",)
    FUNCTION = "speak"
    CATEGORY = CATEGORY

    @as_sentences
    def speak(self, text: str, voice: str, language: str) -> tuple[Any]:
        from stages.lib.speech.synthesis import synthesize

        engine = Engine.get()
        progress = runtime.Progress()
        engine.files.mkdir(parents=True, exist_ok=True)
        import hashlib

        name = hashlib.sha256(f"{voice}|{language}|{text}".encode()).hexdigest()[:24]
        dst = engine.files / f"speech-{name}.wav"
        if not dst.exists():
            synthesize(engine.settings, text, dst, voice=voice or None, language=language or None)
        progress.set(1.0)
        return (audio_from_file(dst),)


class DetectFace:
    """Find the face in each avatar: the face track for Lip-sync, how many avatars have a face, and a
    ``BOOLEAN`` to branch on. An avatar without a face is not an error here."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "style": (
                    STYLES,
                    {"default": "auto", "tooltip": "cartoon: drawn faces get their own detector"},
                ),
                "face": (
                    FACE_CHOICES,
                    {"default": "largest", "tooltip": "which face to follow when there are several"},
                ),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "one picture or a batch (one avatar each)"}),
                "video": ("VIDEO", {"tooltip": "a clip as the avatar"}),
                "voice": ("AUDIO", {"tooltip": "the voice Lip-sync will use (so it need not read it again)"}),
                **BATCH_WIDGETS,
            },
        }

    RETURN_TYPES = (FACES, "INT", "BOOLEAN")
    RETURN_NAMES = ("faces", "face_count", "has_face")
    OUTPUT_TOOLTIPS = (
        "the avatars with their face tracks",
        "avatars in which a face was found",
        "true when every avatar has a face",
    )
    FUNCTION = "detect"
    CATEGORY = CATEGORY

    @as_sentences
    def detect(self, style: str, face: str, image: Any = None, video: Any = None, voice: Any = None,
               image_batch: str = IMAGE_BATCH[0], fps: float = 25.0) -> tuple[Any, ...]:  # fmt: skip
        engine = Engine.get()
        progress = runtime.Progress()
        avatars = _avatars(engine, image, video, image_batch, fps)
        sound = audio_to_wav(voice, engine.files) if voice is not None else silence_wav(engine.files)
        takes = engine.begin(sound, avatars, _options(style=style, face=face), progress.part(0.0, 1.0))
        found = sum(t.has_face for t in takes)
        return ({"takes": takes, "voiced": voice is not None}, found, found == len(takes))


class LipSync:
    """The voice spoken by each avatar: one ``VIDEO`` (H.264 + AAC) per avatar of the batch or list.

    The renderer's models are loaded once per ComfyUI process and reused by every prompt."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "renderer": (
                    RENDERERS,
                    {
                        "default": "viseme",
                        "tooltip": "viseme: no weights; wav2lip: neural, needs its checkpoint; none: the voice over the untouched avatar",
                    },
                ),
                "motion": (
                    MOTIONS,
                    {
                        "default": "auto",
                        "tooltip": "blinks and head motion; auto: subtle for photos, none for clips",
                    },
                ),
                "if_no_face": (NO_FACE, {"default": NO_FACE[0]}),
            },
            "optional": {
                "voice": ("AUDIO",),
                "image": ("IMAGE", {"tooltip": "one picture or a batch: a video per picture"}),
                "video": ("VIDEO",),
                "faces": (FACES, {"tooltip": "Detect Face's output (instead of image/video)"}),
                "checkpoint": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "wav2lip: a checkpoint file name in mouthpiece's model folder (MOUTHPIECE_MODEL_DIR); empty: the configured one",
                    },
                ),
                "transcript": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "what the voice says, if known (better mouth timing)",
                    },
                ),
                "language": ("STRING", {"default": "", "tooltip": "ISO 639-1 code; empty: detected"}),
                **BATCH_WIDGETS,
            },
        }

    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "lipsync"
    CATEGORY = CATEGORY

    @as_sentences
    def lipsync(self, renderer: str, motion: str, if_no_face: str, voice: Any = None, image: Any = None,
                video: Any = None, faces: Any = None, checkpoint: str = "", transcript: str = "",
                language: str = "", image_batch: str = IMAGE_BATCH[0], fps: float = 25.0) -> tuple[list[Any]]:  # fmt: skip
        engine = Engine.get()
        progress = runtime.Progress()
        options = _options(renderer=renderer, motion=motion, checkpoint=checkpoint.strip(),
                           transcript=transcript.strip(), language=language.strip())  # fmt: skip
        avatars = (image, video, image_batch, fps)
        takes = self._takes(engine, progress, options, voice, avatars, faces)
        refused = [t.manifest.avatar_name for t in takes if not t.has_face]
        if refused and if_no_face == NO_FACE[1]:
            raise NodeError(
                f"no face found in {', '.join(refused)} (use a picture or clip where a face is clearly visible)"
            )
        videos = []
        for index, take in enumerate(takes):
            part = progress.part(0.2 + 0.8 * index / len(takes), 0.2 + 0.8 * (index + 1) / len(takes))
            done = engine.render(
                take, changed(options, style=take.spec.options.style, face=take.spec.options.face), part
            )
            assert done.video is not None
            videos.append(_video(done.video, done))
        progress.set(1.0)
        return (videos,)

    def _takes(self, engine: Engine, progress: runtime.Progress, options: JobOptions, voice: Any,
               given: tuple[Any, Any, str, float], faces: Any) -> list[Take]:  # fmt: skip
        if faces is not None and voice is None:
            if not faces["voiced"]:
                raise NodeError("connect a voice (AUDIO) to Lip-sync or to Detect Face")
            return list(faces["takes"])
        if voice is None:
            raise NodeError("connect a voice (AUDIO): a clip from Load Voice or Text to Speech")
        sound = audio_to_wav(voice, engine.files)
        if faces is not None:  # the same avatars with this voice (validate and detect reuse their caches)
            first = faces["takes"][0].spec.options
            options = changed(options, style=first.style, face=first.face)
            avatars = [engine.avatar_file(t) for t in faces["takes"]]
        else:
            avatars = _avatars(engine, *given)
        return engine.begin(sound, avatars, options, progress.part(0.0, 0.2))


class Enhance:
    """The finishing pass: loudness to the broadcast target, light denoise and sharpening."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "video": ("VIDEO",),
                "sharpen": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "light denoise and sharpening (loudness is always evened)"},
                ),
            }
        }

    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    FUNCTION = "enhance"
    CATEGORY = CATEGORY

    @as_sentences
    def enhance(self, video: Any, sharpen: bool) -> tuple[Any]:
        engine = Engine.get()
        progress = runtime.Progress()
        take = _take_of(video, engine, progress).with_options(enhance=sharpen)
        done = engine.finish(take, progress.part(0.5, 1.0))
        assert done.video is not None
        return (_video(done.video, done),)


class Subtitles:
    """Subtitles from the voice's words (Whisper, or the transcript given): a soft track or burned in."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"video": ("VIDEO",), "mode": (["burn", "soft"], {"default": "burn"})}}

    RETURN_TYPES = ("VIDEO", "STRING")
    RETURN_NAMES = ("video", "srt")
    FUNCTION = "subtitle"
    CATEGORY = CATEGORY

    @as_sentences
    def subtitle(self, video: Any, mode: str) -> tuple[Any, str]:
        engine = Engine.get()
        progress = runtime.Progress()
        take = _take_of(video, engine, progress).with_options(subtitles=mode)
        done = engine.finish(take, progress.part(0.5, 1.0))
        assert done.video is not None
        return (_video(done.video, done), done.subtitles)


class Background:
    """Blur or replace what is behind the person (a weightless GrabCut matte seeded by the face track)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "video": ("VIDEO",),
                "mode": (["blur", "replace"], {"default": "blur"}),
                "strength": ("INT", {"default": 30, "min": 1, "max": 100, "tooltip": "blur: how strong"}),
            },
            "optional": {"picture": ("IMAGE", {"tooltip": "replace: the new background"})},
        }

    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    FUNCTION = "background"
    CATEGORY = CATEGORY

    @as_sentences
    def background(self, video: Any, mode: str, strength: int, picture: Any = None) -> tuple[Any]:
        from mouthpiece_comfyui.composite import composite_take

        engine = Engine.get()
        progress = runtime.Progress()
        if mode == "replace" and picture is None:
            raise NodeError("replace needs a background picture: connect an IMAGE to 'picture'")
        take = _take_of(video, engine, progress)
        done = composite_take(engine, take, mode, strength, picture, progress)
        return (_video(done.video, done),) if done.video is not None else (video,)


class IfFace:
    """Pass on one of two videos by Detect Face's ``has_face``; only the branch taken is run."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "has_face": ("BOOLEAN", {"forceInput": True}),
                "with_face": ("VIDEO", {"lazy": True}),
                "without_face": ("VIDEO", {"lazy": True}),
            }
        }

    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    FUNCTION = "choose"
    CATEGORY = CATEGORY

    def check_lazy_status(self, has_face: bool, with_face: Any = None, without_face: Any = None) -> list[str]:
        return ["with_face"] if has_face else ["without_face"]

    def choose(self, has_face: bool, with_face: Any = None, without_face: Any = None) -> tuple[Any]:
        return (with_face if has_face else without_face,)


def _register() -> tuple[dict[str, type], dict[str, str]]:
    from mouthpiece_comfyui.delivery import Notify, Submit, Upload

    classes: dict[str, tuple[type, str]] = {
        "MouthpieceLoadVoice": (LoadVoice, "Load Voice (mouthpiece)"),
        "MouthpieceTextToSpeech": (TextToSpeech, "Text to Speech (mouthpiece)"),
        "MouthpieceDetectFace": (DetectFace, "Detect Face (mouthpiece)"),
        "MouthpieceLipSync": (LipSync, "Lip-sync (mouthpiece)"),
        "MouthpieceEnhance": (Enhance, "Enhance (mouthpiece)"),
        "MouthpieceSubtitles": (Subtitles, "Subtitles (mouthpiece)"),
        "MouthpieceBackground": (Background, "Background (mouthpiece)"),
        "MouthpieceIfFace": (IfFace, "If Face (mouthpiece)"),
        "MouthpieceUpload": (Upload, "Upload to Bucket (mouthpiece)"),
        "MouthpieceNotify": (Notify, "Notify Discord (mouthpiece)"),
        "MouthpieceSubmit": (Submit, "Submit to mouthpiece"),
    }
    return {k: v[0] for k, v in classes.items()}, {k: v[1] for k, v in classes.items()}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _register()
