"""Synthetic verl training logs with known spikes and skipped steps, for tests, docs and timing.

    python -m aggc_rl.report.synthetic OUT_DIR [--steps 200]    # OUT_DIR/global.jsonl, OUT_DIR/aggc.jsonl
    python -m aggc_rl.report OUT_DIR/global.jsonl OUT_DIR/aggc.jsonl --out report/

The lines are what verl's file logger writes (``{"step": N, "data": {...}}``, non-finite values as
``null``) with the metric names of our clip engine. The baseline grad norm varies by at most ~1.5x
between steps, so the only spikes (> 3x the previous 20 steps' median) are the ones asked for, and a
spike asked for within the first 20 steps is not judged (see :mod:`aggc_rl.report.analysis`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aggc_rl import metrics as names

GROUPS = (
    "embed_tokens",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "input_layernorm",
    "post_attention_layernorm",
    "norm",
    "lm_head",
)
VAL_KEY = "val-core/openai/gsm8k/acc/mean@1"
# How much larger than the whole baseline gradient a spiking group's norm is (total rises ~this much).
SPIKE_SIZE = 10.0

Record = tuple[int, dict[str, float | None]]


@dataclass(frozen=True)
class SyntheticRun:
    """What one synthetic run holds; ``spikes``/``skipped`` are training steps (1-based)."""

    steps: int = 200
    clip: str = "aggc"  # "aggc" (per-group scales around 1) or "global" (one scale <= 1)
    spikes: tuple[int, ...] = ()
    skipped: tuple[int, ...] = ()
    val_every: int = 20
    reward_start: float = 0.15
    reward_end: float = 0.75
    groups: tuple[str, ...] = GROUPS
    filler_metrics: int = 0  # extra "perf/filler_i" metrics, to time wide logs
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.clip not in ("aggc", "global"):
            raise ValueError(f"clip must be 'aggc' or 'global', got {self.clip!r}")
        bad = [s for s in (*self.spikes, *self.skipped) if not 1 <= s <= self.steps]
        if bad:
            raise ValueError(f"spike/skipped steps {bad} lie outside 1..{self.steps}")
        if set(self.spikes) & set(self.skipped):
            raise ValueError(
                f"a step cannot be both a spike and skipped: {sorted(set(self.spikes) & set(self.skipped))}"
            )

    @property
    def metric_count(self) -> int:
        """Distinct metric names in the log (12 fixed + 2 per group + validation + fillers)."""
        return 12 + 2 * len(self.groups) + 1 + self.filler_metrics


def records(run: SyntheticRun) -> list[Record]:
    """The (step, data) pairs verl would log: validation at step 0, then one line per training step."""
    rng = np.random.default_rng(run.seed)
    share = rng.dirichlet(np.full(len(run.groups), 2.0))  # each group's share of the squared norm
    ema = np.sqrt(share)
    out: list[Record] = [(0, {VAL_KEY: run.reward_start})]
    for step in range(1, run.steps + 1):
        progress = step / run.steps
        base = (0.5 + 0.5 * math.exp(-step / 40)) * float(np.exp(rng.uniform(-0.2, 0.2)))
        norms = base * np.sqrt(share) * np.exp(rng.uniform(-0.05, 0.05, len(run.groups)))
        spike_group = step % len(run.groups)
        if step in run.spikes:
            norms[spike_group] = SPIKE_SIZE * base
        total = float(np.sqrt(np.sum(norms**2)))
        if run.clip == "global":
            scales = np.full(len(run.groups), min(1.0, 1.0 / total))
        else:
            scales = np.clip(ema / norms, 0.9, 1.1)
            ema = 0.95 * ema + 0.05 * np.minimum(norms, 1.1 * ema)
        reward = run.reward_start + (run.reward_end - run.reward_start) / (
            1 + math.exp(-10 * (progress - 0.4))
        )
        reward += float(rng.normal(0, 0.02))
        data: dict[str, float | None] = {
            names.SCORE_MEAN: reward,
            names.REWARD_MEAN: reward,
            names.GRAD_NORM.logged(): total,
            names.TOTAL_NORM_PRE.logged(): total,
            names.TOTAL_NORM_POST.logged(): float(np.sqrt(np.sum((norms * scales) ** 2))),
            names.SKIPPED.logged(): 0.0,
            names.FRAC_SCALED_DOWN.logged(): float(np.mean(scales < 1)),
            names.PROGRESS.logged(): progress,
            names.KL_LOSS: 0.002 * step / run.steps * 10 + float(rng.uniform(0, 0.002)),
            names.PPO_KL: float(rng.normal(0, 1e-4)),
            names.ENTROPY: 1.2 * math.exp(-1.5 * progress) + 0.2 + float(rng.normal(0, 0.01)),
            names.PG_LOSS: float(rng.normal(0, 0.05)),
        }
        for group, norm, scale in zip(run.groups, norms, scales, strict=True):
            data[names.GROUP_NORM.logged(group)] = float(norm)
            data[names.GROUP_SCALE.logged(group)] = float(scale)
        if step in run.skipped:  # one group's gradient went non-finite: nothing applied this step
            data[names.GRAD_NORM.logged()] = data[names.TOTAL_NORM_PRE.logged()] = None
            data[names.TOTAL_NORM_POST.logged()] = None
            data[names.GROUP_NORM.logged(run.groups[spike_group])] = None
            data[names.SKIPPED.logged()] = 1.0
        for i in range(run.filler_metrics):
            data[f"perf/filler_{i}"] = float(rng.uniform())
        if step % run.val_every == 0 or step == run.steps:
            data[VAL_KEY] = run.reward_start + (reward - run.reward_start) * 0.9
        out.append((step, data))
    return out


def _finite_or_null(value: float | None) -> float | None:
    """orjson's rule in verl's file logger: NaN and +-inf become null."""
    return value if value is not None and math.isfinite(value) else None


def write_jsonl(recs: Sequence[Record], path: Path) -> Path:
    """Write ``recs`` exactly as verl's ``FileLogger`` lays them out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for step, data in recs:
            clean: dict[str, Any] = {k: _finite_or_null(v) for k, v in data.items()}
            handle.write(json.dumps({"step": step, "data": clean}, allow_nan=False) + "\n")
    return path


DEMO_RUNS = {
    "global": SyntheticRun(clip="global", spikes=(57, 58, 121, 166), skipped=(140,), reward_end=0.66, seed=1),
    "aggc": SyntheticRun(clip="aggc", spikes=(121,), reward_end=0.74, seed=2),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aggc_rl.report.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out", type=Path, help="directory for global.jsonl and aggc.jsonl")
    parser.add_argument("--steps", type=int, default=200, help="training steps per run (default 200, >= 170)")
    args = parser.parse_args(argv)
    for name, run in DEMO_RUNS.items():
        try:
            run = SyntheticRun(**{**run.__dict__, "steps": args.steps})
        except ValueError as err:
            parser.error(f"--steps {args.steps}: {err}")
        print(
            f"{write_jsonl(records(run), args.out / f'{name}.jsonl')}: {args.steps} steps, spikes at "
            f"{list(run.spikes)}, skipped {list(run.skipped)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
