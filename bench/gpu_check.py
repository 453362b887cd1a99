"""The first check on a GPU: does the clipper compute on CUDA what it computes on the CPU?

    python -m bench.gpu_check                  # one GPU, < 8 min; only torch + transformers needed
    python -m bench.gpu_check --tiny           # the same code on tiny shapes, on the CPU (make test runs it)

1. Parity: the same gradients (made once, on the CPU, in fp32; cast to each dtype) are clipped for several
   steps by a ``GradClipper`` on the CPU (the reference) and one on the device, for every rule, with and
   without the step guard, in fp32 and bf16. The steps scale the gradients so that rules clip and the guard
   skips a spike. Compared per step: skip decision and reasons, group norms, scales, total norm, the rule's
   statistics; at the end the clipped gradients and the saved state (rule tensors, guard window).
2. FSDP2 at world size 1 (NCCL on CUDA, gloo on the CPU): ``fully_shard`` per decoder layer and at the root,
   one loss, and the clipper's group norms and scales against the plain model's on the same batch.
3. ``bench.gpu`` (its own tables; skipped with ``--no-bench``).

One table, exit 1 on any mismatch. Tolerances are relative to the largest reference value of each compared
tensor: fp32 1e-5 (summation order only), bf16 1e-4 for norms and state (norms accumulate in fp32) and 1e-2 for
clipped bf16 gradients (one bf16 ulp is 2^-8 ~ 4e-3).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

from aggc_rl.clipping import RULE_NAMES, GradClipper, GuardConfig, make_rule
from aggc_rl.tiny import lm_loss, tiny_qwen2

#: Gradient multipliers per step: clipped steps, a quiet stretch for the guard's window, a spike it skips.
STEPS = (1.0, 1.3, 0.7, 1.1, 0.9, 1.0, 4.0, 1.0, 1e4, 1.0)
GUARD = GuardConfig(skip_sigma=6.0, window=8, max_consecutive_skips=0)
#: The GPU run's model: big enough for real kernels (~40M parameters), small enough for seconds per case.
FULL_SHAPE = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "vocab_size": 8192}
TOLERANCE = {
    torch.float32: {"norms": 1e-5, "grads": 1e-5},
    torch.bfloat16: {"norms": 1e-4, "grads": 1e-2},
}


@dataclasses.dataclass
class Row:
    check: str
    device: str
    dtype: str
    case: str
    worst: float  # the largest relative difference seen
    tolerance: float
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| over finite entries; inf when non-finite entries disagree."""
    got, want = got.detach().double().cpu().flatten(), want.detach().double().cpu().flatten()
    if got.shape != want.shape:
        return math.inf
    finite = torch.isfinite(want)
    if not torch.equal(finite, torch.isfinite(got)):
        return math.inf
    if not finite.any():
        return 0.0
    scale = want[finite].abs().max().clamp_min(1e-30)
    return float((got[finite] - want[finite]).abs().max() / scale)


def compare(what: str, got: Any, want: Any, tolerance: float, problems: list[str]) -> float:
    """Record a problem when ``got`` differs from ``want`` by more than ``tolerance``; returns the difference."""
    if isinstance(want, torch.Tensor):
        diff = rel_diff(got, want)
    elif isinstance(want, float):
        diff = rel_diff(torch.tensor([got]), torch.tensor([want]))
    else:
        diff = 0.0 if got == want else math.inf
    if diff > tolerance:
        problems.append(f"{what}: differs by {diff:.3g} (allowed {tolerance:g}): got {got!r}, want {want!r}")
    return diff


def compare_results(got, want, step: int, tolerance: float, problems: list[str]) -> float:
    """One step's :class:`ClipResult` on the device against the CPU reference's."""
    worst = 0.0
    for field in ("skipped", "skip_reasons", "step", "groups", "consecutive_skips", "spike_total"):
        worst = max(
            worst, compare(f"step {step} {field}", getattr(got, field), getattr(want, field), 0, problems)
        )
    for field in ("norms", "scales"):
        worst = max(
            worst,
            compare(f"step {step} {field}", getattr(got, field), getattr(want, field), tolerance, problems),
        )
    worst = max(
        worst, compare(f"step {step} total_norm", got.total_norm, want.total_norm, tolerance, problems)
    )
    for stat, value in want.stats.items():
        worst = max(
            worst, compare(f"step {step} stats.{stat}", got.stats.get(stat), value, tolerance, problems)
        )
    return worst


def compare_states(got: dict, want: dict, tolerance: float, problems: list[str]) -> float:
    worst = 0.0
    for key in ("rule", "knobs", "scheme", "groups"):
        worst = max(worst, compare(f"state {key}", got[key], want[key], 0, problems))
    for key, value in want["state"].items():
        worst = max(worst, compare(f"state.{key}", got["state"][key], value, tolerance, problems))
    for key, value in want["guard"].items():
        allowed = tolerance if isinstance(value, torch.Tensor) else 0
        worst = max(worst, compare(f"guard.{key}", got["guard"][key], value, allowed, problems))
    return worst


# -- 1. parity --------------------------------------------------------------------------------------------


def make_model(tiny: bool, device: torch.device | str = "cpu") -> torch.nn.Module:
    model = tiny_qwen2(seed=0) if tiny else tiny_qwen2(seed=0, **FULL_SHAPE)
    return model.to(device)


