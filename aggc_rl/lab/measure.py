"""What the lab measures, from the per-run records: each faulted run against the same arm's clean run.

All ratios compare a faulted run with the clean run (fault ``none``) of the same arm and seed, whose
steps before the fault are identical (same weights, data and sampling seeds):

* ``update``: L2 norm of the weight change the optimizer applied at the fault step (all groups), as a
  ratio to the clean run's; ``after``: the same ratio averaged over the next :data:`AFTER` steps (AdamW's
  moments carry a spike into later updates);
* ``spiked`` / ``untouched`` (group_spike): the ratio for the spiked group, and for all other groups
  together (1.0 = no spill-over); ``untouched_min``: the most-shrunk single untouched group;
* ``pre_norm_x``: the spiked group's pre-clip gradient norm at the fault step over the clean one;
* ``kl`` / ``kl_clean``: KL(policy before || after the fault step) on the probe set, faulted and clean;
* ``recovery``: steps after the fault until the step reward is back at or above the lowest clean reward of
  this arm at that step over all seeds (0: it never left; NaN: not back by the end);
* ``final_reward`` (mean of the last 3 steps), ``greedy_acc``, ``skipped`` and ``clipped`` steps.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

#: Steps after the fault over which ``after`` is averaged.
AFTER = 3
#: Two-sided 95% Student-t quantiles by degrees of freedom (no scipy needed); beyond 30, 1.96.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}  # fmt: skip


def t95(df: int) -> float:
    if df <= 0:
        return math.nan
    if df in _T95:
        return _T95[df]
    below = [d for d in _T95 if d <= df]
    return _T95[max(below)] if df <= 30 else 1.96


def mean_ci(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean and the half-width of its 95% t-interval over the finite values (NaN half-width for n < 2)."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan, 0
    if len(xs) == 1:
        return xs[0], math.nan, 1
    return statistics.fmean(xs), t95(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs)), len(xs)


def _norm(values: Iterable[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def index(records: Iterable[dict]) -> dict[tuple[str, str, int], dict]:
    return {(r["arm"], r["fault"]["kind"], r["seed"]): r for r in records}


def clean_floor(records: dict, arm: str) -> list[float]:
    """Per step, the lowest clean reward of ``arm`` over its seeds (the bottom of the seed-to-seed spread)."""
    runs = [r for (a, f, _), r in records.items() if a == arm and f == "none"]
    steps = min(len(r["steps"]) for r in runs)
    return [min(r["steps"][t]["reward"] for r in runs) for t in range(steps)]


def compare(faulted: dict, clean: dict, floor: Sequence[float]) -> dict[str, Any]:
    """The measures of one faulted run against its clean twin (same arm and seed)."""
    k = faulted["fault"]["step"]
    fs, cs = faulted["steps"], clean["steps"]
    groups = faulted["groups"]
    upd = lambda run, t, gs: _norm(run[t]["update"][g] for g in gs)  # noqa: E731
    out: dict[str, Any] = {
        "arm": faulted["arm"],
        "fault": faulted["fault"]["kind"],
        "seed": faulted["seed"],
        "update": _ratio(upd(fs, k, groups), upd(cs, k, groups)),
        "after": statistics.fmean(
            _ratio(upd(fs, t, groups), upd(cs, t, groups)) for t in range(k + 1, min(k + 1 + AFTER, len(fs)))
        )
        if k + 1 < len(fs)
        else math.nan,
        "kl": fs[k].get("probe_kl", math.nan),
        "kl_clean": cs[k].get("probe_kl", math.nan),
        "final_reward": statistics.fmean(s["reward"] for s in fs[-3:]),
        "greedy_acc": faulted["greedy_acc"],
        "skipped": sum(s["skipped"] for s in fs),
        "clipped": sum(s["clipped"] for s in fs),
        "fault_skipped": fs[k]["skipped"],
        "fault_clipped": fs[k]["clipped"],
        "fault_min_scale": fs[k]["min_scale"],
        "group_ratio": {g: _ratio(fs[t]["update"][g], cs[t]["update"][g]) for g in groups for t in [k]},
        "trace": [
            {g: _ratio(fs[t]["update"][g], cs[t]["update"][g]) for g in groups} for t in range(len(fs))
        ],
    }
    recovery = math.nan
    for j in range(1, len(fs) - k):
        if fs[k + j]["reward"] >= floor[k + j]:
            recovery = j - 1
            break
    out["recovery"] = recovery
    if faulted["fault"]["kind"] == "group_spike":
        g = faulted["fault"]["group"]
        rest = [x for x in groups if x != g]
        out["spiked"] = _ratio(fs[k]["update"][g], cs[k]["update"][g])
        out["untouched"] = _ratio(upd(fs, k, rest), upd(cs, k, rest))
        out["untouched_min"] = min(_ratio(fs[k]["update"][x], cs[k]["update"][x]) for x in rest)
        out["pre_norm_x"] = _ratio(fs[k]["pre_norm"][g], cs[k]["pre_norm"][g])
    elif faulted["fault"]["kind"] == "loss_spike":
        out["pre_norm_x"] = _ratio(fs[k]["grad_norm"], cs[k]["grad_norm"])
    return out


def comparisons(records: Iterable[dict]) -> list[dict[str, Any]]:
    """Every faulted run that has its clean twin, compared."""
    idx = index(records)
    floors: dict[str, list[float]] = {}
    out = []
    for (arm, fault, seed), run in sorted(idx.items()):
        if fault == "none" or (arm, "none", seed) not in idx:
            continue
        if arm not in floors:
            floors[arm] = clean_floor(idx, arm)
        out.append(compare(run, idx[(arm, "none", seed)], floors[arm]))
    return out


SUMMARY_KEYS = (
    "update", "after", "spiked", "untouched", "untouched_min", "pre_norm_x", "kl", "kl_clean", "recovery",
    "final_reward", "greedy_acc", "skipped", "clipped",
)  # fmt: skip


def summarise(rows: Sequence[dict]) -> dict[tuple[str, str], dict[str, Any]]:
    """(arm, fault) -> {key: (mean, ci half-width, n)} over seeds, plus the not-recovered count."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["fault"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        s: dict[str, Any] = {k: mean_ci(r.get(k, math.nan) for r in rs) for k in SUMMARY_KEYS}
        s["not_recovered"] = sum(1 for r in rs if not math.isfinite(r["recovery"]))
        s["seeds"] = len(rs)
        s["trace"] = [
            {g: mean_ci(r["trace"][t][g] for r in rs)[0] for g in rs[0]["trace"][t]}
            for t in range(min(len(r["trace"]) for r in rs))
        ]
        out[key] = s
    return out


def clean_summary(records: Iterable[dict]) -> dict[str, dict[str, Any]]:
    """Per arm, its clean runs: final reward, greedy accuracy, clipped/skipped steps, over seeds."""
    by_arm: dict[str, list[dict]] = {}
    for r in records:
        if r["fault"]["kind"] == "none":
            by_arm.setdefault(r["arm"], []).append(r)
    return {
        arm: {
            "final_reward": mean_ci(statistics.fmean(s["reward"] for s in r["steps"][-3:]) for r in rs),
            "greedy_acc": mean_ci(r["greedy_acc"] for r in rs),
            "clipped": mean_ci(sum(s["clipped"] for s in r["steps"]) for r in rs),
            "skipped": mean_ci(sum(s["skipped"] for s in r["steps"]) for r in rs),
            "seeds": len(rs),
        }
        for arm, rs in by_arm.items()
    }
