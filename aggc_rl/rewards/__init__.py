"""The one reward function to give verl: routes each sample to its task's scorer by ``data_source``.

    reward.custom_reward_function.path=$(python -c "import aggc_rl.rewards as r; print(r.__file__)")
    reward.custom_reward_function.name=compute_score

verl loads this file by path (``importlib.util.spec_from_file_location``) under a made-up module name, so
it imports everything absolutely, from the installed package.

Two things verl needs that a single scorer would not: (1) verl takes the reward's extra-info keys from the
FIRST sample of a batch and indexes every other sample with them, so in a mixed GSM8K + K&K batch every
result carries exactly ``RESULT_KEYS`` (missing ones are None); (2) ``reward_kwargs`` reach every sample, so each
scorer gets only the keyword arguments it declares, and one that no scorer declares is a TypeError (a typo).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from aggc_rl.rewards import gsm8k, knights_knaves

Scorer = Callable[..., dict[str, Any]]

SCORERS: dict[str, Scorer] = {
    "openai/gsm8k": gsm8k.compute_score,
    "gsm8k": gsm8k.compute_score,
    "knights_knaves": knights_knaves.compute_score,
}
# Every result carries exactly these keys, in this order (see the module docstring).
RESULT_KEYS = ("score", "acc", "pred", "format_score", "answer_score")
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


def compute_score(
    data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """Score one response with the scorer registered for ``data_source``; see ``SCORERS``."""
    scorer = SCORERS.get(data_source) if isinstance(data_source, str) else None
    if scorer is None:
        raise ValueError(f"unknown data_source {data_source!r}; known: {', '.join(sorted(SCORERS))}")
    unknown = set(kwargs) - KNOWN_KWARGS - IGNORED_KWARGS
    if unknown:
        raise TypeError(
            f"unknown reward keyword argument(s) {sorted(unknown)}; known: {', '.join(sorted(KNOWN_KWARGS))}"
        )
    mine = {k: v for k, v in kwargs.items() if k in _DECLARED[scorer]}
    result = scorer(data_source, solution_str, ground_truth, extra_info, **mine)
    return {key: result.get(key) for key in RESULT_KEYS}
