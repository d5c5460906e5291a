"""What the CLI says about a video's quality: `render` names each flagged video and why and exits 3;
`status` gives the offset with its direction in words."""

from __future__ import annotations

import pytest

from pipeline.cli.jobs import _quality_line
from pipeline.cli.local import _flagged_lines
from pipeline.cli.parser import FLAGGED
from pipeline.contracts import JobStatus, QualitySummary, State, TaskStatus

LATE = QualitySummary(
    score=0.33,
    flagged=True,
    offset_ms=206.0,
    problems=["the voice is 206 ms late (sound behind the picture is acceptable to about 185 ms)"],
)


def _status(*qualities: QualitySummary) -> JobStatus:
    tasks = {
        f"a{i}": TaskStatus(state=State.done, outputs=[f"outputs/j1/face{i}.mp4"], quality=q)
        for i, q in enumerate(qualities)
    }
    return JobStatus(job_id="j0000000000000000001", state=State.done, tasks=tasks)


def test_render_says_which_video_is_flagged_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    """One line per flagged video on stderr, naming its file, the score and the reason; exit code 3."""
    fine = QualitySummary(score=1.0, offset_ms=4.0)
    assert _flagged_lines(_status(fine, LATE)) == FLAGGED == 3
    err = capsys.readouterr().err
    assert "mouthpiece: flagged: face1.mp4: FLAGGED (score 0.33): the voice is 206 ms late" in err
    assert "face0.mp4" not in err and "mouthpiece assess" in err
    assert _flagged_lines(_status(fine)) == 0 and capsys.readouterr().err == ""


def test_status_gives_the_offset_in_words() -> None:
    """`status JOB` shows the score, the offset as early or late, the flag and the reasons."""
    assert _quality_line(QualitySummary(score=0.97, offset_ms=-30.0)) == "0.97, the voice is 30 ms early"
    assert _quality_line(LATE).startswith("0.33, the voice is 206 ms late FLAGGED (the voice is 206 ms late")
