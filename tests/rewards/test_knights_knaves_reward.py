"""Knights-and-Knaves scorer: Logic-RL's format and answer rules, and robustness on junk."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggc_rl.rewards.knights_knaves import (
    MAX_SCORE,
    MIN_SCORE,
    TAGS,
    check_format,
    compute_score,
    parse_reference,
    parse_roles,
)

TRUTH = "(1) Zoey is a knight\n(2) Oliver is a knave\n(3) Ethan is a knight"
RIGHT = "(1) Zoey is a knight\n(2) Oliver is a knave\n(3) Ethan is a knight"
WRONG = "(1) Zoey is a knight\n(2) Oliver is a knight\n(3) Ethan is a knight"
TIME_LIMIT_S = 0.5


def respond(answer: str, think: str = "Zoey says ...") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def score(response: object, truth: object = TRUTH) -> dict:
    return compute_score("knights_knaves", response, truth)


def test_reference_lines_parse_in_order() -> None:
    assert parse_reference(TRUTH) == {"Zoey": "knight", "Oliver": "knave", "Ethan": "knight"}
    assert list(parse_reference(TRUTH)) == ["Zoey", "Oliver", "Ethan"]
    assert parse_reference("(1) Mary Ann is a Knave") == {"Mary Ann": "knave"}
    assert parse_reference("no lines here") == {}


@pytest.mark.parametrize(
    ("response", "ok"),
    [
        ("<think>a</think><answer>b</answer>", True),
        ("preamble <think>a</think> middle <answer>b</answer> tail", True),
        ("<think>a</think>", False),
        ("<answer>b</answer>", False),
        ("<answer>b</answer><think>a</think>", False),
        ("<think>a<answer>b</think></answer>", False),
        ("<think>a</think><think>a</think><answer>b</answer>", False),
        ("<think>a</think><answer>b</answer></answer>", False),
        ("<think>a</think><answer>b</answer><answer>", False),
        ("", False),
    ],
)
def test_format_needs_each_tag_once_in_order(response: str, ok: bool) -> None:
    assert check_format(response) is ok


def test_right_answer_with_format_scores_three() -> None:
    result = score(respond(RIGHT))
    assert result == {
        "score": 3.0,
        "format_score": 1.0,
        "answer_score": 2.0,
        "acc": 1.0,
        "pred": RIGHT,
    }


def test_wrong_answer_with_format() -> None:
    result = score(respond(WRONG))
    assert (result["score"], result["format_score"], result["answer_score"], result["acc"]) == (
        -0.5,
        1.0,
        -1.5,
        0.0,
    )
    assert "Oliver is a knight" in result["pred"]


@pytest.mark.parametrize(
    "answer",
    [
        "(1) Zoey is a knight\n(2) Oliver is a knave",  # Ethan missing
        "I am not sure.",
        "",
        "Zoey is a knight, Zoey is a knave, Oliver is a knave, Ethan is a knight",  # hedged
        "Zoey: knight, Oliver: knave, Ethan: knight",  # not "is a"
    ],
)
def test_unparseable_answer_with_format(answer: str) -> None:
    result = score(respond(answer))
    assert (result["score"], result["answer_score"], result["acc"], result["pred"]) == (-1.0, -2.0, 0.0, None)


@pytest.mark.parametrize(
    "response",
    [
        RIGHT,  # no tags at all
        f"<answer>{RIGHT}</answer>",  # the think block is missing (e.g. the prompt opened it)
        f"<think>x</think><answer>{RIGHT}</answer></answer>",
        f"<answer>{RIGHT}</answer><think>x</think>",
    ],
)
def test_failed_format_forfeits_the_answer(response: str) -> None:
    result = score(response)
    assert (result["score"], result["format_score"], result["answer_score"], result["acc"]) == (
        -3.0,
        -1.0,
        -2.0,
        0.0,
    )


@pytest.mark.parametrize(
    "answer",
    [
        "**Zoey** is a **knight**\n**Oliver** is a **knave**\n**Ethan** is a **knight**",
        "ZOEY IS A KNIGHT. oliver is a knave. Ethan Is A Knight.",
        "- Ethan is a knight\n- Zoey is a knight\n- Oliver is a knave",  # any order
        "(1) Zoey is a knight (2) Oliver is an knave (3) Ethan is a `knight`",
        "Zoey is a knight; so Oliver is a knave, and Ethan is a knight since Zoey is a knight.",  # consistent repeat
    ],
)
def test_answer_parsing_tolerates_markdown_case_and_order(answer: str) -> None:
    assert score(respond(answer))["score"] == 3.0


def test_names_match_whole_words_only() -> None:
    truth = "(1) Ann is a knight\n(2) Anna is a knave"
    assert parse_roles("Anna is a knave. Ann is a knight.", ["Ann", "Anna"]) == {
        "Ann": "knight",
        "Anna": "knave",
    }
    assert score(respond("Anna is a knave"), truth)["answer_score"] == -2.0


def test_only_the_answer_section_is_read() -> None:
    result = score(respond("I give up", think=RIGHT))
    assert result["answer_score"] == -2.0


def test_unparseable_ground_truth_never_rewards() -> None:
    result = score(respond(RIGHT), truth="garbage")
    assert result["answer_score"] == -2.0
    assert result["acc"] == 0.0


def test_extra_kwargs_are_ignored() -> None:
    result = compute_score(
        "knights_knaves", respond(RIGHT), TRUTH, None, method="strict", reward_router_address=None
    )
    assert result["score"] == 3.0


JUNK = {
    "none": None,
    "int": 3,
    "bytes": respond(RIGHT).encode(),
    "binary": bytes(range(256)).decode("latin-1") * 40,
    "surrogates": "\ud800" + respond(RIGHT),
    "1MB text": "Zoey is a " * 100_000,
    "1MB answer": "<think>x</think><answer>" + "Zoey " * 200_000 + "</answer>",
    "1MB spaced names": "<think>x</think><answer>" + ("Zoey" + " " * 1000 + "is ") * 1000 + "</answer>",
    "200k tags": "<think>" * 200_000,
    "200k answers": respond(RIGHT) * 20_000,
    "1MB stars": "<think>x</think><answer>Zoey " + "*" * 1_000_000 + "</answer>",
}


@pytest.mark.parametrize("name", sorted(JUNK))
def test_junk_scores_without_raising_and_fast(name: str) -> None:
    started = time.perf_counter()
    result = score(JUNK[name])
    assert time.perf_counter() - started < TIME_LIMIT_S
    assert MIN_SCORE <= result["score"] <= MAX_SCORE


@pytest.mark.parametrize(
    "truth",
    [
        None,
        b"(1) Zoey is a knight",
        7,
        "",
        "(1) x is a knight\n" * 50_000,
        "(1) x" + " " * 1_000_000 + "y",  # once quadratic: a lazy name then "\s+is" over a long space run
        "(1) x" + " is" * 300_000,
    ],
)
def test_junk_ground_truth_scores_without_raising(truth: object) -> None:
    started = time.perf_counter()
    result = score(respond(RIGHT), truth)
    assert time.perf_counter() - started < TIME_LIMIT_S
    assert MIN_SCORE <= result["score"] <= MAX_SCORE


_PIECES = st.sampled_from(
    [*TAGS, "Zoey", "Oliver", "Ethan", " is a ", "knight", "knave", "**", "\n", "(1) ", " "]
)
_FUZZ = st.lists(_PIECES | st.text(max_size=5), max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(response=_FUZZ, truth=_FUZZ | st.just(TRUTH))
def test_fuzz_scores_stay_on_the_grid(response: str, truth: str) -> None:
    started = time.perf_counter()
    result = score(response, truth)
    assert time.perf_counter() - started < TIME_LIMIT_S
    assert result["format_score"] in (1.0, -1.0)
    assert result["answer_score"] in (2.0, -1.5, -2.0)
    assert result["score"] == result["format_score"] + result["answer_score"]
    assert MIN_SCORE <= result["score"] <= MAX_SCORE
    assert result["acc"] == (1.0 if result["answer_score"] == 2.0 else 0.0)
    assert (result["pred"] is None) == (result["answer_score"] == -2.0)
    if result["format_score"] == -1.0:
        assert result["answer_score"] == -2.0
