"""The error tree every stage and service raises. Every class of error in mouthpiece lives here.

    MouthpieceError                 base: a stable ``code``, a ``reason``, and job_id/stage/key when known
    ├── RetryableError(defer)       the environment failed: the runner naks, the stage runs again later
    │   ├── StorageError            the object store failed
    │   │   └── ObjectNotFound      a key that does not exist (yet)
    │   ├── BusError                NATS failed
    │   ├── FFmpegError             ffmpeg failed on our own files (an input that will not decode is
    │   │                           turned into InvalidInput where it is read)
    │   ├── AlignmentError          the speech aligner found nothing usable (callers fall back)
    │   └── StageStopped            the worker stopped while the stage ran (drain over, claim lost)
    ├── PermanentError              retrying cannot help: the runner terms and records the failure
    │   ├── InvalidInput            the user's input is bad; ``reason`` is shown to the user
    │   │   ├── NoFaceFound         an avatar with no face on any frame
    │   │   ├── InvalidKey          an unsafe or malformed object key
    │   │   ├── PictureTooLarge     an image declaring more pixels than any limit (never decoded)
    │   │   ├── UploadTooLarge      a request to the console carrying more bytes than it may
    │   │   └── DropRefused         a drop in the watched folder that cannot become a job
    │   ├── ConfigError             the deployment is misconfigured (missing model, bad setting)
    │   │   └── EspeakMissing       no eSpeak NG library (the ``voice`` extra)
    │   ├── StageContractBroken     a stage was given, or handed on, a manifest without a role its
    │   │                           contract names (``requires`` / ``provides``): a bug or a bad chain
    │   ├── JobCancelled            someone cancelled the job
    │   └── DiscordError            Discord refused a request
    │       ├── WebhookGone         the webhook or interaction token no longer exists
    │       └── AttachmentTooLarge  the file is over the channel's upload limit
    └── SignatureError              a request to the ingress is not signed by Discord

Failures of the environment are retryable, failures of the input are not. The runner is the only place
that turns these into acks, naks and terms; any other exception is a bug: it is retried like a
``RetryableError`` and reported to users as an internal error with a reference (the job id), in full
to the operators' logs. ``code`` is stable (stored in records and status); ``pipeline.messages``
turns it into the sentence people read.
"""

from __future__ import annotations

from collections.abc import Mapping


class MouthpieceError(Exception):
    """Base error. ``reason`` is a sentence a person understands; ``code`` names the kind of failure
    (stable, for records, metrics and the message catalogue); the context fields locate it."""

    code = "error"

    def __init__(
        self,
        reason: str,
        *,
        code: str | None = None,
        job_id: str | None = None,
        stage: str | None = None,
        key: str | None = None,
        params: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code or type(self).code
        self.job_id = job_id
        self.stage = stage
        self.key = key
        self.params = dict(params or {})

    def bind(self, *, job_id: str | None = None, stage: str | None = None) -> MouthpieceError:
        """Fill in the job and stage where the raiser did not know them; returns self."""
        self.job_id = self.job_id or job_id
        self.stage = self.stage or stage
        return self

    def context(self) -> dict[str, str]:
        """The known location fields, for log lines and failure records."""
        fields = {"job_id": self.job_id, "stage": self.stage, "key": self.key}
        return {k: v for k, v in fields.items() if v}

    def __str__(self) -> str:
        return self.reason


class RetryableError(MouthpieceError):
    """A transient failure: the runner naks the message and it comes back after ``defer`` seconds."""

    code = "temporary_failure"

    def __init__(
        self,
        reason: str,
        *,
        defer: float = 5.0,
        code: str | None = None,
        job_id: str | None = None,
        stage: str | None = None,
        key: str | None = None,
        params: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(reason, code=code, job_id=job_id, stage=stage, key=key, params=params)
        self.defer = defer


class PermanentError(MouthpieceError):
    """Retrying cannot help: the runner terms the message and records the failure."""

    code = "failed"


class InvalidInput(PermanentError):
    """The user's input cannot be processed; the reason names the file and what is wrong with it."""

    code = "invalid_input"


class NoFaceFound(InvalidInput):
    """An avatar in which no face could be found on any frame."""

    code = "no_face"


class InvalidKey(InvalidInput):
    """An object key that is unsafe or malformed (``..``, absolute, NUL, too long)."""

    code = "invalid_key"


class DropRefused(InvalidInput):
    """A drop in the watched folder that cannot become a job; the reason is the note the user gets."""

    code = "drop_refused"


class PictureTooLarge(InvalidInput):
    """An image whose header declares more pixels than any limit allows (a decompression bomb, a scan);
    refused without decoding it. The caller names the file in the sentence people read."""

    code = "too_large"

    def __init__(self, pixels: int) -> None:
        super().__init__(f"the picture has {pixels} pixels")
        self.pixels = pixels


class UploadTooLarge(InvalidInput):
    """A request body over its cap (the console's uploads): refused before it is read."""

    code = "file_too_large"

    def __init__(self, limit: int) -> None:
        if limit >= 1024 * 1024:
            super().__init__(
                f"the upload is larger than {limit // (1024 * 1024)} MB in all: send smaller files"
            )
        else:
            super().__init__(f"the form is larger than {limit // 1024} KB")
        self.limit = limit


class ConfigError(PermanentError):
    """The deployment is misconfigured: a missing model file, an unusable setting."""

    code = "config"


class EspeakMissing(ConfigError):
    """The eSpeak NG library is not installed (the ``voice`` extra): text cannot be spoken here."""

    code = "tts_unavailable"


class StageContractBroken(PermanentError):
    """A stage's input lacks a role it ``requires``, or its output one it ``provides`` (the runner
    checks both); ``stage`` and ``params["role"]`` name them."""

    code = "stage_contract"


class JobCancelled(PermanentError):
    """Someone cancelled the job: nothing more is run or published."""

    code = "cancelled"


class DiscordError(PermanentError):
    """Discord refused a request (the reason says what it answered)."""

    code = "discord_refused"


class WebhookGone(DiscordError):
    """The webhook (or interaction token) no longer exists: do not try it again."""

    code = "discord_gone"


class AttachmentTooLarge(DiscordError):
    """The attachment is over the channel's upload limit."""

    code = "discord_too_large"


class StorageError(RetryableError):
    """The object store failed; usually transient (a restarting server)."""

    code = "storage_unavailable"


class ObjectNotFound(StorageError):
    """The key does not exist in the bucket."""

    code = "object_missing"

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"{bucket}/{key} does not exist", key=key, defer=2.0)
        self.bucket = bucket


class BusError(RetryableError):
    """NATS did not take or give a message; usually transient (a restarting server)."""

    code = "bus_unavailable"


class FFmpegError(RetryableError):
    """ffmpeg failed. ``detail`` is its last error lines, for operators' logs only (never shown to
    users). Where the file is the user's input, the caller turns this into ``InvalidInput``."""

    code = "encoder_failed"

    def __init__(self, reason: str, detail: str = "", *, key: str | None = None) -> None:
        super().__init__(reason, key=key)
        self.detail = detail


class AlignmentError(RetryableError):
    """The speech aligner could not time this audio (silence, noise, or a transcript it does not
    match); callers fall back to the next method."""

    code = "alignment_failed"


class StageStopped(RetryableError):
    """The worker stopped while the stage ran (drain time over, or its claim was taken over); nothing
    the stage made is written, and the task runs again elsewhere."""

    code = "stopped"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, defer=0.0)


class SignatureError(MouthpieceError):
    """A request to the HTTP ingress whose Discord signature does not verify (answered 401)."""

    code = "bad_signature"
