"""Text made speakable before synthesis: Discord markup, URLs, emoji, numbers, dates and times."""

from __future__ import annotations

import pytest

from stages.lib.speech.speakable import Names, display_text, ordinal_words, speakable, year_words

NAMES = Names(users={"123": "Alice Smith"}, roles={"77": "Moderators"}, channels={"456": "general"})


def test_discord_mentions_become_display_names() -> None:
    """Member, role and channel mentions are read as their names; unknown ids as "someone", "a role",
    "a channel"; resolved ``@Name``/``#channel`` lose their sign; @everyone and @here are words."""
    said = speakable(
        "Hey <@123> and <@!999>, <@&77> see <#456> and <#1>. @Bob in #news, @everyone @here", "en", NAMES
    )
    assert said == (
        "Hey Alice Smith and someone, Moderators see general and a channel. Bob in news, everyone everyone here"
    )


def test_custom_and_unicode_emoji_are_said_by_name_once() -> None:
    """Custom emoji by their name's words, Unicode emoji by their Unicode names (skin tones, joiners
    and repeats dropped); other languages drop emoji instead of naming them in English."""
    assert speakable("Great job <:party_parrot:123> <a:PepeDance:9> 🎉🎉 👍🏽!") == (
        "Great job party parrot pepe dance party popper thumbs up sign!"
    )
    assert speakable("¡Buen trabajo 🎉!", "es") == "¡Buen trabajo!"


def test_urls_and_addresses_become_their_sites() -> None:
    """A URL is read as its site; an e-mail address as name at site."""
    assert speakable("Docs at https://www.example.com/docs?x=1 or mail ops.team@example.org.") == (
        "Docs at example dot com or mail ops team at example dot org."
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("We have 1,250 members", "We have one thousand two hundred fifty members"),
        ("It costs $5.99, or €20", "It costs five dollars and ninety nine cents, or twenty euros"),
        ("Raised $2.5M", "Raised two point five million dollars"),
        ("50% off", "fifty percent off"),
        ("the 3rd and 22nd", "the third and twenty second"),
        ("in 1999 and 2024 and 2005", "in nineteen ninety nine and twenty twenty four and two thousand five"),
        ("on 2024-05-01 at 3:30pm", "on may first, twenty twenty four at three thirty p m"),
        ("on 12/25/2023", "on december twenty fifth, twenty twenty three"),
        ("May 3rd, 2025 or 4 July", "may third, twenty twenty five or the fourth of july"),
        ("at 10 am or 9:05", "at ten a m or nine oh five"),
        ("pages 5-10, #1 fan, -3°", "pages five to ten, number one fan, minus three degrees"),
        ("pi is 3.14", "pi is three point one four"),
        ("you may 3 times", "you may three times"),
        ("Q&A", "Q and A"),
    ],
)
def test_english_numbers_dates_and_times_are_words(text: str, said: str) -> None:
    """Numbers, money, percentages, ordinals, years, dates and times are spelled out in English."""
    assert speakable(text) == said


def test_discord_timestamps_are_dates() -> None:
    """``<t:...>`` is read as its (UTC) date."""
    assert speakable("Starts <t:1700000000:F>") == "Starts november fourteenth, twenty twenty three"


def test_other_languages_keep_numbers_for_the_engine() -> None:
    """eSpeak NG reads numbers in the voice's language, so they are left as digits for it."""
    assert speakable("Ganamos 3 a 1 en <#456>", "es", NAMES) == "Ganamos 3 a 1 en general"


def test_display_text_shows_names_and_drops_emoji() -> None:
    """For subtitles: mentions as @Name/#channel, custom emoji and emoji dropped, the rest as written."""
    assert display_text("Hi <@123> 🎉 see <#456> <:wave:1> at 3:30pm!", NAMES) == (
        "Hi @Alice Smith see #general at 3:30pm!"
    )


def test_number_helpers() -> None:
    """Ordinals and years read as people say them."""
    assert [ordinal_words(n) for n in (1, 2, 3, 11, 12, 20, 101)] == [
        "first", "second", "third", "eleventh", "twelfth", "twentieth", "one hundred first",
    ]  # fmt: skip
    assert [year_words(y) for y in (1900, 1905, 2000, 2010, 2100)] == [
        "nineteen hundred", "nineteen oh five", "two thousand", "twenty ten", "two thousand one hundred",
    ]  # fmt: skip
