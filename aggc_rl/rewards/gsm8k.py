"""GSM8K reward: strict (``#### n``), flexible (last number) or math-verify, numbers compared by value.

verl's built-in scorer compares strings, so "18.0" fails against "18"; here every method compares values
(18 == 18.0, 1,234 == 1234, 180 != 18). The scorer never raises on odd responses and stays fast on huge
ones: see :mod:`aggc_rl.rewards.numbers` for the linear-time extraction.
"""

from __future__ import annotations

from typing import Any

from aggc_rl.rewards.coercion import as_text
from aggc_rl.rewards.numbers import (
    ascii_digits,
    extract_after_marker,
    extract_last_number,
    matches,
    parse_reference,
)

METHODS = ("strict", "flexible", "math_verify")
# Hard bound on one math-verify call (the child process is killed past it). Typical calls take ~1-40 ms.
MATH_VERIFY_TIMEOUT_S = 0.4


def _result(score: float, correct: bool, pred: str | None) -> dict[str, Any]:
    return {"score": float(score), "acc": 1.0 if correct else 0.0, "pred": pred}


def ground_truth_problem(ground_truth: Any) -> str | None:
    """Why ``ground_truth`` cannot be scored (every method compares against a number), or None."""
    if ground_truth is None:
        return "the ground truth is null"
    if parse_reference(ground_truth).value is None:
        return f"the ground truth is not a number: {as_text(ground_truth)[:60]!r}"
    return None


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Any = None,
    method: str = "strict",
    format_score: float = 0.0,
    score: float = 1.0,
    timeout_s: float = MATH_VERIFY_TIMEOUT_S,
) -> dict[str, Any]:
    """Score one response: ``score`` if right, ``format_score`` if an answer was found but is wrong, 0.0 if none.

    Returns ``{"score", "acc", "pred"}``; ``pred`` is the extracted answer (None when nothing was found).
    ``timeout_s`` bounds a ``math_verify`` call (start-up excluded); a call past it twice scores 0.0 with
    ``pred`` None and ``timeouts`` 1, which the router counts as an unscored sample.
    """
    del data_source, extra_info  # part of verl's calling convention; the answer alone decides
    if method not in METHODS:
        raise ValueError(f"unknown GSM8K scoring method {method!r}; allowed: {', '.join(METHODS)}")
    response = ascii_digits(as_text(solution_str))  # full-width, Arabic-Indic, ... digits are digits
    reference = parse_reference(ground_truth)
    if method == "math_verify":
        from aggc_rl.rewards import math_verify_sandbox

        verdict = math_verify_sandbox.check(reference.text, response, timeout_s)
        if verdict.timed_out:  # twice past the deadline: the router counts it (reward/timeouts)
            return {
                **_result(0.0, False, None),
                "timeouts": 1.0,
                "detail": f"math_verify over {timeout_s}s twice",
            }
        if verdict.pred is None:
            return _result(0.0, False, None)
        return _result(score if verdict.correct else format_score, verdict.correct, verdict.pred)
    found = extract_after_marker(response) if method == "strict" else extract_last_number(response)
    if found is None:
        return _result(0.0, False, None)
    correct = matches(found, reference)
    return _result(score if correct else format_score, correct, found.text)
