"""Number extraction and value comparison behind the GSM8K scorer."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from aggc_rl.rewards.numbers import (
    ExtractedNumber,
    extract_after_marker,
    extract_last_number,
    matches,
    normalise_text,
    parse_reference,
)


@pytest.mark.parametrize(
    ("response", "text"),
    [
        ("#### 18", "18"),
        ("####18", "18"),
        ("####\n\n  18", "18"),
        ("#### $18", "18"),
        ("#### $ 18", "18"),
        ("#### 1,234", "1234"),
        ("#### 1,234,567.25", "1234567.25"),
        ("#### 18.", "18"),
        ("#### 18 dollars.", "18"),
        ("#### 18.0", "18.0"),
        ("#### -5", "-5"),
        ("#### $-5", "-5"),
        ("#### -$5", "-5"),
        ("#### \u22125", "-5"),
        ("#### +5", "5"),
        ("#### .5", "0.5"),
        ("#### 0.5", "0.5"),
        ("#### 7 #### 18", "18"),
        ("so 12 apples\n#### 180 apples", "180"),
        ("#### 1,2345", "1"),  # a malformed thousands group is not read as 12345
    ],
)
def test_after_marker_reads_the_number_after_the_last_marker(response: str, text: str) -> None:
    found = extract_after_marker(response)
    assert found is not None
    assert found.text == text
    assert found.value == Fraction(text)


@pytest.mark.parametrize(
    "response",
    [
        "",
        "18",
        "The answer is 18.",
        "####",
        "#### ",
        "#### eighteen",
        "#### 18\n#### none",
        "## 18",
        "#### $",
    ],
)
def test_after_marker_finds_nothing(response: str) -> None:
    assert extract_after_marker(response) is None


def test_after_marker_reads_only_a_bounded_window() -> None:
    assert extract_after_marker("####" + " " * 100 + "18") is not None
    # A number beyond the window is not a strict answer (and reading up to it would be unbounded work).
    assert extract_after_marker("####" + " " * 10_000 + "18") is None


@pytest.mark.parametrize(
    ("response", "text"),
    [
        ("The answer is 18.", "18"),
        ("It costs $1,234.50 in total", "1234.50"),
        ("x = -5", "-5"),
        ("-5", "-5"),
        ("pages 3-5", "5"),  # a hyphen between numbers is not a sign
        ("v-5", "5"),
        ("items 1,2,3", "3"),  # a list, not a thousands number
        ("half is 0.5", "0.5"),
        ("about .5 of it", "0.5"),
        ("12 then 180", "180"),
        ("#### 18\nthen 7 more", "7"),
        ("18" + "x" * 10_000, "18"),
    ],
)
def test_last_number(response: str, text: str) -> None:
    found = extract_last_number(response)
    assert found is not None
    assert found.text == text


@pytest.mark.parametrize("response", ["", "no digits at all", "####", "-", "$.", "\u0661\u0662"])
def test_last_number_finds_nothing(response: str) -> None:
    assert extract_last_number(response) is None


@pytest.mark.parametrize(
    ("ground_truth", "value"),
    [
        ("18", Fraction(18)),
        (" 18 ", Fraction(18)),
        ("1,234", Fraction(1234)),
        ("$18", Fraction(18)),
        ("-5", Fraction(-5)),
        ("\u22125", Fraction(-5)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("3/4", Fraction(3, 4)),
        ("18.", Fraction(18)),
        (18, Fraction(18)),
        (18.5, Fraction(37, 2)),
        (b"18", Fraction(18)),
        ("Janet sells 9 eggs.\n#### 18", Fraction(18)),
    ],
)
def test_numeric_references(ground_truth: object, value: Fraction) -> None:
    assert parse_reference(ground_truth).value == value


@pytest.mark.parametrize(
    ("ground_truth", "text"),
    [("Yes", "yes"), ("  Blue  Whale. ", "blue whale"), (None, ""), ("1/0", "1/0"), ("1e5", "1e5")],
)
def test_text_references(ground_truth: object, text: str) -> None:
    reference = parse_reference(ground_truth)
    assert reference.value is None
    assert reference.text == text


def test_huge_numeric_reference_falls_back_to_text_quickly() -> None:
    started = time.perf_counter()
    reference = parse_reference("9" * 1_000_000)
    assert time.perf_counter() - started < 0.5
    assert reference.value is None


@pytest.mark.parametrize(
    ("pred", "truth", "same"),
    [
        ("18", "18", True),
        ("18.0", "18", True),
        ("18.00", "18.0", True),
        ("1234", "1,234", True),
        ("180", "18", False),
        ("18", "180", False),
        ("-5", "-5", True),
        ("5", "-5", False),
        ("0.5", "0.5", True),
        ("0.5", "1/2", True),
        ("0.5", ".5", True),
        ("18", "eighteen", False),
    ],
)
def test_matches_compares_by_value(pred: str, truth: str, same: bool) -> None:
    found = ExtractedNumber(text=pred, value=Fraction(pred))
    assert matches(found, parse_reference(truth)) is same


def test_text_reference_matches_normalised_text() -> None:
    found = ExtractedNumber(text="1e5", value=Fraction(100000))
    assert matches(found, parse_reference("1E5"))
    assert normalise_text("  The  Answer. ") == "the answer"
