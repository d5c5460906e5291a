"""The new-job form: a capped request body, files sniffed as Discord attachments are, and a submission
through ``pipeline.submit.submit`` (the folder drop's path).

Nothing here runs before the request is allowed (``ConsoleBase._guard``: sign-in, Host, Origin, CSRF).
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

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.types import Message, Receive

from pipeline.config import Settings
from pipeline.contracts import FolderDestination, JobOptions, offered
from pipeline.errors import InvalidInput, UploadTooLarge
from pipeline.media import looks_like
from pipeline.media.sniff import AUDIO_HINT, HEAD_BYTES, IMAGE_HINT, Kind, sniff
from pipeline.modelfiles import wav2lip_unavailable
from pipeline.owner import scratch_folder
from pipeline.specfile import job_options
from pipeline.stage import speech_unavailable
from pipeline.storage.base import ObjectStore
from pipeline.submit import MAX_AVATARS, Submission, Submitted, job_name, slug, submit, too_large

FIELDS_BYTES = 1024 * 1024
SMALL_FORM_BYTES = 64 * 1024
PUBLIC_FORM_BYTES = 4 * 1024
"""The most a sign-in or sign-out form (public routes) may carry."""
FIRST_FIELD_BYTES = 4 * 1024
"""The most of an upload read to find its CSRF token (its first field) before the token is checked."""
VOICE = frozenset({Kind.audio, Kind.video})
FACE = frozenset({Kind.image, Kind.video})
OPTION_FIELDS = tuple(offered("form"))  # the new-job form's options, declared on JobOptions


def body_limit(settings: Settings, multipart: bool, *, public: bool = False) -> int:
    """How many bytes a POST may carry: a public form (sign-in, sign-out) 4 KiB, a multipart upload two
    files' worth, any other form 64 KiB."""
    if public:
        return PUBLIC_FORM_BYTES
    if multipart:
        return 2 * settings.max_input_bytes + FIELDS_BYTES
    return SMALL_FORM_BYTES


def declared_length(request: Request) -> int:
    """The body's declared length (0 when none is declared; a chunked body is capped as it streams)."""
    declared = request.headers.get("content-length", "").strip()
    return int(declared) if declared.isdigit() and len(declared) < 19 else 0


async def capped_form(request: Request, limit: int, receive: Receive | None = None) -> FormData:
    """The request's form, read through ``receive`` (the request's own by default) with at most
    ``limit`` bytes of body (``UploadTooLarge`` past it). Files are spooled to disk by the parser, not held
    in memory."""
    if declared_length(request) > limit:
        raise UploadTooLarge(limit)
    received = 0
    source = receive or request.receive

    async def counting() -> Message:
        nonlocal received
        message = await source()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise UploadTooLarge(limit)
        return message

    capped = Request(request.scope, counting)
    return await capped.form(max_files=MAX_AVATARS + 2, max_fields=40)


async def first_field(request: Request, name: str) -> tuple[str | None, Receive]:
    """The value of a multipart body's first part when that part is the plain field ``name`` (the
    console's form puts its CSRF token first), read with at most ``FIRST_FIELD_BYTES`` of the body; and
    a ``receive`` that gives the body again from its start (to parse the form once the token is
    checked). None when the first part is anything else, or is not complete within the limit."""
    boundary = _boundary(request.headers.get("content-type", ""))
    seen: list[Message] = []
    data, more, value = b"", True, None
    while boundary and more and len(data) <= FIRST_FIELD_BYTES:
        message = await request.receive()
        seen.append(message)
        if message.get("type") != "http.request":
            break
        data += message.get("body", b"")
        more = bool(message.get("more_body", False))
        value, done = _first_part(data, boundary, name)
        if done:
            break

    async def replay() -> Message:
        return seen.pop(0) if seen else await request.receive()

    return value, replay


def _boundary(content_type: str) -> bytes | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip().strip('"')
            return value.encode("latin-1") if 0 < len(value) <= 70 else None
    return None


def _first_part(data: bytes, boundary: bytes, name: str) -> tuple[str | None, bool]:
    """(value, done): the first part's value if it is the plain field ``name``; done once that is
    known either way (the part is complete, or is something else)."""
    opening = b"--" + boundary + b"\r\n"
    if len(data) < len(opening):
        return None, False
    if not data.startswith(opening):
        return None, True
    headers_end = data.find(b"\r\n\r\n", len(opening))
    if headers_end < 0:
        return None, False
    headers = data[len(opening) : headers_end].decode("latin-1").lower()
    disposition = next((h for h in headers.split("\r\n") if h.startswith("content-disposition:")), "")
    params = [p.strip() for p in disposition.split(";")]
    if "filename" in disposition or f'name="{name}"' not in params:
        return None, True
    end = data.find(b"\r\n--" + boundary, headers_end + 4)
    if end < 0:
        return None, False
    raw = data[headers_end + 4 : end]
    return (raw.decode("ascii") if len(raw) <= 200 and raw.isascii() else None), True


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
    head = await upload.read(HEAD_BYTES)
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


def submit_new_job(
    store: ObjectStore, settings: Settings, job: NewJob, characters: tuple[str, ...] = ()
) -> Submitted:
    """Submit the checked job the way a folder drop is (blocking: run in a thread); ``characters`` are
    names in the default library. On one machine (the local store) its video goes to the outbox too, as a
    drop's does."""
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
        characters=characters,
    )
    return submit(store, settings, submission)
