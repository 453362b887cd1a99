"""A whole train step (forward, backward, clip, AdamW step) of a random Qwen2 causal LM, per clip method.

One bf16 ``Qwen2ForCausalLM`` (sdpa attention) and one AdamW are shared by all methods, whose steps
are interleaved in rounds (see :mod:`bench.rounds`); the figure is each method's step time over the
step with torch's ``clip_grad_norm_(foreach=True)``. After the timed rounds one more step per method
measures memory on CUDA: the peak the clip call adds over what was allocated when it started, and
the step's peak. Needs only torch and transformers (no verl, Ray or vLLM).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from aggc_rl.clipping import RULE_NAMES, GradClipper, make_rule
from bench import rounds as rd
from bench.clip_methods import BASELINE, BENCH_GUARD, GUARD_RULE, GUARDED
from bench.shapes import qwen2_config_kwargs


def build_model(size: str, device: torch.device) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**qwen2_config_kwargs(size), attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.train()
    return model


def _clip_fns(model: torch.nn.Module) -> dict[str, Callable[[], object]]:
    params = [p for p in model.parameters() if p.requires_grad]
    fns: dict[str, Callable[[], object]] = {
        BASELINE: lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    }
    for rule in RULE_NAMES:
        clipper = GradClipper(model.named_parameters(), make_rule(rule))
        fns[rule] = lambda c=clipper: c.clip_(progress=0.0)
    clipper = GradClipper(model.named_parameters(), make_rule(GUARD_RULE), guard=BENCH_GUARD)
    fns[GUARDED] = lambda c=clipper: c.clip_(progress=0.0)
    return fns


def bench_train_step(
    size: str,
    device: torch.device,
    *,
    batch: int,
    seq: int,
    rounds: int,
    warmup: int = 2,
) -> dict[str, Any]:
    """Time ``rounds`` interleaved train steps per method; halves ``batch`` until a step fits in memory."""
    model = build_model(size, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, foreach=True)
    vocab = model.config.vocab_size
    gen = torch.Generator(device=device.type).manual_seed(0)
    fns = _clip_fns(model)

    def make_step(clip: Callable[[], object], ids: torch.Tensor) -> Callable[[], None]:
        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()
            clip()
            optimizer.step()

        return step

    while True:
        ids = torch.randint(0, vocab, (batch, seq), generator=gen, device=device)
        try:
            make_step(fns[BASELINE], ids)()
            break
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            if batch == 1:
                raise
            batch //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()

    steps = {k: make_step(fn, ids) for k, fn in fns.items()}
    times = rd.run_rounds(steps, rounds=rounds, warmup=warmup, timer=rd.timer_for(device))
    summary = rd.summarize(times, BASELINE)
    memory = _memory(model, optimizer, fns, ids, device)
    for key, row in summary["methods"].items():
        row.update(memory.get(key, {}))
    return {
        "model": size,
        "dtype": "bfloat16",
        "attention": model.config._attn_implementation,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "seq": seq,
        "device": str(device),
        **summary,
    }


def _memory(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    fns: dict[str, Callable[[], object]],
    ids: torch.Tensor,
    device: torch.device,
) -> dict[str, dict[str, float | None]]:
    if device.type != "cuda":
        return {k: {"clip_extra_peak_mib": None, "step_peak_gib": None} for k in fns}
    out = {}
    for key, clip in fns.items():
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        model(input_ids=ids, labels=ids).loss.backward()
        before = torch.cuda.memory_allocated(device)
        step_peak_before_clip = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        clip()
        clip_peak = torch.cuda.max_memory_allocated(device)
        optimizer.step()
        torch.cuda.synchronize(device)
        step_peak = max(step_peak_before_clip, torch.cuda.max_memory_allocated(device))
        out[key] = {"clip_extra_peak_mib": (clip_peak - before) / 2**20, "step_peak_gib": step_peak / 2**30}
    return out
