"""PNG figures of several runs, drawn on matplotlib ``Figure`` objects (Agg; pyplot's global state unused).

Each ``draw_*`` function fills one Axes, so figures can be composed freely; each ``plot_*`` function writes
one PNG and returns its path. A metric no run logged leaves its panel with a "not logged" notice naming
the keys looked for; runs that lack a metric others have are listed in the panel's corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from aggc_rl.report import analysis
from aggc_rl.report.labels import safe_name
from aggc_rl.report.logs import RunLog

DPI = 100
STEP_LABEL = "training step"
MAX_GROUP_TICKS = 40
# Heat-map columns at most; longer runs are binned so that one-step spikes stay visible.
MAX_HEATMAP_COLUMNS = 600
# The grad-norm axis reaches this factor above the highest value, so the legend never hides a spike.
LEGEND_HEADROOM = 4.0
NOT_FINITE_RGBA = (1.0, 0.0, 1.0, 1.0)  # magenta
# Colour i goes to run i in every figure, so a run keeps its colour across pictures.
COLORS = [f"C{i}" for i in range(10)]


def color(index: int) -> str:
    return COLORS[index % len(COLORS)]


def smooth(series: pd.Series) -> tuple[pd.Series, int]:
    """Centred rolling mean over ~1/25 of the run (at least 1 step), and the window used."""
    window = max(1, len(series) // 25)
    return series.rolling(window, center=True, min_periods=1).mean(), window


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def plain_log_axis(ax: Axes) -> None:
    """Log y axis labelled 0.5, 2, 6 rather than 5x10^-1; minor ticks labelled only over short spans."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))

    def minor(value: float, _: int) -> str:
        low, high = ax.get_ylim()
        return f"{value:g}" if low > 0 and high / low < 30 else ""

    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def not_logged(ax: Axes, title: str, keys: Sequence[str]) -> None:
    """Mark a panel whose metric no run logged."""
    ax.set_title(title)
    ax.text(
        0.5,
        0.5,
        "not logged\n(" + ", ".join(keys) + ")",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="0.4",
        fontsize=10,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def no_finite_values(ax: Axes, title: str, lines: Sequence[str]) -> None:
    """Mark a panel whose metric was logged but never held a finite value (a diverged run)."""
    ax.set_title(title)
    ax.text(
        0.5,
        0.5,
        "no finite values\n" + "\n".join(lines),
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="0.3",
        fontsize=10,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _positive_finite(series: pd.Series) -> np.ndarray:
    values = series.to_numpy(dtype=float)
    return values[np.isfinite(values) & (values > 0)]


def _missing_note(ax: Axes, missing: Sequence[str]) -> None:
    if missing:
        ax.text(
            0.01,
            0.01,
            "not logged: " + ", ".join(missing),
            transform=ax.transAxes,
            fontsize=8,
            color="0.4",
            va="bottom",
        )


def draw_metric(
    ax: Axes,
    runs: Sequence[RunLog],
    keys: Sequence[str],
    title: str,
    ylabel: str,
    smoothed: bool = True,
) -> None:
    """One line per run of the first of ``keys`` it logged; raw thin, rolling mean thick when ``smoothed``."""
    found = [(i, run, analysis.first_present(run.metrics, keys)) for i, run in enumerate(runs)]
    present = [(i, run, hit) for i, run, hit in found if hit is not None]
    if not present:
        not_logged(ax, title, keys)
        return
    used = sorted({hit[0] for _, _, hit in present})
    ax.set_title(f"{title} ({', '.join(used)})")
    window = 1
    for i, run, (_, series) in present:
        if smoothed and len(series) > 1:
            ax.plot(series.index, series.to_numpy(), color=color(i), alpha=0.25, linewidth=0.8)
            mean, window = smooth(series)
            ax.plot(mean.index, mean.to_numpy(), color=color(i), linewidth=1.8, label=run.label)
        else:
            ax.plot(
                series.index, series.to_numpy(), color=color(i), linewidth=1.2, label=run.label, marker="."
            )
    if smoothed and window > 1:
        ax.text(
            0.99,
            0.01,
            "thin: raw, thick: rolling mean",
            transform=ax.transAxes,
            fontsize=7,
            color="0.4",
            ha="right",
            va="bottom",
        )
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _missing_note(ax, [run.label for _, run, hit in found if hit is None])


def draw_validation(ax: Axes, runs: Sequence[RunLog]) -> None:
    """verl's core validation accuracy over steps, one line per run and data source."""
    title = "Validation accuracy"
    drawn, missing = False, []
    for i, run in enumerate(runs):
        keys = analysis.validation_keys(run.metrics)
        if not keys:
            missing.append(run.label)
        for j, key in enumerate(keys):
            series = run.metrics[key]
            source = key.removeprefix("val-core/")
            label = run.label if len(keys) == 1 else f"{run.label}: {source}"
            ax.plot(
                series.index,
                series.to_numpy(),
                color=color(i),
                marker="o",
                markersize=4,
                linestyle=["-", "--", ":", "-."][j % 4],
                label=label,
            )
            drawn = True
    if not drawn:
        not_logged(ax, title, ["val-core/<data_source>/acc/mean@N"])
        return
    ax.set_title(f"{title} (val-core/.../mean@N)")
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _missing_note(ax, missing)


def draw_grad_norm(
    ax: Axes,
    runs: Sequence[RunLog],
    factor: float = analysis.SPIKE_FACTOR,
    window: int = analysis.SPIKE_WINDOW,
) -> None:
    """Pre-clip ``actor/grad_norm`` on a log axis; spikes circled, skipped steps as dashed verticals."""
    title = "Pre-clip gradient norm"
    key = analysis.GRAD_NORM_KEY
    present = [(i, run) for i, run in enumerate(runs) if key in run.metrics]
    if not present:
        not_logged(ax, title, [key])
        return
    drawable = [(i, run) for i, run in present if _positive_finite(run.metrics[key]).size]
    blank = [run for _, run in present if not _positive_finite(run.metrics[key]).size]
    if not drawable:  # every logged norm is NaN/inf (or 0): nothing can sit on a log axis
        no_finite_values(
            ax,
            f"{title} ({key})",
            [
                f"{run.label}: {plural(len(run.metrics[key]), 'step')} logged, "
                f"{len(analysis.skipped_steps(run.metrics))} skipped"
                for run in blank
            ],
        )
        return
    present = drawable
    for i, run in present:
        series = run.metrics[key]
        spikes = analysis.find_spikes(series, factor, window)
        skipped = analysis.skipped_steps(run.metrics)
        ax.plot(
            series.index,
            series.to_numpy(),
            color=color(i),
            linewidth=1.0,
            label=f"{run.label}: {plural(len(spikes), 'spike')}, {len(skipped)} skipped",
        )
        if spikes:
            ax.scatter(
                spikes,
                series.loc[spikes].to_numpy(),
                s=50,
                facecolors="none",
                edgecolors=color(i),
                linewidths=1.5,
                zorder=3,
            )
        for step in skipped:
            ax.axvline(step, color=color(i), linestyle="--", linewidth=1.0, alpha=0.7)
    plain_log_axis(ax)
    finite = np.concatenate([run.metrics[key].to_numpy(dtype=float) for _, run in present])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if finite.size:  # headroom above the highest spike for the legend
        ax.set_ylim(top=float(finite.max()) * LEGEND_HEADROOM)
    ax.set_title(f"{title} ({key}); o = spike (> {factor:g}x median of previous {window}), -- = skipped step")
    ax.title.set_fontsize(10)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("L2 norm (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    _missing_note(
        ax,
        [run.label for run in runs if key not in run.metrics]
        + [f"{run.label} (no finite values)" for run in blank],
    )


def _group_ticks(ax: Axes, groups: Sequence[str]) -> None:
    stride = max(1, int(np.ceil(len(groups) / MAX_GROUP_TICKS)))
    ticks = list(range(0, len(groups), stride))
    ax.set_yticks(ticks)
    ax.set_yticklabels([groups[t] for t in ticks], fontsize=7 if len(groups) > 12 else 8)
    ax.set_ylabel("group" + (f" (every {stride}th)" if stride > 1 else ""))


def draw_group_heatmap(fig: Figure, ax: Axes, run: RunLog, prefix: str, x_label: bool = True) -> None:
    """Per-group values over steps: norms on a log colour scale, scales diverging around 1."""
    is_norm = prefix == analysis.GROUP_NORM_PREFIX
    what = "pre-clip norm" if is_norm else "scale applied (<1 cut, >1 raised)"
    title = f"{run.label}: per-group {what}"
    groups, steps, values = analysis.group_matrix(run.metrics, prefix)
    if not groups or np.isnan(values).all():
        not_logged(ax, title, [prefix + "<group>"])
        return
    finite = values[np.isfinite(values)]
    if finite.size == 0:  # every logged value was non-finite: only the overlay will show
        finite = np.ones(1)
    # Norms: the largest in each bin; scales: the one farthest from 1 (the strongest action).
    values, bin_size = analysis.bin_columns(values, MAX_HEATMAP_COLUMNS, around=None if is_norm else 1.0)
    binned = f", {'max' if is_norm else 'farthest from 1'} per {bin_size} steps" if bin_size > 1 else ""
    if is_norm:
        positive = finite[finite > 0]
        low = positive.min() if positive.size else 1e-12
        norm = LogNorm(vmin=low, vmax=max(finite.max(), low * 1.0001))
        values = np.where(values > 0, values, np.nan)  # zero norms cannot sit on a log scale
        cmap, label = "viridis", "L2 norm (log)"
    elif finite.max() <= 1.0 + 1e-9:  # global clipping only ever cuts: a one-sided scale reads better
        norm, cmap, label = Normalize(vmin=min(finite.min(), 0.99), vmax=1.0), "Reds_r", "scale (<= 1)"
    else:
        norm = TwoSlopeNorm(vcenter=1.0, vmin=min(finite.min(), 0.999), vmax=max(finite.max(), 1.001))
        cmap, label = "RdBu", "scale (red cut, blue raised)"
    blown_up = np.isinf(values)
    image = ax.imshow(
        np.ma.masked_invalid(values),
        aspect="auto",
        interpolation="nearest",
        cmap=colormaps[cmap].with_extremes(bad="0.85"),
        norm=norm,
        extent=(steps[0] - 0.5, steps[0] - 0.5 + values.shape[1] * bin_size, len(groups) - 0.5, -0.5),
    )
    if blown_up.any():  # logged but not finite: drawn over the map in one loud colour
        overlay = np.zeros((*values.shape, 4))
        overlay[blown_up] = NOT_FINITE_RGBA
        ax.imshow(overlay, aspect="auto", interpolation="nearest", extent=image.get_extent())
    fig.colorbar(image, ax=ax, label=label, pad=0.01)
    ax.set_title(f"{title} ({prefix}*{binned}; grey = not logged, magenta = not finite)", fontsize=10)
    if x_label:
        ax.set_xlabel(STEP_LABEL)
    _group_ticks(ax, groups)


# ---- figures ------------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi, pil_kwargs={"optimize": True})
    return path


def plot_reward_validation(runs: Sequence[RunLog], out: Path, dpi: int = DPI) -> Path:
    """(a) training reward and validation accuracy."""
    fig = Figure(figsize=(13, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    draw_metric(left, runs, analysis.REWARD_KEYS, "Training reward", "mean reward per batch")
    draw_validation(right, runs)
    return _save(fig, out / "reward_validation.png", dpi)


def plot_grad_norm(
    runs: Sequence[RunLog],
    out: Path,
    factor: float = analysis.SPIKE_FACTOR,
    window: int = analysis.SPIKE_WINDOW,
    dpi: int = DPI,
) -> Path:
    """(b) pre-clip gradient norm, log scale, spikes and skipped steps marked."""
    fig = Figure(figsize=(13, 4.5), layout="constrained")
    draw_grad_norm(fig.subplots(), runs, factor, window)
    return _save(fig, out / "grad_norm.png", dpi)


def plot_group_heatmaps(run: RunLog, out: Path, dpi: int = DPI) -> Path:
    """(c) one run's per-group norms and scales as heat maps."""
    groups = len(analysis.group_names(run.metrics, analysis.GROUP_NORM_PREFIX))
    height = min(4.0 + 0.12 * groups, 14.0)
    fig = Figure(figsize=(13, height), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    draw_group_heatmap(fig, top, run, analysis.GROUP_NORM_PREFIX, x_label=False)
    draw_group_heatmap(fig, bottom, run, analysis.GROUP_SCALE_PREFIX)
    return _save(fig, out / f"clip_groups_{safe_name(run.label)}.png", dpi)


def plot_kl_entropy_loss(runs: Sequence[RunLog], out: Path, dpi: int = DPI) -> Path:
    """(d) KL, entropy and policy loss."""
    fig = Figure(figsize=(16, 4.2), layout="constrained")
    kl, entropy, loss = fig.subplots(1, 3)
    draw_metric(kl, runs, analysis.KL_KEYS, "KL", "KL")
    draw_metric(entropy, runs, analysis.ENTROPY_KEYS, "Entropy", "mean token entropy")
    draw_metric(loss, runs, analysis.PG_LOSS_KEYS, "Policy loss", "loss")
    return _save(fig, out / "kl_entropy_loss.png", dpi)


def plot_overview(
    runs: Sequence[RunLog],
    out: Path,
    factor: float = analysis.SPIKE_FACTOR,
    window: int = analysis.SPIKE_WINDOW,
    dpi: int = DPI,
) -> Path:
    """Reward, validation, grad norm and entropy on one page (the README picture)."""
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    (reward, val), (norm, entropy) = fig.subplots(2, 2)
    draw_metric(reward, runs, analysis.REWARD_KEYS, "Training reward", "mean reward per batch")
    draw_validation(val, runs)
    draw_grad_norm(norm, runs, factor, window)
    norm.set_title(f"Pre-clip grad norm (o = spike > {factor:g}x median of previous {window}, -- = skipped)")
    draw_metric(entropy, runs, analysis.ENTROPY_KEYS, "Entropy", "mean token entropy")
    return _save(fig, out / "overview.png", dpi)
