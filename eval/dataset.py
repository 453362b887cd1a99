"""Evaluation items from the verl-schema parquet that ``aggc_rl.data.gsm8k`` / ``knights_knaves`` write."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggc_rl.data.parquet_rows import read_rows
from eval.tasks import Task

TEST_FILE = "test.parquet"


@dataclass(frozen=True)
class EvalItem:
    """One prompt: its row index in the split, chat messages, gold answer and (K&K) puzzle size."""

    index: int
    data_source: str
    messages: tuple[dict[str, str], ...]
    ground_truth: str
    extra_info: dict[str, Any]
    n_people: int | None = None


def resolve_data_path(path: Path) -> Path:
    """A parquet file as given, or ``DIR/test.parquet``; FileNotFoundError naming what was looked for."""
    if path.is_dir():
        candidate = path / TEST_FILE
        if not candidate.is_file():
            raise FileNotFoundError(
                f"--data {path}: no {TEST_FILE} in that directory; pass a parquet file or the directory "
                "written by python -m aggc_rl.data.gsm8k / aggc_rl.data.knights_knaves"
            )
        return candidate
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file or directory")
    return path


def spread_indices(total: int, limit: int | None) -> list[int]:
    """``limit`` row indices evenly spaced over ``total`` rows (all rows when ``limit`` is None or larger).

    Evenly spaced rather than the first ``limit``: the K&K test split is ordered by puzzle size, and a
    quick ``--limit 50`` should still cover every size.
    """
    if limit is None or limit >= total:
        return list(range(total))
    return [i * total // limit for i in range(limit)]


def load_items(path: Path, task: Task, limit: int | None = None) -> list[EvalItem]:
    """The rows of ``path`` (a parquet file or a directory with test.parquet) as items of ``task``.

    ValueError when a row belongs to another task or lacks the fields scoring needs.
    """
    parquet = resolve_data_path(path)
    rows = read_rows(parquet)
    if not rows:
        raise ValueError(f"--data {parquet}: the file has no rows")
    items = []
    for index in spread_indices(len(rows), limit):
        row = rows[index]
        source = row.get("data_source")
        if source not in task.data_sources:
            raise ValueError(
                f"--data {parquet} row {index}: data_source {source!r} is not a {task.name} source "
                f"({', '.join(sorted(task.data_sources))}); wrong --task or wrong file?"
            )
        messages = row.get("prompt")
        truth = (row.get("reward_model") or {}).get("ground_truth")
        if not messages or truth is None:
            raise ValueError(
                f"--data {parquet} row {index}: needs 'prompt' messages and reward_model.ground_truth"
            )
        extra = row.get("extra_info") or {}
        n_people = extra.get("n_people") if task.has_sizes else None
        items.append(
            EvalItem(
                index=index,
                data_source=source,
                messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
                ground_truth=truth,
                extra_info=extra,
                n_people=None if n_people is None else int(n_people),
            )
        )
    return items
