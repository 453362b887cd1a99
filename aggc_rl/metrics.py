"""Every metric name the project writes or reads, with how it is reduced, in one place.

The clipper produces the ``clip/...`` names, the engine hands them to verl (which prefixes worker metrics
with ``actor/``), and the report, the demo and the tests read them back through :func:`logged`. A metric
is reduced twice on its way to a logger: over the optimizer steps (mini-batches) of one training step by
the ``reduction`` given here (verl's ``Metric`` aggregation), and never again across ranks (the values are
the same on every rank: the norms are all-reduced before anything is computed from them).

Per-group metrics are families: ``clip/norm/<group>`` etc. Group names are made safe for verl first
(:func:`metric_safe`): verl max/min-reduces any key that contains "max" or "min".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: verl's trainer puts this in front of every metric the actor worker returns.
ACTOR_PREFIX = "actor/"
#: Our metrics, below ``actor/``.
CLIP_PREFIX = "clip/"

REDUCTIONS = ("mean", "sum", "max", "min")


@dataclass(frozen=True)
class MetricName:
    """One metric (or, with ``per_group``, one family ``<name>/<group>``) and its reduction."""

    name: str  # the key the producer writes, e.g. "clip/total_norm_pre"
    reduction: str
    doc: str
    per_group: bool = False

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"metric {self.name!r}: reduction={self.reduction!r}; allowed: {REDUCTIONS}")

    def key(self, group: str | None = None) -> str:
        """The key as the producer writes it (no ``actor/``); per-group families need the group."""
        if self.per_group != (group is not None):
            raise ValueError(f"metric {self.name!r} is {'per group' if self.per_group else 'one value'}")
        return self.name if group is None else f"{self.name}/{metric_safe(group)}"

    def logged(self, group: str | None = None) -> str:
        """The key as it appears in verl's logs (``actor/...``)."""
        return ACTOR_PREFIX + self.key(group)

    @property
    def logged_prefix(self) -> str:
        """``actor/<family>/``: what every logged key of a per-group family starts with."""
        if not self.per_group:
            raise ValueError(f"metric {self.name!r} is not a per-group family")
        return f"{ACTOR_PREFIX}{self.name}/"


def metric_safe(group: str) -> str:
    """verl max/min-reduces metrics whose names contain "max"/"min"; keep group names out of that."""
    return re.sub(r"(?i)(m)(ax|in)", r"\1_\2", group)


# -- written by verl itself (read by the report and the demo) -------------------------------------------------
GRAD_NORM = MetricName("grad_norm", "mean", "pre-clip total norm (our engine returns it in every arm)")
#: verl's trainer-level keys (logged as they are): the step's mean score / reward, and validation.
SCORE_MEAN = "critic/score/mean"
REWARD_MEAN = "critic/rewards/mean"
VAL_PREFIX = "val-core/"  # val-core/<data_source>/<var>/mean@N
#: verl's actor loss terms (logged under actor/).
KL_LOSS = ACTOR_PREFIX + "kl_loss"
PPO_KL = ACTOR_PREFIX + "ppo_kl"
ENTROPY = ACTOR_PREFIX + "entropy"
PG_LOSS = ACTOR_PREFIX + "pg_loss"

