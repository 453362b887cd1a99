"""The proxy policy and its single runs: a 0.4M-parameter Qwen2 warm-started on Knights-and-Knaves, GRPO and LoRA SFT.

:mod:`~aggc_rl.proxy.policy`: the task's split, the warm start, its cache and the held-out evaluation;
:mod:`~aggc_rl.proxy.sampler`: the compact prompts, batched in-process sampling, the scorer;
:mod:`~aggc_rl.proxy.grpo` and :mod:`~aggc_rl.proxy.sft`: one run each through the shared harness
(:mod:`aggc_rl.inprocess`). docs/proxy.md.
"""
