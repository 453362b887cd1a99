"""What differs between tasks when evaluating: data sources, scorer options, format failure, vote keys.

Scoring always goes through :func:`aggc_rl.rewards.compute_score`, the router verl calls in training, so an
evaluation number and a training reward come from the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from aggc_rl.data import gsm8k as gsm8k_data
from aggc_rl.data import knights_knaves as kk_data
from aggc_rl.rewards import gsm8k as gsm8k_reward


@dataclass(frozen=True)
class Task:
    """One task: the ``data_source`` values it accepts and how its scorer results are read."""

    name: str
    data_sources: frozenset[str]
    methods: tuple[str, ...]  # scorer methods a user may pick; () = the scorer has none
    default_method: str | None
    format_failed: Callable[[Mapping[str, Any]], bool]
    format_failure_definition: str
    vote_key: Callable[[str | None], Hashable | None]
    has_sizes: bool  # per-size (n_people) accuracy

    def scorer_kwargs(self, method: str | None) -> dict[str, Any]:
        """Keyword arguments for the reward router; ValueError for a method the task does not have."""
        if method is None:
            method = self.default_method
        if not self.methods:
            if method is not None:
                raise ValueError(f"--method {method!r}: task {self.name} has a single scorer (no --method)")
            return {}
        if method not in self.methods:
            raise ValueError(f"--method {method!r} for task {self.name}: allowed {', '.join(self.methods)}")
        return {"method": method}


def _number_vote(pred: str | None) -> Hashable | None:
    """Equal numbers vote together: "18", "18.0" and "18.00" are one answer."""
    if pred is None:
        return None
    try:
        return Fraction(pred)
    except (ValueError, ZeroDivisionError):
        return pred.strip()


def _text_vote(pred: str | None) -> Hashable | None:
    return None if pred is None else pred.strip()


GSM8K = Task(
    name="gsm8k",
    data_sources=frozenset({gsm8k_data.DATA_SOURCE, "gsm8k"}),
    methods=gsm8k_reward.METHODS,
    default_method="strict",
    format_failed=lambda result: result.get("pred") is None,
    format_failure_definition="no answer could be extracted (pred is null)",
    vote_key=_number_vote,
    has_sizes=False,
)
KNIGHTS_KNAVES = Task(
    name="knights_knaves",
    data_sources=frozenset({kk_data.DATA_SOURCE}),
    methods=(),
    default_method=None,
    format_failed=lambda result: (result.get("format_score") or 0.0) < 0,
    format_failure_definition="format score < 0 (<think></think><answer></answer> not each once, in order)",
    vote_key=_text_vote,
    has_sizes=True,
)
TASKS: dict[str, Task] = {task.name: task for task in (GSM8K, KNIGHTS_KNAVES)}


def get_task(name: str) -> Task:
    """The task called ``name``; ValueError listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown --task {name!r}; allowed: {', '.join(TASKS)}") from None
