"""The Hydra overrides every run of verl's actor on the CPU platform needs, written once.

``aggc_rl.demo`` (the trainer) and :mod:`verl_cpu.harness` (tests, benchmarks, the lab) both start from
these, so the two cannot drift apart. Why each one:

* ``sdpa`` attention: verl defaults to flash_attention_2, which needs CUDA;
* no gradient checkpointing: it only trades compute for memory, and the CPU runs are tiny;
* no ``torch.compile`` (actor, its FSDP config and the reference): ~22 s per process on the first call;
* fp32 FSDP mixed precision: verl's default computes in bf16, slow on CPUs and too coarse to compare
  log-probs with the Hugging Face model (or with the rollout);
* ``trainer.device=cpu``.

It imports nothing (the import-linter contracts keep verl, Ray and vLLM out), so entry points can read it
before anything starts.
"""

from __future__ import annotations

#: The overrides, in the order the demo has always passed them (Hydra does not care about the order).
CPU_ACTOR_OVERRIDES: tuple[str, ...] = (
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    "actor_rollout_ref.model.enable_gradient_checkpointing=false",
    "actor_rollout_ref.actor.use_torch_compile=false",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
    "actor_rollout_ref.ref.fsdp_config.use_torch_compile=false",
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.reduce_dtype=fp32",
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision.buffer_dtype=fp32",
    "trainer.device=cpu",
)
