"""Nodes that take a video somewhere: a bucket (Upload), a Discord channel (Notify), a running
mouthpiece (Submit).

Credentials come from the settings (``MOUTHPIECE_S3_ACCESS_KEY``/``MOUTHPIECE_S3_SECRET_KEY``,
``MOUTHPIECE_DISCORD_COMFYUI_WEBHOOK``, read once by the engine) or from widgets; widget values are saved inside the workflow (and in
the metadata of what ComfyUI saves), so the environment is the place for secrets. No node output, log
line or error names a credential or a webhook's token.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from pydantic import SecretStr

from mouthpiece_comfyui import runtime
from mouthpiece_comfyui.engine import Engine, NodeError
from mouthpiece_comfyui.media import audio_to_wav, images_to_files
from mouthpiece_comfyui.nodes import CATEGORY, RENDERERS, TAKE_ATTRIBUTE, as_sentences
from pipeline.config import Settings, StorageSettings
from pipeline.contracts import JobOptions, JobStatus
from pipeline.errors import InvalidInput
from pipeline.storage import open_store

WEBHOOK_ENV = "MOUTHPIECE_DISCORD_COMFYUI_WEBHOOK"
T = TypeVar("T")


def _secret(widget: str, configured: SecretStr | None) -> SecretStr | None:
    """A widget's secret when filled in, else the configured one."""
    return SecretStr(widget.strip()) if widget.strip() else configured


def _file_name(video: Any, path: Path) -> str:
    take = getattr(video, TAKE_ATTRIBUTE, None)
    stem = take.spec.name if take is not None and take.spec.name else path.stem
    return f"{stem}.mp4"


