"""The new-job form: a capped request body, files sniffed as Discord attachments are, and a submission
through ``pipeline.submit.submit`` (the folder drop's path).

The whole body is capped at twice ``max_input_bytes`` (plus 1 MiB for the fields) while it streams in,
and refused at once when its declared length is larger; each file is capped at ``max_input_bytes``.
Each file's first bytes must be audio or video (the voice) or an image or video (the faces), whatever
its name says; it is saved under its real format's extension and shown to people by the name they
gave it.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from pipeline.config import Settings
from pipeline.contracts import FolderDestination, JobOptions
from pipeline.discord.fetch import AUDIO_HINT, IMAGE_HINT, Kind, sniff
from pipeline.errors import InvalidInput
from pipeline.media import looks_like
from pipeline.models import wav2lip_unavailable
from pipeline.owner import scratch_folder
from pipeline.registry import speech_unavailable
from pipeline.specfile import job_options
from pipeline.storage.base import ObjectStore
from pipeline.submit import MAX_AVATARS, Submission, Submitted, job_name, slug, submit, too_large

FIELDS_BYTES = 1024 * 1024
SMALL_FORM_BYTES = 64 * 1024
VOICE = frozenset({Kind.audio, Kind.video})
FACE = frozenset({Kind.image, Kind.video})
OPTION_FIELDS = ("renderer", "style", "motion", "subtitles", "transcript")


class TooLarge(Exception):
    """The request body is over its cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload is larger than {limit // (1024 * 1024)} MB in all")
        self.limit = limit


def body_limit(settings: Settings, request: Request) -> int:
    """How many bytes a POST may carry: a multipart upload two files' worth, any other form 64 KiB."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return 2 * settings.max_input_bytes + FIELDS_BYTES
    return SMALL_FORM_BYTES


async def capped_form(request: Request, limit: int) -> FormData:
    """The request's form, read with at most ``limit`` bytes of body (``TooLarge`` past it). Files are
    spooled to disk by the parser, not held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(limit)
    received = 0
    receive = request.receive

    async def counting() -> Any:
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise TooLarge(limit)
        return message

    capped = Request(request.scope, counting)
    return await capped.form(max_files=MAX_AVATARS + 2, max_fields=40)


@dataclass
class NewJob:
    """What the form asked for, checked: files saved under ``folder`` by their real format."""

    folder: Path
    audio: Path | None
    avatars: list[Path]
    speech: str | None
    options: JobOptions
    name: str
    labels: dict[Path, str]

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _files(form: FormData, name: str) -> list[UploadFile]:
    return [f for f in form.getlist(name) if isinstance(f, UploadFile) and f.filename]


def read_options(form: FormData) -> JobOptions:
    """Job options from the form's fields; a refusal names what is wrong."""
    return job_options(
        {k: v for k in OPTION_FIELDS if k in JobOptions.model_fields and (v := _text(form, k))}
    )


def unavailable(settings: Settings) -> dict[str, str]:
    """What this install cannot do, by form field (``speech``, ``wav2lip``), with why: on one machine
    (no ``nats_url``) the console's installation is the workers', so the page can offer only what works;
    with workers elsewhere (a GPU pool with the neural extra) it cannot know, and offers everything."""
    if settings.nats_url:
        return {}
    found = {"speech": speech_unavailable(), "wav2lip": wav2lip_unavailable(settings)}
    return {name: reason for name, reason in found.items() if reason is not None}


async def read_new_job(form: FormData, settings: Settings) -> NewJob:
    """Check and save the form's files; ``InvalidInput`` with a sentence naming the file otherwise."""
    voices, faces, speech = _files(form, "voice"), _files(form, "faces"), _text(form, "speech")
    missing = unavailable(settings)
    if speech is not None and "speech" in missing:
        raise InvalidInput(
            f"this installation cannot speak a text: {missing['speech']}", code="invalid_input"
        )
    if _text(form, "renderer") == "wav2lip" and "wav2lip" in missing:
        raise InvalidInput(f"this installation cannot render with {missing['wav2lip']}", code="invalid_input")
    if len(voices) > 1:
        raise InvalidInput("give one voice clip (or text to speak), not several", code="invalid_input")
    if bool(voices) == bool(speech):
        raise InvalidInput("give a voice clip or text to speak (one of the two)", code="audio_missing")
    if speech is not None and len(speech) > 2000:
        raise InvalidInput(
            f"the text is {len(speech)} characters long; the limit is 2000", code="invalid_input"
        )
    if len(faces) > MAX_AVATARS:
        raise InvalidInput(
            f"{len(faces)} photos were given; a job takes at most {MAX_AVATARS}", code="too_many_avatars"
        )
    options = read_options(form)
    folder = scratch_folder(settings.data_dir, "mp-console")
    job = NewJob(folder, None, [], speech, options, "", {})
    try:
        if voices:
            job.audio = await _save(voices[0], folder / "voice", "voice clip", VOICE, settings)
            job.labels[job.audio] = _shown(voices[0])
        for index, face in enumerate(faces):
            path = await _save(face, folder / f"face{index}", "photo", FACE, settings)
            job.avatars.append(path)
            job.labels[path] = _shown(face)
    except BaseException:
        job.close()
        raise
    given = _text(form, "name")
    job.name = job_name(given or (PurePosixPath(_shown(voices[0])).stem if voices else "speech"))
    return job


def _shown(upload: UploadFile) -> str:
    name = PurePosixPath((upload.filename or "file").replace("\\", "/")).name
    return "".join(c for c in name if c.isprintable())[:200] or "file"


async def _save(
    upload: UploadFile, folder: Path, what: str, accept: frozenset[Kind], settings: Settings
) -> Path:
    name = _shown(upload)
    size = upload.size or 0
    if size > settings.max_input_bytes:
        raise InvalidInput(too_large(name, size, settings.max_input_bytes), code="file_too_large")
    if size == 0:
        raise InvalidInput(f"{name} is empty: choose the file again", code="file_empty")
    head = await upload.read(4096)
    sniffed = sniff(head)
    if sniffed is None or sniffed.kind not in accept:
        raise InvalidInput(_refusal(name, what, accept, head), code="not_media")
    folder.mkdir(parents=True)
    target = folder / f"{slug(PurePosixPath(name).stem, 60)}{sniffed.ext}"
    await upload.seek(0)
    with target.open("wb") as out:
        while chunk := await upload.read(1024 * 1024):
            out.write(chunk)
    return target


def _refusal(name: str, what: str, accept: frozenset[Kind], head: bytes) -> str:
    looks = looks_like(head)
    said = f" (it is {looks})" if looks else ""
    if Kind.audio in accept:
        return f"{name} is not audio or a video{said}: {AUDIO_HINT}"
    return f"{name} is not an image or a video{said}: {IMAGE_HINT}"


def submit_new_job(store: ObjectStore, settings: Settings, job: NewJob) -> Submitted:
    """Submit the checked job the way a folder drop is (blocking: run in a thread). On one machine (the
    local store) its video goes to the outbox too, as a drop's does."""
    submission = Submission(
        audio=job.audio,
        avatars=tuple(job.avatars),
        name=job.name,
        options=job.options,
        speech=job.speech,
        source="console",
        destinations=(FolderDestination(),) if settings.store == "local" else (),
        nonce=uuid.uuid4().hex,
        labels=job.labels,
    )
    return submit(store, settings, submission)
