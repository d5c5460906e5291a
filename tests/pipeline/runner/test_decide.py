"""The runner's decisions, as pure functions: admission of a message and the meaning of an outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.contracts import Claim, Owner, Run, StageRecord, State
from pipeline.errors import ConfigError, InvalidInput, JobCancelled, RetryableError, StageStopped
from pipeline.runner.decide import admit, backoff_delay, conclude, counted, gave_up_reason

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OWNER = Owner(host="h", boot="b", pid=1, started=1, worker="h:1:x")


def never_dead(owner: Owner) -> bool:
    return False


def always_dead(owner: Owner) -> bool:
    return True


def claim(message: str = "7", beat_age: float = 0.0, runs: list[Run] | None = None, **kw: object) -> Claim:
    return Claim(
        job_id="j" + "0" * 19,
        task="a0",
        stage="render",
        owner=OWNER,
        message=message,
        heartbeat_at=NOW - timedelta(seconds=beat_age),
        runs=runs if runs is not None else [Run(n=1, worker="h:1:x", started_at=NOW)],
        **kw,  # type: ignore[arg-type]
    )


def record(state: State) -> StageRecord:
    return StageRecord(job_id="j" + "0" * 19, task="a0", stage="render", state=state)


def decide(
    record_: StageRecord | None, claim_: Claim | None, message: str = "7", dead=never_dead, max_runs=5
):
    return admit(record_, claim_, message, NOW, heartbeat=2.0, max_runs=max_runs, dead=dead)


def test_a_task_nobody_ran_is_run() -> None:
    """No record, no claim: the message runs the stage, with no earlier runs."""
    admission = decide(None, None)
    assert admission.kind == "run" and admission.runs == []


def test_finished_tasks_are_skipped() -> None:
    """Done, failed and cancelled tasks are never run again by a redelivered message."""
    for state in (State.done, State.failed, State.cancelled):
        assert decide(record(state), claim()).kind == "skip"


def test_a_live_owner_keeps_its_task() -> None:
    """While the owner beats, its own message is naked back (busy), another message is a duplicate."""
    assert decide(record(State.running), claim(message="7"), message="7").kind == "busy"
    assert decide(record(State.running), claim(message="7"), message="9").kind == "duplicate"


def test_a_dead_or_silent_owner_loses_its_task_and_its_run_counts_as_crashed() -> None:
    """A known-dead owner, or one silent for four heartbeats, is taken over; its run is closed as crashed."""
    for found, dead in ((claim(), always_dead), (claim(beat_age=8.5), never_dead)):
        admission = decide(record(State.running), found, dead=dead)
        assert admission.kind == "run"
        assert [r.outcome for r in admission.runs] == ["crashed"]
    assert decide(record(State.running), claim(beat_age=7.0)).kind == "busy"


def test_runs_not_deliveries_use_the_budget() -> None:
    """Crashed and retried runs count; a run a stopping worker handed back does not."""
    runs = [
        Run(n=1, worker="w", outcome="crashed"),
        Run(n=2, worker="w", outcome="handed_back"),
        Run(n=3, worker="w", outcome="retry", reason="503"),
    ]
    assert counted(runs) == 2
    released = claim(runs=runs, state="released")
    assert decide(None, released, max_runs=3).kind == "run"
    assert decide(None, released, max_runs=2).kind == "exhausted"


def test_the_give_up_reason_says_how_many_runs_and_how_each_ended() -> None:
    """The dead-letter reason states the true number of runs and why each ended."""
    runs = [Run(n=i, worker="w", outcome="crashed", reason="worker w died") for i in (1, 2, 3)]
    reason = gave_up_reason(runs)
    assert reason.startswith("gave up after 3 runs: run 1 crashed (worker w died); run 2 crashed")


def test_outcomes() -> None:
    """Success acks; bad input terms and tells; a stopping worker hands back; a cancel terms quietly;
    a retryable failure naks with backoff until the runs are used up, then dead-letters."""
    one = [Run(n=1, worker="w", outcome="retry")]
    assert conclude(None, one, max_runs=3, backoff=[1.0]).action == "ack"
    bad = conclude(InvalidInput("x.png is not an image", code="not_media"), one, max_runs=3, backoff=[1])
    assert (bad.action, bad.state, bad.code, bad.tell) == ("term", State.failed, "not_media", True)
    assert conclude(ConfigError("no model"), one, max_runs=3, backoff=[1]).state == State.failed
    back = conclude(StageStopped("bye"), one, max_runs=3, backoff=[1])
    assert (back.action, back.state, back.claim, back.outcome) == (
        "nak",
        State.queued,
        "release",
        "handed_back",
    )
    gone = conclude(JobCancelled("cancelled"), one, max_runs=3, backoff=[1])
    assert (gone.action, gone.state, gone.tell) == ("term", State.cancelled, False)
    retry = conclude(RetryableError("503", defer=0.5), one, max_runs=3, backoff=[2.0, 10.0])
    assert (retry.action, retry.delay, retry.state) == ("nak", 2.0, State.queued)
    three = one * 3
    final = conclude(RuntimeError("boom"), three, max_runs=3, backoff=[1])
    assert final.dead_letter and final.code == "gave_up" and "gave up after 3 runs" in (final.reason or "")
    assert conclude(None, one, max_runs=3, backoff=[1], lost=True).action == "abandon"


def test_backoff_follows_the_table_then_stays_at_its_last_entry() -> None:
    """The nak delay is the table's entry for the run count, never less than the error's own defer."""
    assert [backoff_delay([1, 5, 30], n) for n in (1, 2, 3, 7)] == [1, 5, 30, 30]
    assert backoff_delay([1], 1, at_least=4.0) == 4.0