class Upload:
    """Put the video into an S3 bucket (MinIO, SeaweedFS, AWS...); its ``s3://`` address and a link."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "video": ("VIDEO",),
                "bucket": ("STRING", {"default": "outputs"}),
                "prefix": (
                    "STRING",
                    {"default": "comfyui/", "tooltip": "key prefix (a folder in the bucket)"},
                ),
                "endpoint": (
                    "STRING",
                    {"default": "", "tooltip": "host:port of the S3 API; empty: MOUTHPIECE_S3_ENDPOINT"},
                ),
                "secure": ("BOOLEAN", {"default": False, "tooltip": "https"}),
                "link_hours": (
                    "INT",
                    {
                        "default": 24,
                        "min": 0,
                        "max": 168,
                        "tooltip": "hours the returned link works; 0: no link",
                    },
                ),
            },
            "optional": {
                "region": ("STRING", {"default": ""}),
                "access_key": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "empty: MOUTHPIECE_S3_ACCESS_KEY (widgets are saved in the workflow)",
                    },
                ),
                "secret_key": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "empty: MOUTHPIECE_S3_SECRET_KEY (widgets are saved in the workflow)",
                    },
                ),
            },
        }

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("address", "link")
    FUNCTION = "upload"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    @as_sentences
    def upload(self, video: Any, bucket: str, prefix: str, endpoint: str, secure: bool, link_hours: int,
               region: str = "", access_key: str = "", secret_key: str = "") -> dict[str, Any]:  # fmt: skip
        engine = Engine.get()
        progress = runtime.Progress()
        configured = engine.settings
        settings = StorageSettings(
            store="s3",
            s3_endpoint=endpoint.strip() or configured.s3_endpoint,
            s3_secure=secure,
            s3_region=region.strip() or configured.s3_region,
            s3_access_key=_secret(access_key, configured.s3_access_key),
            s3_secret_key=_secret(secret_key, configured.s3_secret_key),
        )
        path = runtime.video_path(video, engine.files)
        key = str(PurePosixPath(prefix.strip().strip("/")) / _file_name(video, path)).lstrip("./")
        store = open_store(settings)
        ensure = getattr(store, "ensure_buckets", None)
        if ensure is not None:
            ensure([bucket])
        progress.set(0.2)
        store.put(bucket, key, path, content_type="video/mp4")
        progress.set(0.9)
        link = (
            store.presigned_url(bucket, key, link_hours * 3600)
            if link_hours and hasattr(store, "presigned_url")
            else ""
        )
        progress.set(1.0)
        address = f"s3://{bucket}/{key}"
        return {"ui": {"text": [address]}, "result": (address, link)}


class Notify:
    """Post a message (and the video, when it fits Discord's limit) to a Discord channel webhook,
    checked against the deployment's allowed webhook hosts as every destination is."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"message": ("STRING", {"multiline": True, "default": "Your video is ready."})},
            "optional": {
                "video": ("VIDEO", {"tooltip": "attached when it fits the attachment limit"}),
                "link": ("STRING", {"forceInput": True, "tooltip": "added to the message (Upload's link)"}),
                "webhook_url": (
                    "STRING",
                    {"default": "", "tooltip": f"empty: {WEBHOOK_ENV} (widgets are saved in the workflow)"},
                ),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("message_id",)
    FUNCTION = "notify"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    @as_sentences
    def notify(
        self, message: str, video: Any = None, link: str = "", webhook_url: str = ""
    ) -> dict[str, Any]:
        from pipeline.destinations import allowed_webhook
        from pipeline.discord.api import Attachment, execute_webhook

        engine = Engine.get()
        progress = runtime.Progress()
        secret = _secret(webhook_url, engine.settings.discord_comfyui_webhook)
        if secret is None:
            raise NodeError(
                f"no Discord webhook: set {WEBHOOK_ENV} where ComfyUI runs, or fill in webhook_url"
            )
        hook = allowed_webhook(engine.settings, secret, "the Notify node's webhook")
        text = "\n".join(part for part in (message.strip(), link.strip()) if part)
        attachment = None
        if video is not None:
            path = runtime.video_path(video, engine.files)
            if path.stat().st_size <= engine.settings.discord_attachment_limit:
                attachment = Attachment(path, _file_name(video, path))
            elif not link:
                text += "\n(the video is too large to attach; connect Upload's link)"
        progress.set(0.3)
        message_id = execute_webhook(hook, text or None, attachment, timeout=60.0)
        progress.set(1.0)
        return {"ui": {"text": ["posted"]}, "result": (message_id or "",)}


class Submit:
    """Hand the voice and avatars to a running mouthpiece (``mouthpiece up`` on a data folder, or a
    cluster through its bucket and bus) and follow the job: its stages' progress moves this node's bar;
    Cancel cancels the job. The finished videos come back as ``VIDEO``s."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "voice": ("AUDIO",),
                "renderer": (RENDERERS, {"default": "viseme"}),
                "subtitles": (["none", "soft", "burn"], {"default": "none"}),
                "data_dir": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "the running mouthpiece's data folder; empty: MOUTHPIECE_DATA_DIR / its settings",
                    },
                ),
                "timeout_minutes": ("INT", {"default": 30, "min": 1, "max": 24 * 60}),
            },
            "optional": {"image": ("IMAGE",), "video": ("VIDEO",)},
        }

    RETURN_TYPES = ("VIDEO", "STRING")
    RETURN_NAMES = ("video", "job_id")
    OUTPUT_IS_LIST = (True, False)
    FUNCTION = "submit"
    CATEGORY = CATEGORY

    @as_sentences
    def submit(self, voice: Any, renderer: str, subtitles: str, data_dir: str, timeout_minutes: int,
               image: Any = None, video: Any = None) -> tuple[list[Any], str]:  # fmt: skip
        engine = Engine.get()
        progress = runtime.Progress()
        settings = Settings()
        if data_dir.strip():
            settings = settings.model_copy(update={"data_dir": Path(data_dir.strip()).expanduser()})
        avatars = images_to_files(image, engine.files) if image is not None else []
        if video is not None:
            avatars.append(runtime.video_path(video, engine.files))
        sound = audio_to_wav(voice, engine.files)
        options = JobOptions.model_validate({"renderer": renderer, "subtitles": subtitles})
        folder = engine.files / "submitted"
        follow = _submit_and_follow(
            settings, sound, avatars, options, progress, timeout_minutes * 60.0, folder
        )
        job_id, files = in_own_loop(follow)
        return ([runtime.video_from_file(f) for f in files], job_id)


def in_own_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end on an event loop of its own, in a thread: ComfyUI calls nodes from inside
    its running loop (where ``asyncio.run`` is refused), and the node must not block that loop's other
    tasks on the bus. The thread keeps the node's context (ComfyUI's executing node, for the bar)."""
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="mouthpiece-submit") as pool:
        return pool.submit(context.run, asyncio.run, work).result()


async def _submit_and_follow(
    settings: Settings, voice: Path, avatars: list[Path], options: JobOptions, progress: runtime.Progress,
    timeout: float, folder: Path,
) -> tuple[str, list[Path]]:  # fmt: skip
    from pipeline.contracts import Progress as StageProgress
    from pipeline.control import cancel_job
    from pipeline.keys import progress_subject
    from pipeline.stack import Stack, running_stack
    from pipeline.status import job_status
    from pipeline.submit import Submission, submit

    if settings.nats_url is None and running_stack(settings) is None:
        raise NodeError(
            f"no mouthpiece is running on {settings.data_dir}: start `mouthpiece up` there, or set MOUTHPIECE_NATS_URL"
        )
    stack = await Stack.open(settings, mode="attach")
    try:
        asked = Submission(audio=voice, avatars=tuple(avatars), options=options, source="comfyui")
        submitted = await asyncio.to_thread(submit, stack.store, settings, asked)
        job_id = submitted.job_id
        chain = list(settings.chain)
        live: dict[str, float] = {}

        async def on_progress(data: bytes) -> None:
            note = StageProgress.model_validate_json(data)
            if note.stage in chain:
                live[note.task] = (chain.index(note.stage) + note.fraction) / len(chain)

        await stack.bus.subscribe(progress_subject(settings, job_id), on_progress)
        deadline = time.monotonic() + timeout
        while True:
            try:
                progress.check()
            except BaseException:
                await cancel_job(stack.store, settings, stack.bus, job_id, by="comfyui")
                raise
            status: JobStatus | None = await asyncio.to_thread(job_status, stack.store, settings, job_id)
            if status is not None and status.finished:
                break
            if time.monotonic() > deadline:
                raise NodeError(
                    f"job {job_id} did not finish within {timeout / 60:.0f} minutes; it goes on in mouthpiece"
                )
            if live:
                progress.set(min(0.99, sum(live.values()) / max(1, len(avatars) or 1)))
            await asyncio.sleep(0.3)
        if status.state.value != "done":
            raise NodeError(
                f"job {job_id} {status.state.value}: {status.reason or 'see mouthpiece status ' + job_id}"
            )
        files = []
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"{settings.bucket_outputs}/"
        for where in status.outputs:  # "bucket/key" of each published copy (and other destinations)
            key = where.removeprefix(prefix)
            if where.startswith(prefix) and key.endswith(".mp4"):
                dst = folder / f"{job_id}-{PurePosixPath(key).name}"
                await asyncio.to_thread(stack.store.download, settings.bucket_outputs, key, dst)
                files.append(dst)
        if not files:
            raise InvalidInput(f"job {job_id} finished without a video")
        progress.set(1.0)
        return job_id, files
    finally:
        await stack.close()
