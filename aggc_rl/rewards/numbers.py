"""Find the final number of a math response and compare numbers by value.

Every search here is linear in the input and only ever runs a regex on a short, bounded window
(``str.rfind`` locates the marker or the last digit first), so a 1 MB response or 200,000 ``####``
markers cost milliseconds, never catastrophic backtracking.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction

from aggc_rl.rewards.coercion import as_text

MARKER = "####"
# The longest number we read. Far longer than any real answer; it bounds the regex work per call.
WINDOW = 256
_MINUS = "-\u2212"  # ASCII hyphen-minus and the Unicode minus sign
# Thousands groups must be complete ("1,234" but not "1,2345"); a decimal part is optional.
_NUMBER = r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+"
# After the marker: a short prefix of signs, "$" and spaces, then the number. The prefix class holds no
# digit or ".", so there is exactly one way to split it from the number (no backtracking blow-up).
_AFTER_MARKER = re.compile(rf"(?P<prefix>[-\u2212+$\s]{{0,8}})(?P<num>{_NUMBER})", re.ASCII)
_AT_END = re.compile(rf"(?:{_NUMBER})\Z", re.ASCII)
_PLAIN_REFERENCE = re.compile(r"[-\u2212+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:/[0-9]+)?", re.ASCII)
# Python refuses int() of more digits than this; longer references are compared as strings.
_MAX_REFERENCE_DIGITS = 4000


# Any decimal digit (Unicode category Nd: full-width, Arabic-Indic, Devanagari, ...) that is not ASCII, and
# the full-width / Arabic forms of the signs and separators a number is written with.
_NON_ASCII_NUMBER_CHAR = re.compile(r"(?=\d)[^0-9]|[\uff03\uff04\uff0b\uff0c\uff0d\uff0e\u066b\u066c]")
_PUNCTUATION = {
    "\uff03": "#",  # full-width number sign (a full-width "####" marker)
    "\uff04": "$",
    "\uff0b": "+",
    "\uff0c": ",",
    "\uff0d": "-",
    "\uff0e": ".",
    "\u066b": ".",  # Arabic decimal separator
    "\u066c": ",",  # Arabic thousands separator
}


def _ascii_char(char: str) -> str:
    if char in _PUNCTUATION:
        return _PUNCTUATION[char]
    digit = unicodedata.decimal(char, None)
    return char if digit is None else str(digit)


def ascii_digits(text: str) -> str:
    """``text`` with every Unicode decimal digit as its ASCII digit (full-width U+FF11 U+FF18, Arabic-Indic U+0661 U+0668, Devanagari U+0967 U+096E -> ``18``).

    Only decimal digits (``unicodedata.decimal``) and the full-width/Arabic number punctuation are
    rewritten, so superscripts (``m²``) and fractions (``½``) do not turn into extra numbers, as NFKC
    would make them. Pure-ASCII text (the usual case) is returned as it is, at no cost.
    """
    if text.isascii():
        return text
    found = set(_NON_ASCII_NUMBER_CHAR.findall(text))
    return text.translate({ord(c): _ascii_char(c) for c in found}) if found else text


@dataclass(frozen=True)
class ExtractedNumber:
    """A number found in a response: ``text`` is what we report (sign kept, commas and ``$`` removed)."""

    text: str
    value: Fraction


@dataclass(frozen=True)
class Reference:
    """A ground truth: ``value`` when it is a number, else only the normalised ``text`` is compared."""

    text: str
    value: Fraction | None


def _number(digits: str, negative: bool) -> ExtractedNumber:
    plain = digits.replace(",", "")
    text = ("-" if negative else "") + (("0" + plain) if plain.startswith(".") else plain)
    return ExtractedNumber(text=text, value=Fraction(text))


def extract_after_marker(response: str, marker: str = MARKER) -> ExtractedNumber | None:
    """The number right after the LAST ``marker`` (whitespace, ``$`` and a sign allowed before it), else None.

    Whatever follows the number (a period, a unit word) is ignored; text that is not a number right after
    the marker means no answer, even if an earlier marker was followed by one.
    """
    pos = response.rfind(marker)
    if pos < 0:
        return None
    window = response[pos + len(marker) : pos + len(marker) + WINDOW].lstrip()
    match = _AFTER_MARKER.match(window)
    if match is None:
        return None
    prefix = match.group("prefix")
    return _number(match.group("num"), negative=any(c in _MINUS for c in prefix))


def extract_last_number(response: str) -> ExtractedNumber | None:
    """The last number anywhere in ``response`` (lm-eval's "flexible-extract" idea), else None.

    A minus counts as a sign only when it does not follow a word character, so "pages 3-5" gives 5.
    """
    last = max(response.rfind(d) for d in "0123456789")
    if last < 0:
        return None
    start = max(0, last + 1 - WINDOW)
    match = _AT_END.search(response, start, last + 1)
    if match is None:  # unreachable: a lone digit always matches, kept as a guard
        return None
    before = match.start()
    if before > 0 and response[before - 1] == "$":
        before -= 1
    negative = (
        before > 0
        and response[before - 1] in _MINUS
        and (before < 2 or not (response[before - 2].isalnum() or response[before - 2] in "._"))
    )
    return _number(match.group(0), negative=negative)


def normalise_text(text: str) -> str:
    """Case-folded, whitespace-collapsed, without a trailing period: how non-numeric answers compare."""
    return " ".join(text.casefold().split()).rstrip(".").strip()


def parse_reference(ground_truth: object) -> Reference:
    """The ground truth as a number when it is one ("1,234", "$18", "-5", "0.5", "3/4"), else as text.

    A full GSM8K solution (with ``####``) is accepted too: its final number is the reference.
    """
    raw = ascii_digits(as_text(ground_truth)).strip()
    if MARKER in raw:
        found = extract_after_marker(raw)
        if found is not None:
            return Reference(text=found.text, value=found.value)
    cleaned = raw.replace(",", "").replace("$", "").strip().rstrip(".")
    if len(cleaned) <= _MAX_REFERENCE_DIGITS and _PLAIN_REFERENCE.fullmatch(cleaned):
        text = "-" + cleaned[1:] if cleaned[0] in _MINUS else cleaned
        try:
            return Reference(text=text, value=Fraction(text))
        except (ValueError, ZeroDivisionError):
            pass
    return Reference(text=normalise_text(raw), value=None)


def matches(found: ExtractedNumber, reference: Reference) -> bool:
    """Numbers compare by value (18 == 18.0, 1,234 == 1234); a text reference compares as text."""
    if reference.value is not None:
        return found.value == reference.value
    return normalise_text(found.text) == reference.text
