"""The error tree every stage and service raises.

    MouthpieceError                 base; carries job_id, stage and key when known
    ├── RetryableError(defer)       transient: try again after ``defer`` seconds (runner naks)
    ├── PermanentError              retrying cannot help (runner terms, writes a failure record)
    │   ├── InvalidInput            the user's input is bad; ``reason`` is shown to the user
    │   │   ├── NoFaceFound         an avatar without any face in it
    │   │   └── InvalidKey          an unsafe or malformed object key
    │   └── ConfigError             the deployment is misconfigured (missing model, bad setting)
    └── StorageError                the object store failed (retryable by default)
        └── ObjectNotFound          a key that does not exist

The runner is the only place that turns these into acks, naks and terms; any other exception is treated
as retryable (it may be a crash of a flaky dependency) until the delivery limit dead-letters it.
"""

from __future__ import annotations


class MouthpieceError(Exception):
    """Base error. ``reason`` is a sentence a person understands; the context fields locate it."""

    def __init__(
        self,
        reason: str,
        *,
        job_id: str | None = None,
        stage: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id
        self.stage = stage
        self.key = key

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

    def __init__(self, reason: str, *, defer: float = 5.0, **context: str | None) -> None:
        super().__init__(reason, **context)
        self.defer = defer


class PermanentError(MouthpieceError):
    """Retrying cannot help: the runner terms the message and records the failure."""


class InvalidInput(PermanentError):
    """The user's input cannot be processed; the reason names the file and what is wrong with it."""


class NoFaceFound(InvalidInput):
    """An avatar in which no face could be found on any frame."""


class ConfigError(PermanentError):
    """The deployment is misconfigured: a missing model file, an unusable setting."""


class StorageError(RetryableError):
    """The object store failed; usually transient (a restarting server)."""


class ObjectNotFound(StorageError):
    """The key does not exist in the bucket."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"{bucket}/{key} does not exist", key=key, defer=2.0)
        self.bucket = bucket


class InvalidKey(InvalidInput):
    """An object key that is unsafe or malformed (``..``, absolute, NUL, too long)."""