def base_gradients(tiny: bool) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = make_model(tiny)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (4, 64 if not tiny else 12), generator=torch.Generator().manual_seed(0))
    lm_loss(model, ids).backward()
    return model, {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def clip_steps(model, base, dtype, device, rule: str, guard: GuardConfig | None):
    """Run :data:`STEPS` through a clipper on ``device``; returns the results, the clipped grads, the state."""
    params = dict(model.named_parameters())
    clipper = GradClipper(model.named_parameters(), make_rule(rule), guard=guard)
    results = []
    for i, mult in enumerate(STEPS):
        for name, p in params.items():
            p.grad = (base[name] * mult).to(device=device, dtype=dtype)
        results.append(clipper.clip_(progress=i / len(STEPS)))
    grads = {name: p.grad.detach().cpu() for name, p in params.items()}
    return results, grads, clipper.state_dict()


def parity(device: torch.device, tiny: bool) -> list[Row]:
    ref_model, base = base_gradients(tiny)
    dev_model = make_model(tiny, device)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        tol = TOLERANCE[dtype]
        ref_model.to(dtype)
        dev_model.to(dtype)
        for rule in RULE_NAMES:
            for guard in (None, GUARD):
                problems: list[str] = []
                want, want_grads, want_state = clip_steps(ref_model, base, dtype, "cpu", rule, guard)
                got, got_grads, got_state = clip_steps(dev_model, base, dtype, device, rule, guard)
                worst = 0.0
                for step, (g, w) in enumerate(zip(got, want, strict=True)):
                    worst = max(worst, compare_results(g, w, step, tol["norms"], problems))
                for name, w in want_grads.items():
                    compare(f"clipped grad {name}", got_grads[name], w, tol["grads"], problems)
                worst = max(worst, compare_states(got_state, want_state, tol["norms"], problems))
                if guard is not None and not any(r.skipped for r in want):
                    problems.append("the guard skipped no step: the check did not exercise it")
                if not any(float(r.scales.min()) < 1 for r in want if not r.skipped):
                    problems.append("no step was clipped: the check did not exercise the rule")
                case = rule + (" + guard" if guard else "")
                rows.append(Row("parity", str(device), _name(dtype), case, worst, tol["norms"], problems[:3]))
    return rows


# -- 2. FSDP2, world size 1 -------------------------------------------------------------------------------


def fsdp_world_one(device: torch.device, tiny: bool) -> list[Row]:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    owned = not dist.is_initialized()
    if owned:
        init = os.path.join(tempfile.mkdtemp(prefix="gpu_check_pg_"), "init")
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", init_method=f"file://{init}", rank=0, world_size=1
        )
    try:
        mesh = init_device_mesh(device.type, (1,))
        plain, sharded = make_model(tiny, device), make_model(tiny, device)
        for layer in sharded.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        vocab = plain.config.vocab_size
        ids = torch.randint(0, vocab, (4, 64 if not tiny else 12), generator=torch.Generator().manual_seed(1))
        ids = ids.to(device)
        lm_loss(plain, ids).backward()
        lm_loss(sharded, ids).backward()
        rows = []
        for rule in RULE_NAMES:
            problems: list[str] = []
            want = GradClipper(plain.named_parameters(), make_rule(rule)).clip_(progress=0.5)
            got = GradClipper(sharded.named_parameters(), make_rule(rule)).clip_(progress=0.5)
            # Same kernels, same batch: only the sharded reduction's order may differ.
            worst = compare_results(got, want, 0, 1e-5, problems)
            rows.append(Row("fsdp2 ws=1", str(device), "float32", rule, worst, 1e-5, problems[:3]))
        return rows
    finally:
        if owned:
            dist.destroy_process_group()


# -- the table and the run --------------------------------------------------------------------------------


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| check | device | dtype | case | worst rel. diff | tolerance | result |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        verdict = "ok" if r.ok else "MISMATCH: " + "; ".join(r.problems)
        lines.append(
            f"| {r.check} | {r.device} | {r.dtype} | {r.case} | {r.worst:.2e} | {r.tolerance:g} | {verdict} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (make test runs this)")
    ap.add_argument("--device", default=None, help="default: cuda (required without --tiny); --tiny: cpu")
    ap.add_argument("--no-bench", action="store_true", help="skip bench.gpu")
    ap.add_argument("--bench-budget-s", type=float, default=300.0, help="bench.gpu's --budget-s")
    ap.add_argument("--out", default=None, help="write the table (markdown) here")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench.gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); "
            "on this machine run `make gpu-check TINY=1` (the same checks on the CPU, tiny shapes)",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    rows = parity(device, args.tiny)
    print(f"gpu_check: parity done at {time.monotonic() - started:.0f} s", flush=True)
    rows += fsdp_world_one(device, args.tiny)
    print(f"gpu_check: fsdp2 done at {time.monotonic() - started:.0f} s", flush=True)
    if not args.no_bench:
        from bench import gpu

        bench_args = ["--budget-s", str(args.bench_budget_s)]
        if args.tiny:
            bench_args += ["--tiny", "--device", str(device), "--sizes", "tiny-a", "--dtypes", "float32"]
        else:
            bench_args += ["--out", "bench/results/gpu.json", "--md", "bench/results/gpu.md"]
        report = gpu.main(bench_args)
        cases = len(report["clip_step"])
        rows.append(Row("bench.gpu", str(device), "-", f"{cases} clip-step case(s)", 0.0, 0.0, []))
    host = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    text = (
        f"# gpu_check on {host} (torch {torch.__version__}{', TINY shapes' if args.tiny else ''}): "
        f"{sum(r.ok for r in rows)}/{len(rows)} ok in {time.monotonic() - started:.0f} s\n\n{table(rows)}\n"
    )
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
