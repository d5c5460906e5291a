"""Text as it should be spoken: Discord markup, URLs, emoji, numbers, dates and times become words.

``speakable(text, language, names)`` is what a speech engine is given; ``display_text(text, names)`` is
the same text for reading (subtitles, captions): Discord markup replaced by names, emoji dropped, the rest
as written. Pure functions, no I/O.

Discord markup: ``<@123>``/``<@!123>`` (a member: their display name from ``names.users``, else
"someone"), ``<@&123>`` (a role), ``<#123>`` (a channel), ``<:name:123>``/``<a:name:123>`` (a custom emoji:
its name), ``<t:1700000000:F>`` (a timestamp: its date), ``@everyone``/``@here``. A mention already
resolved upstream as ``@Alice`` or ``#general`` is read as the bare name.

Numbers, dates, times, currencies and percentages are spelled out in English only; for other languages
the engines (eSpeak NG, and Piper through it) read them in the voice's language, so only markup, URLs and
emoji are handled.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stages.lib.speech.align import number_words


@dataclass(frozen=True)
class Names:
    """Display names of the Discord ids a text may mention (id -> name)."""

    users: Mapping[str, str] = field(default_factory=dict)
    roles: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, str] = field(default_factory=dict)


NO_NAMES = Names()

# --------------------------------------------------------------------------------------------------
# Discord markup
# --------------------------------------------------------------------------------------------------

_MARKUP = re.compile(
    r"<(@!?|@&|#)(\d{1,25})>|<a?:([A-Za-z0-9_~]{1,64}):\d{1,25}>|<t:(-?\d{1,13})(?::[tTdDfFR])?>"
)
_BROADCAST = re.compile(r"(?<![\w@])@(everyone|here)\b")
_RESOLVED = re.compile(r"(?<![\w<])[@#](?=[^\W\d_])")
"""``@Alice`` / ``#general`` (resolved upstream): the sign before a name, not in e-mail addresses."""


def discord_markup(text: str, names: Names = NO_NAMES, *, spoken: bool = True) -> str:
    """Replace Discord's markup by words (``spoken``) or by readable names (for subtitles)."""

    def replace(match: re.Match[str]) -> str:
        kind, ident, emoji, stamp = match.groups()
        if emoji is not None:
            return words_of_name(emoji) if spoken else ""
        if stamp is not None:
            return _timestamp(int(stamp), spoken)
        assert ident is not None
        if kind == "#":
            return _named(names.channels.get(ident), "#", "a channel", spoken)
        if kind == "@&":
            return _named(names.roles.get(ident), "@", "a role", spoken)
        return _named(names.users.get(ident), "@", "someone", spoken)

    text = _MARKUP.sub(replace, text)
    if spoken:
        text = _BROADCAST.sub(lambda m: "everyone" if m.group(1) == "everyone" else "everyone here", text)
        text = _RESOLVED.sub("", text)
    return text


def _named(name: str | None, sign: str, unknown: str, spoken: bool) -> str:
    if name is None:
        return unknown
    clean = " ".join(name.split())
    return clean if spoken else f"{sign}{clean}"


