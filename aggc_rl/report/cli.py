"""Plots and tables comparing the training stability of several verl runs (``python -m aggc_rl.report``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aggc_rl.report import analysis, markdown
from aggc_rl.report.labels import parse_labels, unique_labels
from aggc_rl.report.logs import RunLog, RunLogError, load_run

DEFAULT_DPI = 100


@dataclass(frozen=True)
class ReportConfig:
    """What to read, where to write, and the spike definition."""

    runs: tuple[Path, ...]
    out: Path
    labels: tuple[str, ...]
    spike_factor: float = analysis.SPIKE_FACTOR
    spike_window: int = analysis.SPIKE_WINDOW
    dpi: int = DEFAULT_DPI


@dataclass
class Report:
    """What a report wrote: the markdown file, the pictures, and the per-run summaries."""

    markdown: Path
    images: list[Path]
    summaries: list[analysis.RunSummary]
    comparison: str


def build_report(config: ReportConfig) -> Report:
    """Read every run, then write the PNGs and ``report.md`` into ``config.out``."""
    from aggc_rl.report import plots  # matplotlib only once the logs have been read successfully

    runs: list[RunLog] = [
        load_run(path, label) for path, label in zip(config.runs, config.labels, strict=True)
    ]
    factor, window = config.spike_factor, config.spike_window
    summaries = [analysis.summarize(run.label, run.metrics, factor, window) for run in runs]
    for run, summary in zip(runs, summaries, strict=True):
        summary.missing_steps, summary.duplicate_steps = run.missing_steps, run.duplicate_steps
    config.out.mkdir(parents=True, exist_ok=True)
    out, dpi = config.out, config.dpi
    images = [
        plots.plot_overview(runs, out, factor, window, dpi=dpi),
        plots.plot_reward_validation(runs, out, dpi=dpi),
        plots.plot_grad_norm(runs, out, factor, window, dpi=dpi),
        *(plots.plot_group_heatmaps(run, out, dpi=dpi) for run in runs),
        plots.plot_kl_entropy_loss(runs, out, dpi=dpi),
    ]
    comparison = markdown.comparison_table(summaries)
    lines = ["# Training stability report", "", "## Runs", ""]
    for run in runs:
        sources = ", ".join(f"`{s}`" for s in run.sources)
        notes = []
        if run.bad_lines:
            notes.append(f"{run.bad_lines} unreadable line(s) skipped")
        if run.missing_steps:
            notes.append(f"training step(s) missing from the log: {markdown.fmt_steps(run.missing_steps)}")
        if run.duplicate_steps:
            notes.append(
                f"training step(s) written twice, the last record kept: {markdown.fmt_steps(run.duplicate_steps)}"
            )
        note = f" ({'; '.join(notes)})" if notes else ""
        lines.append(f"- **{run.label}**: {sources}, {len(run.metrics)} metrics{note}")
    lines += ["", "## Side by side", "", comparison, ""]
    for run, summary in zip(runs, summaries, strict=True):
        lines += [f"## {run.label}", "", markdown.run_table(summary, factor, window), ""]
    lines += ["## Pictures", ""]
    lines += [f"![{image.stem}]({image.name})" for image in images]
    lines += ["", "## Definitions", "", markdown.definitions(factor, window), ""]
    path = config.out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return Report(markdown=path, images=images, summaries=summaries, comparison=comparison)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aggc_rl.report", description=__doc__.split("\n")[0])
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="a verl file-logger JSONL, a TensorBoard event file, or a directory holding one run's logs",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory for report.md and PNGs"
    )
    parser.add_argument("--labels", metavar="A,B", help="comma-separated run names (default: from the paths)")
    parser.add_argument(
        "--spike-factor",
        type=float,
        default=analysis.SPIKE_FACTOR,
        help="spike = grad norm > FACTOR x median of the previous WINDOW steps (default 3)",
    )
    parser.add_argument("--spike-window", type=int, default=analysis.SPIKE_WINDOW, help="(default 20)")
    parser.add_argument(
        "--dpi", type=int, default=DEFAULT_DPI, help=f"PNG resolution (default {DEFAULT_DPI})"
    )
    args = parser.parse_args(argv)
    if not 20 <= args.dpi <= 600:
        parser.error(f"--dpi {args.dpi}: allowed 20..600")
    if args.spike_factor <= 0 or args.spike_window < 1:
        parser.error(
            f"--spike-factor must be > 0 and --spike-window >= 1 "
            f"(got {args.spike_factor}, {args.spike_window})"
        )
    try:
        labels = parse_labels(args.labels, len(args.runs)) or unique_labels(args.runs)
    except ValueError as err:
        parser.error(str(err))
    config = ReportConfig(
        tuple(args.runs), args.out, tuple(labels), args.spike_factor, args.spike_window, args.dpi
    )
    started = time.perf_counter()
    try:
        report = build_report(config)
    except RunLogError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report.comparison)
    print(f"\nwrote {report.markdown} and {len(report.images)} PNGs in {time.perf_counter() - started:.1f}s")
    return 0
