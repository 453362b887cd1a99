"""Knights-and-Knaves reward with Logic-RL's scheme (arXiv 2502.14768), on the response alone.

format: +1 when ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` each appear exactly once and in that
order, else -1. answer: +2 when every person's role is right, -1.5 when parsed but wrong, -2 when
unparseable or when the format failed. ``score`` = format + answer, in -3..3.

Logic-RL's prompt opened ``<think>`` itself and scored prompt+response; verl passes only the response, so
the model must write every tag (see ``aggc_rl.data.knights_knaves.SYSTEM_PROMPT``).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from aggc_rl.rewards.coercion import as_text

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
FORMAT_OK, FORMAT_BAD = 1.0, -1.0
ANSWER_RIGHT, ANSWER_WRONG, ANSWER_UNPARSEABLE = 2.0, -1.5, -2.0
MIN_SCORE, MAX_SCORE = FORMAT_BAD + ANSWER_UNPARSEABLE, FORMAT_OK + ANSWER_RIGHT

# "(1) Zoey is a knight": the reference format written by aggc_rl.data.knights_knaves.render_answer. Matched
# on whitespace-collapsed lines, so no "\s+" can backtrack quadratically over a long run of spaces.
_REFERENCE_LINE = re.compile(r"\([0-9]+\) ?(?P<name>[^ ].*?) is an? (?P<role>knight|knave)\b", re.I)
# Markdown noise tolerated around the words of "Name is a knight": bold/italics/code markers and spaces.
_NOISE = r"[\s*_`]*"


def parse_reference(ground_truth: Any) -> dict[str, str]:
    """``(1) Zoey is a knight`` lines -> {"Zoey": "knight", ...} in order (empty if none parse)."""
    roles: dict[str, str] = {}
    for line in as_text(ground_truth).splitlines():
        match = _REFERENCE_LINE.match(" ".join(line.split()))
        if match:
            roles[match["name"].strip("*_` ")] = match["role"].lower()
    return roles


def ground_truth_problem(ground_truth: Any) -> str | None:
    """Why ``ground_truth`` cannot be scored (no ``(1) Name is a knight`` line parses), or None."""
    if ground_truth is None:
        return "the ground truth is null"
    if not parse_reference(ground_truth):
        return f"the ground truth is not in the solution format '(1) Name is a knight': {as_text(ground_truth)[:60]!r}"
    return None


def check_format(response: str) -> bool:
    """Each tag exactly once, in the order think, /think, answer, /answer."""
    if any(response.count(tag) != 1 for tag in TAGS):
        return False
    positions = [response.find(tag) for tag in TAGS]
    return positions == sorted(positions)


@functools.lru_cache(maxsize=4096)
def _role_pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z]){_NOISE}is{_NOISE}(?:an?\b{_NOISE})?(knight|knave)",
        re.IGNORECASE,
    )


def parse_roles(answer: str, names: list[str]) -> dict[str, str] | None:
    """name -> role as stated in ``answer`` ("Zoey is a knight", "**Zoey** is a **knave**"), or None.

    None when a person is not mentioned, or is said to be both a knight and a knave (hedging is not an
    answer).
    """
    roles: dict[str, str] = {}
    for name in names:
        found = {m.group(1).lower() for m in _role_pattern(name).finditer(answer)}
        if len(found) != 1:
            return None
        roles[name] = found.pop()
    return roles


def _pred_text(roles: dict[str, str]) -> str:
    return "\n".join(f"({i}) {name} is a {role}" for i, (name, role) in enumerate(roles.items(), start=1))


def compute_score(
    data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """Logic-RL score of one response; never raises on odd input.

    Returns ``{"score", "format_score", "answer_score", "acc", "pred"}``; ``pred`` repeats the parsed roles
    in the reference format (None when unparseable), so majority voting can group equal answers.
    ``kwargs`` (verl's extra arguments, other tasks' reward_kwargs) are accepted and ignored.
    """
    del data_source, extra_info, kwargs
    response = as_text(solution_str)
    reference = parse_reference(ground_truth)
    format_ok = check_format(response)
    roles = None
    if format_ok and reference:
        start = response.find("<answer>") + len("<answer>")
        roles = parse_roles(response[start : response.find("</answer>")], list(reference))
    if roles is None:
        answer_score = ANSWER_UNPARSEABLE
    else:
        answer_score = ANSWER_RIGHT if roles == reference else ANSWER_WRONG
    format_score = FORMAT_OK if format_ok else FORMAT_BAD
    return {
        "score": format_score + answer_score,
        "format_score": format_score,
        "answer_score": answer_score,
        "acc": 1.0 if answer_score == ANSWER_RIGHT else 0.0,
        "pred": None if roles is None else _pred_text(roles),
    }
