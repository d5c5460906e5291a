"""Which characters a font file can draw, and which font to burn subtitles in for a given text.

Reads the OpenType/TrueType ``cmap`` (formats 4 and 12) and ``name`` tables directly, so it needs no
font library; ``.ttc`` collections are read by their first font. ``pick_font(text, preferred, roots)``
returns the first preferred font that covers every character of the text, else any font under
``roots`` that does, else the best preferred one with the scripts it lacks named (``FontChoice.missing``).
"""

from __future__ import annotations

import os
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

FONT_SUFFIXES = (".ttf", ".otf", ".ttc")


@dataclass(frozen=True)
class FontChoice:
    """A font file, its family name (what libass matches), and the scripts of the text it cannot draw."""

    path: Path | None
    family: str | None
    missing: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Reading font files
# --------------------------------------------------------------------------------------------------


def _tables(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Table tag -> (offset, length) of the (first) font in ``data``."""
    base = struct.unpack(">I", data[12:16])[0] if data[:4] == b"ttcf" else 0
    count = struct.unpack(">H", data[base + 4 : base + 6])[0]
    tables = {}
    for i in range(count):
        entry = base + 12 + 16 * i
        tag, _, offset, length = struct.unpack(">4sIII", data[entry : entry + 16])
        tables[tag] = (offset, length)
    return tables


def _cmap_subtables(data: bytes, offset: int) -> list[tuple[int, int, int]]:
    """(platform, encoding, absolute offset) of each cmap subtable."""
    count = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
    return [
        (*struct.unpack(">HH", data[offset + 4 + 8 * i : offset + 8 + 8 * i]),
         offset + struct.unpack(">I", data[offset + 8 + 8 * i : offset + 12 + 8 * i])[0])
        for i in range(count)
    ]  # fmt: skip


def _format4(data: bytes, at: int) -> set[int]:
    segments = struct.unpack(">H", data[at + 6 : at + 8])[0] // 2
    ends = struct.unpack(f">{segments}H", data[at + 14 : at + 14 + 2 * segments])
    starts_at = at + 16 + 2 * segments
    starts = struct.unpack(f">{segments}H", data[starts_at : starts_at + 2 * segments])
    deltas = struct.unpack(f">{segments}h", data[starts_at + 2 * segments : starts_at + 4 * segments])
    ranges_at = starts_at + 4 * segments
    offsets = struct.unpack(f">{segments}H", data[ranges_at : ranges_at + 2 * segments])
    chars: set[int] = set()
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        for code in range(start, min(end, 0xFFFE) + 1):
            if offsets[i] == 0:
                glyph = (code + deltas[i]) & 0xFFFF
            else:
                where = ranges_at + 2 * i + offsets[i] + 2 * (code - start)
                glyph = struct.unpack(">H", data[where : where + 2])[0]
                glyph = (glyph + deltas[i]) & 0xFFFF if glyph else 0
            if glyph:
                chars.add(code)
    return chars


def _format12(data: bytes, at: int) -> set[int]:
    groups = struct.unpack(">I", data[at + 12 : at + 16])[0]
    chars: set[int] = set()
    for i in range(groups):
        start, end, _ = struct.unpack(">III", data[at + 16 + 12 * i : at + 28 + 12 * i])
        chars.update(range(start, end + 1))
    return chars


@lru_cache(maxsize=256)
def font_chars(path: Path) -> frozenset[int]:
    """The code points ``path`` has glyphs for (empty for a file that is not a readable font)."""
    try:
        data = path.read_bytes()
        cmap = _tables(data).get(b"cmap")
        if cmap is None:
            return frozenset()
        chars: set[int] = set()
        for platform, encoding, at in _cmap_subtables(data, cmap[0]):
            kind = struct.unpack(">H", data[at : at + 2])[0]
            if kind == 12 and platform in (0, 3):
                chars |= _format12(data, at)
            elif kind == 4 and (platform, encoding) in ((3, 1), (0, 3), (0, 4)):
                chars |= _format4(data, at)
        return frozenset(chars)
    except (OSError, struct.error, IndexError):
        return frozenset()


@lru_cache(maxsize=256)
def font_family(path: Path) -> str | None:
    """The family name (``name`` table, id 1) of a font file, or None."""
    try:
        data = path.read_bytes()
        table = _tables(data).get(b"name")
        if table is None:
            return None
        at = table[0]
        count, strings = struct.unpack(">HH", data[at + 2 : at + 6])
        for i in range(count):
            platform, _, _, name_id, length, offset = struct.unpack(
                ">6H", data[at + 6 + 12 * i : at + 18 + 12 * i]
            )
            if name_id == 1 and platform in (0, 3):
                raw = data[at + strings + offset : at + strings + offset + length]
                return raw.decode("utf-16-be", errors="replace")
    except (OSError, struct.error, IndexError):
        return None
    return None


# --------------------------------------------------------------------------------------------------
# Text coverage
# --------------------------------------------------------------------------------------------------

_SCRIPT_NAMES = {"CJK": "Chinese characters (Han)", "HIRAGANA": "Japanese kana", "KATAKANA": "Japanese kana",
                 "HANGUL": "Korean (Hangul)"}  # fmt: skip


def script_of(char: str) -> str:
    """A readable name of the script (or kind) of ``char``: ``"Arabic"``, ``"Devanagari"``, ``"emoji"``."""
    name = unicodedata.name(char, "")
    first = name.split(" ", 1)[0] if name else ""
    if first in _SCRIPT_NAMES:
        return _SCRIPT_NAMES[first]
    if unicodedata.category(char) == "So" or not first:
        return "emoji and symbols"
    return first.title()


def drawn_chars(text: str) -> set[str]:
    """The characters of ``text`` that need a glyph (not spaces, controls or joiners)."""
    return {c for c in text if not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf", "Mn")}


def missing_scripts(text: str, chars: frozenset[int]) -> list[str]:
    """Scripts of the characters of ``text`` a font with ``chars`` cannot draw, sorted."""
    return sorted({script_of(c) for c in drawn_chars(text) if ord(c) not in chars})


def font_files(roots: Iterable[Path]) -> list[Path]:
    """Every font file under ``roots``, in a stable order."""
    found: list[Path] = []
    for root in roots:
        for folder, _, files in os.walk(root):
            found.extend(Path(folder) / n for n in sorted(files) if n.lower().endswith(FONT_SUFFIXES))
    return found


def pick_font(text: str, preferred: list[tuple[Path, str]], roots: Iterable[Path]) -> FontChoice:
    """The font to burn ``text`` in: the first ``preferred`` (path, family) covering all of it, else any
    font under ``roots`` that does, else the first preferred font with the scripts it lacks."""
    for path, family in preferred:
        if not missing_scripts(text, font_chars(path)):
            return FontChoice(path, family)
    for candidate in font_files(roots):
        name = font_family(candidate)
        if name and not missing_scripts(text, font_chars(candidate)):
            return FontChoice(candidate, name)
    if not preferred:
        return FontChoice(None, None, missing_scripts(text, frozenset()))
    path, family = preferred[0]
    return FontChoice(path, family, missing_scripts(text, font_chars(path)))