def words_of_name(name: str) -> str:
    """``party_parrot`` / ``PartyParrot`` / ``pepe2`` -> ``party parrot`` / ``party parrot`` / ``pepe 2``."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", name)
    return " ".join(spaced.replace("_", " ").replace("~", " ").split()).lower()


def _timestamp(seconds: int, spoken: bool) -> str:
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return ""
    if not spoken:
        return f"{MONTHS[moment.month - 1].title()} {moment.day}, {moment.year}"
    return f"{MONTHS[moment.month - 1]} {ordinal_words(moment.day)}, {year_words(moment.year)}"


# --------------------------------------------------------------------------------------------------
# URLs, e-mail addresses, emoji
# --------------------------------------------------------------------------------------------------

_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"]+", re.IGNORECASE)
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\b")


def _host_words(host: str) -> str:
    return " dot ".join(words_of_name(part) for part in host.lower().split(".") if part)


def urls(text: str) -> str:
    """A URL becomes its site (``https://www.example.com/a?b`` -> ``example dot com``); an e-mail address
    ``name at example dot com``."""

    def url(match: re.Match[str]) -> str:
        rest = re.sub(r"^(?:https?://)?(?:www\.)?", "", match.group(0), flags=re.IGNORECASE)
        host = re.split(r"[/?#:]", rest, maxsplit=1)[0].rstrip(".,;!?)")
        return _host_words(host)

    text = _URL.sub(url, text)
    return _EMAIL.sub(
        lambda m: f"{words_of_name(m.group(1).replace('.', ' '))} at {_host_words(m.group(2))}", text
    )


_SKIPPED_MARKS = {0x200D, 0xFE0E, 0xFE0F, 0x20E3}
"""Zero-width joiner, variation selectors, the keycap mark: parts of emoji, never spoken."""


def _is_emoji(char: str) -> bool:
    code = ord(char)
    if 0x1F3FB <= code <= 0x1F3FF or code in _SKIPPED_MARKS:  # skin tones and joiners
        return True
    # symbols below the arrows block (°, ©, ™) are read by the number rules or ignored, not named
    return (unicodedata.category(char) == "So" and code >= 0x2190) or 0x1F000 <= code <= 0x1FAFF


def _emoji_name(char: str) -> str:
    code = ord(char)
    if code in _SKIPPED_MARKS or 0x1F3FB <= code <= 0x1F3FF:
        return ""
    if 0x1F1E6 <= code <= 0x1F1FF:
        return "flag"  # a regional indicator letter: two of them make a flag
    return unicodedata.name(char, "").lower()


def emoji(text: str, spoken: bool) -> str:
    """Emoji become their Unicode names (``🎉`` -> ``party popper``; repeats said once) or, when not
    ``spoken``, disappear."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        names = [n for n in (_emoji_name(c) for c in run) if n]
        unique = list(dict.fromkeys(names))
        if spoken and unique:
            out.append(f" {', '.join(unique)} ")
        run.clear()

    for char in text:
        if _is_emoji(char):
            run.append(char)
            continue
        flush()
        out.append(char)
    flush()
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# Numbers, dates and times (English)
# --------------------------------------------------------------------------------------------------

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")  # fmt: skip
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}  # fmt: skip
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "", "")}  # fmt: skip


def cardinal(n: int) -> str:
    """``1961`` -> ``one thousand nine hundred sixty one``; negatives get "minus"."""
    return ("minus " if n < 0 else "") + " ".join(number_words(abs(n)))


def ordinal_words(n: int) -> str:
    """``22`` -> ``twenty second``."""
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_words(year: int) -> str:
    """How a year is read: ``1999`` nineteen ninety nine, ``2005`` two thousand five, ``2024`` twenty
    twenty four, ``1900`` nineteen hundred."""
    if not 1100 <= year <= 2099 or 2000 <= year <= 2009:
        return cardinal(year)
    high, low = divmod(year, 100)
    if low == 0:
        return f"{cardinal(high)} hundred"
    return f"{cardinal(high)} {'oh ' if low < 10 else ''}{cardinal(low)}"


def _digits(text: str) -> str:
    return " ".join(cardinal(int(d)) for d in text)


def _decimal(whole: str, fraction: str | None) -> str:
    spoken = cardinal(int(whole.replace(",", "")))
    return spoken if not fraction else f"{spoken} point {_digits(fraction)}"


def _money(match: re.Match[str]) -> str:
    one, many, cent, cents = _CURRENCIES[match.group("cur")]
    amount = int(match.group("whole").replace(",", ""))
    scale = {"k": " thousand", "m": " million", "b": " billion"}.get((match.group("scale") or "").lower(), "")
    fraction = match.group("frac")
    if scale and fraction:
        return f"{_decimal(match.group('whole'), fraction)}{scale} {many}"
    text = f"{cardinal(amount)}{scale} {one if amount == 1 and not scale else many}"
    if fraction and cent and int(fraction[:2].ljust(2, "0")):
        pennies = int(fraction[:2].ljust(2, "0"))
        text += f" and {cardinal(pennies)} {cent if pennies == 1 else cents}"
    return text


def _time(match: re.Match[str]) -> str:
    hour, minute = int(match.group("h")), int(match.group("m"))
    half = (match.group("ap") or "").lower().replace(".", "")
    if minute == 0:
        spoken = f"{cardinal(hour)} {'o clock' if not half else ''}".strip()
    else:
        spoken = f"{cardinal(hour)} {'oh ' if minute < 10 else ''}{cardinal(minute)}"
    return f"{spoken} {' '.join(half)}" if half else spoken


