"""Markdown tables of :class:`~aggc_rl.report.analysis.RunSummary`: one per run and one side by side."""

from __future__ import annotations

from collections.abc import Sequence

from aggc_rl.report.analysis import FRACTIONS, SPIKE_FACTOR, SPIKE_WINDOW, RunSummary, StepValue

NOT_LOGGED = "not logged"
MAX_STEPS_LISTED = 10


def fmt(value: float | None) -> str:
    """Four significant digits; "n/a" for None."""
    return "n/a" if value is None else f"{value:.4g}"


def fmt_at(value: StepValue | None) -> str:
    """``0.4321 (step 50)``."""
    return NOT_LOGGED if value is None else f"{fmt(value.value)} (step {value.step})"


def fmt_steps(steps: Sequence[int]) -> str:
    """``3: steps 40, 41, 77`` (at most ``MAX_STEPS_LISTED`` listed)."""
    if not steps:
        return "0"
    shown = ", ".join(str(s) for s in steps[:MAX_STEPS_LISTED])
    more = len(steps) - MAX_STEPS_LISTED
    return f"{len(steps)}: step{'s' if len(steps) > 1 else ''} {shown}" + (
        f", ... (+{more} more)" if more > 0 else ""
    )


def _source(val_key: str) -> str:
    """``val-core/openai/gsm8k/acc/mean@1`` -> ``openai/gsm8k``."""
    return val_key.removeprefix("val-core/").rsplit("/", 2)[0]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; "|" inside cells is escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def run_table(summary: RunSummary, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> str:
    """The per-run table: steps, reward checkpoints, spikes, skipped steps, validation."""
    span = "" if summary.first_step is None else f" (steps {summary.first_step}..{summary.last_step})"
    rows: list[list[str]] = [["steps logged", f"{summary.steps_logged}{span}"]]
    rows.append(["training steps missing from the log", fmt_steps(summary.missing_steps)])
    rows.append(["training steps written twice (last record kept)", fmt_steps(summary.duplicate_steps)])
    rows.append(["reward metric", summary.reward_key or NOT_LOGGED])
    for fraction in FRACTIONS:
        rows.append([f"reward at {fraction:.0%} of training", fmt_at(summary.reward_at.get(fraction))])
    if summary.grad_norm_logged:
        rows.append(
            [f"grad-norm spikes (> {factor:g}x median of previous {window})", fmt_steps(summary.spikes)]
        )
        if summary.finite_grad_norm_steps == 0:
            rows.append(
                [
                    "max pre-clip grad norm",
                    f"no finite values ({summary.grad_norm_steps} logged steps all NaN/inf)",
                ]
            )
        else:
            rows.append(["max pre-clip grad norm", fmt_at(summary.max_grad_norm)])
            rows.append(["median pre-clip grad norm", fmt(summary.median_grad_norm)])
    else:
        rows.append(["grad-norm spikes", "n/a (actor/grad_norm not logged)"])
    rows.append(["skipped steps (non-finite gradient)", fmt_steps(summary.skipped)])
    if summary.validation:
        for key, (final, best) in summary.validation.items():
            rows.append([f"final validation `{key}`", fmt_at(final)])
            rows.append([f"best validation `{key}`", fmt_at(best)])
    else:
        rows.append(["validation accuracy (val-core/...)", NOT_LOGGED])
    rows.append(
        ["clip groups logged (actor/clip/norm/...)", str(summary.groups) if summary.groups else NOT_LOGGED]
    )
    return table(["quantity", "value"], rows)


def _max_norm(s: RunSummary) -> str:
    if not s.grad_norm_logged:
        return NOT_LOGGED
    if s.max_grad_norm is None:
        return "no finite values"
    return fmt(s.max_grad_norm.value)


def comparison_table(summaries: Sequence[RunSummary]) -> str:
    """One row per run, the headline numbers side by side."""
    header = ["run", "last step", "spikes", "skipped", "max grad norm"]
    header += [f"reward {f:.0%}" for f in FRACTIONS] + ["final val", "best val", "steps missing / twice"]
    rows = []
    for s in summaries:
        several = len(s.validation) > 1

        def val(pick: int, s: RunSummary = s, several: bool = several) -> str:
            parts = []
            for key, pair in s.validation.items():
                value = pair[pick]
                text = NOT_LOGGED if value is None else fmt(value.value)
                parts.append(f"{_source(key)} {text}" if several else text)
            return "; ".join(parts) or NOT_LOGGED

        reward = [NOT_LOGGED if s.reward_at.get(f) is None else fmt(s.reward_at[f].value) for f in FRACTIONS]
        rows.append(
            [
                s.label,
                "n/a" if s.last_step is None else str(s.last_step),
                str(len(s.spikes)) if s.grad_norm_logged else NOT_LOGGED,
                str(len(s.skipped)),
                _max_norm(s),
                *reward,
                val(0),
                val(1),
                f"{len(s.missing_steps)} / {len(s.duplicate_steps)}",
            ]
        )
    return table(header, rows)


def definitions(factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> str:
    """The footnote that says what the numbers mean."""
    lines = [
        f"- **spike**: a step whose finite `actor/grad_norm` (pre-clip) exceeds {factor:g}x the median of "
        f"the previous {window} finite values; judged only once {window} earlier finite values exist; "
        "every spiking step counts.",
        "- **skipped**: `actor/clip/skipped` == 1 or a non-finite `actor/grad_norm` "
        "(the update was not applied).",
        "- **missing / written twice**: training steps absent between the first and last record of the "
        "log (e.g. a run killed after saving a checkpoint but before logging that step), and steps whose "
        "training record appears more than once (a resume from an earlier checkpoint); the last record "
        "is the one used.",
        "- **reward at x%**: `critic/score/mean` (else `critic/rewards/mean`) at the first logged step "
        ">= x times the last step.",
        "- **validation**: verl's `val-core/<data_source>/acc/mean@N` (`reward` when no `acc` is "
        "logged); best = highest value, final = last logged.",
    ]
    return "\n".join(lines)
