"""GradClipper: exact per-group norms of the gradient the optimizer sees, then a rule's scales.

One ``clip_`` call does, in order: per-tensor norms of the local gradient
shards (batched ``_foreach_norm`` kernels), a scatter-add into per-group
squared norms, ONE all-reduce of that small vector over the shard group, the
rule's update, ONE host transfer of (norms, scales, EMA), and batched in-place
scaling of the tensors whose scale is not 1. A non-finite norm skips the step:
gradients and state stay untouched, and the caller decides what to do
(verl zeroes the gradients and skips the optimizer step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from aggc_rl import metrics as names
from aggc_rl.clipping.grouping import Grouping
from aggc_rl.clipping.registry import make_rule
from aggc_rl.clipping.rule import ClipRule, State, check_progress, knob_values
from aggc_rl.clipping.sharding import ReductionPlan, local_tensor, plan_reduction

STATE_FORMAT = 1
_HALF_TYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class ClipResult:
    """What one ``clip_`` call measured and did (all on the host)."""

    groups: tuple[str, ...]
    norms: torch.Tensor  # pre-clip L2 norm per group, float64
    scales: torch.Tensor  # factor applied per group (what would have been applied, if skipped)
    stats: dict[str, torch.Tensor]  # the rule's statistics after this step (ClipRule.stats), float64
    total_norm: float  # pre-clip L2 norm of all clipped gradients
    skipped: bool  # a group norm was not finite: nothing was scaled, state unchanged
    step: int  # updates the rule has applied so far

    @property
    def ema(self) -> torch.Tensor | None:
        """The rule's per-group running statistic, if it has one."""
        return self.stats.get("ema")

    @property
    def total_norm_post(self) -> float:
        if self.skipped:
            return self.total_norm
        return float(torch.linalg.vector_norm(self.norms * self.scales))

    def metrics(self, *, per_group: bool = True) -> dict[str, float]:
        """Flat scalars for a logger, named by :mod:`aggc_rl.metrics`; ``per_group`` adds the group families."""
        count = max(len(self.groups), 1)
        out: dict[str, float] = {
            names.TOTAL_NORM_PRE.key(): self.total_norm,
            names.TOTAL_NORM_POST.key(): self.total_norm_post,
            names.SKIPPED.key(): float(self.skipped),
            names.FRAC_SCALED_DOWN.key(): float((self.scales < 1).sum()) / count,
            names.FRAC_SCALED_UP.key(): float((self.scales > 1).sum()) / count,
        }
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
    buckets: tuple[tuple[int, ...], ...]  # positions into `present`, one bucket per (device, dtype)
    group_index: torch.Tensor  # group of each tensor, in bucket order, on plan.device
    weights: torch.Tensor | None  # 0/1 per tensor in bucket order (None: all ones)
    plan: ReductionPlan


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
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
        rule: ClipRule | str,
        grouping: str | Callable[[str], str] | None = None,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
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
        self._layout: _Layout | None = None

    @property
    def groups(self) -> tuple[str, ...]:
        return self.grouping.names

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
        host = self._to_host([norms, scales, *stats.values()])  # the one host sync of the step
        host_norms, host_scales = host[0], host[1]
        skipped = not bool(torch.isfinite(host_norms).all())

        if skipped:
            self.state = state
            stats = self.rule.stats(state, progress=progress)
            host_stats = dict(zip(stats, self._to_host(list(stats.values())), strict=True))
        else:
            self.state = new_state
            host_stats = dict(zip(stats, host[2:], strict=True))
            self._scale_(local, layout, host_scales.tolist())
        return ClipResult(
            groups=self.grouping.names,
            norms=host_norms,
            scales=host_scales,
            stats=host_stats,
            total_norm=float(torch.linalg.vector_norm(host_norms)),
            skipped=skipped,
            step=int(self.state["step"]),
        )

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
        if self._layout is not None and self._layout.present == present:
            return self._layout
        names = [self.param_names[i] for i in present]
        plan = plan_reduction(names, [grads[i] for i in present], self.process_group)
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
        self._layout = _Layout(present, buckets, group_index, weights, plan)
        return self._layout

    @staticmethod
    def _squared_norms(local: Sequence[torch.Tensor], layout: _Layout) -> torch.Tensor:
        """Per-tensor squared L2 norms of the local shards, in bucket order, float64 on the collective device."""
        parts = []
        for bucket in layout.buckets:
            tensors = [local[pos] for pos in bucket]
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
        """Everything needed to continue exactly: rule, groups and state tensors (on CPU)."""
        return {
            "format": STATE_FORMAT,
            "rule": self.rule.name,
            "knobs": knob_values(self.rule),
            "scheme": self.grouping.scheme,
            "groups": list(self.grouping.names),
            "state": {k: v.detach().cpu().clone() for k, v in self.state.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a saved state; refuses one saved for other groups or another kind of rule."""
        if state_dict.get("format") != STATE_FORMAT:
            raise ValueError(
                f"clipper state format {state_dict.get('format')!r} is not supported; allowed: {STATE_FORMAT}"
            )
        saved, ours = list(state_dict["groups"]), list(self.grouping.names)
        if saved != ours:
            missing = [g for g in ours if g not in saved][:5]
            extra = [g for g in saved if g not in ours][:5]
            raise ValueError(
                f"clipper state was saved for {len(saved)} groups but this model has {len(ours)} "
                f"(missing from the saved state: {missing}; not in this model: {extra}; or a different order)"
            )
        fresh = self.rule.init(len(ours), dtype=torch.float64)
        loaded = state_dict["state"]
        if set(loaded) != set(fresh):
            raise ValueError(
                f"clipper state of rule {state_dict.get('rule')!r} holds {sorted(loaded)}, but rule "
                f"{self.rule.name!r} needs {sorted(fresh)}"
            )
        for key, value in loaded.items():
            if tuple(value.shape) != tuple(fresh[key].shape):
                raise ValueError(
                    f"clipper state {key!r} has shape {tuple(value.shape)}, expected {tuple(fresh[key].shape)}"
                )
        self.state = {k: v.detach().to(dtype=fresh[k].dtype).clone() for k, v in loaded.items()}
