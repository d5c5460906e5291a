"""The one catalogue of sentences people read about failures: Discord replies, folder notes, the
console and the CLI all take their words from here, chosen by the error's stable ``code`` and by who
reads them.

A failure of the user's input (``InvalidInput`` and its kinds) already carries a reason written for the
user — it names their file, says what is wrong and what to send instead — so that reason is shown, with
the catalogue's advice for the code added where the reason has none, to everyone.

Every other failure (the set-up, our environment, a bug, a retry budget used up) is told by audience:

* **operators** (``for_operators``): the CLI, the inbox and outbox notes and ``WHY.txt``, ``status`` and
  ``status --json``, the console (served on loopback or to signed-in people only) — the person reading
  runs the server, so they get what happened (the failure's own reason) and the fix (the entry's
  ``fix``: the extra to install with its exact command, ``mouthpiece models``, the setting);
* **the public** (``for_people``): Discord members, webhook posts — a short sentence with a reference
  (the job id); the technical reason is never shown to them.

The log always has the detail. Install commands are written by ``pipeline.install_hint`` alone, so the
distribution's name is in one place (``pipeline.DISTRIBUTION``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import install_hint


@dataclass(frozen=True)
class Entry:
    """What the catalogue knows of a code: the sentence for the public, who caused the failure, advice
    for users, and the fix for operators (what to install, run or set)."""

    text: str
    users_fault: bool = False
    advice: str = ""
    fix: str = ""


AUDIO_ADVICE = "Send an .mp3, .wav, .ogg, .m4a or .flac voice clip."
AVATAR_ADVICE = "Send a .png, .jpg or .webp photo, or an .mp4, .mov or .webm video, with a face in it."
OUR_SIDE = "Something went wrong on our side (reference {reference}). Please try again later."
MODELS_FIX = "`mouthpiece models` lists the model files, who needs each and where it goes."
SETTINGS_FIX = "`mouthpiece config` shows the settings as this server runs them."
LOG_FIX = "The log has the detail: look for job {reference}; `mouthpiece retry {reference}` runs it again."

SPEC_ADVICE = "Fix the job file (JSON or YAML) and send it again."
FILE_ADVICE = "Send the file itself."

CATALOGUE: dict[str, Entry] = {
    # --- the user's input: their reason is shown, with this advice when it has none --------------------
    "invalid_input": Entry("That input cannot be made into a video.", True),
    "invalid_key": Entry("That file name cannot be used.", True, "Use a shorter name without '..' or '/'."),
    "drop_refused": Entry("That drop cannot be made into a video.", True),
    "audio_missing": Entry("There is no voice in that file.", True, AUDIO_ADVICE),
    "audio_unreadable": Entry("The voice clip could not be read.", True, AUDIO_ADVICE),
    "audio_too_short": Entry("The voice clip is too short.", True, "Send at least half a second of speech."),
    "audio_too_long": Entry("The voice clip is too long.", True),
    "avatar_not_visual": Entry("The avatar is not an image or a video.", True, AVATAR_ADVICE),
    "avatar_unreadable": Entry("The avatar could not be read.", True, AVATAR_ADVICE),
    "avatar_too_large": Entry("The avatar is too large.", True),
    "video_too_long": Entry("The avatar video is too long.", True),
    "not_media": Entry("That file is not audio, an image or a video.", True, AVATAR_ADVICE),
    "too_large": Entry("The file is too large.", True),
    "file_too_large": Entry("The file is too large.", True),
    "file_missing": Entry("A file is missing.", True),
    "file_empty": Entry("A file is empty.", True, FILE_ADVICE),
    "file_unreadable": Entry("A file cannot be read.", True),
    "character_name_invalid": Entry("That character name cannot be used.", True),
    "character_exists": Entry("A character with that name already exists.", True),
    "character_unknown": Entry("There is no character by that name.", True, "Pick one from the list."),
    "character_library_full": Entry("The character library is full.", True, "Remove a character first."),
    "character_options_invalid": Entry("That character option cannot be used.", True),
    "character_forbidden": Entry("You may not change the character library.", True),
    "member_busy": Entry("You have too many videos in the making.", True, "Wait for one to finish."),
    "not_a_file": Entry("That is not a file.", True, FILE_ADVICE),
    "no_face": Entry(
        "No face could be found in the avatar.", True, "Use a photo where a face is clearly visible."
    ),
    "too_many_avatars": Entry("The job names too many avatars.", True),
    "spec_invalid": Entry("The job file is not valid.", True, SPEC_ADVICE),
    "spec_unreadable": Entry("The job file cannot be read.", True, SPEC_ADVICE),
    "spec_too_large": Entry("The job file is too large.", True, SPEC_ADVICE),
    "spec_path_outside": Entry("The job file names a file outside its folder.", True, SPEC_ADVICE),
    "spec_file_missing": Entry("The job file names a file that is not there.", True, SPEC_ADVICE),
    "job_invalid": Entry("The job is not valid.", True),
    "webhook_invalid": Entry("The job's Discord webhook is not a Discord webhook address.", True),
    "webhook_not_allowed": Entry("The job may not post to that webhook.", True),
    "output_folder_not_allowed": Entry("The job may not publish into that folder.", True),
    "inbox_link": Entry("Links are not taken from the inbox.", True, FILE_ADVICE),
    "inbox_not_a_file": Entry("Only files are taken from the inbox.", True, FILE_ADVICE),
    "inbox_unreadable": Entry("A file in the inbox cannot be read.", True),
    "inbox_unsupported": Entry("That kind of file is not taken.", True, AVATAR_ADVICE),
    "avatar_without_audio": Entry("A picture arrived without a voice clip.", True, AUDIO_ADVICE),
    "folder_audio_count": Entry("A folder drop needs exactly one voice clip.", True),
    "folder_too_many": Entry("The folder holds too many files.", True),
    "option_too_long": Entry("An option is too long.", True),
    "options_invalid": Entry("The options are not valid.", True),
    "output_is_input": Entry("The output would overwrite an input.", True),
    "transcript_too_long": Entry("The transcript is too long.", True),
    "style_invalid": Entry("The style must be auto, photo or cartoon.", True),
    "low_quality": Entry("The video did not meet the quality the job asked for.", True),
    "empty_text": Entry("There is no text to speak.", True),
    "text_too_long": Entry("The text to speak is too long.", True),
    "unknown_voice": Entry("That voice is not installed here.", True),
    "no_input": Entry("Nothing was given to make a video from.", True),
    "spec_as_media": Entry("A job file was given as a voice clip or picture.", True, SPEC_ADVICE),
    "spec_not_alone": Entry("A job file names its own files.", True, SPEC_ADVICE),
    # --- the people running it ------------------------------------------------------------------------
    "cancelled": Entry("The job was cancelled."),
    "config": Entry(
        "This server is not set up to make that video (reference {reference}); tell its admins.",
        fix=f"{SETTINGS_FIX} {MODELS_FIX}",
    ),
    "default_avatar_missing": Entry(
        "This server has no default avatar (reference {reference}); send a photo.",
        fix="Run `mouthpiece init` to put the bundled default avatar back, or send a photo with the clip.",
    ),
    "model_missing": Entry(
        "This server is missing a model file for that (reference {reference}); tell its admins.",
        fix=MODELS_FIX + " `mouthpiece models --fetch NAME` downloads one.",
    ),
    "neural_unavailable": Entry(
        "This server cannot run the neural lip-sync renderer (reference {reference}); ask for the default "
        "renderer, or tell its admins.",
        fix=f"Install the neural extra: {install_hint('neural')}; or ask for the default renderer.",
    ),
    "tts_unavailable": Entry(
        "This server cannot speak text (reference {reference}); send a voice clip instead.",
        fix=f"Install the voice extra: {install_hint('voice')}; or send a voice clip instead of text.",
    ),
    "discord_target_malformed": Entry(OUR_SIDE),
    "stage_contract": Entry(OUR_SIDE),
    # --- our environment, and bugs: retried, then this --------------------------------------------------
    "internal": Entry(OUR_SIDE),
    "gave_up": Entry(OUR_SIDE),
    "input_missing": Entry(OUR_SIDE),
    "temporary_failure": Entry(OUR_SIDE),
    "storage_unavailable": Entry(OUR_SIDE),
    "object_missing": Entry(OUR_SIDE),
    "bus_unavailable": Entry(OUR_SIDE),
    "encoder_failed": Entry(OUR_SIDE),
    "alignment_failed": Entry(OUR_SIDE),
    "stopped": Entry(OUR_SIDE),
    "failed": Entry(OUR_SIDE),
    "error": Entry(OUR_SIDE),
    "discord_refused": Entry(OUR_SIDE),
    "discord_gone": Entry(OUR_SIDE),
    "discord_too_large": Entry("The video is too large to post here."),
    "bad_signature": Entry(OUR_SIDE),
}


def entry(code: str | None) -> Entry:
    """The catalogue entry of ``code``; unknown codes are treated as internal errors."""
    return CATALOGUE.get(code or "internal", CATALOGUE["internal"])


def users_fault(code: str | None) -> bool:
    """True when ``code`` is a failure of the user's input (their reason may be shown to them)."""
    return entry(code).users_fault


