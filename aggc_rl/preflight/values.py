"""Value checks that need no files: numbers that must be finite, and the strategy the clip engine needs.

A NaN or infinite loss coefficient (``entropy_coeff=nan``) is accepted by verl and turns every gradient into
NaN; no setting of verl's or ours means anything with NaN, and an infinite one only where its default is
infinite already. ``actor.strategy=fsdp`` passes ``--cfg job`` but the clip engine needs FSDP2 (per-module
norms of sharded DTensors), whatever the method.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from aggc_rl.preflight.problems import VALUE, Problem

#: The engine strategy our configs route to (verl's ``fsdp2`` builder under the ``aggc_fsdp2`` backend).
FSDP2 = "fsdp2"
#: Blocks that are not training settings (Ray's and Hydra's own).
SKIPPED_BLOCKS = ("hydra", "ray_kwargs")


def numbers(config: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every float of a plain config with its dotted key."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            if not prefix and key in SKIPPED_BLOCKS:
                continue
            yield from numbers(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            yield from numbers(value, f"{prefix}[{i}]")
    elif isinstance(config, float):
        yield prefix, config


def check_finite(config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> list[Problem]:
    """Non-finite numbers: NaN anywhere, +-inf where the default (``defaults``, same layout) is finite."""
    allowed_inf = {key for key, value in numbers(defaults or {}) if math.isinf(value)}
    problems = []
    for key, value in numbers(config):
        if math.isnan(value) or (math.isinf(value) and key not in allowed_inf):
            problems.append(
                Problem(key, value, "not a finite number (a loss coefficient like this makes every gradient "
                        "NaN)", "Allowed: a finite number.", VALUE)
            )  # fmt: skip
    return problems


def check_strategy(key: str, value: Any) -> list[Problem]:
    """The clip engine builds its model with FSDP2 for every method (clip=global too)."""
    if value == FSDP2:
        return []
    return [
        Problem(
            key,
            value,
            "the clip engine (every clip method, global too) needs FSDP2: exact per-module norms of sharded "
            "DTensors",
            f"Allowed: {FSDP2}.",
            VALUE,
        )
    ]


#: ``actor_rollout_ref.rollout.engine_kwargs.hf_cpu``: what the CPU rollout takes (``verl_cpu.rollout``).
HF_CPU_ENGINE_KWARGS = ("num_threads",)


def _is_count(value: Any) -> bool:
    """An integer >= 1 (not a bool, not a float)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_hf_cpu_rollout(
    rollout: Mapping[str, Any], prefix: str = "actor_rollout_ref.rollout"
) -> list[Problem]:
    """The ``hf_cpu`` rollout's own settings: its ``engine_kwargs.hf_cpu`` keys and ``max_num_seqs``."""
    if rollout.get("name") != "hf_cpu":
        return []
    problems = []
    options = (rollout.get("engine_kwargs") or {}).get("hf_cpu") or {}
    for key, value in options.items():
        if key not in HF_CPU_ENGINE_KWARGS:
            problems.append(Problem(f"{prefix}.engine_kwargs.hf_cpu.{key}", value, "not a setting of the hf_cpu "
                                    "rollout", f"Allowed: {', '.join(HF_CPU_ENGINE_KWARGS)}.", VALUE))  # fmt: skip
    threads = options.get("num_threads")
    if threads is not None and not _is_count(threads):
        problems.append(Problem(f"{prefix}.engine_kwargs.hf_cpu.num_threads", threads, "the rollout's torch "
                                "threads", "Allowed: an integer >= 1, or null (OMP_NUM_THREADS).", VALUE))  # fmt: skip
    seqs = rollout.get("max_num_seqs")
    if seqs is not None and not _is_count(seqs):
        problems.append(Problem(f"{prefix}.max_num_seqs", seqs, "rows the hf_cpu rollout decodes together",
                                "Allowed: an integer >= 1 (1: every request alone).", VALUE))  # fmt: skip
    return problems
