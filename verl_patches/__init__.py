"""The one package that imports verl (entry points aside): everything written for verl 0.9.1 lives here.

    version.py     -- the supported verl version, its check, the porting checklist of verl internals we touch
    plugin.py      -- the ``verl.plugins`` entry point (loaded by every ``import verl``, driver and workers)
    engine/        -- the ``aggc_fsdp2`` engine, its engine and actor configs, engine registration
    cpu/           -- the CPU backend: platform, device module, ``hf_cpu`` rollout, test/bench harness
    file_logger.py -- verl's file logger in append mode (resumed runs keep their log)

It depends on ``aggc_rl``'s pure layers (clipping, metrics, tiny) and nothing above them; the import-linter
contract in pyproject.toml keeps it that way.
"""
