"""The console's job page tells the quality report in sentences with the figures, and a set-up failure
with its fix (the console is served on loopback or to signed-in people: operators)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline.contracts import QualityReport, StageRecord, State
from pipeline.keys import output_key
from pipeline.status import read_record, write_record, write_status
from tests.conftest import make_settings
from tests.pipeline.console.conftest import make_job, running


def test_the_quality_report_is_told_in_sentences(tmp_path: Path, assets: Path, small_mp4: Path) -> None:
    """A flagged report beside the video: the page says the offset with its direction in words, how
    sure, the mouth in pauses, and the verdict with the reason; the raw figures stay one click away."""
    report = QualityReport(
        score=0.16, flagged=True, threshold=0.5, offset_ms=-120.0, offset_confidence=0.97,
        silence_motion=0.12, mouth_flicker=2.2, outside_change=1.1, frames=275, face_frames=275,
        method="landmarks", problems=["the voice is 120 ms early (sound ahead of the picture is acceptable to about 90 ms)"],
    )  # fmt: skip

    async def go() -> str:
        async with running(make_settings(tmp_path)) as h:
            job = make_job(h, assets, State.done, video=small_mp4)
            h.store.put(
                h.settings.bucket_outputs,
                output_key(job, "greeting.quality.json"),
                report.model_dump_json().encode(),
            )
            async with h.client() as client:
                return (await client.get(f"/jobs/{job}")).text

    html = asyncio.run(go())
    assert "Sync: the voice is 120 ms early; not acceptable: viewers accept at most about 90 ms early" in html
    assert "(confidence 0.97)" in html and "moves 12% as much as while talking" in html
    assert "Verdict: FLAGGED (score 0.16, under 0.50)" in html
    assert "<details><summary" in html and "offset_confidence" in html


def test_a_set_up_failure_shows_its_fix(tmp_path: Path, assets: Path) -> None:
    """A speech job failing for want of the voice extra: the stage box names the pip command, not
    'tell its admins'."""

    async def go() -> str:
        async with running(make_settings(tmp_path)) as h:
            job = make_job(h, assets, State.failed, failed_stage="detect")
            record = read_record(h.store, h.settings, job, "a0", "detect")
            assert record is not None
            reason = "eSpeak NG is not installed: install mouthpiece with the 'voice' extra (pip install 'mouthpiece[voice]')"
            write_record(
                h.store,
                h.settings,
                StageRecord(**{**record.model_dump(), "code": "tts_unavailable", "reason": reason}),
            )
            write_status(h.store, h.settings, job)
            async with h.client() as client:
                return (await client.get(f"/jobs/{job}")).text

    html = asyncio.run(go())
    assert "pip install &#39;mouthpiece[voice]&#39;" in html and "tell its admins" not in html
