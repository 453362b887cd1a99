"""Lab v2's report: per fault, what each arm's faulted twin changed against its clean twin, with paired
intervals over seeds against ``none`` (no clipping) and against ``global``.

Scales: errors, drift, Adam's first-moment error, the v ratio and the KL are positive ratios or divergences, so
they are averaged and compared on logs: a cell is the geometric mean over seeds with a 95% t-interval, and
"vs none" is the geometric mean of the per-seed ratio arm / none (same seed: same warm state, same batches)
with its interval. The cosine and the on-policy gaps are compared as plain differences.

What is not a measurement is said as such: a null fault (zero gradient where it acts) is excluded and
listed; a cell whose value is the same in every seed prints that value "in every seed"; a paired cell whose
per-seed values equal the reference's prints "= ref" (identical twins, e.g. a rule that does not bind).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aggc_rl.inprocess import faults
from aggc_rl.lab.errors import ALL
from aggc_rl.stats import geomean, log_interval, paired_log_ratio, t_interval

REFS = ("none", "global")
#: metric name -> (label, getter from a fault record, log scale?)
METRICS: dict[str, tuple[str, Callable[[dict], float | None], bool]] = {
    "error": ("error at the fault ‖Δθ_f-Δθ_c‖/‖Δθ_c‖", lambda f: f["fault_step"][ALL]["error"], True),
    "cosine": ("cos(Δθ_f, Δθ_c) at the fault", lambda f: f["fault_step"][ALL]["cosine"], False),
    "drift": ("drift ‖θ_f-θ_c‖ at the end (clean updates)", lambda f: f["drift"][ALL][-1], True),
    "m_fault": ("‖m_f-m_c‖/‖m_c‖ after the fault", lambda f: f["moments"][ALL]["m_error"][0], True),
    "m_end": ("‖m_f-m_c‖/‖m_c‖ at the end", lambda f: f["moments"][ALL]["m_error"][-1], True),
    "v_fault": ("median v_f/v_c after the fault", lambda f: f["moments"][ALL]["v_ratio"][0], True),
    "kl": ("KL(π_f‖π_c) on the probe set at the end", lambda f: f["kl_end"], True),
}
HEADLINE = ("error", "drift", "v_fault")


#: On log scales, values below this count as this (an error of exactly 0, a KL that float32 rounding puts at or
#: below 0 when the twins barely differ); the cell says how many were floored.
FLOOR = 1e-12


def _usable(values: Sequence[float | None], log: bool) -> list[float] | None:
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return [max(float(v), FLOOR) if log else float(v) for v in values]


def _floored(values: Sequence[float | None], log: bool) -> str:
    k = sum(1 for v in values if log and v is not None and math.isfinite(v) and v < FLOOR)
    return f" ({k} at <= {FLOOR:g})" if k else ""


def cell(values: Sequence[float | None], log: bool) -> str:
    """Mean (geometric when ``log``) with its 95% interval; a value that is the same in every seed is said so."""
    vals = _usable(values, log)
    if not vals:
        return "n/a" if not values else f"{_few(values)} (not all finite)"
    note = _floored(values, log)
    if len(vals) == 1:
        return f"{vals[0]:.3g} (1 seed){note}"
    if len(set(vals)) == 1:
        return f"{vals[0]:.3g} in every seed{note}"
    if log:
        r = log_interval(vals)
        return f"{r.centre:.3g} [{r.low:.3g}, {r.high:.3g}]{note}"
    m, hw, _ = t_interval(vals)
    return f"{m:+.3f} ± {hw:.3f}"


def _few(values) -> str:
    return ", ".join("—" if v is None else f"{v:.3g}" for v in values[:3]) + (
        ", …" if len(values) > 3 else ""
    )


def paired(values: Sequence[float | None], refs: Sequence[float | None], log: bool) -> tuple[str, str]:
    """(cell, verdict) of the per-seed comparison with a reference arm: ratio (log) or difference."""
    a, b = _usable(values, log), _usable(refs, log)
    if not a or not b:
        return "n/a", "n/a"
    if a == b:  # identical twins' measures: e.g. both skipped the step, or neither rule bound
        return "= ref", "identical"
    diffs = [math.log(x / y) if log else x - y for x, y in zip(a, b, strict=True)]
    if len(diffs) == 1:
        v = math.exp(diffs[0]) if log else diffs[0]
        return f"{v:.3g} (1 seed)", "one seed: no interval"
    if len(set(diffs)) == 1:
        v = math.exp(diffs[0]) if log else diffs[0]
        return f"{v:.3g} in every seed", "lower" if diffs[0] < 0 else "higher"
    if log:
        r = paired_log_ratio(a, b)
        verdict = "lower" if r.high < 1 else "higher" if r.low > 1 else "no detectable difference"
        return f"x{r.centre:.3g} [{r.low:.3g}, {r.high:.3g}]", verdict
    m, hw, _ = t_interval(diffs)
    verdict = "lower" if m + hw < 0 else "higher" if m - hw > 0 else "no detectable difference"
    return f"{m:+.3f} ± {hw:.3f}", verdict


def collect(records: Sequence[dict]) -> tuple[dict, dict, list[str], list[str]]:
    """By (fault, arm): seed -> fault record, without null faults; by fault: the null (seed, arm) pairs."""
    arms = list(dict.fromkeys(r["arm"] for r in records))
    faults = list(dict.fromkeys(f for r in records for f in r["faults"]))
    by: dict[tuple[str, str], dict[int, dict]] = {}
    nulls: dict[str, list[tuple[int, str]]] = {f: [] for f in faults}
    null_seeds = {(f, r["seed"]) for r in records for f, x in r["faults"].items() if x["null"]}
    for r in records:
        for f, x in r["faults"].items():
            if (f, r["seed"]) in null_seeds:  # excluded for every arm, so the comparisons stay paired
                if x["null"]:
                    nulls[f].append((r["seed"], r["arm"]))
                continue
            by.setdefault((f, r["arm"]), {})[r["seed"]] = x
    return by, nulls, arms, faults


def _series(by, fault, arm, metric, seeds) -> list[float | None]:
    get = METRICS[metric][1]
    return [get(by[(fault, arm)][s]) for s in seeds]


def seeds_of(by, fault, arms) -> list[int]:
    common = None
    for arm in arms:
        have = set(by.get((fault, arm), {}))
        common = have if common is None else common & have
    return sorted(common or ())


def verdicts(by, fault: str, arms: Sequence[str], metric: str = "error") -> list[str]:
    """One sentence per arm: does it lower ``metric`` against none and against global (paired intervals)?"""
    seeds, log = seeds_of(by, fault, arms), METRICS[metric][2]
    out = []
    for arm in arms:
        parts = []
        for ref in REFS:
            if ref == arm or ref not in arms:
                continue
            _, v = paired(_series(by, fault, arm, metric, seeds), _series(by, fault, ref, metric, seeds), log)
            parts.append(f"vs {ref}: {v}")
        if parts:
            out.append(f"- `{arm}`: {'; '.join(parts)}.")
    return out


def fault_section(by, nulls, fault: str, arms: Sequence[str], records: Sequence[dict]) -> list[str]:
    seeds = seeds_of(by, fault, arms)
    desc = faults.describe(next(r["faults"][fault]["fault"] for r in records if fault in r["faults"]))
    lines = [f"### {fault}", "", f"Fault: {desc}. Seeds measured: {len(seeds)}."]
    if nulls[fault]:
        null_seeds = sorted({s for s, _ in nulls[fault]})
        lines.append(
            f"Null (zero gradient where the fault acts; excluded for every arm): seeds {null_seeds}."
        )
    if not seeds:
        return [*lines, "", "No seed to measure.", ""]
    skipped = {a: sum(by[(fault, a)][s]["skipped"] for s in seeds) for a in arms}
    if any(skipped.values()):
        lines.append(
            "Steps skipped at the fault: " + ", ".join(f"{a} {n}/{len(seeds)}" for a, n in skipped.items())
        )
    lines += [
        "",
        "| arm | " + " | ".join(METRICS[m][0] for m in METRICS) + " |",
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for arm in arms:
        cells = [cell(_series(by, fault, arm, m, seeds), METRICS[m][2]) for m in METRICS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for ref in REFS:
        if ref not in arms:
            continue
        lines += ["", f"Paired against `{ref}` (per-seed ratio, or difference for the cosine):", "",
                  "| arm | " + " | ".join(METRICS[m][0] for m in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]  # fmt: skip
        for arm in arms:
            if arm == ref:
                continue
            cells = [
                paired(_series(by, fault, arm, m, seeds), _series(by, fault, ref, m, seeds), METRICS[m][2])[0]
                for m in METRICS
            ]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    groups = [g for g in by[(fault, arms[0])][seeds[0]]["fault_step"] if g != ALL]
    lines += ["", "Error at the fault per group (geometric mean over seeds):", "",
              "| arm | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]  # fmt: skip
    for arm in arms:
        row = []
        for g in groups:
            vals = [by[(fault, arm)][s]["fault_step"][g]["error"] for s in seeds]
            ok = _usable(vals, True)
            row.append(f"{geomean(ok):.3g}" if ok else "—")
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Does the arm lower the error at the fault (paired 95% interval)?",
        "",
        *verdicts(by, fault, arms),
    ]
    lines += [
        "",
        "Does it lower the drift at the end of the replay?",
        "",
        *verdicts(by, fault, arms, "drift"),
        "",
    ]
    return lines


def headline(by, arms: Sequence[str], faults: Sequence[str]) -> list[str]:
    """Per fault and arm: the error at the fault and the drift at the end, geometric means over seeds."""
    lines = ["| fault | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for fault in faults:
        seeds = seeds_of(by, fault, arms)
        if not seeds:
            lines.append(f"| {fault} | " + " | ".join("null" for _ in arms) + " |")
            continue
        row = []
        for arm in arms:
            e = _usable(_series(by, fault, arm, "error", seeds), True)
            d = _usable(_series(by, fault, arm, "drift", seeds), True)
            row.append(f"{geomean(e):.3g} / {geomean(d):.3g}" if e and d else "n/a")
        lines.append(f"| {fault} (n={len(seeds)}) | " + " | ".join(row) + " |")
    return lines


def onpolicy_section(records: Sequence[dict], arms, faults, last: int = 10) -> list[str]:
    """On-policy mode: reward gap over the last ``last`` steps and held-out accuracy gap (faulted - clean)."""
    lines = ["## On-policy continuation", "",
             f"Reward gap: mean over the last {last} steps of (faulted - clean) batch reward; accuracy gap: greedy "
             "held-out accuracy at the end, faulted - clean, in points. Mean ± 95% t-interval over seeds.", "",
             "| fault | arm | reward gap | accuracy gap (pts) | clean accuracy |", "|---|---|---|---|---|"]  # fmt: skip
    by_arm = {}
    for r in records:
        by_arm.setdefault(r["arm"], []).append(r)
    for fault in faults:
        for arm in arms:
            gaps, accs, clean_accs = [], [], []
            for r in by_arm.get(arm, []):
                x = r["faults"].get(fault)
                if x is None or x["null"]:
                    continue
                f, c = x["rewards"][-last:], r["clean_rewards"][-last:]
                gaps.append(sum(f) / len(f) - sum(c) / len(c))
                if x.get("acc") is not None:
                    accs.append(100 * (x["acc"] - r["clean_acc"]))
                    clean_accs.append(100 * r["clean_acc"])
            if gaps:
                lines.append(f"| {fault} | {arm} | {cell(gaps, False)} | {cell(accs, False) if accs else 'n/a'} | "
                             f"{cell(clean_accs, False) if clean_accs else 'n/a'} |")  # fmt: skip
    return [*lines, ""]


def plot_moments(by, arms, faults, out: Path) -> list[Path]:
    """m error and median v ratio over the replay, per fault (one panel each), one line per arm (mean of logs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, label in (("m_error", "‖m_f-m_c‖/‖m_c‖"), ("v_ratio", "median v_f/v_c")):
        cols = 3
        rows = max(1, math.ceil(len(faults) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax, fault in zip(axes.flat, faults, strict=False):
            seeds = seeds_of(by, fault, arms)
            for arm in arms:
                traces = [by[(fault, arm)][s]["moments"][ALL][key] for s in seeds]
                if not traces:
                    continue
                series = []
                for t in range(len(traces[0])):
                    vals = [tr[t] for tr in traces if tr[t] is not None and tr[t] > 0]
                    series.append(geomean(vals) if vals else float("nan"))
                ax.plot(range(1, len(series) + 1), series, label=arm)
            ax.set_yscale("log")
            ax.set_title(f"{fault} (n={len(seeds)})", fontsize=9)
            ax.set_xlabel("steps after the fault (1 = the fault step)", fontsize=8)
            ax.set_ylabel(label, fontsize=8)
        for ax in list(axes.flat)[len(faults) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        path = out / f"twins_{key}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def write(records: Sequence[dict], out: Path, meta: dict[str, Any]) -> Path:
    """``out/report.md`` (+ the m and v trace plots) from the twin records."""
    out.mkdir(parents=True, exist_ok=True)
    replayed = [r for r in records if not r.get("on_policy")]
    onpolicy = [r for r in records if r.get("on_policy")]
    lines = ["# Stability lab v2: faults on a warm Adam, measured as errors against a clean twin", "",
             meta.get("plan", ""), "", f"Command: `{meta.get('command', 'python -m aggc_rl.lab')}`; wall time "
             f"{meta.get('wall', 'n/a')}; model: {meta.get('model', 'the proxy policy')}.", "",
             "Design and limits: docs/lab.md. Arms:", ""]  # fmt: skip
    descs = {r["arm"]: r["arm_desc"] for r in records}
    lines += [f"- `{a}`: {d}" for a, d in descs.items()]
    if replayed:
        by, nulls, arms, faults = collect(replayed)
        lines += ["", "## Headline", "",
                  "Per fault and arm: error of the update at the fault / drift of the weights at the end of the "
                  "replay, each against the arm's own clean twin (geometric means over seeds; 1 / 1 would be an "
                  "update replaced by one of the same size and a drift of one clean update). Paired intervals "
                  "per fault below. The report holds hundreds of 95% intervals: about 1 in 20 verdicts of "
                  "'lower' or 'higher' is expected by chance alone, so read patterns across faults and "
                  "measures, not single cells.", "", *headline(by, arms, faults), "", "## Per fault", ""]  # fmt: skip
        for fault in faults:
            lines += fault_section(by, nulls, fault, arms, replayed)
        plots = plot_moments(by, arms, faults, out)
        lines += ["## Adam's moments around the fault", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    if onpolicy:
        arms = list(dict.fromkeys(r["arm"] for r in onpolicy))
        faults = list(dict.fromkeys(f for r in onpolicy for f in r["faults"]))
        lines += onpolicy_section(onpolicy, arms, faults)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
