"""What counts as visible text: whitespace and invisible characters make nothing a person can read."""

import unicodedata

# Characters that draw nothing although Unicode does not file them as spaces or format characters:
# the Hangul fillers, the braille blank, the combining grapheme joiner, the Mongolian vowel separator.
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u180e")
# Controls, format characters (zero-width spaces and joiners, marks, tags, BOM), separators,
# private-use and unassigned code points.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn"})


def is_visible(character: str) -> bool:
    if character in _BLANK_LOOKING or character.isspace():
        return False
    if "\ufe00" <= character <= "\ufe0f" or "\U000e0100" <= character <= "\U000e01ef":
        return False  # variation selectors: they only change the character before them
    return unicodedata.category(character) not in _INVISIBLE_CATEGORIES


def visible_count(value: str) -> int:
    """How many characters of `value` a person can see."""
    return sum(map(is_visible, value))


def is_blank(value: str) -> bool:
    """True if `value` shows nothing: empty, whitespace, zero-width or other invisible characters only."""
    return not any(map(is_visible, value))