def _date_iso(match: re.Match[str]) -> str:
    year, month, day = int(match.group(1)), int(match.group(2)), int(match.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return match.group(0).replace("-", " ")
    return f"{MONTHS[month - 1]} {ordinal_words(day)}, {year_words(year)}"


def _date_slash(match: re.Match[str]) -> str:
    first, second, year = int(match.group(1)), int(match.group(2)), match.group(3)
    month, day = (first, second) if first <= 12 else (second, first)  # US order unless impossible
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return f"{cardinal(first)} {cardinal(second)}"
    said = f"{MONTHS[month - 1]} {ordinal_words(day)}"
    if year:
        number = int(year)
        said += f", {year_words(number + 2000 if len(year) == 2 else number)}"
    return said


_MONTH_NAMES = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
"""Capitalized month names and abbreviations ("you may 3" is not a date)."""


def _month_index(name: str) -> int:
    return next(i for i, m in enumerate(MONTHS) if m.startswith(name.lower()[:3]))


_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b"), _date_iso),
    (re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/(\d{4}|\d{2}))?\b"), _date_slash),
    (
        re.compile(rf"\b({_MONTH_NAMES})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}})\b)?"),
        lambda m: f"{MONTHS[_month_index(m.group(1))]} {ordinal_words(int(m.group(2)))}"
        + (f", {year_words(int(m.group(3)))}" if m.group(3) else ""),
    ),
    (
        re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH_NAMES})\b(?:\s+(\d{{4}})\b)?"),
        lambda m: f"the {ordinal_words(int(m.group(1)))} of {MONTHS[_month_index(m.group(2))]}"
        + (f" {year_words(int(m.group(3)))}" if m.group(3) else ""),
    ),
    (re.compile(r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)\s*(?P<ap>[ap]\.?m\.?)?(?!\w)", re.IGNORECASE), _time),
    (re.compile(r"\b(?P<h>1[0-2]|0?[1-9])(?P<m>)\s*(?P<ap>[ap]\.?m\.?)(?!\w)", re.IGNORECASE),
     lambda m: f"{cardinal(int(m.group('h')))} {' '.join(m.group('ap').lower().replace('.', ''))}"),
    (
        re.compile(r"(?P<cur>[$€£¥])\s?(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?(?P<scale>[kKmMbB]\b)?"),
        _money,
    ),
    (re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\s?%"), lambda m: f"{_decimal(m.group(1), m.group(2))} percent"),
    (re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE), lambda m: ordinal_words(int(m.group(1)))),
    (re.compile(r"#(\d+)\b"), lambda m: f"number {cardinal(int(m.group(1)))}"),
    (re.compile(r"\b(\d+)\s?(?:-|–|to)\s?(\d+)\b"), lambda m: f"{cardinal(int(m.group(1)))} to {cardinal(int(m.group(2)))}"),
    (re.compile(r"(?<![\w.])(1[1-9]\d\d|20\d\d)(?![\d,.]\d|\s?%)\b"), lambda m: year_words(int(m.group(1)))),
    (re.compile(r"(?<![\w.])-(?=\d)"), lambda m: "minus "),
    (re.compile(r"\b(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\b"), lambda m: _decimal(m.group(1), m.group(2))),
]  # fmt: skip
"""Applied in order: the more specific forms (dates, times, money) before plain numbers."""

_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "°": " degrees ", "×": " times ", "~": " about "}


def numbers(text: str) -> str:
    """English numbers, dates, times, money and symbols as words."""
    for pattern, words in _RULES:
        text = pattern.sub(words, text)
    for symbol, said in _SYMBOLS.items():
        text = text.replace(symbol, said)
    return text


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def _tidy(text: str) -> str:
    """Collapse whitespace, drop spaces before punctuation and markup leftovers such as ``*`` and ``_``."""
    text = re.sub(r"[*_`|>]{1,3}", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", " ".join(text.split()))
    return re.sub(r"([,;:])(?=[,;:.!?])", "", text).strip()


def speakable(text: str, language: str | None = "en", names: Names = NO_NAMES) -> str:
    """``text`` as a speech engine should get it (see the module docstring)."""
    english = (language or "en").lower().startswith("en")
    text = discord_markup(text, names, spoken=True)
    text = urls(text)
    text = emoji(text, spoken=english)
    if english:
        text = numbers(text)
    return _tidy(text)


def display_text(text: str, names: Names = NO_NAMES) -> str:
    """``text`` for reading: Discord markup as names (``@Alice``, ``#general``), emoji dropped."""
    return " ".join(emoji(discord_markup(text, names, spoken=False), spoken=False).split())
