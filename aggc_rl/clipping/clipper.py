"""GradClipper: exact per-group norms of the gradient the optimizer sees, then a rule's scales.

One ``clip_`` call does, in order: per-tensor norms of the local gradient
shards (batched ``_foreach_norm`` kernels), a scatter-add into per-group
squared norms, ONE all-reduce of that small vector over the shard group, the
rule's update, ONE host transfer of (norms, scales, EMA), and batched in-place
scaling of the tensors whose scale is not 1. A skipped step (a non-finite norm,
or the guard's ``skip_above`` / ``skip_sigma``, :mod:`aggc_rl.clipping.guard`)
leaves the gradients and the rule's state untouched; the caller must then not
step its optimizer (verl's engine zeroes the gradients and skips the step).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from aggc_rl import metrics as names
from aggc_rl.clipping.grouping import Grouping
from aggc_rl.clipping.guard import (
    NO_GUARD,
    NON_FINITE,
    GuardConfig,
    GuardState,
    SkippedStepsError,
    decide,
    stop_message,
)
from aggc_rl.clipping.registry import make_rule
from aggc_rl.clipping.rule import ClipRule, State, check_progress, knob_values
from aggc_rl.clipping.sharding import ReductionPlan, local_tensor, plan_reduction

logger = logging.getLogger(__name__)

#: 2 adds the guard state; format 1 (no guard state) still loads, with a fresh guard.
STATE_FORMAT = 2
READABLE_FORMATS = (1, 2)
MISMATCH_MODES = ("refuse", "reset")
_HALF_TYPES = (torch.float16, torch.bfloat16)


class ClipStateMismatch(ValueError):
    """A saved clipper state belongs to another rule, other knobs, another grouping or other groups."""

    def __init__(self, differences: list[str], message: str | None = None) -> None:
        self.differences = differences
        super().__init__(
            message
            or "the saved clipper state does not match this clipper: "
            + "; ".join(differences)
            + " (load it with on_mismatch='reset' to start a fresh clipper state on purpose)"
        )


class ClipStateDamaged(ValueError):
    """A saved clipper state is not a readable clipper state (truncated, corrupted, or not ours)."""


@dataclass(frozen=True)
class ClipResult:
    """What one ``clip_`` call measured and did (all on the host)."""

    groups: tuple[str, ...]
    norms: torch.Tensor  # pre-clip L2 norm per group, float64
    scales: torch.Tensor  # factor applied per group (what would have been applied, if skipped)
    stats: dict[str, torch.Tensor]  # the rule's statistics after this step (ClipRule.stats), float64
    total_norm: float  # pre-clip L2 norm of all clipped gradients
    skipped: bool  # the step is skipped (see skip_reasons): nothing was scaled, rule state unchanged
    step: int  # updates the rule has applied so far
    skip_reasons: tuple[str, ...] = ()  # guard.NON_FINITE / ABOVE / SIGMA; empty when the step is taken
    spike_z: float | None = None  # total's z-score against the guard window (None until it is ready)
    non_finite_total: int = 0  # steps skipped so far because a norm was not finite
    spike_total: int = 0  # steps skipped so far by skip_above / skip_sigma
    consecutive_skips: int = 0  # skipped steps in a row, this one included

    @property
    def non_finite(self) -> bool:
        return NON_FINITE in self.skip_reasons

    @property
    def spike_skipped(self) -> bool:
        return self.skipped and not self.non_finite

    @property
    def non_finite_groups(self) -> list[str]:
        return [g for g, n in zip(self.groups, self.norms.tolist(), strict=True) if not math.isfinite(n)]

    @property
    def total_norm_post(self) -> float:
        """The norm of what the optimizer got: 0 when the step was skipped (gradients zeroed, no update)."""
        if self.skipped:
            return 0.0
        return float(torch.linalg.vector_norm(self.norms * self.scales))

    def metrics(self, *, per_group: bool = True) -> dict[str, float]:
        """Flat scalars for a logger, named by :mod:`aggc_rl.metrics`; ``per_group`` adds the group families."""
        count = max(len(self.groups), 1)
        out: dict[str, float] = {
            names.TOTAL_NORM_PRE.key(): self.total_norm,
            names.TOTAL_NORM_POST.key(): self.total_norm_post,
            names.SKIPPED.key(): float(self.non_finite),
            names.SPIKE_SKIPPED.key(): float(self.spike_skipped),
            names.SKIPS_NON_FINITE_TOTAL.key(): float(self.non_finite_total),
            names.SKIPS_SPIKE_TOTAL.key(): float(self.spike_total),
            names.CONSECUTIVE_SKIPS.key(): float(self.consecutive_skips),
            # A skipped step scaled nothing, whatever the rule would have done.
            names.FRAC_SCALED_DOWN.key(): 0.0 if self.skipped else float((self.scales < 1).sum()) / count,
            names.FRAC_SCALED_UP.key(): 0.0 if self.skipped else float((self.scales > 1).sum()) / count,
        }
        if self.spike_z is not None:
            out[names.SPIKE_Z.key()] = self.spike_z
        for stat, value in self.stats.items():
            if not names.rule_stat(stat).per_group:
                out[names.rule_stat(stat).key()] = float(value)
        if not per_group:
            return out
        families = [(names.GROUP_NORM, self.norms), (names.GROUP_SCALE, self.scales)]
        families += [(names.rule_stat(k), v) for k, v in self.stats.items() if names.rule_stat(k).per_group]
        for metric, values in families:
            for j, group in enumerate(self.groups):
                out[metric.key(group)] = float(values[j])
        return out


@dataclass(frozen=True)
class _Layout:
    """Cached per-call bookkeeping for one set of present gradients."""

    present: tuple[int, ...]  # parameter indices that have a gradient
    kinds: tuple[tuple[torch.device, torch.dtype], ...]  # (device, dtype) of each present gradient
    buckets: tuple[tuple[int, ...], ...]  # positions into `present`, one bucket per (device, dtype)
    group_index: torch.Tensor  # group of each tensor, in bucket order, on plan.device
    weights: torch.Tensor | None  # 0/1 per tensor in bucket order (None: all ones)
    plan: ReductionPlan


def _kind(grad: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """A gradient's device and dtype (a DTensor reports its local shard's)."""
    return grad.device, grad.dtype


class GradClipper:
    """Clips ``p.grad`` of the trainable parameters in place, group by group.

    Args:
        named_parameters: ``model.named_parameters()``; parameters without
            ``requires_grad`` are ignored (LoRA: only the adapters are grouped).
        rule: a rule from :func:`make_rule`, or its name.
        grouping: a scheme name (``module_type``, ``module_type_per_layer``,
            ``tensor``, ``global``), a function name -> key, or None for the
            rule's default scheme.
        process_group: only for gradients that are plain tensors holding
            shards (FSDP1 ``use_orig_params=True``); DTensor gradients carry
            their own mesh and need nothing.
        guard: the step guard (:class:`GuardConfig`); None: only non-finite
            norms skip, and nothing stops (the skip counters are kept anyway).
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
        rule: ClipRule | str,
        grouping: str | Callable[[str], str] | None = None,
        process_group: dist.ProcessGroup | None = None,
        guard: GuardConfig | None = None,
    ) -> None:
        if guard is not None and not isinstance(guard, GuardConfig):
            raise TypeError(f"guard must be a GuardConfig or None, got {guard!r}")
        self.rule: ClipRule = make_rule(rule) if isinstance(rule, str) else rule
        if not isinstance(self.rule, ClipRule):
            raise TypeError(f"rule must be a clip rule or one of its names, got {rule!r}")
        named = [(n, p) for n, p in named_parameters if p.requires_grad]
        if not named:
            raise ValueError("GradClipper got no trainable parameters (none has requires_grad=True)")
        self.param_names: tuple[str, ...] = tuple(n for n, _ in named)
        self.params: list[torch.nn.Parameter] = [p for _, p in named]
        scheme = self.rule.default_scheme if grouping is None else grouping
        self.grouping = Grouping.build(self.param_names, scheme)
        self.process_group = process_group
        self.state: State = self.rule.init(len(self.grouping), dtype=torch.float64)
        self.guard: GuardConfig = NO_GUARD if guard is None else guard
        self.guard_state = GuardState()
        self._layout: _Layout | None = None

    @property
    def groups(self) -> tuple[str, ...]:
        return self.grouping.names

    def reset_state(self) -> None:
        """Back to the state of a new clipper (rule state and guard), as at the first step of a run."""
        self.state = self.rule.init(len(self.grouping), dtype=torch.float64)
        self.guard_state = GuardState()

    # -- the step ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def clip_(self, progress: float = 0.0) -> ClipResult:
        """Measure, decide and scale. ``progress`` is the fraction of training done, in [0, 1]."""
        progress = check_progress(progress)
        grads = [p.grad for p in self.params]
        layout = self._layout_for(grads)
        local = [local_tensor(grads[i]) for i in layout.present]
        device = layout.plan.device

        group_sq = torch.zeros(len(self.grouping), dtype=torch.float64, device=device)
        group_sq.index_add_(0, layout.group_index, self._squared_norms(local, layout))
        if layout.plan.group is not None:
            dist.all_reduce(group_sq, op=dist.ReduceOp.SUM, group=layout.plan.group)
        norms = group_sq.sqrt()

        state = {k: v.to(device) for k, v in self.state.items()}
        scales, new_state = self.rule.update(norms, state, progress=progress)
        stats = self.rule.stats(new_state, progress=progress)
        # The one host sync of a taken step: norms, scales, step counters and the rule's statistics together.
        host = self._to_host([norms, scales, state["step"], new_state["step"], *stats.values()])
        host_norms, host_scales = host[0], host[1]
        steps_before, steps_after = int(host[2]), int(host[3])
        finite = bool(torch.isfinite(host_norms).all())
        total = float(torch.linalg.vector_norm(host_norms))

        decision, self.guard_state = decide(self.guard, self.guard_state, total, finite)
        if decision.skip:  # rare: the statistics of the kept state cost a second transfer
            self.state = state
            old_stats = self.rule.stats(state, progress=progress)
            host_stats = dict(zip(old_stats, self._to_host(list(old_stats.values())), strict=True))
        else:
            self.state = new_state
            host_stats = dict(zip(stats, host[4:], strict=True))
            self._scale_(local, layout, host_scales.tolist())
        result = ClipResult(
            groups=self.grouping.names,
            norms=host_norms,
            scales=host_scales,
            stats=host_stats,
            total_norm=total,
            skipped=decision.skip,
            step=steps_before if decision.skip else steps_after,
            skip_reasons=decision.reasons,
            spike_z=decision.z,
            non_finite_total=self.guard_state.non_finite_total,
            spike_total=self.guard_state.spike_total,
            consecutive_skips=self.guard_state.consecutive,
        )
        limit = self.guard.max_consecutive_skips
        if decision.skip and limit > 0 and self.guard_state.consecutive >= limit:
            raise SkippedStepsError(
                stop_message(self.guard, self.guard_state, decision.reasons, total, result.non_finite_groups)
            )
        return result

    @staticmethod
    def _to_host(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Move several small device tensors to the host as float64 in ONE transfer, shapes kept."""
        if not tensors:
            return []
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]).cpu()
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset : offset + t.numel()].reshape(t.shape))
            offset += t.numel()
        return out

    def _layout_for(self, grads: Sequence[torch.Tensor | None]) -> _Layout:
        present = tuple(i for i, grad in enumerate(grads) if grad is not None)
        # The buckets and the collective's device follow each gradient's device and dtype: a gradient that
        # moved (offload) or changed dtype needs a new layout, not only one that appeared or vanished.
        kinds = tuple(_kind(grads[i]) for i in present)
        if self._layout is not None and self._layout.present == present and self._layout.kinds == kinds:
            return self._layout
        present_names = [self.param_names[i] for i in present]
        plan = plan_reduction(present_names, [grads[i] for i in present], self.process_group)
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for pos, i in enumerate(present):
            shard = local_tensor(grads[i])
            by_kind.setdefault((shard.device, shard.dtype), []).append(pos)
        buckets = tuple(tuple(b) for b in by_kind.values())
        order = [pos for b in buckets for pos in b]
        group_index = torch.tensor(
            [self.grouping.index[present[pos]] for pos in order], dtype=torch.long, device=plan.device
        )
        weights = None
        if any(w != 1.0 for w in plan.weights):
            weights = torch.tensor(
                [plan.weights[pos] for pos in order], dtype=torch.float64, device=plan.device
            )
        self._layout = _Layout(present, kinds, buckets, group_index, weights, plan)
        return self._layout

    @staticmethod
    def _squared_norms(local: Sequence[torch.Tensor], layout: _Layout) -> torch.Tensor:
        """Per-tensor squared L2 norms of the local shards, in bucket order, float64 on the collective device."""
        parts = []
        for bucket in layout.buckets:
            tensors = [local[pos] for pos in bucket]
            # bf16/fp16 norms accumulate in fp32 (torch's own clip rounds each norm to bf16). On CUDA the kernel
            # reads bf16 directly; on the CPU it first copies the gradients to fp32 (why CPU bf16 is ~1.7x torch).
            acc = torch.float32 if tensors[0].dtype in _HALF_TYPES else None
            norms = torch.stack(torch._foreach_norm(tensors, 2, dtype=acc))
            parts.append(norms.to(device=layout.plan.device, dtype=torch.float64))
        if not parts:
            return torch.zeros(0, dtype=torch.float64, device=layout.plan.device)
        squares = torch.cat(parts).square()
        return squares if layout.weights is None else squares * layout.weights

    def _scale_(self, local: Sequence[torch.Tensor], layout: _Layout, scales: list[float]) -> None:
        for bucket in layout.buckets:
            tensors, factors = [], []
            for pos in bucket:
                factor = scales[self.grouping.index[layout.present[pos]]]
                if factor != 1.0:
                    tensors.append(local[pos])
                    factors.append(factor)
            if tensors:
                torch._foreach_mul_(tensors, factors)

    # -- checkpointing ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: rule, knobs, groups, state tensors (on CPU), guard state."""
        return {
            "format": STATE_FORMAT,
            "rule": self.rule.name,
            "knobs": knob_values(self.rule),
            "scheme": self.grouping.scheme,
            "groups": list(self.grouping.names),
            "state": {k: v.detach().cpu().clone() for k, v in self.state.items()},
            "guard": self.guard_state.state_dict(),
        }

    def check_state_dict(self, state_dict: Any) -> list[str]:
        """How a saved state differs from this clipper (rule, knobs, grouping, groups); [] when it fits.

        Raises :class:`ClipStateDamaged` when ``state_dict`` is not a readable clipper state at all.
        """
        return state_differences(state_dict, self.rule, self.grouping.scheme, self.grouping.names)

    def load_state_dict(self, state_dict: dict[str, Any], *, on_mismatch: str = "refuse") -> list[str]:
        """Restore a saved state exactly (rule state and guard state).

        A state saved for another rule, other knob values, another grouping or other groups raises
        :class:`ClipStateMismatch` naming every difference; with ``on_mismatch="reset"`` the clipper keeps a
        fresh state instead (logged as a warning). Returns the differences found.
        """
        if on_mismatch not in MISMATCH_MODES:
            raise ValueError(f"on_mismatch={on_mismatch!r} is invalid; allowed: {', '.join(MISMATCH_MODES)}")
        differences = self.check_state_dict(state_dict)
        if differences:
            if on_mismatch == "refuse":
                raise ClipStateMismatch(differences)
            logger.warning(
                "clipper state does not match (%s): starting a fresh clipper state as asked (reset)",
                "; ".join(differences),
            )
            self.state = self.rule.init(len(self.grouping), dtype=torch.float64)
            self.guard_state = GuardState()
            return differences
        fresh = self.rule.init(len(self.grouping), dtype=torch.float64)
        self.state = {k: v.detach().to(dtype=fresh[k].dtype).clone() for k, v in state_dict["state"].items()}
        saved_guard = state_dict.get("guard")
        self.guard_state = (
            GuardState() if saved_guard is None else GuardState.from_state_dict(saved_guard, self.guard)
        )
        return differences


def state_differences(
    state_dict: Any, rule: ClipRule, scheme: str, groups: Sequence[str] | None = None
) -> list[str]:
    """How a saved state differs from a clipper of ``rule`` over ``groups`` grouped by ``scheme``.

    ``groups=None`` leaves the groups (and the state's shapes) unchecked: the preflight knows the settings
    before any model is built; the engine checks everything once it has the parameters. Raises
    :class:`ClipStateDamaged` when ``state_dict`` is not a readable clipper state at all.
    """
    _check_structure(state_dict)
    differences: list[str] = []
    saved, ours = list(state_dict["groups"]), list(state_dict["groups"] if groups is None else groups)
    fresh = rule.init(len(ours), dtype=torch.float64)
    saved_rule, saved_state = state_dict["rule"], state_dict["state"]
    if set(saved_state) != set(fresh):
        differences.append(
            f"rule {saved_rule!r} holds {sorted(saved_state)}, but rule {rule.name!r} needs {sorted(fresh)}"
        )
    elif saved_rule != rule.name:
        differences.append(f"rule: saved {saved_rule!r}, now {rule.name!r}")
    saved_knobs, knobs = dict(state_dict["knobs"]), knob_values(rule)
    if saved_rule == rule.name or set(saved_knobs) == set(knobs):
        for knob in sorted(set(saved_knobs) | set(knobs)):
            old, new = saved_knobs.get(knob, "<absent>"), knobs.get(knob, "<absent>")
            if not _same(old, new):
                differences.append(f"knob {knob!r}: saved {old!r}, now {new!r}")
    if state_dict["scheme"] != scheme:
        differences.append(f"grouping: saved {state_dict['scheme']!r}, now {scheme!r}")
    if saved != ours:
        missing = [g for g in ours if g not in saved][:5]
        extra = [g for g in saved if g not in ours][:5]
        differences.append(
            f"groups: saved for {len(saved)} groups but this model has {len(ours)} "
            f"(missing from the saved state: {missing}; not in this model: {extra}; or a different order)"
        )
    if not differences:
        for key, value in saved_state.items():
            if tuple(value.shape) != tuple(fresh[key].shape):
                differences.append(
                    f"state {key!r}: saved shape {tuple(value.shape)}, now {tuple(fresh[key].shape)}"
                )
    return differences


def _same(a: Any, b: Any) -> bool:
    """Knob equality: 1 and 1.0 are the same value, NaN equals NaN, a bool is not a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _check_structure(state_dict: Any) -> None:
    """Refuse anything that is not a clipper state this code can read."""

    def damaged(why: str) -> ClipStateDamaged:
        return ClipStateDamaged(f"not a readable clipper state: {why}")

    if not isinstance(state_dict, dict):
        raise damaged(f"a {type(state_dict).__name__}, not a dict")
    if state_dict.get("format") not in READABLE_FORMATS:
        raise ValueError(
            f"clipper state format {state_dict.get('format')!r} is not supported; allowed: "
            f"{', '.join(map(str, READABLE_FORMATS))}"
        )
    for key, kind in (("rule", str), ("knobs", dict), ("scheme", str), ("groups", list), ("state", dict)):
        if not isinstance(state_dict.get(key), kind):
            raise damaged(f"{key!r} is missing or not a {kind.__name__}")
    if not all(isinstance(v, torch.Tensor) for v in state_dict["state"].values()):
        raise damaged("a rule state entry is not a tensor")
    guard = state_dict.get("guard")
    if guard is not None:
        ok = isinstance(guard, dict) and isinstance(guard.get("window"), torch.Tensor)
        ok = ok and all(
            isinstance(guard.get(k), int) for k in ("calls", "consecutive", "non_finite_total", "spike_total")
        )
        if not ok:
            raise damaged("the guard state is incomplete")
