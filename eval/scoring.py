"""Score completions with the training reward router and keep one record per (prompt, sample)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from aggc_rl.rewards import compute_score
from eval.backends import Completion
from eval.dataset import EvalItem
from eval.tasks import Task


@dataclass(frozen=True)
class ItemRecord:
    """One scored response, as written to ``items.jsonl``."""

    index: int  # row of the prompt in the parquet split
    sample: int  # 0..n-1
    response: str
    pred: str | None
    score: float
    correct: bool
    format_failure: bool
    response_tokens: int
    truncated: bool
    ground_truth: str
    n_people: int | None = None  # K&K only
    format_score: float | None = None  # K&K only
    answer_score: float | None = None  # K&K only

    def to_json(self) -> dict[str, Any]:
        """The record without the K&K-only fields on other tasks."""
        return {k: v for k, v in asdict(self).items() if v is not None or k == "pred"}


def score_completions(
    items: Sequence[EvalItem], completions: Sequence[Sequence[Completion]], task: Task, method: str | None
) -> list[ItemRecord]:
    """Records in prompt order, then sample order; ``method`` picks the GSM8K scorer (strict by default)."""
    if len(items) != len(completions):
        raise ValueError(f"{len(items)} prompts but {len(completions)} completion lists from the backend")
    kwargs = task.scorer_kwargs(method)
    records = []
    for item, samples in zip(items, completions, strict=True):
        for sample, completion in enumerate(samples):
            result = compute_score(
                item.data_source, completion.text, item.ground_truth, item.extra_info, **kwargs
            )
            records.append(
                ItemRecord(
                    index=item.index,
                    sample=sample,
                    response=completion.text,
                    pred=result["pred"],
                    score=float(result["score"]),
                    correct=result["acc"] == 1.0,
                    format_failure=task.format_failed(result),
                    response_tokens=completion.num_tokens,
                    truncated=completion.truncated,
                    ground_truth=item.ground_truth,
                    n_people=item.n_people,
                    format_score=result.get("format_score"),
                    answer_score=result.get("answer_score"),
                )
            )
    return records
