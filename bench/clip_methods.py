"""The clip methods both clip benchmarks compare, on model-shaped random gradients, and their floor.

Methods: torch's ``clip_grad_norm_(foreach=True)`` (the baseline), ``GradClipper`` with every rule in
``RULE_NAMES``, and, once ``aggc_rl.clipping.guard`` exists, ``aggc`` with the step guard. Adaptive
rules start from the steady state a long run reaches on these gradients (every group scaled), so
each method scales every tensor, as torch's does.

The floor is what the step must move through memory: every gradient read once for the norms, then
read and written once for the scale (3 x the gradient bytes), over the copy bandwidth measured in the
same rounds (a copy reads and writes its bytes once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from aggc_rl.clipping import RULE_NAMES, GradClipper, make_rule
from aggc_rl.clipping.guard import GuardConfig
from bench import rounds as rd
from bench.host_syncs import count_host_syncs, model_host_syncs
from bench.shapes import qwen2_shapes

BASELINE = "torch_clip_grad_norm_foreach"
GUARDED = "aggc+guard"
GUARD_RULE = "aggc"
COPY_PROBE = "_copy_probe"
#: Bytes the clip step moves per gradient byte: one read for the norms, one read and one write to scale.
FLOOR_PASSES = 3


#: A guard that checks every step but never skips on these steady gradients: its cost, not its effect.
BENCH_GUARD = GuardConfig(skip_above=1e30, skip_sigma=1e6, window=16)


def make_params(
    model: str, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters of ``model``'s shapes holding random gradients; the weights take no memory (stride 0)."""
    gen = torch.Generator(device=device.type if device.type == "cuda" else "cpu").manual_seed(seed)
    named = []
    for name, shape in qwen2_shapes(model):
        p = torch.nn.Parameter(torch.zeros((), dtype=dtype, device=device).expand(shape))
        if device.type == "cuda":
            p.grad = torch.randn(shape, generator=gen, dtype=dtype, device=device)
        else:
            p.grad = torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)
        named.append((name, p))
    return named


def steady_state(clipper: GradClipper, updates: int = 200) -> None:
    """Advance the rule's state as if it had seen these gradients ``updates`` times (grads untouched)."""
    saved = [p.grad.clone() for p in clipper.params]
    norms = clipper.clip_(progress=0.0).norms
    torch._foreach_copy_([p.grad for p in clipper.params], saved)
    del saved
    state = clipper.rule.init(len(clipper.groups), dtype=torch.float64)
    for _ in range(updates):
        _, state = clipper.rule.update(norms, state, progress=0.0)
    clipper.state = state


@dataclass
class ClipBench:
    """One gradient set and everything timed on it."""

    named: list[tuple[str, torch.nn.Parameter]]
    methods: dict[str, Callable[[], object]]
    clippers: dict[str, GradClipper]
    originals: list[torch.Tensor]
    grad_bytes: int
    elements: int
    skipped: dict[str, bool] = field(default_factory=dict)  # method -> some timed call skipped the step

    @property
    def grads(self) -> list[torch.Tensor]:
        return [p.grad for _, p in self.named]

    def device_tensors(self, key: str) -> list[torch.Tensor]:
        """What lives on the device for method ``key``: the gradients and its clipper's state."""
        clipper = self.clippers.get(key)
        return [*self.grads, *(clipper.state.values() if clipper is not None else [])]

    def host_syncs(self, device: torch.device) -> dict[str, dict[str, Any]]:
        """Per method: syncs of one call measured (CUDA only) and modelled (any device; SyncModel)."""
        out = {}
        for key, fn in self.methods.items():
            self.reset()
            measured = count_host_syncs(fn, device)
            self.reset()
            modelled = model_host_syncs(fn, self.device_tensors(key))
            out[key] = {"measured": measured, "modelled": modelled}
        self.reset()
        return out

    def reset(self) -> None:
        """Put the original gradients back (what every timed call starts from)."""
        torch._foreach_copy_(self.grads, self.originals)


def build(model: str, dtype: torch.dtype, device: torch.device, *, steady_updates: int = 200) -> ClipBench:
    named = make_params(model, dtype, device)
    params = [p for _, p in named]
    originals = [p.grad.clone() for p in params]
    elements = sum(p.numel() for p in params)
    methods: dict[str, Callable[[], object]] = {
        BASELINE: lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    }
    clippers: dict[str, GradClipper] = {}
    skipped: dict[str, bool] = {}
    variants = [(rule, rule, None) for rule in RULE_NAMES] + [(GUARDED, GUARD_RULE, BENCH_GUARD)]
    for key, rule, guard in variants:
        clipper = GradClipper(named, make_rule(rule), guard=guard)
        if rule != "global":
            steady_state(clipper, steady_updates)
        clippers[key] = clipper
        methods[key] = _clip_call(clipper, key, skipped)
    return ClipBench(named, methods, clippers, originals, elements * dtype.itemsize, elements, skipped)


def _clip_call(clipper: GradClipper, key: str, skipped: dict[str, bool]) -> Callable[[], object]:
    """One ``clip_`` call; records whether it skipped (a skip scales nothing, so its time is not comparable)."""

    def call() -> object:
        result = clipper.clip_(progress=0.0)
        skipped[key] = skipped.get(key, False) or result.skipped
        return result

    return call


def copy_probe(device: torch.device, nbytes: int) -> tuple[Callable[[], object], int]:
    """A device copy of ``nbytes`` (read and written once: 2 x nbytes moved), and the bytes it moves."""
    n = max(nbytes // 4, 1)
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * n * 4


def floors_per_round(probe_times: list[float], probe_bytes: int, grad_bytes: int) -> list[float]:
    """Seconds the step must take at each round's measured copy bandwidth."""
    return [FLOOR_PASSES * grad_bytes * t / probe_bytes for t in probe_times]


@dataclass
class ClipMeasurement:
    """One clip-step case timed in rounds: the summary per method, the copy bandwidth, the host syncs."""

    summary: dict[str, Any]
    bandwidth_gbps: float
    syncs: dict[str, dict[str, Any]]


def measure(
    case: ClipBench, device: torch.device, *, runs: int, warmup: int, probe_bytes: int
) -> ClipMeasurement:
    """Time ``case``'s methods interleaved with an untimed copy probe (the floor), then count host syncs.

    Shared by ``bench.clip_step`` (CPU) and ``bench.gpu``.
    """
    probe_fn, probe_moved = copy_probe(device, probe_bytes)
    times = rd.run_rounds(
        case.methods,
        rounds=runs,
        warmup=warmup,
        timer=rd.timer_for(device),
        reset=case.reset,
        untimed={COPY_PROBE: probe_fn},
    )
    probe_times = times.pop(COPY_PROBE)
    summary = rd.summarize(
        times, BASELINE, floor_s=floors_per_round(probe_times, probe_moved, case.grad_bytes)
    )
    bandwidth = sorted(probe_moved / t for t in probe_times)
    syncs = case.host_syncs(device)
    for key, row in summary["methods"].items():
        row["host_syncs"] = syncs[key]["measured"]["count"]
        row["host_syncs_modelled"] = syncs[key]["modelled"]["count"]
    return ClipMeasurement(summary, bandwidth[len(bandwidth) // 2] / 1e9, syncs)
