"""The side-by-side markdown table of several models' summaries (metrics as rows, models as columns)."""

from __future__ import annotations

from collections.abc import Sequence

from aggc_rl.report.markdown import table
from eval.metrics import Summary


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def comparison_table(labels: Sequence[str], summaries: Sequence[Summary]) -> str:
    """Accuracy with its 95% CI, pass@k, maj@k, format failures, truncation, length, per-size accuracy."""
    rows: list[list[str]] = [
        ["prompts x samples", *(f"{s.n_prompts} x {s.samples_per_prompt}" for s in summaries)],
        [
            "accuracy % [95% CI]",
            *(f"{_pct(s.accuracy)} [{_pct(s.ci95_low)}, {_pct(s.ci95_high)}]" for s in summaries),
        ],
    ]
    for k in sorted({k for s in summaries for k in s.pass_at_k}):
        rows.append([f"pass@{k} %", *(_pct(s.pass_at_k[k]) if k in s.pass_at_k else "-" for s in summaries)])
    for k in sorted({k for s in summaries for k in s.maj_at_k}):
        rows.append([f"maj@{k} %", *(_pct(s.maj_at_k[k]) if k in s.maj_at_k else "-" for s in summaries)])
    rows += [
        ["format failures %", *(_pct(s.format_failure_rate) for s in summaries)],
        ["truncated %", *(_pct(s.truncation_rate) for s in summaries)],
        ["mean response tokens", *(f"{s.mean_response_tokens:.1f}" for s in summaries)],
        ["mean score", *(f"{s.mean_score:.3f}" for s in summaries)],
    ]
    for size in sorted({size for s in summaries for size in s.per_size}):
        cells = []
        for s in summaries:
            acc = s.per_size.get(size)
            cells.append("-" if acc is None else f"{_pct(acc.accuracy)} (n={acc.n_prompts})")
        rows.append([f"accuracy %, {size} people", *cells])
    return table(["metric", *labels], rows)
