"""Short, unique names for runs or checkpoints given as paths (for legends, tables and output folders)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def parse_labels(spec: str | None, count: int, what: str = "runs") -> list[str] | None:
    """``"a,b"`` -> ["a", "b"]; None when not given. The count must match and labels must be distinct."""
    if spec is None:
        return None
    labels = [part.strip() for part in spec.split(",")]
    if len(labels) != count:
        raise ValueError(
            f"--labels {spec!r} names {len(labels)} label(s) for {count} {what}; give one per entry"
        )
    if any(not label for label in labels):
        raise ValueError(f"--labels {spec!r} has an empty label")
    if len(set(labels)) != len(labels):
        raise ValueError(f"--labels {spec!r} repeats a label; labels must be distinct")
    return labels


def unique_labels(paths: Sequence[str | Path]) -> list[str]:
    """The shortest tail of each path that tells the paths apart.

    ``[runs/a/step_50/merged, runs/b/step_50/merged]`` -> ``[a/step_50/merged, b/step_50/merged]``; a
    ``.jsonl`` file is named by its stem (``aggc/gsm8k_global.jsonl`` -> ``gsm8k_global``); a path given
    twice gets ``#2``.
    """
    parts = []
    for path in paths:
        resolved = Path(path).resolve()
        tail = list(resolved.parts)
        if resolved.suffix in {".jsonl", ".json"}:
            tail[-1] = resolved.stem
        parts.append(tail)
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or all(depth >= len(p) for p in parts):
            break
        depth += 1
    seen: dict[str, int] = {}
    unique = []
    for label in labels:  # the same path given twice: number the repeats
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return unique


def safe_name(label: str) -> str:
    """A label as a file or folder name: characters other than letters, digits, ``-_.`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "run"
