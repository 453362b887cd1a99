"""The one reward function to give verl: routes each sample to its task's scorer by ``data_source``.

    reward.custom_reward_function.path=$(python -c "import aggc_rl.rewards as r; print(r.__file__)")
    reward.custom_reward_function.name=compute_score

verl loads this file by path (``importlib.util.spec_from_file_location``) under a made-up module name, so
it imports everything absolutely, from the installed package.

Two things verl needs that a single scorer would not: (1) verl takes the reward's extra-info keys from the
FIRST sample of a batch and indexes every other sample with them, so in a mixed GSM8K + K&K batch every
result carries exactly ``RESULT_KEYS`` (missing ones are None); (2) ``reward_kwargs`` reach every sample, so each
scorer gets only the keyword arguments it declares, and one that no scorer declares is a TypeError (a typo).

A sample whose reward cannot be computed (an unknown ``data_source``, a null or unreadable ground truth, a
scorer that raised, a ``math_verify`` call past its deadline twice) is never dropped and never silently
zeroed: it scores ``UNSCORED_SCORE`` with ``unscored`` = 1 (and ``timeouts`` = 1 for a deadline), a warning
is logged with the running counts (:data:`EVENTS`), and :func:`event_metrics` sums a batch's flags into
``reward/unscored`` and ``reward/timeouts``. (Raising instead would make verl's agent loop drop the whole
prompt group with a traceback while ``response/aborted_ratio`` says 0.)
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aggc_rl import metrics as names
from aggc_rl.rewards import gsm8k, knights_knaves

logger = logging.getLogger("aggc_rl.rewards")

Scorer = Callable[..., dict[str, Any]]

SCORERS: dict[str, Scorer] = {
    "openai/gsm8k": gsm8k.compute_score,
    "gsm8k": gsm8k.compute_score,
    "knights_knaves": knights_knaves.compute_score,
}
#: data_source -> why a ground truth cannot be scored (None when it can); the preflight checks rows with it.
GROUND_TRUTH_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "openai/gsm8k": gsm8k.ground_truth_problem,
    "gsm8k": gsm8k.ground_truth_problem,
    "knights_knaves": knights_knaves.ground_truth_problem,
}
# Every result carries exactly these keys, in this order (see the module docstring).
RESULT_KEYS = ("score", "acc", "pred", "format_score", "answer_score", "unscored", "timeouts")
#: The score of a sample whose reward could not be computed (it is counted, see the module docstring).
UNSCORED_SCORE = 0.0
# Warnings per reason before they are thinned to one in LOG_EVERY (the counts stay exact).
LOG_FIRST, LOG_EVERY = 20, 100
# Arguments verl's reward loop adds when a reward model is configured; rule-based scorers ignore them.
IGNORED_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})
_POSITIONAL = frozenset({"data_source", "solution_str", "ground_truth", "extra_info"})


def _declared_kwargs(fn: Scorer) -> frozenset[str]:
    params = inspect.signature(fn).parameters.values()
    return frozenset(
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _POSITIONAL
    )


_DECLARED = {fn: _declared_kwargs(fn) for fn in set(SCORERS.values())}
KNOWN_KWARGS = frozenset().union(*_DECLARED.values())


class RewardEvents:
    """Process-wide counts of scored and unscored samples (thread-safe: verl scores from a thread pool)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.scored = 0
        self.unscored: Counter[str] = Counter()
        self.timeouts = 0

    def record(self, unscored_reason: str | None, timed_out: bool = False) -> tuple[int, int, int, int]:
        """Count one sample; returns (samples, unscored, timeouts, this reason's count)."""
        with self._lock:
            self.scored += 1
            if timed_out:
                self.timeouts += 1
            this = 0
            if unscored_reason is not None:
                self.unscored[unscored_reason] += 1
                this = self.unscored[unscored_reason]
            return self.scored, sum(self.unscored.values()), self.timeouts, this

    def reset(self) -> None:
        with self._lock:
            self.scored, self.timeouts = 0, 0
            self.unscored.clear()


EVENTS = RewardEvents()


def ground_truth_problem(data_source: Any, ground_truth: Any) -> str | None:
    """Why this row cannot be scored (unknown data_source, missing or unreadable ground truth), or None."""
    check = GROUND_TRUTH_CHECKS.get(data_source) if isinstance(data_source, str) else None
    if check is None:
        return f"unknown data_source {data_source!r} (the reward router knows {', '.join(sorted(SCORERS))})"
    return check(ground_truth)


def _unscored(data_source: Any, reason: str, detail: str, timed_out: bool = False) -> dict[str, Any]:
    samples, unscored, timeouts, this = EVENTS.record(reason, timed_out)
    if this <= LOG_FIRST or this % LOG_EVERY == 0:
        logger.warning(
            "reward not computed (%s) for data_source=%r: %s; scored %s, counted in %s "
            "[this process: %d unscored, %d timeouts of %d samples]",
            reason,
            data_source,
            detail,
            UNSCORED_SCORE,
            names.REWARD_UNSCORED,
            unscored,
            timeouts,
            samples,
        )
    result = dict.fromkeys(RESULT_KEYS)
    result.update(score=UNSCORED_SCORE, acc=0.0, unscored=1.0, timeouts=1.0 if timed_out else 0.0)
    return result


def compute_score(
    data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """Score one response with the scorer registered for ``data_source``; see ``SCORERS``.

    Never raises for a sample: an unscorable one is a counted event (module docstring). A keyword
    argument that no scorer declares is a configuration error and raises TypeError (the preflight of
    ``python -m aggc_rl.train`` refuses it before Ray starts).
    """
    unknown = set(kwargs) - KNOWN_KWARGS - IGNORED_KWARGS
    if unknown:
        raise TypeError(
            f"unknown reward keyword argument(s) {sorted(unknown)}; known: {', '.join(sorted(KNOWN_KWARGS))}"
        )
    problem = ground_truth_problem(data_source, ground_truth)
    if problem is not None:
        reason = "unknown data_source" if problem.startswith("unknown data_source") else "bad ground truth"
        return _unscored(data_source, reason, problem)
    scorer = SCORERS[data_source]
    mine = {k: v for k, v in kwargs.items() if k in _DECLARED[scorer]}
    try:
        result = scorer(data_source, solution_str, ground_truth, extra_info, **mine)
    except (TypeError, ValueError) as err:
        if "allowed:" in str(err):  # a bad reward_kwargs value (e.g. method): configuration, not a sample
            raise
        return _unscored(data_source, "scorer error", f"{type(err).__name__}: {err}")
    except Exception as err:  # a scorer bug or a dead math-verify worker must not drop the sample
        return _unscored(data_source, "scorer error", f"{type(err).__name__}: {err}")
    if result.get("timeouts"):
        return _unscored(data_source, "timeout", str(result.get("detail", "math_verify deadline")), True)
    EVENTS.record(None)
    out = {key: result.get(key) for key in RESULT_KEYS}
    out.update(unscored=0.0, timeouts=0.0)
    return out


def event_metrics(reward_extra_infos: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """``reward/unscored`` and ``reward/timeouts`` of one batch: how many samples carried each flag."""
    unscored = timeouts = 0.0
    for info in reward_extra_infos:
        unscored += float(info.get("unscored") or 0.0)
        timeouts += float(info.get("timeouts") or 0.0)
    return {names.REWARD_UNSCORED: unscored, names.REWARD_TIMEOUTS: timeouts}