def for_people(code: str | None, reason: str | None, reference: str) -> str:
    """The sentence a person is shown for a failure with ``code`` and technical ``reason``.

    For the user's own mistakes it is their reason (with the code's advice when the reason has none);
    for everything else it is the catalogue's sentence with ``reference`` (the job id) in it.
    """
    found = entry(code)
    if not found.users_fault or not reason:
        return found.text.format(reference=reference)
    text = reason.strip()
    if not text.endswith((".", "!", "?")):
        text += "."
    if found.advice and not _advises(text):
        text = f"{text} {found.advice}"
    return text


ADVICE_WORDS = ("send ", "use ", "give ", "set ", "check ", "save ", "drop ", "fix ")


def _advises(text: str) -> bool:
    """Whether a reason already says what to do (then the catalogue's advice would repeat it)."""
    lowered = f" {text.lower()}"
    return any(f" {word}" in lowered or f"({word}" in lowered for word in ADVICE_WORDS)


def for_operators(code: str | None, reason: str | None, reference: str) -> str:
    """The sentence the person running the server is shown for a failure (module docstring): the
    user's own mistakes as ``for_people`` says them; everything else as what happened (``reason``) and
    the fix, with ``reference`` (the job id) to find it in the log."""
    found = entry(code)
    if found.users_fault or code == "cancelled" or not reason:
        return for_people(code, reason, reference)
    text = reason.strip().rstrip(".")
    first = text.split(" ", 1)[0]
    if first.isalpha() and first.islower():  # "the checkpoint" → "The checkpoint"; not eSpeak, tts_engine
        text = text[:1].upper() + text[1:]
    text = f"{text} (reference {reference})."
    if not _says_a_fix(text):
        text = f"{text} {(found.fix or LOG_FIX).format(reference=reference)}"
    return text


def _says_a_fix(text: str) -> bool:
    """Whether a reason already names what to run (a ``pip install`` command, a ``mouthpiece`` command)."""
    lowered = text.lower()
    return "pip install" in lowered or "`mouthpiece " in lowered


def discord_text(code: str | None, reason: str | None, reference: str) -> str:
    """The one-message reply to a Discord user whose job failed (at most 2000 characters)."""
    text = for_people(code, reason, reference)
    prefix = "" if code == "cancelled" else "Sorry, I could not make that video. "
    return (prefix + text)[:2000]