# -- written by the clipper (aggc_rl.clipping.clipper.ClipResult.metrics) --------------------------------------
TOTAL_NORM_PRE = MetricName(f"{CLIP_PREFIX}total_norm_pre", "mean", "total L2 norm before clipping")
TOTAL_NORM_POST = MetricName(f"{CLIP_PREFIX}total_norm_post", "mean", "total L2 norm after clipping")
SKIPPED = MetricName(f"{CLIP_PREFIX}skipped", "mean", "1 when a norm was not finite and the step was skipped")
SPIKE_SKIPPED = MetricName(
    f"{CLIP_PREFIX}spike_skipped", "mean", "1 when the guard skipped the step (skip_above or skip_sigma)"
)
SPIKE_Z = MetricName(
    f"{CLIP_PREFIX}spike_z",
    "max",
    "z-score of the pre-clip total against the guard window (logged once the window is ready)",
)
SKIPS_NON_FINITE_TOTAL = MetricName(
    f"{CLIP_PREFIX}skips_non_finite_total", "max", "steps skipped so far because a norm was not finite"
)
SKIPS_SPIKE_TOTAL = MetricName(
    f"{CLIP_PREFIX}skips_spike_total", "max", "steps skipped so far by the guard (skip_above / skip_sigma)"
)
CONSECUTIVE_SKIPS = MetricName(
    f"{CLIP_PREFIX}consecutive_skips", "max", "skipped steps in a row, up to this one (0 after a taken step)"
)
FRAC_SCALED_DOWN = MetricName(f"{CLIP_PREFIX}frac_scaled_down", "mean", "fraction of groups scaled < 1")
FRAC_SCALED_UP = MetricName(f"{CLIP_PREFIX}frac_scaled_up", "mean", "fraction of groups scaled > 1")
GROUP_NORM = MetricName(f"{CLIP_PREFIX}norm", "mean", "pre-clip L2 norm of the group", per_group=True)
GROUP_SCALE = MetricName(f"{CLIP_PREFIX}scale", "mean", "factor applied to the group", per_group=True)

#: The rules' own statistics (``ClipRule.stats``): per-group ones are families, the others single values.
RULE_STATS: dict[str, MetricName] = {
    "ema": MetricName(
        f"{CLIP_PREFIX}ema", "mean", "the rule's running statistic (AGGC EMA, AdaGC gamma, ZClip mean)", True
    ),
    "std": MetricName(f"{CLIP_PREFIX}std", "mean", "ZClip's running standard deviation of the norm", True),
    "band_low": MetricName(f"{CLIP_PREFIX}band_low", "mean", "AGGC's lower band multiplier at this progress"),
    "band_high": MetricName(
        f"{CLIP_PREFIX}band_high", "mean", "AGGC's upper band multiplier at this progress"
    ),
}

# -- written by the engine (verl_patches.engine.clip_engine) ---------------------------------------------------
PROGRESS = MetricName(f"{CLIP_PREFIX}progress", "mean", "fraction of training done, as the rule saw it")

#: Every single-valued metric (for docs and tests); per-group families are listed in GROUP_FAMILIES.
SCALARS: tuple[MetricName, ...] = (
    GRAD_NORM,
    TOTAL_NORM_PRE,
    TOTAL_NORM_POST,
    SKIPPED,
    SPIKE_SKIPPED,
    SPIKE_Z,
    SKIPS_NON_FINITE_TOTAL,
    SKIPS_SPIKE_TOTAL,
    CONSECUTIVE_SKIPS,
    FRAC_SCALED_DOWN,
    FRAC_SCALED_UP,
    PROGRESS,
    *(m for m in RULE_STATS.values() if not m.per_group),
)
GROUP_FAMILIES: tuple[MetricName, ...] = (
    GROUP_NORM,
    GROUP_SCALE,
    *(m for m in RULE_STATS.values() if m.per_group),
)


def rule_stat(name: str) -> MetricName:
    """The metric of a rule statistic; a rule reporting an unnamed statistic is a bug caught here."""
    try:
        return RULE_STATS[name]
    except KeyError:
        raise KeyError(
            f"rule statistic {name!r} has no metric name; add it to aggc_rl.metrics.RULE_STATS"
        ) from None


def reduction_of(key: str) -> str:
    """The reduction of a producer key (``clip/...`` or a per-group ``clip/norm/<group>``)."""
    for metric in SCALARS:
        if key == metric.name:
            return metric.reduction
    for family in GROUP_FAMILIES:
        if key.startswith(family.name + "/"):
            return family.reduction
    raise KeyError(f"{key!r} is not a metric named in aggc_rl.metrics")


# -- reward events (aggc_rl.rewards.event_metrics: per training step, summed over the batch's samples) --------
#: Samples whose reward could not be computed (unknown data_source, unreadable ground truth, a scorer
#: error, a math_verify timeout); each scored ``aggc_rl.rewards.UNSCORED_SCORE`` and was logged.
REWARD_UNSCORED = "reward/unscored"
#: Of those, math_verify calls past their deadline twice (a fresh warm worker got the retry).
REWARD_TIMEOUTS = "reward/timeouts"
REWARD_EVENTS = (REWARD_UNSCORED, REWARD_TIMEOUTS)
