"""The message catalogue: every error code has a sentence, users' mistakes keep their reason, our own
failures never show technical text."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline import errors
from pipeline.messages import CATALOGUE, discord_text, for_people, users_fault

ROOT = Path(__file__).resolve().parents[2]


def codes_in_source() -> set[str]:
    found = set()
    for path in [*ROOT.joinpath("pipeline").rglob("*.py"), *ROOT.joinpath("stages").rglob("*.py")]:
        found |= set(re.findall(r'\bcode="([a-z_]+)"', path.read_text()))
    classes = [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.MouthpieceError)
    ]
    return found | {c.code for c in classes}


def test_every_code_raised_anywhere_has_a_sentence() -> None:
    """A code used in pipeline/ or stages/ without a catalogue entry fails here, naming it."""
    missing = sorted(codes_in_source() - set(CATALOGUE))
    assert missing == []


def test_the_users_own_mistake_is_told_in_their_reason_with_advice() -> None:
    """An input refusal keeps the user's words (their file name) and adds what to send instead."""
    text = for_people("audio_too_short", "Grüße.flac is too short (0.1 s)", "j1")
    assert text == "Grüße.flac is too short (0.1 s). Send at least half a second of speech."


def test_a_reason_that_already_advises_gets_no_second_advice() -> None:
    """The detect stage's "no face" reason says what to use: the catalogue's advice is not added again."""
    reason = (
        "no face found in coffee.jpg (use a photo or video where a face is clearly visible; for a drawn "
        "face, set style to cartoon)"
    )
    text = for_people("no_face", reason, "j1")
    assert text == reason + "." and text.count("clearly visible") == 1
    assert for_people("no_face", "no face found in coffee.jpg", "j1").endswith("clearly visible.")


def test_failures_on_our_side_show_a_reference_not_the_detail() -> None:
    """Environment failures and bugs say 'something went wrong on our side' with the job id."""
    for code in ("internal", "gave_up", "encoder_failed", None, "no-such-code"):
        text = for_people(code, "[aost#0:0 @ 0x55d] error code -22 /var/lib/mouthpiece/tmp", "j123")
        assert "reference j123" in text and "aost" not in text and "/var/lib" not in text
        assert not users_fault(code)


def test_discord_replies_apologise_except_for_cancels() -> None:
    """A failure reply starts with an apology; a cancel just says so."""
    assert discord_text("no_face", "no face found in cat.png", "j1").startswith("Sorry, I could not make")
    assert discord_text("cancelled", None, "j1") == "The job was cancelled."
