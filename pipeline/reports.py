"""A quality report in sentences, for the people who read it: the CLI (``render``, ``assess``,
``status``) and the console's job page all take their words from here.

The limits people's eyes and ears set live here too, so the measure that scores (``stages.lib.quality``)
and the sentences that explain the score cannot disagree: ITU-R BT.1359 finds sound ahead of the
picture noticed from about 45 ms and acceptable to about 90 ms, sound behind it noticed from about
125 ms and acceptable to about 185 ms.
"""

from __future__ import annotations

from pipeline.contracts import QualityReport, QualitySummary

NOTICED_EARLY_MS, ACCEPTABLE_EARLY_MS = 45.0, 90.0
"""Sound ahead of the picture (a negative offset): noticed from, acceptable to (ITU-R BT.1359)."""
NOTICED_LATE_MS, ACCEPTABLE_LATE_MS = 125.0, 185.0
"""Sound behind the picture (a positive offset): noticed from, acceptable to (ITU-R BT.1359)."""


def offset_words(offset_ms: float) -> str:
    """``the voice is 120 ms early`` (the sound comes before the mouth moves), ``... late``, or in sync."""
    if abs(offset_ms) < 0.5:
        return "the voice is in sync with the mouth"
    return f"the voice is {abs(offset_ms):.0f} ms {'late' if offset_ms > 0 else 'early'}"


MOUTH_STILL = "the mouth hardly moves while the voice speaks"
NOT_FOLLOWING = "the mouth does not follow the voice"
SYNC_PROBLEMS = (MOUTH_STILL, NOT_FOLLOWING)
"""How the sentences of a video whose lips do not sync at all begin (no offset can be given then)."""


def mouth_still_sentence(spread: float) -> str:
    """The problem of a mouth that does not move with speech (``spread``: its opening's spread)."""
    return f"{MOUTH_STILL} (its opening varies by {spread:.3f} of its width; talking mouths by 0.03 or more)"


def not_following_sentence(confidence: float) -> str:
    """The problem of a mouth that moves, but not with the voice."""
    return (
        f"{NOT_FOLLOWING} (no delay within 500 ms either way lines its motion up with the voice: "
        f"confidence {confidence:.2f})"
    )


SKIN_LOOKS_OWN = 5.0
"""Chroma levels from the avatar's skin up to which the lower face reads as its own (the measure's good
level: ``stages.lib.quality.analysis.SKIN_GOOD``)."""
NOT_SKIN = "the lower face does not look like the avatar's skin"


def skin_sentence(change: float) -> str:
    """The problem of a lower face painted in colours the avatar's skin does not have (``change``:
    chroma levels away from it), with what to do about it."""
    return (
        f"{NOT_SKIN} (its colour is {change:.0f} levels away from the avatar's there; our renders stay "
        f"within {SKIN_LOOKS_OWN:.0f}): the renderer's model files look wrong or damaged; check them "
        "with `mouthpiece models`"
    )


def offset_judgement(offset_ms: float) -> str:
    """How viewers take an offset: unnoticed, noticeable but acceptable, or not acceptable."""
    early = offset_ms < 0
    noticed = NOTICED_EARLY_MS if early else NOTICED_LATE_MS
    acceptable = ACCEPTABLE_EARLY_MS if early else ACCEPTABLE_LATE_MS
    side = "early" if early else "late"
    if abs(offset_ms) <= noticed:
        return f"viewers do not notice that before about {noticed:.0f} ms {side}"
    if abs(offset_ms) <= acceptable:
        return f"noticeable, still acceptable up to about {acceptable:.0f} ms {side}"
    return f"not acceptable: viewers accept at most about {acceptable:.0f} ms {side}"


def verdict(report: QualitySummary) -> str:
    """One line: ``fine (score 0.93)`` or ``FLAGGED (score 0.32, under 0.50): <the problems>``."""
    threshold = getattr(report, "threshold", None)
    if not report.flagged:
        return f"fine (score {report.score:.2f})"
    under = f", under {threshold:.2f}" if threshold is not None else ""
    why = f": {'; '.join(report.problems)}" if report.problems else ""
    return f"FLAGGED (score {report.score:.2f}{under}){why}"


def quality_sentences(report: QualityReport) -> list[str]:
    """The report's measures as sentences with their figures, in the order a person checks a video."""
    lines = []
    if report.offset_ms is not None:
        judged = f"; {offset_judgement(report.offset_ms)}" if abs(report.offset_ms) >= 0.5 else ""
        lines.append(
            f"Sync: {offset_words(report.offset_ms)}{judged} (confidence {report.offset_confidence:.2f})."
        )
    elif failed := [p for p in report.problems if p.startswith(SYNC_PROBLEMS)]:
        lines.append(f"Sync: {failed[0]}.")
    elif report.frames and not report.face_frames:
        lines.append("Sync: not measured: no face was found on any frame.")
    else:
        lines.append(
            f"Sync: not measured: the mouth could not be read against the voice "
            f"(confidence {report.offset_confidence:.2f})."
        )
    if report.silence_motion is not None:
        still = "still enough" if report.silence_motion <= 0.25 else "too much"
        lines.append(
            f"Mouth in pauses: it moves {report.silence_motion:.0%} as much as while talking ({still})."
        )
    if report.mouth_flicker is not None:
        lines.append(f"Flicker around the mouth: {report.mouth_flicker:.1f} grey levels from frame to frame.")
    if report.outside_change is not None:
        lines.append(
            f"Away from the face: the picture differs from the avatar by {report.outside_change:.1f} grey "
            "levels on average."
        )
    if report.skin_change is not None:
        like = "the avatar's own skin" if report.skin_change <= SKIN_LOOKS_OWN else "not the avatar's skin"
        lines.append(
            f"Lower face: its colour is {report.skin_change:.1f} levels from the avatar's skin there ({like})."
        )
    if abs(report.duration_drift_ms) >= 1.0:
        lines.append(f"Lengths: the picture and the sound differ by {abs(report.duration_drift_ms):.0f} ms.")
    if report.frames:
        how = "68 landmarks" if report.method == "landmarks" else "the darkness of the mouth region"
        lines.append(
            f"Face: the mouth was measured on {report.face_frames} of {report.frames} frames ({how})."
        )
    lines.append(f"Verdict: {verdict(report)}.")
    return lines
