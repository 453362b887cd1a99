"""The lab's report: ``report.md`` (per fault, arms as rows, mean +- 95% interval over seeds) and PNGs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aggc_rl.lab.measure import AFTER, clean_summary, comparisons, summarise

FAULT_TITLES = {
    "loss_spike": "loss_spike: one step's loss x{scale:g}",
    "group_spike": "group_spike: the {group} gradient x{scale:g} at one step",
    "reward_noise": "reward_noise: one step's rewards replaced by uniform random ones",
}
REPORT_FILES = ("report.md", "summary.png", "traces.png")


def fmt(cell: tuple[float, float, int] | None, digits: int = 3) -> str:
    if cell is None or not math.isfinite(cell[0]):
        return "n/a"
    mean, half, _ = cell
    if not math.isfinite(half):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {half:.2g}"


def _distinct(a: tuple, b: tuple) -> bool:
    """The two 95% intervals do not overlap."""
    if not all(math.isfinite(x) for x in (a[0], a[1], b[0], b[1])):
        return False
    return a[0] - a[1] > b[0] + b[1] or b[0] - b[1] > a[0] + a[1]


def _compare_sentence(summary: dict, arms: Sequence[str], fault: str, key: str, what: str) -> str:
    cells = {a: summary[(a, fault)][key] for a in arms if (a, fault) in summary}
    cells = {a: c for a, c in cells.items() if math.isfinite(c[0])}
    if not cells:
        return ""
    lo = min(cells, key=lambda a: cells[a][0])
    hi = max(cells, key=lambda a: cells[a][0])
    text = f"{what}: lowest under `{lo}` ({fmt(cells[lo])}), highest under `{hi}` ({fmt(cells[hi])})"
    if "global" in cells:
        for other in ("aggc", "aggc_official"):
            if other in cells:
                verdict = (
                    "differs from"
                    if _distinct(cells[other], cells["global"])
                    else "is not distinguishable from"
                )
                text += f"; `{other}` ({fmt(cells[other])}) {verdict} `global` ({fmt(cells['global'])}) at these seeds"
    return text + "."


def paragraph(summary: dict, arms: Sequence[str], fault: str) -> str:
    parts = [
        _compare_sentence(
            summary, arms, fault, "update", "Applied update at the fault step, as a ratio to the clean run"
        ),
        _compare_sentence(
            summary,
            arms,
            fault,
            "after",
            f"Over the next {AFTER} steps the ratio (below 1: AdamW's moments damp later steps)",
        ),
    ]
    if fault == "group_spike":
        parts.append(
            _compare_sentence(
                summary, arms, fault, "untouched", "Update of the untouched groups (1.0 = no spill-over)"
            )
        )
        parts.append(_compare_sentence(summary, arms, fault, "spiked", "Update of the spiked group"))
    parts.append(_compare_sentence(summary, arms, fault, "kl", "KL(before || after) on the probe set"))
    skipped = [a for a in arms if (a, fault) in summary and summary[(a, fault)]["skipped"][0] > 0]
    if skipped:
        parts.append("Steps were skipped under " + ", ".join(f"`{a}`" for a in skipped) + ".")
    not_back = [a for a in arms if (a, fault) in summary and summary[(a, fault)]["not_recovered"]]
    if not_back:
        parts.append(
            "Reward not back at the clean floor by the end in some seeds under "
            + ", ".join(
                f"`{a}` ({summary[(a, fault)]['not_recovered']}/{summary[(a, fault)]['seeds']})"
                for a in not_back
            )
            + "."
        )
    return " ".join(p for p in parts if p)


def headline_table(summary: dict, arms: Sequence[str]) -> list[str]:
    cols = [
        ("loss_spike", "update", "loss x100: update at fault"),
        ("loss_spike", "after", f"loss x100: next {AFTER} steps"),
        ("group_spike", "spiked", "group x100: spiked group"),
        ("group_spike", "untouched", "group x100: untouched groups"),
        ("reward_noise", "kl", "reward noise: KL (clean in brackets)"),
    ]
    cols = [c for c in cols if any((a, c[0]) in summary for a in arms)]
    lines = ["| arm | " + " | ".join(c[2] for c in cols) + " | recovery steps (loss / group / noise) |"]
    lines.append("| --- |" + " ---: |" * (len(cols) + 1))
    for a in arms:
        cells = []
        for fault, key, _ in cols:
            s = summary.get((a, fault))
            cell = fmt(s[key]) if s else "n/a"
            if s and key == "kl":
                cell += f" ({fmt(s['kl_clean'])})"
            cells.append(cell)
        rec = " / ".join(fmt(summary[(a, f)]["recovery"], 2) if (a, f) in summary else "n/a"
                         for f in ("loss_spike", "group_spike", "reward_noise"))  # fmt: skip
        lines.append(f"| `{a}` | " + " | ".join(cells) + f" | {rec} |")
    return lines


def fault_table(summary: dict, arms: Sequence[str], fault: str) -> list[str]:
    keys = [("update", "update ratio"), ("after", f"next {AFTER} steps")]
    if fault == "group_spike":
        keys += [
            ("spiked", "spiked group"),
            ("untouched", "untouched groups"),
            ("untouched_min", "most-shrunk untouched group"),
        ]
    if fault in ("group_spike", "loss_spike"):
        keys += [("pre_norm_x", "pre-clip norm x clean")]
    keys += [("kl", "KL at fault"), ("kl_clean", "KL clean"), ("recovery", "recovery steps"),
             ("final_reward", "final reward"), ("greedy_acc", "greedy acc"), ("skipped", "steps skipped"),
             ("clipped", "steps clipped")]  # fmt: skip
    lines = ["| arm | seeds | " + " | ".join(k[1] for k in keys) + " | not recovered |"]
    lines.append("| --- | ---: |" + " ---: |" * (len(keys) + 1))
    for a in arms:
        s = summary.get((a, fault))
        if s is None:
            continue
        lines.append(
            f"| `{a}` | {s['seeds']} | "
            + " | ".join(fmt(s[k]) for k, _ in keys)
            + f" | {s['not_recovered']} |"
        )
    return lines


def plots(
    summary: dict, arms: Sequence[str], faults: Sequence[str], fault_step: int, out: Path, dpi: int = 90
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faults = [f for f in faults if f != "none"]
    fig, axes = plt.subplots(1, max(1, len(faults)), figsize=(4.5 * max(1, len(faults)), 3.6), squeeze=False)
    for ax, fault in zip(axes[0], faults, strict=False):
        keys = ["update", "after"] + (["spiked", "untouched"] if fault == "group_spike" else [])
        width = 0.8 / len(keys)
        for j, key in enumerate(keys):
            xs, ys, es = [], [], []
            for i, a in enumerate(arms):
                s = summary.get((a, fault))
                if s and math.isfinite(s[key][0]):
                    xs.append(i + (j - (len(keys) - 1) / 2) * width)
                    ys.append(s[key][0])
                    es.append(s[key][1] if math.isfinite(s[key][1]) else 0.0)
            ax.bar(xs, ys, width, yerr=es, capsize=2, label=key)
            for x, y in zip(xs, ys, strict=True):
                if y <= 0:  # nothing applied (a skipped step): invisible on a log axis, so say it
                    ax.annotate("0", (x, 1.0), ha="center", va="bottom", fontsize=6, color="C3")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_title(fault, fontsize=9)
        ax.set_ylabel("applied update / clean (95% CI)", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=dpi)
    plt.close(fig)

    fig, axes = plt.subplots(
        max(1, len(faults)),
        len(arms),
        figsize=(2.6 * len(arms), 2.3 * max(1, len(faults))),
        squeeze=False,
        sharey=True,
    )
    for r, fault in enumerate(faults):
        for c, a in enumerate(arms):
            ax = axes[r][c]
            s = summary.get((a, fault))
            if s:
                trace = s["trace"]
                for g in trace[0]:
                    ax.plot(
                        range(1, len(trace) + 1),
                        [t[g] for t in trace],
                        lw=1.6 if g == "v_proj" else 0.8,
                        label=g,
                    )
            ax.axvline(fault_step + 1, color="r", lw=0.8, ls=":")
            ax.axhline(1.0, color="k", lw=0.5)
            ax.set_yscale("log")
            if r == 0:
                ax.set_title(a, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{fault}\nupdate / clean", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0][-1].legend(fontsize=5, loc="upper right")
    fig.suptitle("per-group applied update, faulted / clean (mean over seeds); red: fault step", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "traces.png", dpi=dpi)
    plt.close(fig)


def write(records: Sequence[dict], out: Path, meta: dict[str, Any]) -> Path:
    """Write report.md, summary.png and traces.png into ``out``; returns report.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    arms = list(dict.fromkeys(r["arm"] for r in records))
    faults = list(dict.fromkeys(r["fault"]["kind"] for r in records))
    rows = comparisons(records)
    summary = summarise(rows)
    clean = clean_summary(records)
    first = records[0]
    size = first["size"]
    lines = [
        "# Stability lab",
        "",
        f"Command: `{meta.get('command', 'python -m aggc_rl.lab')}`; wall time {meta.get('wall', 'n/a')}; "
        f"{len(records)} runs, seeds {sorted({r['seed'] for r in records})}.",
        "",
        f"Each run: {size['steps']} GRPO steps of {size['prompts']} puzzles x {size['samples']} samples "
        f"({size['people']} people, up to {size['response_length']} response tokens), AdamW lr {size['lr']}, "
        f"the fault at step {size['fault_step'] + 1}; model `{meta.get('model', '?')}`. The update path is the "
        "`aggc_fsdp2` engine (verl's FSDP2 engine, verl's PPO loss, GRPO advantages from verl's core_algos); "
        "faults are injected by a lab-only engine subclass (`aggc_fsdp2_lab`) and, for reward_noise, in the "
        "lab's loop. Every number compares a faulted run with the same arm's clean run of the same seed "
        "(identical until the fault step); cells are mean ± half-width of the 95% t-interval over seeds. "
        "Ratios are of the L2 norm of the weight change the optimizer applied (after AdamW), grouped by "
        "functional module type.",
        "",
        "Arms: " + "; ".join(f"`{a}` = {meta.get('arm_desc', {}).get(a, a)}" for a in arms) + ".",
        "",
        "## Headline",
        "",
        *headline_table(summary, arms),
        "",
        "Recovery: steps after the fault until the step reward is back at or above the lowest clean reward of "
        "the same arm at that step over the seeds (0: it never left).",
    ]
    for fault in faults:
        if fault == "none":
            continue
        spec = next(r["fault"] for r in records if r["fault"]["kind"] == fault)
        lines += ["", f"## {FAULT_TITLES[fault].format(**spec)}", "", paragraph(summary, arms, fault), ""]
        lines += fault_table(summary, arms, fault)
    lines += ["", "## Clean runs", "", "| arm | seeds | final reward | greedy acc | steps clipped | steps skipped |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for a in arms:
        if a in clean:
            c = clean[a]
            lines.append(
                f"| `{a}` | {c['seeds']} | {fmt(c['final_reward'])} | {fmt(c['greedy_acc'])} | "
                f"{fmt(c['clipped'])} | {fmt(c['skipped'])} |"
            )
    lines += ["", "![applied update ratios](summary.png)", "", "![per-group update traces](traces.png)", ""]
    plots(summary, arms, faults, size["fault_step"], out)
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
