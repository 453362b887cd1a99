"""The one package that imports verl (entry points aside): everything written for verl 0.9.1 lives here.

    version.py     -- the supported verl version, its check, the porting checklist of verl internals we touch
    plugin.py      -- the ``verl.plugins`` entry point (loaded by every ``import verl``, driver and workers)
    engine/        -- the ``aggc_fsdp2`` engine, its engine and actor configs, engine registration
    cpu/           -- the CPU backend: platform, device module, ``hf_cpu`` and vLLM-CPU rollouts, test/bench harness
    sft.py         -- verl's SFT trainer with the clip switch (metrics reduced for loggers)
    file_logger.py -- verl's file logger in append mode (resumed runs keep their log)
    reward_metrics.py -- per-step reward/unscored and reward/timeouts in the v1 trainer's metrics
    config_files.py   -- where our primary Hydra configs live

It depends on ``aggc_rl``'s pure layers (clipping, metrics, tiny) and nothing above them; the import-linter
contract in pyproject.toml keeps it that way.
"""
