"""The runner's decisions, as pure functions: no bus, no store, no clock of their own.

``admit`` decides what to do with a delivered message before anything runs, from the task's stage record
(durable, in the store) and its claim (the lock, in the claim store):

- the task is finished (done, failed, cancelled) → ``skip``: ack, it was a duplicate;
- another live worker runs it → ``busy`` (our message is the one it runs: nak, look again later) or
  ``duplicate`` (another message for the same task: ack, the owner's own message stays with it);
- its runs have used up the budget → ``exhausted``: dead letter;
- otherwise → ``run``, after closing the run of an owner that died (``crashed``).

``conclude`` decides what a run's outcome means: the ack/nak/term, the record's new state, whether the
claim is released or removed, whether to dead-letter and to tell the job's destinations.

Attempts are runs: only a stage actually starting on a task uses the budget (``max_deliver``); busy
naks, duplicates and redeliveries of a message whose run is alive never do, and a run that a stopping
worker handed back does not count either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pipeline.contracts import FINAL_STATES, Claim, Owner, Run, StageRecord, State
from pipeline.errors import JobCancelled, MouthpieceError, PermanentError, RetryableError, StageStopped

LIVENESS_BEATS = 4
"""A claim whose heartbeat is this many intervals old belongs to a worker that is gone."""


@dataclass(frozen=True)
class Admission:
    """What to do with a message before running anything."""

    kind: Literal["run", "skip", "busy", "duplicate", "exhausted"]
    runs: list[Run] = field(default_factory=list)
    """Earlier runs of this task (closed), for ``run`` and ``exhausted``."""
    note: str = ""


def counted(runs: Sequence[Run]) -> int:
    """Runs that use up the attempt budget."""
    return sum(1 for run in runs if run.counts)


def owner_alive(claim: Claim, now: datetime, heartbeat: float, dead: Callable[[Owner], bool]) -> bool:
    """Whether the claim's owner still runs: known dead on this host, or silent for too long."""
    if claim.state != "running" or claim.owner is None or dead(claim.owner):
        return False
    return (now - claim.heartbeat_at).total_seconds() < heartbeat * LIVENESS_BEATS


def admit(
    record: StageRecord | None,
    claim: Claim | None,
    message_id: str,
    now: datetime,
    *,
    heartbeat: float,
    max_runs: int,
    dead: Callable[[Owner], bool],
) -> Admission:
    """Decide what a delivered message gets (see the module docstring)."""
    if record is not None and record.state in FINAL_STATES:
        return Admission("skip", note=record.state.value)
    if claim is not None and owner_alive(claim, now, heartbeat, dead):
        return Admission("busy" if claim.message == message_id else "duplicate")
    runs = close_abandoned(claim.runs if claim else (record.runs if record else []), claim, now)
    if counted(runs) >= max_runs:
        return Admission("exhausted", runs)
    return Admission("run", runs)


def close_abandoned(
    runs: Sequence[Run], claim: Claim | None, now: datetime, why: str = "stopped answering"
) -> list[Run]:
    """The runs, with a run still marked running closed as ``crashed``: its worker is gone (``why``:
    it went silent, or it is known to have died)."""
    closed = []
    for run in runs:
        if run.outcome == "running":
            who = claim.owner.worker if claim and claim.owner else run.worker
            run = run.model_copy(
                update={"outcome": "crashed", "ended_at": now, "reason": f"worker {who} {why}"}
            )
        closed.append(run)
    return closed


def gave_up_reason(runs: Sequence[Run]) -> str:
    """The dead-letter reason: how many runs, and how each ended."""
    parts = [f"run {r.n} {r.outcome}" + (f" ({r.reason})" if r.reason else "") for r in runs]
    n = counted(runs)
    return f"gave up after {n} run{'s' if n != 1 else ''}: " + "; ".join(parts)


# --- after a run ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What a run's outcome means for the message, the record and the claim."""

    action: Literal["ack", "nak", "term", "abandon"]
    state: State | None
    outcome: str
    """How the run ended, as recorded in its ``Run``."""
    delay: float = 0.0
    code: str | None = None
    reason: str | None = None
    claim: Literal["remove", "release", "keep"] = "remove"
    dead_letter: bool = False
    tell: bool = False
    """Tell the job's destinations that it failed."""


def backoff_delay(table: Sequence[float], runs: int, at_least: float = 0.0) -> float:
    """The nak delay after ``runs`` counted runs: the table's entry for it (its last one after that)."""
    table = table or [5.0]
    return max(at_least, table[min(max(runs, 1), len(table)) - 1])


def conclude(
    error: BaseException | None,
    runs: Sequence[Run],
    *,
    max_runs: int,
    backoff: Sequence[float],
    lost: bool = False,
) -> Decision:
    """The decision for a run that ended with ``error`` (None: success). ``runs`` includes this run,
    already closed with ``outcome_of(error)``; ``lost`` says another worker took the task over."""
    if lost:  # the new owner's run is the task's now: write nothing, leave the message alone
        return Decision("abandon", None, "lost", claim="keep", reason="another worker took the task over")
    if error is None:
        return Decision("ack", State.done, "done")
    if isinstance(error, JobCancelled):
        return Decision("term", State.cancelled, "cancelled", code=error.code, reason=error.reason)
    if isinstance(error, StageStopped):  # the worker is stopping: the task goes back, not its fault
        return Decision(
            "nak", State.queued, "handed_back", code=error.code, reason=error.reason, claim="release"
        )
    if isinstance(error, PermanentError):
        return Decision("term", State.failed, "failed", code=error.code, reason=error.reason, tell=True)
    retryable = error if isinstance(error, RetryableError) else None
    code = retryable.code if retryable else "internal"
    reason = retryable.reason if retryable else f"internal error: {error!r}"
    if counted(runs) >= max_runs:
        return Decision(
            "term",
            State.failed,
            "retry",
            code="gave_up",
            reason=gave_up_reason(runs),
            dead_letter=True,
            tell=True,
        )
    delay = backoff_delay(backoff, counted(runs), retryable.defer if retryable else 0.0)
    return Decision(
        "nak", State.queued, "retry", delay, code, f"retrying in {delay:.0f}s: {reason}", "release"
    )


def outcome_of(error: BaseException | None) -> tuple[str, str | None]:
    """How a run that ended with ``error`` is recorded: (outcome, reason)."""
    if error is None:
        return "done", None
    reason = error.reason if isinstance(error, MouthpieceError) else f"internal error: {error!r}"
    if isinstance(error, JobCancelled):
        return "cancelled", reason
    if isinstance(error, StageStopped):
        return "handed_back", reason
    if isinstance(error, PermanentError):
        return "failed", reason
    return "retry", reason
