"""Accuracy with a Wilson interval, unbiased pass@k, maj@k, format failures: pure functions over records.

* **accuracy**: mean correctness over all samples (with one greedy sample: the plain accuracy; with K
  samples: mean@K, the expected accuracy of one sample).
* **95% CI**: Wilson score interval with n = number of prompts. Samples of one prompt are not
  independent, so n is never the sample count; a prompt's mean over K samples varies no more than one
  Bernoulli draw, so with K > 1 the interval is conservative.
* **pass@k**: the unbiased estimator of Chen et al. 2021 (1 - C(n-c, k) / C(n, k) per prompt, averaged),
  for k = 1, 2, 4, ... < K and K.
* **maj@K**: per prompt, the most common extracted answer among the K samples (answers that could not be
  extracted do not vote; ties go to the answer seen first) is correct; 0 when no sample gave an answer.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from aggc_rl.stats import wilson_interval
from eval.scoring import ItemRecord


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_ks(n: int) -> list[int]:
    """The k reported for n samples: powers of two below n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) < n]
    return [*ks, n]


def majority_correct(votes: Sequence[Hashable | None], correct: Sequence[bool]) -> bool:
    """Whether the most common non-None vote belongs to a correct sample (first-seen wins ties)."""
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return False
    winner = counts.most_common(1)[0][0]  # Counter keeps insertion order among equal counts
    return next(ok for vote, ok in zip(votes, correct, strict=True) if vote == winner)


@dataclass(frozen=True)
class Accuracy:
    """A proportion over prompts with its Wilson 95% interval."""

    n_prompts: int
    accuracy: float
    ci95_low: float
    ci95_high: float


def accuracy_of(per_prompt: Sequence[float]) -> Accuracy:
    """Mean of per-prompt accuracies, with the Wilson interval over the prompt count."""
    p = math.fsum(per_prompt) / len(per_prompt)
    low, high = wilson_interval(p, len(per_prompt))
    return Accuracy(len(per_prompt), p, low, high)


@dataclass(frozen=True)
class Summary:
    """The numbers of one model on one task (``per_size`` only for Knights and Knaves)."""

    n_prompts: int
    samples_per_prompt: int
    accuracy: float
    ci95_low: float
    ci95_high: float
    pass_at_k: dict[int, float]
    maj_at_k: dict[int, float]
    format_failure_rate: float
    truncation_rate: float
    mean_response_tokens: float
    mean_score: float
    per_size: dict[int, Accuracy] = field(default_factory=dict)


def summarize(
    records: Sequence[ItemRecord], vote_key: Callable[[str | None], Hashable | None], by_size: bool = False
) -> Summary:
    """All summary numbers of ``records`` (every prompt must have the same number of samples)."""
    if not records:
        raise ValueError("no records to summarise")
    prompts: dict[int, list[ItemRecord]] = defaultdict(list)
    for record in records:
        prompts[record.index].append(record)
    counts = {len(samples) for samples in prompts.values()}
    if len(counts) != 1:
        raise ValueError(
            f"prompts have different sample counts {sorted(counts)}; expected the same K for all"
        )
    k = counts.pop()
    per_prompt = {i: sum(r.correct for r in samples) / k for i, samples in prompts.items()}
    overall = accuracy_of(list(per_prompt.values()))
    passes: dict[int, float] = {}
    majority: dict[int, float] = {}
    if k > 1:
        for kk in pass_ks(k):
            values = [pass_at_k(k, sum(r.correct for r in s), kk) for s in prompts.values()]
            passes[kk] = math.fsum(values) / len(values)
        wins = [
            majority_correct([vote_key(r.pred) for r in s], [r.correct for r in s]) for s in prompts.values()
        ]
        majority[k] = sum(wins) / len(wins)
    per_size: dict[int, Accuracy] = {}
    if by_size:
        sizes: dict[int, list[float]] = defaultdict(list)
        for i, samples in prompts.items():
            if samples[0].n_people is not None:
                sizes[samples[0].n_people].append(per_prompt[i])
        per_size = {size: accuracy_of(values) for size, values in sorted(sizes.items())}
    n = len(records)
    return Summary(
        n_prompts=len(prompts),
        samples_per_prompt=k,
        accuracy=overall.accuracy,
        ci95_low=overall.ci95_low,
        ci95_high=overall.ci95_high,
        pass_at_k=passes,
        maj_at_k=majority,
        format_failure_rate=sum(r.format_failure for r in records) / n,
        truncation_rate=sum(r.truncated for r in records) / n,
        mean_response_tokens=sum(r.response_tokens for r in records) / n,
        mean_score=math.fsum(r.score for r in records) / n,
        per_size=per_size,
    )
