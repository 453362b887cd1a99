"""Learning-rate sensitivity (Wortsman et al. 2023, arXiv 2309.14322) adapted to held-out accuracy, with
paired t-intervals over seeds, and the sweep's report (markdown table + PNG).

Definitions (higher accuracy is better):

* ``final(a, lr, s)``: held-out greedy accuracy at the end of arm ``a``'s run at ``lr`` with seed ``s``; a run
  whose loss or gradient norm became non-finite scores 0 there.
* ``best(a)``: the highest seed-mean final accuracy of arm ``a`` over the learning-rate grid.
* ``shortfall(a, lr, s) = best(a) - final(a, lr, s)``.
* ``S(a, s)``: the mean of ``shortfall(a, lr, s)`` over the (log-spaced) grid; the arm's sensitivity is the
  mean of ``S(a, s)`` over seeds, with a t-interval over seeds. Arms are compared by the per-seed paired
  differences ``S(a, s) - S(b, s)`` (same seed: same puzzles, sampling stream and start).

The paper caps each run's final loss at the initial loss, ``min(L(lr), L0)``, because a diverged loss is
unbounded (or NaN) and would swamp the mean. Accuracy needs no cap: it is bounded in [0, 1] and a diverged run
scores 0. A cap at the start would also be wrong here: the proxy starts warm (~48%), so capping would make a
run that collapsed to 0% count the same as one that stayed at its start, the very difference a clipping rule
is meant to make, and it would turn the shortfall negative whenever no learning rate beats the start.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aggc_rl.stats import Estimate, paired_difference, t_interval


def fmt(cell: Estimate, scale: float = 100.0, digits: int = 1) -> str:
    mean, half, _ = cell
    if math.isnan(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def table(records: Sequence[dict]) -> dict[tuple[str, float], dict[int, dict]]:
    """(arm, lr) -> seed -> record; refuses duplicates."""
    out: dict[tuple[str, float], dict[int, dict]] = {}
    for r in records:
        cell = out.setdefault((r["arm"], float(r["lr"])), {})
        if r["seed"] in cell:
            raise ValueError(f"two records for arm {r['arm']} lr {r['lr']} seed {r['seed']}")
        cell[r["seed"]] = r
    return out


def _trace(record: dict) -> tuple:
    """What a run did, step by step: its pre-clip norms and clip decisions, then its end (equal traces mean
    the two rules acted identically throughout)."""
    steps = tuple((s.get("grad_norm"), tuple(s.get("scales", ())), s.get("skipped")) for s in record["steps"])
    return steps, record["final_acc"]


def identical_to(cells, arm: str, lr: float, earlier: Sequence[str]) -> str | None:
    """The first earlier arm whose runs at ``lr`` are step-for-step identical to ``arm``'s in every seed (a
    rule that never acted differently there: an identity, not a second measurement); None otherwise."""
    mine = cells.get((arm, lr), {})
    if not mine or any("steps" not in r for r in mine.values()):
        return None
    for other in earlier:
        theirs = cells.get((other, lr), {})
        if set(theirs) == set(mine) and all(
            "steps" in theirs[s] and _trace(theirs[s]) == _trace(mine[s]) for s in mine
        ):
            return other
    return None


def sensitivity(
    records: Sequence[dict], arms: Sequence[str], lrs: Sequence[float], key: str = "final_acc"
) -> dict[str, Any]:
    """Per arm: best lr and accuracy, per-seed S(a, s), and its t-interval (see the module docstring)."""
    cells = table(records)
    seeds = sorted({r["seed"] for r in records})
    out: dict[str, Any] = {}
    for a in arms:
        means = {
            lr: statistics.fmean(s[key] for s in cells[(a, lr)].values()) for lr in lrs if (a, lr) in cells
        }
        if len(means) != len(lrs):
            continue  # an arm with missing learning rates has no sensitivity yet
        best_lr = max(means, key=means.get)
        best = means[best_lr]
        per_seed = {}
        for s in seeds:
            if all(s in cells[(a, lr)] for lr in lrs):
                per_seed[s] = statistics.fmean(best - cells[(a, lr)][s][key] for lr in lrs)
        if per_seed:
            out[a] = {
                "best_lr": best_lr,
                "best": best,
                "per_seed": per_seed,
                "S": t_interval(list(per_seed.values())),
            }
    return out


def write_report(
    records: Sequence[dict],
    arms: Sequence[str],
    lrs: Sequence[float],
    out: Path,
    meta: dict[str, Any],
    name: str,
) -> Path:
    """``out/<name>.md`` and ``out/<name>.png``: the table, collapses, sensitivities and paired differences."""
    out.mkdir(parents=True, exist_ok=True)
    cells = table(records)
    sens = sensitivity(records, arms, lrs)
    starts = sorted({round(r["start_acc"], 6) for r in records})
    lines = [f"# {meta.get('title', 'Learning-rate sweep')}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "title"]
    lines += [f"- start (warm-start) held-out accuracy: {', '.join(f'{s * 100:.1f}%' for s in starts)}", ""]
    lines += [
        "## Final held-out accuracy (%), mean ± 95% t-interval over seeds; [collapsed runs / seeds]",
        "",
    ]
    lines.append("| arm | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |")
    lines.append("|---|" + "---|" * len(lrs))
    for a in arms:
        row = []
        for lr in lrs:
            runs = list(cells.get((a, lr), {}).values())
            if not runs:
                row.append("—")
                continue
            cell = t_interval([r["final_acc"] for r in runs])
            same = identical_to(cells, a, lr, arms[: arms.index(a)])
            row.append(
                f"{fmt(cell)} [{sum(r['collapsed'] for r in runs)}/{len(runs)}]"
                + (f" (= {same})" if same else "")
            )
        lines.append(f"| {a} | " + " | ".join(row) + " |")
    lines += [
        "",
        "(= X): in every seed the run is step-for-step identical to arm X's (same pre-clip norms, scales and",
        "result): the rule never acted differently at that learning rate, so the cell is an identity, not a",
        "second measurement.",
        "",
        "## Gain over the warm start at each arm's best learning rate (points, paired over seeds)",
        "",
    ]
    lines += ["| arm | best lr | final - start | seeds |", "|---|---|---|---|"]
    for a, s in sens.items():
        runs = list(cells[(a, s["best_lr"])].values())
        gain = t_interval([r["final_acc"] - r["start_acc"] for r in runs])
        lines.append(f"| {a} | {s['best_lr']:g} | {fmt(gain)} | {gain[2]} |")
    lines += ["", "## Learning-rate sensitivity (points; lower is more stable)", ""]
    lines += [
        "S(arm, seed) = mean over the lr grid of [best(arm) - final(arm, lr, seed)], where best(arm) is the arm's",
        "highest seed-mean final accuracy over the grid and a non-finite run's final accuracy is 0 (Wortsman et",
        "al. 2023, adapted: accuracy is bounded, so no cap at the start; aggc_rl/lr_sweep/sensitivity.py says why).",
        "Paired: per-seed differences S(arm) - S(global) and S(arm) - S(none), mean ± 95% t-interval",
        "(negative: less sensitive than the reference).",
        "",
        "| arm | best lr | best acc | sensitivity | vs global (paired) | vs none (paired) |",
        "|---|---|---|---|---|---|",
    ]

    def versus(arm: str, ref: str) -> str:
        diff = (
            paired_difference(sens[arm]["per_seed"], sens[ref]["per_seed"])
            if ref in sens and arm != ref
            else None
        )
        return fmt(diff) if diff else "—"

    for a, s in sens.items():
        lines.append(
            f"| {a} | {s['best_lr']:g} | {s['best'] * 100:.1f} | {fmt(s['S'])} | {versus(a, 'global')} "
            f"| {versus(a, 'none')} |"
        )
    lines += ["", f"![final accuracy vs learning rate]({name}.png)", ""]
    path = out / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    _plot(cells, arms, lrs, starts, out / f"{name}.png")
    return path


def _plot(cells, arms, lrs, starts, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, a in enumerate(arms):
        xs, ys, es = [], [], []
        for lr in lrs:
            runs = list(cells.get((a, lr), {}).values())
            if runs:
                m, h, _ = t_interval([r["final_acc"] for r in runs])
                xs.append(lr * (1 + 0.03 * (i - len(arms) / 2)))
                ys.append(100 * m)
                es.append(0 if math.isnan(h) else 100 * h)
        ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, label=a)
    for s in starts:
        ax.axhline(100 * s, color="k", lw=0.7, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final held-out greedy accuracy (%), 95% CI")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
